#!/usr/bin/env bash
# One-time preparation of ImageNet (imagenet2012) for adagen_jax.
#
#   bash launch/prepare_imagenet.sh /path/to/ILSVRC2012_tars
#
# The folder must hold ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
# (downloaded by hand from image-net.org). Preparation needs TensorFlow, so it
# runs in its own venv (default ~/.venvs/adagen_prep, or $PREP_VENV);
# training then reads the array_record files through tfds.data_source without
# TensorFlow. Output: ${TFDS_DATA_DIR:-~/tensorflow_datasets}/imagenet2012.
# Expect a few hours and about 150 GB of disk.
set -euo pipefail

if [[ $# -ne 1 || ! -d "$1" ]]; then
  cat >&2 <<'USAGE'
usage: bash launch/prepare_imagenet.sh /path/to/ILSVRC2012_tars
  (a folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar;
   output goes to ${TFDS_DATA_DIR:-~/tensorflow_datasets})
USAGE
  exit 2
fi
manual_dir="$(cd "$1" && pwd)"
for tar in ILSVRC2012_img_train.tar ILSVRC2012_img_val.tar; do
  if [[ ! -f "${manual_dir}/${tar}" ]]; then
    echo "error: ${manual_dir}/${tar} not found" >&2
    exit 2
  fi
done
data_dir="${TFDS_DATA_DIR:-${HOME}/tensorflow_datasets}"
venv="${PREP_VENV:-${HOME}/.venvs/adagen_prep}"

if [[ ! -x "${venv}/bin/python" ]]; then
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install --upgrade pip
  "${venv}/bin/pip" install tensorflow-cpu tensorflow-datasets array_record
fi

"${venv}/bin/tfds" build imagenet2012 \
  --manual_dir="${manual_dir}" \
  --file_format=array_record \
  --data_dir="${data_dir}"
echo "Prepared imagenet2012 in ${data_dir};"
echo "train with TFDS_DATA_DIR=${data_dir}"
