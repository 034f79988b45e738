#!/usr/bin/env bash
# Builds the real control plane from Go modules into a per-version cache outside the repo:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes),
#   etcd (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok).
# A second run that finds every binary at the right version builds nothing.
# Each tool gets its own throwaway wrapper module so that MVS cannot raise one tool's
# dependencies for another (k8s pins grpc/otel carefully).
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
KWOK_VERSION=${KWOK_VERSION:-0.8.0}
CACHE=${INFERGATE_CACHE:-$HOME/.cache/infergate}
BIN=${INFERGATE_BIN:-$CACHE/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}
SRC=$CACHE/src
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

mkdir -p "$BIN" "$SRC"
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have() { # binary, expected version substring
  local args=(--version)
  [ "$1" = kubectl ] && args=(version --client)
  [ -x "$BIN/$1" ] || return 1
  # Capture before grepping: under pipefail, `grep -q` closing the pipe early can kill a multi-line
  # --version (etcd prints four lines) with SIGPIPE, and a cached binary then counts as missing.
  local out
  out=$("$BIN/$1" "${args[@]}" 2>/dev/null) || return 1
  grep -q -- "$2" <<<"$out"
}

timed() { # name, command...
  local name=$1; shift
  local start=$SECONDS
  log "building $name ..."
  "$@"
  log "built $name in $((SECONDS - start))s"
}

build_kube() {
  local dir=$SRC/kubernetes-$KUBE_VERSION staging=0.${KUBE_VERSION#1.}
  local minor=${KUBE_VERSION#1.}; minor=${minor%%.*}
  mkdir -p "$dir"; cd "$dir"
  if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes v$KUBE_VERSION" go.mod; then
    rm -f go.mod go.sum
    go mod init infergate.invalid/kube-tools >/dev/null 2>&1
    # The published k8s.io/kubernetes go.mod requires its staging modules at v0.0.0 and replaces
    # them with local paths that consumers cannot see; derive the list from that go.mod itself.
    local upstream
    upstream=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    local mods
    mods=$(sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*|\1|p' "$upstream")
    [ -n "$mods" ] || { log "no staging replaces found in $upstream"; exit 1; }
    for m in $mods; do go mod edit -replace="$m=$m@v$staging"; done
    go mod edit -go="$(sed -n 's/^go \(.*\)/\1/p' "$upstream")"
    local godebug; godebug=$(sed -n 's/^godebug \(.*\)/\1/p' "$upstream")
    [ -z "$godebug" ] || go mod edit -godebug="$godebug"
    go get "k8s.io/kubernetes@v$KUBE_VERSION"
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    go mod tidy
  fi
  local ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    have "$c" "v$KUBE_VERSION" && { log "$c v$KUBE_VERSION cached"; continue; }
    timed "$c" go build -trimpath -buildvcs=false -tags=selinux,notest,grpcnotrace \
      -ldflags="-s -w $ld" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c"
  done
}

build_etcd() {
  have etcd "$ETCD_VERSION" && { log "etcd $ETCD_VERSION cached"; return; }
  local dir=$SRC/etcd-$ETCD_VERSION
  mkdir -p "$dir"; cd "$dir"
  if [ ! -f go.mod ]; then
    go mod init infergate.invalid/etcd-tool >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go mod tidy
  fi
  timed etcd go build -trimpath -buildvcs=false -ldflags="-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  have kwok "$KWOK_VERSION" && { log "kwok $KWOK_VERSION cached"; return; }
  timed kwok env GOBIN="$BIN" go install -trimpath -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  # kwok needs Stage objects; take the fast node/pod stages from the same module version.
  local dir; dir=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  : > "$BIN/kwok-stages.yaml"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    printf -- '---\n' >> "$BIN/kwok-stages.yaml"; cat "$dir/kustomize/stage/$f" >> "$BIN/kwok-stages.yaml"
  done
}

total=$SECONDS
( build_etcd )
( build_kwok )
( build_kube )
log "all binaries ready in $BIN ($((SECONDS - total))s)"
echo "$BIN"
