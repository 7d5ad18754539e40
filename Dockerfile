# syntax=docker/dockerfile:1
# The image of the Prefect server and of the workers in docker-compose.yml, and of flow runs on the
# docker and kubernetes work pools: Python 3.11, torch 2.13.0, this package, and the repository at
# /opt/distiller (the deployments' working directory inside containers).
#
#   docker build -t domain-distiller:cpu .                              # CPU-only torch (small)
#   docker build -t domain-distiller:cuda --build-arg TORCH_VARIANT=cuda .
#
# The CUDA variant is PyPI's torch wheel for Linux, which brings its CUDA libraries as pip packages:
# the host needs only the NVIDIA driver and the NVIDIA Container Toolkit.
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG CPU_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

# git: for the git_clone pull step (prefect.yaml); tini: signals reach the worker and its flow runs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/distiller

# torch first and pinned, so no dependency pulls another build (the CPU image stays small).
RUN if [ "$TORCH_VARIANT" = "cpu" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$CPU_INDEX_URL"; \
    elif [ "$TORCH_VARIANT" = "cuda" ]; then \
        pip install "torch==${TORCH_VERSION}"; \
    else \
        echo "TORCH_VARIANT must be cpu or cuda, got $TORCH_VARIANT" >&2; exit 1; \
    fi

# Dependencies change less often than the code: install them in their own layer (with s3fs, for a
# storage_url on S3 or MinIO).
COPY pyproject.toml README.md ./
COPY distiller/__init__.py distiller/__init__.py
RUN pip install ".[s3]" && pip uninstall -y domain-distiller

COPY . .
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 1000 distiller \
    && mkdir -p runs \
    && chown distiller runs

# The run folders (a volume shared by every worker) are owned by this user; nothing else is written.
USER distiller
ENTRYPOINT ["tini", "--"]
CMD ["prefect", "worker", "start", "--pool", "distill-cpu", "--type", "process", "--with-healthcheck"]
