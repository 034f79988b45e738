// The plugin set, in the order it runs. Mutations that others build on come first (GPU share decides
// whether a pod is a GPU pod; scheduler fields before pod groups); quota validates last, on the
// object as every other plugin left it.
import type { Plugin } from "../src/admission/plugin.ts";
import { priority } from "./priority.ts";

export const plugins: readonly Plugin[] = [priority];
