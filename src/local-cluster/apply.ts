// Server-side apply with the real kubectl: the same path users take, so field ownership and
// validation behave as they will for them.
import type { KubectlResult } from "./cluster.ts";

export const FIELD_MANAGER = "infergate-local";

export async function applyObjects(
  cluster: { kubectl(args: string[], options?: { input?: string }): Promise<KubectlResult> },
  objects: Record<string, any>[],
): Promise<void> {
  if (!objects.length) return;
  const input = JSON.stringify({ apiVersion: "v1", kind: "List", items: objects });
  const res = await cluster.kubectl(["apply", "--server-side", "--force-conflicts", `--field-manager=${FIELD_MANAGER}`, "-f", "-"], { input });
  if (res.code !== 0) throw new Error(`kubectl apply failed (exit ${res.code}): ${res.stderr || res.stdout}`);
}
