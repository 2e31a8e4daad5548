# syntax=docker/dockerfile:1
#
# Two images from one file:
#   --target api     FastAPI app and the `atelier` CLI (migrations); installs .[api], no torch
#   --target worker  Celery workers and beat; installs .[worker,api] with the CUDA build of torch
#
#   docker build --target api -t atelier/api .
#   docker build --target worker -t atelier/worker .
#   docker build --target worker --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# Dependencies are installed from the lock files before the source is copied, so a code change
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
# /var/lib/atelier/work: the workers' scratch files (ATELIER_WORK_DIR, a volume in compose, which
# takes this directory's owner when it is first mounted).
RUN groupadd --system --gid 10001 atelier \
 && useradd --system --uid 10001 --gid atelier --create-home --home-dir /home/atelier atelier \
 && mkdir -p /app /var/lib/atelier/work && chown atelier:atelier /app /var/lib/atelier/work

# ---------------------------------------------------------------------------------------------------
# Only what the distribution needs. README.m[d]: the readme is copied when present (a wildcard that
# matches nothing is allowed as long as the instruction copies something).
FROM scratch AS source
COPY pyproject.toml README.m[d] /src/
COPY atelier /src/atelier

# ---------------------------------------------------------------------------------------------------
# Third-party packages come from the lock files in docker/ (exact versions and sha256 hashes, made by
# `make lock` from pyproject.toml), so two builds a month apart install the same bytes.
FROM base AS build-base
RUN python -m venv /opt/venv && pip install --upgrade pip setuptools wheel
WORKDIR /src

# ---------------------------------------------------------------------------------------------------
FROM build-base AS build-api
COPY docker/api.lock /tmp/api.lock
RUN pip install --require-hashes --no-deps -r /tmp/api.lock
COPY --from=source /src /src
RUN pip install --no-deps . && atelier --help > /dev/null

# ---------------------------------------------------------------------------------------------------
FROM build-base AS build-worker
# torch 2.13.0 as PyPI publishes it for Linux x86_64: a CUDA 13 build (nvidia-*-cu13 wheels, NVIDIA
# driver 580 or newer), locked with its hashes in docker/worker.lock. For another build, name its
# index, e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (or a cu12x index that
# publishes 2.13.0 for older drivers): torch and its CUDA wheels are then taken from there instead.
ARG TORCH_INDEX_URL=
# Keep equal to the torch pin of the worker extra in pyproject.toml (tests/unit/test_compose.py checks).
ARG TORCH_VERSION=2.13.0
COPY docker/worker.lock docker/filter_lock.py /tmp/
RUN if [ -z "${TORCH_INDEX_URL}" ]; then \
      pip install --require-hashes --no-deps -r /tmp/worker.lock; \
    else \
      pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}" \
      && python /tmp/filter_lock.py /tmp/worker.lock torch triton 'nvidia-*' 'cuda-*' > /tmp/rest.lock \
      && pip install --require-hashes --no-deps -r /tmp/rest.lock; \
    fi
COPY --from=source /src /src
RUN pip install --no-deps . && python -c "import torch, atelier.workers.celery_app"

# ---------------------------------------------------------------------------------------------------
FROM base AS worker
# Which GPUs a container sees comes from compose's device reservation, never from the image
# (NVIDIA_VISIBLE_DEVICES=all here would hand every GPU to any container); a gpu-worker replica then
# takes one of them with atelier-gpu-slot.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build-worker /opt/venv /opt/venv
# The gpu-worker entry point: one GPU per replica under `--scale gpu-worker=N` (flock is util-linux's).
COPY --chmod=755 docker/gpu-slot.sh /usr/local/bin/atelier-gpu-slot
RUN mkdir -p /run/atelier/gpu-slots && chown atelier:atelier /run/atelier/gpu-slots \
 && command -v flock > /dev/null
USER atelier
WORKDIR /app
CMD ["celery", "-A", "atelier.workers.celery_app", "worker", "-Q", "io", "--concurrency", "2"]

# ---------------------------------------------------------------------------------------------------
# Last, so that a plain `docker build .` gives the small API image.
FROM base AS api
COPY --from=build-api /opt/venv /opt/venv
USER atelier
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["uvicorn", "atelier.api.main:app", "--host", "0.0.0.0", "--port", "8000"]
