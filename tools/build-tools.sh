#!/usr/bin/env bash
# Builds the real test tools (etcd, kube-apiserver, helm, promql-parse for the chart's dashboard and
# alerts, nats-server for relay mode, and for the e2e suite gitea and Fleet's fleetcontroller) into a
# cache folder keyed by version, and reuses what is already there. Prints the bin folder on success.
#
#   tools/build-tools.sh            build what is missing, print the folder holding all seven
#   KUBEBUILDER_ASSETS=/dir ...     use etcd + kube-apiserver from /dir (envtest convention); the rest built
#   FLEET_SRC=/path/to/fleet ...    build fleetcontroller from that v0.16.1 tree (tools/build-fleet.sh)
#
# Versions live here, in tools/build-gitea.sh, tools/build-fleet.sh, tools/build-promql-parse.sh,
# tools/build-nats.sh and in the wrapper go.mod files under tools/; bumping one changes the cache key.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${FLEET_WEBHOOK_TOOLS_CACHE:-$root/.cache/tools}"

ETCD_VERSION=v3.6.16
KUBE_VERSION=v1.36.3
HELM_VERSION=v3.22.0
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { echo "build-tools: $*" >&2; }

need_go() {
  command -v go >/dev/null 2>&1 || { log "Go >= 1.26 is needed to build the test tools (or set KUBEBUILDER_ASSETS)"; exit 1; }
}

build_etcd() {
  local out="$cache/etcd-$ETCD_VERSION/etcd"
  [ -x "$out" ] && return 0
  need_go; log "building etcd $ETCD_VERSION (first run only)"
  mkdir -p "$(dirname "$out")"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3)
  mv "$out.tmp" "$out"
}

build_kube_apiserver() {
  local out="$cache/kube-apiserver-$KUBE_VERSION/kube-apiserver"
  [ -x "$out" ] && return 0
  need_go; log "building kube-apiserver $KUBE_VERSION (first run only; 5-10 min on 2 cores)"
  mkdir -p "$(dirname "$out")"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w" pkg
  # Stamp the version so /version is truthful: helm reads GitVersion for .Capabilities and kubeVersion checks.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$here/kube-apiserver" && go build -trimpath -ldflags "$ld" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$out.tmp" "$out"
}

build_helm() {
  local out="$cache/helm-$HELM_VERSION/helm"
  [ -x "$out" ] && return 0
  need_go; log "building helm $HELM_VERSION (first run only)"
  mkdir -p "$(dirname "$out")"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  # helm v3 built by `go install` assumes Kubernetes 1.20 client-side; tell it the version we test against.
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld="$ld -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  ld="$ld -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  GOBIN="$(dirname "$out").tmp" go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$(dirname "$out").tmp/helm" "$out"; rmdir "$(dirname "$out").tmp"
}

bin="$cache/bin"
mkdir -p "$bin"
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  log "using etcd and kube-apiserver from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  ln -sfn "$KUBEBUILDER_ASSETS/etcd" "$bin/etcd"
  ln -sfn "$KUBEBUILDER_ASSETS/kube-apiserver" "$bin/kube-apiserver"
else
  build_etcd
  build_kube_apiserver
  ln -sfn "../etcd-$ETCD_VERSION/etcd" "$bin/etcd"
  ln -sfn "../kube-apiserver-$KUBE_VERSION/kube-apiserver" "$bin/kube-apiserver"
fi
build_helm
ln -sfn "../helm-$HELM_VERSION/helm" "$bin/helm"
promql_parse="$("$here/build-promql-parse.sh")"
ln -sfn "../${promql_parse#"$cache/"}" "$bin/promql-parse"
gitea="$("$here/build-gitea.sh")"
ln -sfn "../${gitea#"$cache/"}" "$bin/gitea"
fleetcontroller="$("$here/build-fleet.sh")"
ln -sfn "../${fleetcontroller#"$cache/"}" "$bin/fleetcontroller"
nats_server="$("$here/build-nats.sh")"
ln -sfn "../${nats_server#"$cache/"}" "$bin/nats-server"
echo "$bin"
