#!/bin/sh
# Container entrypoint: a GPU smoke check (csa_tf.gpu_check: the GPUs TensorFlow sees,
# a conv on the first one, or a warning line when there is none), then the command.
# CSA_TF_SKIP_GPU_CHECK=1 skips the check; CSA_TF_REQUIRE_GPU=1 makes a missing GPU an
# error instead of a warning.
set -e
if [ "${CSA_TF_SKIP_GPU_CHECK:-0}" != "1" ]; then
  if [ "${CSA_TF_REQUIRE_GPU:-0}" = "1" ]; then
    python -m csa_tf.gpu_check --require_gpu
  else
    python -m csa_tf.gpu_check
  fi
fi
exec "$@"
