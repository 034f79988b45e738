// The admin kubeconfig every local component and the user's kubectl share. Credentials are embedded
// (not file paths) so the file keeps working when copied or read from another working directory.
import { stringify } from "yaml";

export interface KubeconfigInput {
  server: string;
  caPem: string;
  clientCertPem: string;
  clientKeyPem: string;
  clusterName?: string;
  userName?: string;
}

export function adminKubeconfig(input: KubeconfigInput): string {
  const cluster = input.clusterName ?? "infergate-local";
  const user = input.userName ?? "infergate-admin";
  const b64 = (pem: string) => Buffer.from(pem).toString("base64");
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: cluster, cluster: { server: input.server, "certificate-authority-data": b64(input.caPem) } }],
    users: [
      {
        name: user,
        user: { "client-certificate-data": b64(input.clientCertPem), "client-key-data": b64(input.clientKeyPem) },
      },
    ],
    contexts: [{ name: cluster, context: { cluster, user } }],
    "current-context": cluster,
    preferences: {},
  });
}
