# syntax=docker/dockerfile:1
# Two images from one file (docker-compose.yml and deploy/kubernetes use both):
#   docker build --target api    -t stsweep-api:0.1.0 .     API, dashboard, `db upgrade`, `token create`:
#                                                            stsweep[server], no torch
#   docker build --target worker -t stsweep-worker:0.1.0 .  trains trials on an NVIDIA GPU (or the CPU)
#
# Build arguments:
#   PYTHON_IMAGE      the base of both images: the Python the tests run on, on the Debian release they run on
#   TORCH_VERSION     the torch release the worker image installs first (before stsweep, so pip keeps it). From
#                     pip's default index it is the CUDA build, which brings its own CUDA libraries (cuBLAS,
#                     cuDNN, NCCL, ... as nvidia-* wheels): the image needs no CUDA base, only the host's driver,
#                     which the NVIDIA container runtime mounts in (see NVIDIA_* below).
#
# Both images run as the unprivileged user 10001:10001 (numeric, so Kubernetes' runAsNonRoot can check it) and
# write only to /tmp, /home/stsweep and /var/lib/stsweep: mount those (a volume or an emptyDir) and the root
# filesystem may be read-only.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
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
# The same uid and gid in both images, so a shared artifact volume is writable by both.
RUN groupadd --gid 10001 stsweep \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin stsweep \
    && mkdir -p /var/lib/stsweep/artifacts /data \
    && chown -R 10001:10001 /var/lib/stsweep
USER 10001:10001
WORKDIR /home/stsweep
EXPOSE 8000
ENTRYPOINT ["stsweep"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# --------------------------------------------------------------------------------------------------- worker
FROM ${PYTHON_IMAGE} AS worker
ARG TORCH_VERSION
# NVIDIA_*: what the NVIDIA container runtime reads to hand GPUs and the driver's compute libraries to the
# container (as the nvidia/cuda images set them). Kubernetes' device plugin overrides the device list with the
# GPUs it allocated; the deployment's CPU overlay sets it to `void`.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    HF_HOME=/var/lib/stsweep/hf-cache \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# From pip's default index: the CUDA build of torch (its own layer, cached while only stsweep changes).
RUN python -m venv /opt/venv && pip install "torch==${TORCH_VERSION}"
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/*.whl)[worker]" && rm -rf /wheels
RUN groupadd --gid 10001 stsweep \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin stsweep \
    && mkdir -p /var/lib/stsweep/artifacts /var/lib/stsweep/hf-cache /data \
    && chown -R 10001:10001 /var/lib/stsweep
USER 10001:10001
WORKDIR /home/stsweep
ENTRYPOINT ["stsweep"]
CMD ["worker", "--gpus", "all"]
