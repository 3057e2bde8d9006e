# syntax=docker/dockerfile:1
# vigil worker image: one image for every role; the command picks it.
#   docker build -t vigil .
#   docker run vigil                          # vigil worker hasher (default)
#   docker run vigil vigil worker matcher
#   docker run vigil vigil topics create
#   docker run -p 8080:8080 -e VIGIL_API_HOST=0.0.0.0 vigil vigil api   # needs a token (docs/api.md)
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: compile what has no wheel (pdqhash) and install vigil into a venv ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/vigil \
 && /opt/vigil/bin/pip install --upgrade pip wheel
WORKDIR /src
# README* is a glob so a checkout without README.md still builds (pyproject names it as readme).
COPY pyproject.toml README* ./
COPY topics ./topics
COPY workers ./workers
RUN /opt/vigil/bin/pip wheel --wheel-dir /wheels . \
 && /opt/vigil/bin/pip install --no-index --find-links /wheels vigil \
 && /opt/vigil/bin/vigil --help >/dev/null

# ---- runtime: the venv only, no compiler, no source tree, non-root ----
FROM ${PYTHON_IMAGE} AS runtime
# libgomp1/libstdc++6: OpenMP and C++ runtimes for the compiled hashing extensions.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --home-dir /home/vigil --create-home --shell /usr/sbin/nologin vigil \
 && mkdir -p /media /var/lib/vigil \
 && chown vigil:vigil /var/lib/vigil
COPY --from=builder /opt/vigil /opt/vigil
# NUMBA_CACHE_DIR: the matcher compiles its search loop (workers/index/mih_kernel.py) on first start
# into a writable place; /tmp is an emptyDir under Kubernetes' readOnlyRootFilesystem.
ENV PATH=/opt/vigil/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIGIL_METRICS_HOST=0.0.0.0 \
    VIGIL_METRICS_PORT=9400 \
    VIGIL_MEDIA_ROOTS=/media \
    VIGIL_DATA_DIR=/var/lib/vigil
WORKDIR /home/vigil
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9400 8080
# /healthz is liveness only (the process answers); /readyz is the readiness probe for orchestrators.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VIGIL_METRICS_PORT', '9400'), timeout=4)"]
CMD ["vigil", "worker", "hasher"]
