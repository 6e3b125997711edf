# fleet-webhook front door. `make test` is the one command CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_BIN := .cache/tools/bin

.PHONY: test unit lint tools image image-save image-clean cluster run venv clean help chart-schema bench

help:
	@echo "make test      set up everything and run ruff, mypy and every test suite (what CI runs)"
	@echo "make tools     build etcd, kube-apiserver, helm, promql-parse, nats-server, gitea and fleetcontroller into .cache/tools (first run ~30 min)"
	@echo "make image     build localhost/fleet-webhook:<version> with buildah; prints its id and Python packages"
	@echo "make cluster   start a local kube-apiserver + etcd in the foreground (Ctrl-C stops it)"
	@echo "make run       local demo: control plane, sample GitRepos, fleet-webhook serve, curl to try"
	@echo "make bench     run the benchmarks, print a table, write bench/results.json"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=24' 
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Builds only what is missing from .cache/tools (keyed by version); a no-op in well under a second otherwise.
tools:
	@tools/build-tools.sh >/dev/null

# The container image (tools/image.py): installs buildah/podman/runc/mmdebstrap/skopeo from Debian's
# packages when missing, keeps the engine's storage and settings in .cache/image/, reuses cached layers.
image:
	@$(PYTHON) -m tools.image

# The image as .cache/image/fleet-webhook-<version>.tar (docker-archive), for kind/k3s/docker or a registry.
image-save:
	@$(PYTHON) -m tools.image --save

# Unmounts and deletes the private image storage (a plain rm -rf fails on podman's leftover overlay mounts).
image-clean:
	@$(PYTHON) -m tools.image --clean

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict controller tests tools bench
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

test: $(STAMP) tools image lint
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

cluster: $(STAMP) tools
	$(PY) -m tools.controlplane --crds "$$($(PY) -c 'from tools.fleet import fleet_crds_file; print(fleet_crds_file())')"

run: $(STAMP) tools
	$(PY) -m tools.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info

# schema/config.schema.json's provider blocks come from the provider registry (tools/gen_config_schema.py);
# chart/values.schema.json = that schema + the chart's settings (descriptions from chart/values.yaml).
# tests/unit/test_config.py and tests/chart/test_values_schema.py fail when either committed file is stale.
chart-schema: $(STAMP)
	$(PY) tools/gen_config_schema.py
	$(PY) tools/gen_values_schema.py

# Benchmarks (bench/README.md): a table on stdout and bench/results.json. About 5 minutes on 2 cores.
# Sizes come from the environment, e.g. `BENCH_QUICK=1 make bench` (about a minute) or
# `BENCH_ONLY=lookup,memory BENCH_LOOKUP_SIZES=100,1000 make bench`; BENCH_PROFILE=pyinstrument|cprofile
# adds a profiled throughput run (pyinstrument is a dev dependency).
bench: $(STAMP) tools
	$(PY) -m bench
