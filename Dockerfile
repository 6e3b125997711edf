# fleet-webhook container image: `fleet-webhook serve` as uid 10001 on port 8080.
#
#   docker build -t fleet-webhook:0.1.0 .
#
# Only the runtime dependencies are installed (no [dev] extra), at the exact versions of constraints.txt.
# The config schema ships inside the wheel as package data (controller/data/config.schema.json is a
# symlink to ../../schema/config.schema.json in the checkout; the wheel holds the real file), so the
# image needs nothing from the source tree at run time. tests/chart/test_image.py builds the same wheel.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY schema/ schema/
COPY controller/ controller/
RUN python -m pip wheel . -c constraints.txt --no-deps -w /wheels \
 && python -m venv /opt/fleet-webhook \
 && /opt/fleet-webhook/bin/pip install -c constraints.txt /wheels/fleet_webhook-*.whl \
 && schema=/opt/fleet-webhook/lib/python3.11/site-packages/controller/data/config.schema.json \
 && test -f "$schema" && test ! -L "$schema" \
 && /opt/fleet-webhook/bin/python -c "from controller import config; config.default_config()"

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
