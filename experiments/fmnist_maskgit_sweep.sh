#!/bin/bash
# Issue 4's table on the shipped Fashion-MNIST MaskGIT: trains every policy
# variant at T=4 and T=8 for each training seed, evaluates each trained seed
# on 10 000 class-balanced samples (sampling seed = training seed), and
# evaluates the hand-crafted and tuned schedules on the same seeds.
#
#   bash experiments/fmnist_maskgit_sweep.sh [RUNS] [PARALLEL] [JOB...]
#   python experiments/fmnist_table.py --stage=table --out=RUNS/rows.jsonl
#
# RUNS (default runs/sweep) holds one workdir per run, its log and rows.jsonl.
# PARALLEL jobs run at once, each pinned to its own core (taskset) so they
# do not fight over the same cores. JOBs are 'VARIANT T SEED' (or
# 'heuristic T' / 'tuned T'); the default list, in priority order, is printed
# by `JOBS=list`. A run whose policy exists is not retrained and a job already
# evaluated is skipped, so an interrupted sweep is resumed by running the same
# command again.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/sweep}
parallel=${2:-1}
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "$runs"

# What each variant adds to the embedded default (adagen_jax/default_config.py).
# The adversarial discriminator of the shipped policies: 3 steps, lr 3e-4.
strong_d='--config.reward.d_steps=3 --config.reward.lr=3e-4'
declare -A FLAGS=(
  [adversarial]=$strong_d
  [nonadaptive]="--config.policy.kind=nonadaptive $strong_d"
  [fd]='--config.reward.name=fd'
  [static]='--config.reward.name=static'
  # Ablation: each sample normalised on its own in the discriminator heads
  # (virtual batch 1), so it cannot score a group's diversity.
  [adversarial_vbs1]="$strong_d --config.reward.virtual_bs=1"
)
declare -A NAMES=(
  [adversarial]='AdaGen, adversarial reward'
  [nonadaptive]='AdaGen non-adaptive, adversarial reward'
  [fd]='AdaGen, FD reward'
  [static]='AdaGen, static reward (classifier confidence)'
  [adversarial_vbs1]='AdaGen, adversarial reward, per-sample discriminator'
  [heuristic]='hand-crafted (reference constants)'
  [tuned]='tuned hand-crafted'
)

run_job() {  # VARIANT T [SEED]
  if [[ -z ${NAMES[${1:-none}]:-} ]]; then
    echo "unknown job '$*'; use 'VARIANT T SEED' with VARIANT one of" \
      "${!FLAGS[*]}, or 'heuristic T' / 'tuned T'" >&2
    exit 2
  fi
  local variant=$1 steps=$2 seed=${3:-} dir method seeds name=${NAMES[$1]}
  if [[ $variant == heuristic || $variant == tuned ]]; then
    dir=$runs/${variant}_T$steps seeds=0,1,2
    method=$variant
    [[ $variant == tuned ]] && method=tuned:docs/results/tuned_T$steps.json
  else
    dir=$runs/${variant}_T${steps}_s$seed seeds=$seed
    method=policy:$dir/policy
    if [[ ! -f $dir/policy/policy.json ]]; then
      # shellcheck disable=SC2086
      python -m adagen_jax.main --workdir="$dir" ${FLAGS[$variant]} \
        --config.generator.steps="$steps" --config.seed="$seed" \
        --config.final_eval_num=0 >> "$dir.log" 2>&1
    fi
  fi
  [[ -f $dir.evaluated ]] && return 0
  python experiments/fmnist_table.py --stage=eval --steps="$steps" \
    --method="$method" --seeds="$seeds" --num=10000 --name="$name" \
    --out="$runs/rows.jsonl" >> "$dir.log" 2>&1
  touch "$dir.evaluated"
  echo "$(date +%H:%M) done: $*"
}

default_jobs() {
  for seed in 0 1 2; do
    for steps in 4 8; do
      for variant in adversarial nonadaptive fd static; do
        echo "$variant $steps $seed"
      done
      if [[ $steps == 4 ]]; then echo "adversarial_vbs1 4 $seed"; fi
    done
    if [[ $seed == 0 ]]; then
      printf '%s\n' 'heuristic 4' 'tuned 4' 'heuristic 8' 'tuned 8'
    fi
  done
}

if [[ ${JOBS:-} == list ]]; then default_jobs; exit 0; fi
if [[ ${1:-} == --run ]]; then  # one job on core $2 (xargs calls this)
  (( parallel > 1 )) && taskset -cp "$2" $$ > /dev/null
  shift 2
  run_job "$@"
  exit 0
fi
{ if (( $# )); then printf '%s\n' "$@"; else default_jobs; fi; } |
  RUNS=$runs xargs -P "$parallel" -L1 --process-slot-var=SLOT \
    sh -c 'exec bash "$0" "$RUNS" '"$parallel"' --run "$SLOT" "$@"' \
    "$0"
