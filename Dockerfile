# One image for the API and the workers.
#   API:     docker run … steph-service                (CMD: steph serve)
#   worker:  docker run … steph-service steph worker   (Celery, STEPH_QUEUE=celery)
#
# torch: the default installs the CPU wheel. For GPU workers build with a CUDA wheel index, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 -t steph-service:cuda .
# and run with the NVIDIA container toolkit (docker-compose.yml reserves a GPU for the worker).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STEPH_HOME=/var/lib/steph \
    STEPH_STORE_ROOT=/var/lib/steph/models_store

# libhdf5 is bundled in the h5py wheel; curl is for the healthchecks.
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
# editable: migrations/ is found next to the app package (app/db/migrate.py)
RUN pip install -e ".[postgres]"

RUN useradd --system --create-home --home-dir /home/steph steph \
    && mkdir -p /var/lib/steph/models_store \
    && chown -R steph:steph /var/lib/steph
USER steph

EXPOSE 8000
CMD ["steph", "serve", "--host", "0.0.0.0", "--port", "8000"]
