// Usage for `infergate apply --cluster FILE`: the same running totals the webhook keeps, filled from
// the file instead of watches.
import type { PolicyStore } from "../policy/store.ts";
import { quotaTotalsOf } from "./totals.ts";
import type { QuotaView } from "./view.ts";

export function offlineQuotaView(objects: readonly any[], store: PolicyStore): QuotaView {
  return quotaTotalsOf(objects, (namespace) => store.projectOf(namespace));
}
