// `infergate serve --tls-secret NAME`: flags, their checks, and the start of Secret-managed certificates
// (src/tls/secret-manager.ts). Kept out of serve.ts so that command stays about admission.
import { hostname } from "node:os";
import { loadKubeConfig } from "../kube/kubeconfig.ts";
import type { Logger } from "../observability/log.ts";
import type { KeyPair } from "../tls/reload.ts";
import { defaultPropagationMs, rotationConfigProblems, type RotationConfig } from "../tls/rotation.ts";
import { CUSTOM_METRICS_APISERVICES, startSecretCertificates, type SecretCertificates } from "../tls/secret-manager.ts";

export const TLS_SECRET_FLAGS = {
  "tls-secret": { type: "string" },
  "cert-lifetime": { type: "string" },
  "ca-lifetime": { type: "string" },
  "renew-before-fraction": { type: "string" },
  "webhook-config-name": { type: "string" },
  "service-host": { type: "string", multiple: true },
  apiservice: { type: "string", multiple: true },
} as const;

export const TLS_SECRET_HELP = `

Certificates managed by infergate (instead of --cert/--key):
  --tls-secret NAME            keep the CA and serving certificate in this Secret (in --namespace); the
                               Lease holder creates and rotates them and patches the caBundle, every
                               replica reloads them without a restart
  --cert-lifetime DURATION     serving certificate lifetime (default 8760h)
  --ca-lifetime DURATION       CA lifetime (default 87600h)
  --renew-before-fraction F    renew when this fraction of the lifetime is left (default 1/3)
  --webhook-config-name NAME   Mutating/ValidatingWebhookConfiguration to patch (default infergate)
  --service-host HOST          name in the serving certificate; repeatable (default
                               infergate-webhook.infergate-system.svc, plus 127.0.0.1 and localhost
                               when --address is loopback)
  --apiservice NAME            APIService to patch when it exists; repeatable; "none" for none
                               (default v1beta1 and v1beta2 custom.metrics.k8s.io)`;

export const DEFAULT_SERVICE_HOST = "infergate-webhook.infergate-system.svc";

export interface TlsSecretFlags {
  "tls-secret"?: string;
  "cert-lifetime"?: string;
  "ca-lifetime"?: string;
  "renew-before-fraction"?: string;
  "webhook-config-name"?: string;
  "service-host"?: string[];
  apiservice?: string[];
  cert?: string;
  key?: string;
  kubeconfig?: string;
}

export interface TlsSecretSettings {
  secretName: string;
  config: RotationConfig;
  webhookConfigName: string;
  apiServices: string[];
}

/** The settings, or every problem with the flags (each naming the flag, its value and what is allowed). */
export function tlsSecretSettings(flags: TlsSecretFlags, address: string): { settings?: TlsSecretSettings; problems: string[] } {
  const problems: string[] = [];
  const secretName = flags["tls-secret"] ?? "";
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(secretName)) {
    problems.push(`--tls-secret: "${secretName}" is not a Secret name (lowercase letters, digits, '-' and '.', at most 253)`);
  }
  if (flags.cert !== undefined || flags.key !== undefined) problems.push("--tls-secret: excludes --cert and --key (the certificate comes from the Secret)");
  const duration = (flag: "cert-lifetime" | "ca-lifetime", fallback: string): number => {
    const text = flags[flag] ?? fallback;
    const ms = parseDuration(text);
    if (ms === undefined || ms < 1000 || ms % 1000 !== 0) {
      problems.push(`--${flag}: "${text}"; allowed: a duration of whole seconds, at least 1s, like 20s, 90m or 8760h`);
      return Number.NaN;
    }
    return ms;
  };
  const certLifetimeMs = duration("cert-lifetime", "8760h");
  const caLifetimeMs = duration("ca-lifetime", "87600h");
  const fractionText = flags["renew-before-fraction"] ?? "1/3";
  const renewBeforeFraction = parseFraction(fractionText);
  if (renewBeforeFraction === undefined || !(renewBeforeFraction > 0 && renewBeforeFraction < 1)) {
    problems.push(`--renew-before-fraction: "${fractionText}"; allowed: a number between 0 and 1, like 1/3 or 0.25`);
  }
  const loopback = address === "127.0.0.1" || address === "::1" || address === "localhost";
  const hosts = flags["service-host"]?.length ? [...flags["service-host"]] : [DEFAULT_SERVICE_HOST];
  if (loopback) for (const host of ["127.0.0.1", "localhost"]) if (!hosts.includes(host)) hosts.push(host);
  const apiServices = (flags.apiservice ?? CUSTOM_METRICS_APISERVICES).filter((name) => name !== "none" && name !== "");
  if (problems.length > 0) return { problems };

  const config: RotationConfig = {
    hosts,
    certLifetimeMs,
    caLifetimeMs,
    renewBeforeFraction: renewBeforeFraction!,
    propagationMs: defaultPropagationMs(caLifetimeMs, renewBeforeFraction!),
  };
  const configProblems = rotationConfigProblems(config);
  if (configProblems.length > 0) return { problems: configProblems.map((problem) => `--tls-secret: ${problem}`) };
  return { settings: { secretName, config, webhookConfigName: flags["webhook-config-name"] ?? "infergate", apiServices }, problems };
}

/** Go-style durations as Kubernetes tools write them: "20s", "90m", "1h30m", "8760h", "500ms". */
export function parseDuration(text: string): number | undefined {
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(text)) return undefined;
  const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const [, amount, , unit] of text.matchAll(/(\d+(\.\d+)?)(ms|s|m|h)/g)) total += Number(amount) * unitMs[unit!]!;
  return Math.round(total);
}

function parseFraction(text: string): number | undefined {
  const ratio = /^(\d+)\/(\d+)$/.exec(text);
  if (ratio) return Number(ratio[2]) === 0 ? undefined : Number(ratio[1]) / Number(ratio[2]);
  return /^\d*\.?\d+$/.test(text) ? Number(text) : undefined;
}

/**
 * Starts Secret-managed certificates and waits for the first usable pair. The cluster connection
 * comes from --kubeconfig, else from the pod's service account.
 */
export async function openTlsSecret(
  flags: TlsSecretFlags,
  options: { address: string; namespace: string; logger: Logger },
): Promise<{ certificates: SecretCertificates; pair: KeyPair } | { error: string }> {
  const { settings, problems } = tlsSecretSettings(flags, options.address);
  if (!settings) return { error: `infergate serve: bad flags:\n  ${problems.join("\n  ")}` };
  const loaded = loadKubeConfig(flags.kubeconfig);
  if (!loaded.ok) {
    return {
      error:
        loaded.reason === "no-cluster"
          ? "infergate serve: --tls-secret needs a cluster: give --kubeconfig FILE, or run inside a cluster"
          : `infergate serve: cannot load kubeconfig: ${loaded.message}`,
    };
  }
  const kc = loaded.kc;
  const certificates = startSecretCertificates({
    kc,
    namespace: options.namespace,
    secretName: settings.secretName,
    identity: `${hostname()}-${process.pid}`,
    logger: options.logger,
    config: settings.config,
    webhookConfigName: settings.webhookConfigName,
    apiServices: settings.apiServices,
  });
  options.logger.log("info", "certificates managed in Secret", {
    secret: `${options.namespace}/${settings.secretName}`,
    hosts: settings.config.hosts,
    certLifetimeSeconds: settings.config.certLifetimeMs / 1000,
    caLifetimeSeconds: settings.config.caLifetimeMs / 1000,
    renewBeforeFraction: settings.config.renewBeforeFraction,
  });
  return { certificates, pair: await certificates.firstPair() };
}
