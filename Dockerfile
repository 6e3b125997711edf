# fleet-webhook container image: `fleet-webhook serve` as uid 10001 on port 8080 (probes on 8081).
#
#   make image                            # localhost/fleet-webhook:<version>, with buildah (README "Install")
#   docker build -t fleet-webhook:0.1.0 .   # or any engine that reads a Dockerfile
#
# A normal Dockerfile on the public python:3.11-slim. `make image` (tools/image.py) builds it unchanged with
# buildah, its storage and settings kept under .cache/image/; where no registry is reachable it first builds
# a stand-in base from Debian bookworm's packages (tools/base-image.sh: Debian's Python 3.11, same venv path)
# and tags it localhost/python:3.11-slim, which `FROM python:3.11-slim` then resolves to. The machine's CA
# bundle is bind-mounted for the RUN steps only (pip behind a TLS-intercepting proxy); tests/image checks
# that no layer holds it.
#
# Only the runtime dependencies are installed (no [dev] extra), at the exact versions of constraints.txt.
# The config schema ships inside the wheel as package data (controller/data/config.schema.json is a
# symlink to ../../schema/config.schema.json in the checkout; the wheel holds the real file), so the
# image needs nothing from the source tree at run time.
#
# Left out of the venv, because nothing the receiver runs imports them (tests/image/test_contents.py checks
# that against the installed packages, and the serve test runs the result): pip and setuptools (the image
# never installs anything), the kubernetes client's asyncio copy `kubernetes/aio` (68 MB; only the
# synchronous client is used, by controller/kube.py), and the `tests` folders some packages ship (with
# jsonschema's `benchmarks`, which import them), and cffi's `setuptools_ext.py` (the setuptools hook
# that builds cffi extensions at install time; PyNaCl, for relay mode's .creds signing, only loads its
# already compiled one).
# The compiled .pyc files stay: with a read-only root nothing could write them, and every start would
# compile the kubernetes client again.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The dependencies first, from pyproject.toml's list alone: this layer is reused until that list or
# constraints.txt changes, so editing controller/ reinstalls only the project's own wheel.
COPY pyproject.toml constraints.txt ./
RUN python -m venv /opt/fleet-webhook \
 && python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > /tmp/requirements.txt \
 && /opt/fleet-webhook/bin/pip install -c constraints.txt -r /tmp/requirements.txt
COPY README.md ./
COPY schema/ schema/
COPY controller/ controller/
RUN python -m pip wheel . -c constraints.txt --no-deps -w /wheels \
 && /opt/fleet-webhook/bin/pip install -c constraints.txt --no-deps /wheels/fleet_webhook-*.whl \
 && /opt/fleet-webhook/bin/pip check \
 && /opt/fleet-webhook/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && site=/opt/fleet-webhook/lib/python3.11/site-packages \
 && rm -rf "$site/kubernetes/aio" "$site"/*/tests "$site/jsonschema/benchmarks" "$site/cffi/setuptools_ext.py" \
 && schema="$site/controller/data/config.schema.json" \
 && test -f "$schema" && test ! -L "$schema" \
 && /opt/fleet-webhook/bin/python -c "from controller import cli, config, kube, runtime; config.default_config()"

FROM python:3.11-slim
RUN groupadd --system --gid 10001 fleet-webhook \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fleet-webhook
COPY --from=build /opt/fleet-webhook /opt/fleet-webhook
ENV PATH=/opt/fleet-webhook/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so Kubernetes can verify runAsNonRoot without looking up a user name.
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["fleet-webhook"]
CMD ["serve"]
