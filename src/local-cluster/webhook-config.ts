// Moved: the webhook configurations (local url form and in-cluster service form) are built by
// src/install/webhook-config.ts. Re-exported here for the e2e files that import from this path.
export { IGNORE_NAMESPACE_LABEL, webhookConfigurations } from "../install/webhook-config.ts";
export type { WebhookConfigInput, WebhookConfigurations } from "../install/webhook-config.ts";
