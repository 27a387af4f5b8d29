#!/usr/bin/env bash
# AdaGen on a Cloud TPU pod slice: create it, install on every worker, run.
#
#   TPU=adagen-v5p-64 ZONE=us-east5-a ACCEL=v5p-64 BUCKET=gs://my-bucket \
#     bash launch/tpu_pod.sh create
#   TPU=... ZONE=... BUCKET=... bash launch/tpu_pod.sh install
#   TPU=... ZONE=... BUCKET=... bash launch/tpu_pod.sh run \
#     --config=configs/maskgit_l.py --workdir=gs://my-bucket/runs/maskgit_l
#
# Every worker runs the same command; jax.distributed.initialize() finds the
# pod itself (ADAGEN_DISTRIBUTED=1). Workdir and TFDS data live in GCS
# (`pip install .[gcs]` gives etils/Orbax gs:// access without TensorFlow).
set -euo pipefail
: "${TPU:?set TPU}" "${ZONE:?set ZONE}"
cmd=${1:?usage: $0 create|install|run [main flags]}; shift || true
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all \
    --command="$1"
}
case "$cmd" in
  create)
    gcloud compute tpus tpu-vm create "$TPU" --zone="$ZONE" \
      --accelerator-type="${ACCEL:?set ACCEL, e.g. v5p-64}" \
      --version="${TPU_RUNTIME:-v2-alpha-tpuv5}" ;;
  install)
    gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all \
      "$(cd "$(dirname "$0")/.." && pwd)" "$TPU":~/adagen_jax
    ssh_all "python3 -m venv ~/venv && . ~/venv/bin/activate && \
      pip install -U pip && pip install 'jax[tpu]' -e ~/adagen_jax[gcs]" ;;
  run)
    ssh_all "cd ~/adagen_jax && . ~/venv/bin/activate && \
      ADAGEN_DISTRIBUTED=1 TFDS_DATA_DIR=${BUCKET:?set BUCKET}/tensorflow_datasets \
      python -m adagen_jax.main $*" ;;
  *) echo "unknown command $cmd (create|install|run)" >&2; exit 2 ;;
esac
