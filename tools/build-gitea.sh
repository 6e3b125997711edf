#!/usr/bin/env bash
# Builds Gitea (a real git host that sends real webhooks, for the e2e suite only) from the Go module
# proxy through the wrapper module in tools/gitea/. Called by tools/build-tools.sh; prints the binary.
#
#   cache/gitea-v1.27.3/gitea     static binary (no cgo; sqlite through modernc), no bindata
#   cache/gitea-v1.27.3/static/   templates/, options/, public/ of the same version: without bindata
#                                 Gitea reads them from STATIC_ROOT_PATH at run time
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${FLEET_WEBHOOK_TOOLS_CACHE:-$root/.cache/tools}"

GITEA_VERSION=v1.27.3  # also in tools/gitea/go.mod (regenerate it with tools/gitea/gen-go-mod.sh)
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { echo "build-gitea: $*" >&2; }

dest="$cache/gitea-$GITEA_VERSION"
out="$dest/gitea"
[ -x "$out" ] && [ -d "$dest/static/templates" ] && { echo "$out"; exit 0; }
command -v go >/dev/null 2>&1 || { log "Go >= 1.26 is needed to build gitea"; exit 1; }
mkdir -p "$dest"
if [ ! -d "$dest/static/templates" ]; then
  dir="$(cd "$here/gitea" && go mod download -json "code.gitea.io/gitea@$GITEA_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  [ -d "$dir/templates" ] || { log "the Go module proxy did not give code.gitea.io/gitea@$GITEA_VERSION"; exit 1; }
  rm -rf "$dest/static.tmp"; mkdir -p "$dest/static.tmp"
  cp -R "$dir/templates" "$dir/options" "$dir/public" "$dest/static.tmp/"
  chmod -R u+w "$dest/static.tmp"  # module cache copies are read-only
  mv "$dest/static.tmp" "$dest/static"
fi
if [ ! -x "$out" ]; then
  log "building gitea $GITEA_VERSION (first run only; ~8 CPU-minutes)"
  (cd "$here/gitea" && go build -trimpath -ldflags "-s -w -X main.Version=${GITEA_VERSION#v}" -o "$out.tmp" gitea.dev)
  mv "$out.tmp" "$out"
fi
echo "$out"
