# syntax=docker/dockerfile:1
# Two images from one file (docker-compose.yml builds both):
#   docker build --target api    -t stsweep-api .      API, dashboard, `db upgrade`, `token create`: stsweep[server],
#                                                       no torch
#   docker build --target worker -t stsweep-worker .   trains trials on an NVIDIA GPU
#
# Build arguments:
#   TORCH_VERSION     the torch release the worker image installs first (before stsweep, so pip keeps it)
#   CUDA_IMAGE        the worker's base. The torch wheel brings its own CUDA libraries (cuBLAS, cuDNN, ...), so
#                     the small `base` flavour is enough; it only has to be an NVIDIA image whose CUDA version the
#                     host driver supports.

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------------------------------------------- build
# The stsweep wheel, built once from the source tree and installed into both images.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# ------------------------------------------------------------------------------------------------------ api
FROM ${PYTHON_IMAGE} AS api
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/*.whl)[server]" && rm -rf /wheels
# One unprivileged user with the same uid in both images, so the shared artifact volume is writable by both.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin stsweep \
    && mkdir -p /var/lib/stsweep/artifacts /data \
    && chown -R stsweep:stsweep /var/lib/stsweep
USER stsweep
WORKDIR /home/stsweep
EXPOSE 8000
ENTRYPOINT ["stsweep"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# --------------------------------------------------------------------------------------------------- worker
FROM ${CUDA_IMAGE} AS worker
ARG TORCH_VERSION
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    HF_HOME=/var/lib/stsweep/hf-cache
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
# From pip's default index: the CUDA build of torch.
RUN pip install "torch==${TORCH_VERSION}"
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/*.whl)[worker]" && rm -rf /wheels
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin stsweep \
    && mkdir -p /var/lib/stsweep/artifacts /var/lib/stsweep/hf-cache /data \
    && chown -R stsweep:stsweep /var/lib/stsweep
USER stsweep
WORKDIR /home/stsweep
ENTRYPOINT ["stsweep"]
CMD ["worker", "--gpus", "all"]
