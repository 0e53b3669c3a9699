#!/usr/bin/env bash
# Fetches, on a machine with a package registry, the wheels benchmarks/gpu_report.sh
# needs on the GPU machine, which has JAX (Python 3.12) but no registry: Keras and the
# dependencies of it that JAX does not bring. Into benchmarks/wheels/ (git-ignored;
# name it in the device call's `carry`).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --dest wheels \
  keras namex optree absl-py rich markdown-it-py mdurl pygments h5py packaging
ls -l wheels
