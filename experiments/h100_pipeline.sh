#!/bin/bash
# What a session with the H100 runs, as one background pipeline, in order:
#   A. trains the Fashion-MNIST SiT, DiT and VAR (issues 5, 6), side by side,
#      each ending with its 3-seed evaluation at the hand-crafted settings;
#   B. the policy sweeps of the new generators and a larger MaskGIT run
#      (issues 4, 5, 6), several jobs per generator side by side.
# The speed benchmarks are not part of it: benchmarks/gpu_suite.sh runs
# them in one call, alone on the GPU.
#
#   setsid bash experiments/h100_pipeline.sh OUT > OUT.log 2>&1 < /dev/null &
#   SMOKE=1 bash experiments/h100_pipeline.sh /tmp/smoke   # toy sizes, CPU
#
# OUT gets one log per job, the sweep rows (sweep/rows.jsonl) and a file
# per finished stage (A.done, B.done). The generators are written into this
# checkout's adagen_jax/assets, so run it from a copy of the repository if
# the checkout is synced while it runs.
# SMOKE=1 checks the script end to end in minutes (tiny steps and
# batches); its numbers mean nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-runs/h100}")
mkdir -p "$out"
stage() { echo "$(date +%T) $*"; }

if [[ ${SMOKE:-0} == 1 ]]; then
  flow='--config.train.steps=3 --config.train.warmup_steps=1
        --config.eval.num=100 --config.eval.batch=50 --config.eval.seeds=(0,)'
  var='--config.vqvae_train.steps=3 --config.vqvae_train.warmup_steps=1
       --config.var_train.steps=3 --config.var_train.warmup_steps=1
       --config.eval.num=100 --config.eval.batch=50 --config.eval.seeds=(0,)'
  rl='--config.ppo.trajectories=16 --config.ppo.rollout_batch=16
      --config.reward.d_batch=16 --config.num_iterations=2'
  sweep_jobs=('adversarial 4 0' 'heuristic 4')
  var_jobs=('nonadaptive 6 0' 'heuristic 6')
  maskgit_jobs=('adversarial 4 0')
  export EVAL_NUM=200
else
  # 85 epochs of the 60k images for the flows; the VAR's two stages likewise
  # longer than the CPU-sized config (which is what the GPU is for).
  flow='--config.train.steps=20000 --config.train.batch_size=256
        --config.train.warmup_steps=500'
  var='--config.vqvae_train.steps=8000 --config.vqvae_train.batch_size=128
       --config.var_train.steps=20000 --config.var_train.batch_size=256
       --config.var_train.warmup_steps=500'
  # The GPU's RL settings: 8x the CPU's trajectories per iteration and 3x
  # its iterations, at the CPU config's learning rate.
  rl='--config.ppo.trajectories=2048 --config.ppo.rollout_batch=1024
      --config.reward.d_batch=512 --config.num_iterations=200
      --config.policy.std_decay_steps=(150,) --config.checkpoint_every=50
      --config.plots_every=100'
  sweep_jobs=()  # the default list
  var_jobs=()
  # The MaskGIT at twice these trajectories (the reference's 4096).
  maskgit_jobs=('adversarial 8 0' 'nonadaptive 8 0')
fi
# Several JAX processes share the GPU: no preallocation of 75% each.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1

if [[ ! -f $out/A.done ]]; then
  stage 'A: pretrain sit, dit, var'
  for p in sit dit; do
    # shellcheck disable=SC2086
    python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:$p \
      --workdir="$out/pretrain_$p" $flow > "$out/pretrain_$p.log" 2>&1 &
  done
  # shellcheck disable=SC2086
  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_var.py \
    --workdir="$out/pretrain_var" $var > "$out/pretrain_var.log" 2>&1 &
  wait
  touch "$out/A.done"
fi

stage 'B: sweeps'
sweep() {  # GENERATOR RUNS FIRST_CORE PARALLEL [JOB...] (EXTRA set)
  GENERATOR=$1 FIRST_CORE=$3 bash experiments/fmnist_sweep.sh \
    "$out/$2" "$4" "${@:5}" > "$out/$2_$1.log" 2>&1
}
EXTRA=$rl sweep sit sweep 0 4 "${sweep_jobs[@]}" &
EXTRA=$rl sweep dit sweep 4 4 "${sweep_jobs[@]}" &
EXTRA=$rl sweep var sweep 8 3 "${var_jobs[@]}" &
# A separate rows file: not pooled with the CPU-trained MaskGIT rows.
EXTRA="$rl --config.ppo.trajectories=4096 --config.ppo.rollout_batch=2048" \
  sweep maskgit maskgit_4096 11 2 "${maskgit_jobs[@]}" &
wait
touch "$out/B.done"
stage done
