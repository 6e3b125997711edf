#!/usr/bin/env bash
# Builds promql-parse (tools/promql-parse/main.go: Prometheus's own PromQL parser and rule-file loader
# behind a JSON interface) for the chart tests, which check the Grafana dashboard's queries and the
# PrometheusRule's alerts with it. Called by tools/build-tools.sh; prints the binary.
#
#   cache/promql-parse-v0.316.0-<key>/promql-parse
#
# The key is a hash of main.go, go.mod and go.sum, so editing the program rebuilds it. promtool is
# not built: it links every service discovery (cloud SDKs, client-go) for the same parser and rule
# checks. Measured cold (empty Go module and build caches, niced, 2 shared cores): 88 CPU-seconds,
# 64 s wall clock, peak 290 MiB RSS, 156 MB module cache + 170 MB build cache, an 8.2 MB binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${FLEET_WEBHOOK_TOOLS_CACHE:-$root/.cache/tools}"

PROMETHEUS_VERSION=v0.316.0  # the module github.com/prometheus/prometheus, i.e. Prometheus 3.16; also in go.mod
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { echo "build-promql-parse: $*" >&2; }

src="$here/promql-parse"
key="$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)"
out="$cache/promql-parse-$PROMETHEUS_VERSION-$key/promql-parse"
[ -x "$out" ] && { echo "$out"; exit 0; }
command -v go >/dev/null 2>&1 || { log "Go >= 1.26 is needed to build promql-parse"; exit 1; }
log "building promql-parse with Prometheus $PROMETHEUS_VERSION's parser (first run only; ~1.5 CPU-minutes)"
mkdir -p "$(dirname "$out")"
(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
mv "$out.tmp" "$out"
echo "$out"
