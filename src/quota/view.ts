// What quota plugins may read about current usage. Filled from watches (serve) or from files (apply).

export interface ProjectUsage {
  /** GPUs held by admitted workloads the cache can see. */
  allocated: number;
  /** GPUs reserved by admissions the cache cannot see yet. */
  reserved: number;
  workloads: number;
}

export interface QuotaView {
  usage(project: string): ProjectUsage;
}
