# One Dockerfile for the API and the workers; docker-compose.yml builds it twice (see docs/production.md):
#   steph-service:cpu   API + CPU workers     TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (default)
#   steph-service:cuda  GPU workers           TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (or cu126 …)
#
# TORCH_INDEX_URL is the pip index torch is installed from, and so which torch build the image holds: the CPU
# wheel (small, runs anywhere) or a CUDA wheel (cuXYZ = the CUDA runtime bundled in the wheel; the host needs an
# NVIDIA driver at least as new as that CUDA version, plus the NVIDIA container toolkit). A CPU image on a GPU
# host trains on the CPU; a CUDA image on a host without a GPU falls back to the CPU with STEPH_DEVICE=auto.
#   docker build -t steph-service:cpu .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t steph-service:cuda .
#   API:     docker run … steph-service:cpu                      (CMD: steph serve)
#   worker:  docker run … steph-service:cuda steph worker        (Celery, STEPH_QUEUE=celery)
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STEPH_HOME=/var/lib/steph \
    STEPH_STORE_ROOT=/var/lib/steph/models_store

# libhdf5 is bundled in the h5py wheel; curl is for the API's health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/steph

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY migrations migrations
COPY models_store/README.md models_store/README.md
# editable: migrations/ is found next to the app package (app/db/migrate.py); s3 = boto3 for STEPH_STORE=s3
RUN pip install -e ".[postgres,s3]"

RUN useradd --system --create-home --home-dir /home/steph steph \
    && mkdir -p /var/lib/steph/models_store \
    && chown -R steph:steph /var/lib/steph
USER steph

EXPOSE 8000
CMD ["steph", "serve", "--host", "0.0.0.0", "--port", "8000"]
