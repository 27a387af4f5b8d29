#!/usr/bin/env bash
# Idempotent setup for a fresh machine (root, no TTY): Fashion-MNIST from
# Debian, a virtualenv in .venv, adagen_jax with its test and torch extras.
#   bash setup.sh            # then .venv/bin/python -m adagen_jax.main
set -euo pipefail
cd "$(dirname "$0")"

fmnist=/usr/share/datasets/fashion-mnist
if [[ ! -f $fmnist/train-images-idx3-ubyte.gz && -z ${ADAGEN_DATA_DIR:-} ]]; then
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
py=.venv/bin/python
if ! $py -c 'import adagen_jax, jax, flax, torch, pytest' 2>/dev/null; then
  $py -m pip install -q --upgrade pip
  # The CPU build of torch (only used to read/verify PyTorch checkpoints);
  # pinned so pip does not pull a multi-GB CUDA build.
  $py -m pip install -q 'torch==2.13.0'
  $py -m pip install -q -e '.[test,torch]'
fi
echo "setup ok: $($py -c 'import jax; print("jax", jax.__version__)')"
