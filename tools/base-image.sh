#!/usr/bin/env bash
# Builds a stand-in for the `python:3.11-slim` base image from Debian bookworm's packages, for machines
# that cannot pull from a container registry. tools/image.py runs it only then, and caches the tarball
# under .cache/image/base/ keyed by the sha256 of this script and of the mirror lines it was given
# (so editing the package list below, or apt using another mirror, builds a new one).
#
#   tools/base-image.sh OUT.tar 'deb http://deb.debian.org/debian bookworm main' ...
#
# What differs from upstream's image: Debian's Python 3.11 in /usr/bin (upstream builds 3.11.x into
# /usr/local); the venv path the Dockerfile uses (/opt/fleet-webhook/lib/python3.11/site-packages) is
# the same. Docs, man pages and locales are left out, as in the slim image.
set -euo pipefail
out="$1"; shift
[ $# -gt 0 ] || { echo "base-image: no mirror lines given" >&2; exit 2; }

# Python and what the Dockerfile's build stage runs (python -m pip, python -m venv); CA certificates for TLS.
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates

nice mmdebstrap --variant=minbase --mode=root --format=tar --quiet \
  --include="$PACKAGES" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --aptopt='Acquire::Languages "none"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
  bookworm "$out.tmp" "$@"
mv "$out.tmp" "$out"
