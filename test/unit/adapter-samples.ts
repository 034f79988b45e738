// Metrics pages shaped like what the servers really print, for the adapter's tests. Written for these
// tests from the servers' documented metric names; the numbers are made up.

const MODEL = "meta-llama/Llama-3.1-8B-Instruct";
export const VLLM_BUCKETS_SECONDS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0];

export interface VllmState {
  running: number;
  waiting: number;
  stop: number;
  length: number;
  /** Cumulative counts for VLLM_BUCKETS_SECONDS followed by +Inf. */
  buckets: number[];
}

/** A vLLM (v1 engine, prometheus_client) page, with the FastAPI HTTP histogram it also exports. */
export function vllmPage(state: VllmState): string {
  const labels = `engine="0",model_name="${MODEL}"`;
  const bounds = [...VLLM_BUCKETS_SECONDS.map((b) => b.toFixed(1)), "+Inf"];
  const count = state.buckets[state.buckets.length - 1]!;
  return [
    "# HELP python_gc_objects_collected_total Objects collected during gc",
    "# TYPE python_gc_objects_collected_total counter",
    'python_gc_objects_collected_total{generation="0"} 14235.0',
    'python_gc_objects_collected_total{generation="1"} 3511.0',
    "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
    "# TYPE process_cpu_seconds_total counter",
    "process_cpu_seconds_total 291.47",
    "# HELP vllm:num_requests_running Number of requests in model execution batches.",
    "# TYPE vllm:num_requests_running gauge",
    `vllm:num_requests_running{${labels}} ${state.running.toFixed(1)}`,
    "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
    "# TYPE vllm:num_requests_waiting gauge",
    `vllm:num_requests_waiting{${labels}} ${state.waiting.toFixed(1)}`,
    "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
    "# TYPE vllm:kv_cache_usage_perc gauge",
    `vllm:kv_cache_usage_perc{${labels}} 0.4127`,
    "# HELP vllm:request_success_total Count of successfully processed requests.",
    "# TYPE vllm:request_success_total counter",
    `vllm:request_success_total{engine="0",finished_reason="stop",model_name="${MODEL}"} ${state.stop.toFixed(1)}`,
    `vllm:request_success_total{engine="0",finished_reason="length",model_name="${MODEL}"} ${state.length.toFixed(1)}`,
    `vllm:request_success_total{engine="0",finished_reason="abort",model_name="${MODEL}"} 0.0`,
    "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
    "# TYPE vllm:e2e_request_latency_seconds histogram",
    `vllm:e2e_request_latency_seconds_sum{${labels}} ${(count * 0.7).toFixed(3)}`,
    ...bounds.map((le, i) => `vllm:e2e_request_latency_seconds_bucket{${`engine="0",le="${le}",model_name="${MODEL}"`}} ${state.buckets[i]!.toFixed(1)}`),
    `vllm:e2e_request_latency_seconds_count{${labels}} ${count.toFixed(1)}`,
    "# HELP http_request_duration_seconds Latency with only few buckets by handler.",
    "# TYPE http_request_duration_seconds histogram",
    'http_request_duration_seconds_bucket{handler="/v1/completions",le="0.1",method="POST"} 3.0',
    'http_request_duration_seconds_bucket{handler="/v1/completions",le="+Inf",method="POST"} 9.0',
    'http_request_duration_seconds_count{handler="/v1/completions",method="POST"} 9.0',
    'http_request_duration_seconds_sum{handler="/v1/completions",method="POST"} 7.1',
    "",
  ].join("\n");
}

/** Expands per-bucket counts (not cumulative) into the cumulative form a histogram prints. */
export function cumulative(perBucket: number[]): number[] {
  let running = 0;
  return perBucket.map((count) => (running += count));
}

export const TRITON_PAGE = `# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="resnet50",version="1"} 4200
nv_inference_request_success{model="bert",version="2"} 800
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="resnet50",reason="OTHER",version="1"} 3
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="resnet50",version="1"} 4200
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="resnet50",version="1"} 1310
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds (includes cached requests)
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="resnet50",version="1"} 52500000
nv_inference_request_duration_us{model="bert",version="2"} 12000000
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds (includes cached requests)
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="resnet50",version="1"} 1210000
# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="resnet50",version="1"} 2
# HELP nv_inference_request_summary_us Summary of inference request duration in microseconds (includes cached requests)
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="resnet50",version="1"} 4200
nv_inference_request_summary_us_sum{model="resnet50",version="1"} 52500000
nv_inference_request_summary_us{model="resnet50",version="1",quantile="0.5"} 11000
nv_inference_request_summary_us{model="resnet50",version="1",quantile="0.9"} 16500
nv_inference_request_summary_us{model="resnet50",version="1",quantile="0.95"} 18250
nv_inference_request_summary_us{model="resnet50",version="1",quantile="0.99"} 31000
nv_inference_request_summary_us{model="bert",version="2",quantile="0.5"} 14000
nv_inference_request_summary_us{model="bert",version="2",quantile="0.95"} NaN
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-4f6a1c9e-2b7d-4c1e-9a55-0d1e2f3a4b5c"} 0.63
`;

