// What quota plugins may read about current usage. Filled from watches (serve) or from files (apply).

export interface ProjectUsage {
  /** GPUs held by admitted workloads the cache can see (a multiple of 0.001). */
  allocated: number;
  /** GPUs reserved by admissions the cache cannot see yet (a multiple of 0.001). */
  reserved: number;
  /** Objects that hold GPUs now. */
  workloads: number;
}

/** Kinds the cache charges. A Knative Service is charged itself only until its revision Deployments exist. */
export type ChargedKind = "Deployment" | "Pod" | "KnativeService";

/** What one cached object holds, in milli-GPUs (1 GPU = 1000) so that sums stay exact. */
export interface ObjectCharge {
  kind: ChargedKind;
  namespace: string;
  name: string;
  /** The project owning the namespace when last computed; undefined outside every project. */
  project?: string;
  gpusPerPodMilli: number;
  /** spec.replicas (1 for a pod, the initial scale for a Knative Service). */
  replicas: number;
  /** Pods charged: replicas, plus maxSurge while a rollout is in progress. */
  pods: number;
  /** What counts toward the project: pods × gpusPerPodMilli, or 0 for a Knative Service whose revisions hold it. */
  milli: number;
  /** A Deployment whose status shows pods of an older template still running. */
  rollingOut?: boolean;
  /** For a Knative revision Deployment: the Service whose admission reserved its GPUs. */
  knativeService?: string;
  /**
   * For a Knative revision Deployment, its Revision. For a Knative Service, the revision its own charge
   * is being handed over to (created, not yet ready): the Service keeps what that revision has not
   * reached yet, so the autoscaler's scale-up to the initial scale is already paid for.
   */
  revision?: string;
  /** metadata.resourceVersion of the cached object, so a ledger can tell when an admitted change landed. */
  resourceVersion?: string;
}

const CHARGE_KIND_NAMES: Record<ChargedKind, string> = { Deployment: "Deployment", Pod: "Pod", KnativeService: "Service.serving.knative.dev" };

/** The key naming a charged object, e.g. `Service.serving.knative.dev/team-a/chat` (also the ledger's reservation key). */
export function chargeKey(kind: ChargedKind, namespace: string, name: string): string {
  return `${CHARGE_KIND_NAMES[kind]}/${namespace}/${name}`;
}

export interface QuotaView {
  usage(project: string): ProjectUsage;
  /**
   * The cached charge of one object, in O(1). Optional so that simple views (tests, tools) may omit it;
   * without it, UPDATEs fall back to the old object and `deployments/scale` charges nothing.
   */
  charge?(kind: ChargedKind, namespace: string, name: string): ObjectCharge | undefined;
}
