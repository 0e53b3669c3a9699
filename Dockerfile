# csa_tf for NVIDIA GPU hosts: TensorFlow 2.21 with its CUDA libraries from PyPI.
#
#   docker build -t csa_tf .
#   docker run --gpus all -v "$PWD/data:/data" -v "$PWD/runs:/runs" csa_tf \
#     python -m csa_tf.train --flagfile=experiments/mscmr.flags --data_dir=/data/mscmr \
#     --model_dir=/runs/mscmr_csa
#
# The CUDA base image supplies the NVIDIA container runtime set-up (driver capabilities,
# the CUDA version check against the host driver, forward-compatibility libraries);
# TF 2.21 is built for CUDA 12.5 / cuDNN 9, whose libraries `tensorflow[and-cuda]`
# installs as wheels (so the image does not carry a second copy from a -cudnn- base).
# The entrypoint prints the GPUs TensorFlow sees (a warning when none) before the command.
FROM nvidia/cuda:12.5.1-base-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 22.04's Python 3.10 (csa_tf needs >= 3.10). Unpinned apt versions: the
# distribution's security updates replace pinned ones.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir pip==26.3

# The large layer first, so that code changes do not reinstall TensorFlow and CUDA.
RUN pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0"

WORKDIR /opt/csa_tf
COPY setup.py README.md ./
COPY csa_tf ./csa_tf
COPY data_prep ./data_prep
COPY experiments ./experiments
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir . \
 && python -c "import csa_tf.training.trainer, csa_tf.visualize, csa_tf.export"
COPY docker/entrypoint.sh /usr/local/bin/csa_tf-entrypoint

# A non-root user owns the mounted data and run folders.
RUN useradd --create-home --uid 1000 --shell /bin/bash csa \
 && mkdir -p /data /runs \
 && chown csa:csa /data /runs
USER 1000:1000
VOLUME ["/data", "/runs"]

ENTRYPOINT ["csa_tf-entrypoint"]
CMD ["python", "-m", "csa_tf.train", "--helpshort"]
