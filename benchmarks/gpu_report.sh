#!/usr/bin/env bash
# Runs benchmarks.gpu_report on the GPU machine (JAX, no TensorFlow, no registry), with
# the wheels of benchmarks/fetch_gpu_wheels.sh unpacked beside the checkout (wheels are
# zip files; unpacking needs no pip). Writes gpu_benchmarks.md and the log into $OUT
# (or the current folder). Arguments go to benchmarks.gpu_report.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD}"
deps="${TMPDIR:-/tmp}/csa_tf_gpu_deps"
python3 - "$deps" <<'PY'
# Only the packages this Python lacks: the machine's own (numpy, JAX, ...) stay first.
import glob, importlib.util, os, sys, zipfile
MODULES = {"keras": "keras", "namex": "namex", "optree": "optree", "absl_py": "absl",
           "rich": "rich", "markdown_it_py": "markdown_it", "mdurl": "mdurl",
           "pygments": "pygments", "h5py": "h5py", "packaging": "packaging"}
for wheel in sorted(glob.glob("benchmarks/wheels/*.whl")):
  module = MODULES.get(os.path.basename(wheel).split("-")[0].lower())
  if module and importlib.util.find_spec(module) is None:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
    print(f"unpacked {os.path.basename(wheel)}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia_smi.csv" || true
PYTHONPATH="$deps:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1 \
  python3 -m benchmarks.gpu_report --output="$out/gpu_benchmarks.md" "$@" 2>&1 \
  | tee "$out/gpu_report.log"
