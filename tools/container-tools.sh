#!/usr/bin/env bash
# Installs the daemonless container tools `make image` and tests/image need, from Debian's packages,
# when one is missing: buildah (build), podman (run), runc (the runtime), mmdebstrap (the stand-in base
# image), skopeo (inspect/copy). Nothing else on the machine is configured: the engine's storage and
# settings live in the project's cache folder (tools/image.py writes them there).
#
#   tools/container-tools.sh        install what is missing (needs root and apt), else a no-op in ms
#
# Exits non-zero when a tool is missing and cannot be installed, so `make test` fails instead of skipping.
set -euo pipefail

# command -> Debian package
declare -A PACKAGES=([buildah]=buildah [podman]=podman [runc]=runc [mmdebstrap]=mmdebstrap [skopeo]=skopeo)

missing=()
for tool in "${!PACKAGES[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGES[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

log() { echo "container-tools: $*" >&2; }
if ! command -v apt-get >/dev/null 2>&1; then
  log "missing ${missing[*]} and no apt-get here: install buildah, podman, runc, mmdebstrap and skopeo yourself"
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { log "missing ${missing[*]}: installing needs root (or sudo)"; exit 1; }
  sudo=(sudo)
fi
log "installing ${missing[*]} from Debian's packages (first run only)"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
for tool in "${!PACKAGES[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool still missing after installing"; exit 1; }
done
