#!/usr/bin/env bash
# Builds nats-server (the NATS JetStream broker relay mode runs on, docs/relay.md) for the relay tests,
# straight from the Go module proxy. Called by tools/build-tools.sh; prints the binary.
#
#   cache/nats-server-v2.15.3/nats-server     static binary (no cgo)
#
# No wrapper module under tools/: github.com/nats-io/nats-server/v2 has no replace directives, so
# `go install module@version` builds it against its own go.sum (checked by the Go checksum database),
# with the same flags as every other tool here (CGO_ENABLED=0, -trimpath, -ldflags "-s -w").
# Measured (niced, 2 shared cores, another Go build running, nats modules not yet downloaded):
# 31 CPU-seconds, 36 s wall clock, peak 1.1 GiB RSS (the Go toolchain), a 17 MB binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${FLEET_WEBHOOK_TOOLS_CACHE:-$root/.cache/tools}"

NATS_SERVER_VERSION=v2.15.3  # the module github.com/nats-io/nats-server/v2; bumping it changes the cache key
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { echo "build-nats: $*" >&2; }

out="$cache/nats-server-$NATS_SERVER_VERSION/nats-server"
[ -x "$out" ] && { echo "$out"; exit 0; }
command -v go >/dev/null 2>&1 || { log "Go >= 1.26 is needed to build nats-server"; exit 1; }
log "building nats-server $NATS_SERVER_VERSION (first run only)"
tmp="$(dirname "$out").tmp"
rm -rf "$tmp"; mkdir -p "$tmp"
GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION"
mkdir -p "$(dirname "$out")"
mv "$tmp/nats-server" "$out.tmp"; rmdir "$tmp"
mv "$out.tmp" "$out"
echo "$out"
