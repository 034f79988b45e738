#!/usr/bin/env bash
# Regenerates examples/output/: what `infergate apply` prints for each example workload under each
# example policy. Each file starts with the command, its exit status and what it printed on stderr
# (the warnings kubectl would show, or the denial), as comments; then the admitted object.
# Run from anywhere: bash examples/regenerate-output.sh
set -euo pipefail
cd "$(dirname "$0")/.."
node=node_modules/.bin/node
[ -x "$node" ] || node=node

run() { # run OUTPUT_NAME RESOURCE POLICY_FILE...
  local out="examples/output/$1" resource="$2"
  shift 2
  local args=()
  for p in "$@"; do args+=(--policy "$p"); done
  local stdout stderr status=0
  stderr=$(mktemp)
  stdout=$("$node" src/cli/main.ts apply "${args[@]}" --resource "$resource" 2>"$stderr") || status=$?
  {
    echo "# infergate apply ${args[*]} --resource $resource"
    echo "# exit status: $status"
    sed 's/^/# /' "$stderr"
    [ -n "$stdout" ] && printf '%s\n' "$stdout"
  } >"$out"
  rm -f "$stderr"
  echo "wrote $out (exit $status)"
}

base=(examples/project.yaml examples/policy-cluster-default.yaml)
run gpu-deployment.default.yaml   examples/gpu-deployment.yaml  "${base[@]}"
run gpu-deployment.kai.yaml       examples/gpu-deployment.yaml  "${base[@]}" examples/policy-kai.yaml
run gpu-deployment.hami.yaml      examples/gpu-deployment.yaml  "${base[@]}" examples/policy-hami.yaml
run knative-service.default.yaml  examples/knative-service.yaml "${base[@]}"
run knative-service.kai.yaml      examples/knative-service.yaml "${base[@]}" examples/policy-kai.yaml
run knative-service.hami.yaml     examples/knative-service.yaml "${base[@]}" examples/policy-hami.yaml
