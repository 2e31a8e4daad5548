# syntax=docker/dockerfile:1
#
# Two images from one file:
#   --target api     FastAPI app and the `atelier` CLI (migrations); installs .[api], no torch
#   --target worker  Celery workers and beat; installs .[worker,api] with torch from the CUDA wheel index
#
#   docker build --target api -t atelier/api .
#   docker build --target worker -t atelier/worker .
#   docker build --target worker --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# Dependencies are installed from pyproject.toml before the source is copied, so a code change
# rebuilds only the last layers. Runtime images hold the virtual environment and nothing else.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 atelier \
 && useradd --system --uid 10001 --gid atelier --create-home --home-dir /home/atelier atelier \
 && mkdir /app && chown atelier:atelier /app

# ---------------------------------------------------------------------------------------------------
# Only what the distribution needs. README.m[d]: the readme is copied when present (a wildcard that
# matches nothing is allowed as long as the instruction copies something).
FROM scratch AS source
COPY pyproject.toml README.m[d] /src/
COPY core /src/core
COPY api /src/api
COPY workers /src/workers
COPY cli /src/cli
COPY migrations /src/migrations

# ---------------------------------------------------------------------------------------------------
FROM base AS build-base
RUN python -m venv /opt/venv && pip install --upgrade pip setuptools wheel
WORKDIR /src
COPY pyproject.toml ./
# Print the base dependencies plus those of the named extras (self-references like atelier[...] skipped).
RUN printf '%s\n' \
    'import sys, tomllib' \
    'project = tomllib.load(open("pyproject.toml", "rb"))["project"]' \
    'deps = list(project["dependencies"])' \
    'for extra in sys.argv[1:]:' \
    '    deps += project["optional-dependencies"][extra]' \
    'print("\n".join(d for d in deps if not d.startswith(project["name"] + "[")))' \
    > /usr/local/bin/requirements-from-pyproject.py

# ---------------------------------------------------------------------------------------------------
FROM build-base AS build-api
RUN python /usr/local/bin/requirements-from-pyproject.py api > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY --from=source /src /src
RUN pip install --no-deps . && atelier --help > /dev/null

# ---------------------------------------------------------------------------------------------------
FROM build-base AS build-worker
# CUDA 12.4 wheels by default; pass https://download.pytorch.org/whl/cpu for a CPU-only image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
# Keep equal to the torch pin of the worker extra in pyproject.toml (tests/unit/test_compose.py checks).
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
RUN python /usr/local/bin/requirements-from-pyproject.py worker api > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY --from=source /src /src
RUN pip install --no-deps . && python -c "import torch, workers.celery_app"

# ---------------------------------------------------------------------------------------------------
FROM base AS worker
# Seen by the NVIDIA container runtime when compose reserves a GPU; harmless without one.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build-worker /opt/venv /opt/venv
USER atelier
WORKDIR /app
CMD ["celery", "-A", "workers.celery_app", "worker", "-Q", "io", "--concurrency", "2"]

# ---------------------------------------------------------------------------------------------------
# Last, so that a plain `docker build .` gives the small API image.
FROM base AS api
COPY --from=build-api /opt/venv /opt/venv
USER atelier
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