export const TGI_PAGE = `# TYPE tgi_request_count counter
tgi_request_count 940
# TYPE tgi_request_success counter
tgi_request_success 931
# TYPE tgi_request_failure counter
tgi_request_failure{err="validation"} 9
# TYPE tgi_queue_size gauge
tgi_queue_size 4
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 12
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 18230
# TYPE tgi_request_duration histogram
tgi_request_duration_bucket{le="0.1"} 0
tgi_request_duration_bucket{le="0.25"} 3
tgi_request_duration_bucket{le="0.5"} 61
tgi_request_duration_bucket{le="1"} 402
tgi_request_duration_bucket{le="2.5"} 880
tgi_request_duration_bucket{le="5"} 925
tgi_request_duration_bucket{le="+Inf"} 931
tgi_request_duration_sum 1011.25
tgi_request_duration_count 931
`;

const QP = 'kn_revision_name="llama-00001",kn_service_name="llama",kn_configuration_name="llama",k8s_pod_name="llama-00001-deployment-7c9d8-abcde"';
export const QUEUE_PROXY_PAGE = `# HELP kn_serving_invocation_duration_seconds The duration of task execution.
# TYPE kn_serving_invocation_duration_seconds histogram
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="200",${QP},le="0.005"} 0
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="200",${QP},le="0.05"} 10
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="200",${QP},le="0.5"} 60
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="200",${QP},le="5"} 100
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="200",${QP},le="+Inf"} 100
kn_serving_invocation_duration_seconds_sum{http_response_status_code="200",${QP}} 31.5
kn_serving_invocation_duration_seconds_count{http_response_status_code="200",${QP}} 100
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="503",${QP},le="0.005"} 1
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="503",${QP},le="0.05"} 2
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="503",${QP},le="0.5"} 2
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="503",${QP},le="5"} 2
kn_serving_invocation_duration_seconds_bucket{http_response_status_code="503",${QP},le="+Inf"} 2
kn_serving_invocation_duration_seconds_sum{http_response_status_code="503",${QP}} 0.02
kn_serving_invocation_duration_seconds_count{http_response_status_code="503",${QP}} 2
# HELP kn_serving_queue_depth Number of current items in the queue proxy queue
# TYPE kn_serving_queue_depth gauge
kn_serving_queue_depth{${QP}} 3
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_name="queue-proxy",telemetry_sdk_language="go"} 1
`;

const LEGACY = 'configuration_name="llama",container_name="queue-proxy",namespace_name="team-a",pod_name="llama-00001-deployment-7c9d8-abcde",revision_name="llama-00001",service_name="llama"';
export const QUEUE_PROXY_LEGACY_PAGE = `# HELP revision_request_count The number of requests that are routed to queue-proxy
# TYPE revision_request_count counter
revision_request_count{${LEGACY},response_code="200",response_code_class="2xx"} 320
revision_request_count{${LEGACY},response_code="500",response_code_class="5xx"} 4
# HELP revision_request_latencies The response time in millisecond
# TYPE revision_request_latencies histogram
revision_request_latencies_bucket{${LEGACY},response_code="200",response_code_class="2xx",le="5"} 0
revision_request_latencies_bucket{${LEGACY},response_code="200",response_code_class="2xx",le="50"} 20
revision_request_latencies_bucket{${LEGACY},response_code="200",response_code_class="2xx",le="500"} 300
revision_request_latencies_bucket{${LEGACY},response_code="200",response_code_class="2xx",le="+Inf"} 320
revision_request_latencies_sum{${LEGACY},response_code="200",response_code_class="2xx"} 61000
revision_request_latencies_count{${LEGACY},response_code="200",response_code_class="2xx"} 320
# HELP revision_queue_depth The current number of items in the serving and waiting queue, or not reported if unlimited concurrency.
# TYPE revision_queue_depth gauge
revision_queue_depth{${LEGACY}} 5
`;
