#!/usr/bin/env bash
# Builds Rancher Fleet's `fleetcontroller` (its gitjob controller is what the e2e suite runs) and keeps
# the Fleet source tree it was built from, whose charts/fleet-crd/templates/crds.yaml holds Fleet's CRDs.
# Called by tools/build-tools.sh; prints the binary's path on success.
#
#   tools/build-fleet.sh                 fetch the source if missing, build if missing, print the binary
#   tools/build-fleet.sh --source-only   fetch the source if missing (no Go needed for the archive),
#                                        print the source folder (tools/fleet.py uses this for the CRDs)
#
#   cache/fleet-src-v0.16.1/                   the source tree (tools/fleet.py finds the CRDs file in it)
#   cache/fleetcontroller-v0.16.1/fleetcontroller
#
# Where the source comes from, first that applies:
#   FLEET_SRC=/path/to/fleet     a checkout of tag v0.16.1 (copied, so the cache never points into it);
#   ../shared/third_party/fleet/fleet-v0.16.1-gitjob-src.tar.gz (relative to the repo; sha256 checked):
#                                the files of v0.16.1 that fleetcontroller needs, for machines whose Go
#                                module proxy refuses github.com/rancher/fleet;
#   the Go module proxy          github.com/rancher/fleet, .../pkg/apis and .../pkg/helmvalues @v0.16.1
#                                laid out as the repository has them (the root module's zip leaves out the
#                                nested modules that its go.mod replaces with ./pkg/...).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${FLEET_WEBHOOK_TOOLS_CACHE:-$root/.cache/tools}"

FLEET_VERSION=v0.16.1
FLEET_COMMIT=5823543a3d33952b1c7868eb035ad8e15db420fc
FLEET_ARCHIVE="$root/../shared/third_party/fleet/fleet-$FLEET_VERSION-gitjob-src.tar.gz"
FLEET_ARCHIVE_SHA256=8dcd494f8771dbdfab421f58818c05730513aecaef67d1d1668cf34e3028e284
export CGO_ENABLED=0

log() { echo "build-fleet: $*" >&2; }

src="$cache/fleet-src-$FLEET_VERSION"
out="$cache/fleetcontroller-$FLEET_VERSION/fleetcontroller"

fetch_source() {
  local tmp="$src.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  if [ -n "${FLEET_SRC:-}" ]; then
    [ -f "$FLEET_SRC/go.mod" ] && [ -f "$FLEET_SRC/charts/fleet-crd/templates/crds.yaml" ] ||
      { log "FLEET_SRC=$FLEET_SRC is not a Fleet source tree (no go.mod or charts/fleet-crd/templates/crds.yaml)"; exit 1; }
    log "Fleet source from FLEET_SRC=$FLEET_SRC"
    cp -R "$FLEET_SRC/." "$tmp/"
  elif [ -f "$FLEET_ARCHIVE" ]; then
    local sum
    sum="$(sha256sum "$FLEET_ARCHIVE" | cut -d' ' -f1)"
    [ "$sum" = "$FLEET_ARCHIVE_SHA256" ] ||
      { log "$FLEET_ARCHIVE: sha256 $sum, expected $FLEET_ARCHIVE_SHA256; refusing to build from it"; exit 1; }
    log "Fleet source from $FLEET_ARCHIVE (sha256 ok)"
    tar -xzf "$FLEET_ARCHIVE" -C "$tmp"
  else
    command -v go >/dev/null 2>&1 || { log "Go >= 1.26 is needed to fetch and build Fleet"; exit 1; }
    log "Fleet source from the Go module proxy (github.com/rancher/fleet@$FLEET_VERSION)"
    local mod sub dir
    for mod in "" /pkg/apis /pkg/helmvalues; do
      dir="$(go mod download -json "github.com/rancher/fleet$mod@$FLEET_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
      [ -n "$dir" ] || { log "the Go module proxy did not give github.com/rancher/fleet$mod@$FLEET_VERSION"; exit 1; }
      sub="$tmp$mod"; mkdir -p "$sub"
      cp -R "$dir/." "$sub/"
    done
    chmod -R u+w "$tmp"  # module cache copies are read-only
  fi
  mv -T "$tmp" "$src"
}

[ -f "$src/charts/fleet-crd/templates/crds.yaml" ] || { mkdir -p "$cache"; fetch_source; }
[ "${1:-}" = "--source-only" ] && { echo "$src"; exit 0; }
if [ ! -x "$out" ]; then
  command -v go >/dev/null 2>&1 || { log "Go >= 1.26 is needed to build fleetcontroller"; exit 1; }
  log "building fleetcontroller $FLEET_VERSION (first run only; ~7 CPU-minutes)"
  mkdir -p "$(dirname "$out")"
  ld="-s -w -X github.com/rancher/fleet/pkg/version.Version=$FLEET_VERSION"
  ld="$ld -X github.com/rancher/fleet/pkg/version.GitCommit=${FLEET_COMMIT:0:8}"
  (cd "$src" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "$ld" -o "$out.tmp" ./cmd/fleetcontroller)
  mv "$out.tmp" "$out"
fi
echo "$out"
