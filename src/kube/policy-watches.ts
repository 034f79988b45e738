// Feeds the PolicyStore from the cluster: Projects, InferencePolicies, and Knative's config-features.
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import type { PolicyStore } from "../policy/store.ts";
import { GROUP, VERSION, type InferencePolicy, type Project } from "../policy/types.ts";
import { parseKnativeFeatures } from "../workload/knative-features.ts";
import { DEFAULT_KNATIVE_FEATURES } from "../workload/knative-features.ts";
import type { Logger } from "../observability/log.ts";
import { watchResource, type WatchedResource } from "./watch.ts";

export interface PolicyWatches {
  synced(): boolean;
  stop(): Promise<void>;
}

export function watchPolicies(kc: KubeConfig, store: PolicyStore, logger: Logger): PolicyWatches {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const core = kc.makeApiClient(CoreV1Api);
  const watches: WatchedResource<any>[] = [
    watchResource<any>({
      kc,
      logger,
      name: "projects",
      path: `/apis/${GROUP}/${VERSION}/projects`,
      list: () => custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: "projects" }) as any,
      onEvent: (event, obj: Project) => (event === "DELETED" ? store.deleteProject(obj.metadata.name ?? "") : store.upsertProject(obj)),
    }),
    watchResource<any>({
      kc,
      logger,
      name: "inferencepolicies",
      path: `/apis/${GROUP}/${VERSION}/inferencepolicies`,
      list: () => custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: "inferencepolicies" }) as any,
      onEvent: (event, obj: InferencePolicy) => (event === "DELETED" ? store.deletePolicy(obj.metadata.name ?? "") : store.upsertPolicy(obj)),
    }),
    watchResource<any>({
      kc,
      logger,
      name: "knative config-features",
      path: "/api/v1/namespaces/knative-serving/configmaps",
      fieldSelector: "metadata.name=config-features",
      list: () => core.listNamespacedConfigMap({ namespace: "knative-serving", fieldSelector: "metadata.name=config-features" }) as any,
      onEvent: (event, obj) => store.setKnativeFeatures(event === "DELETED" ? DEFAULT_KNATIVE_FEATURES : parseKnativeFeatures(obj)),
    }),
  ];
  return {
    synced: () => watches.every((w) => w.synced()),
    stop: async () => {
      await Promise.all(watches.map((w) => w.stop()));
    },
  };
}
