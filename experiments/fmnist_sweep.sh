#!/bin/bash
# The results tables of a shipped Fashion-MNIST generator (issues 4, 5, 6):
# trains every policy variant at each step count for each training seed,
# evaluates each trained seed on 10 000 class-balanced samples (sampling
# seed = training seed), and evaluates the hand-crafted and tuned schedules
# on the same seeds.
#
#   bash experiments/fmnist_sweep.sh [RUNS] [PARALLEL] [JOB...]
#   GENERATOR=sit EXTRA='--config.ppo.trajectories=1024' \
#       bash experiments/fmnist_sweep.sh runs/sit_sweep 8
#   python experiments/fmnist_table.py --stage=table --out=RUNS/rows.jsonl
#
# GENERATOR is maskgit (default), sit, dit or var (configs/fmnist_GENERATOR.py);
# EXTRA is added to every training command (e.g. a GPU's larger batches).
# The tuned schedule is read from
# adagen_jax/assets/tuned/fmnist_<GENERATOR>_T<steps>.json (what
# `adagen_jax.sample --policy=tuned` ships) and
# tuned first (fmnist_table.py --stage=tune) where that file is missing.
#
# RUNS (default runs/sweep) holds one workdir per run, its log and rows.jsonl.
# PARALLEL jobs run at once, each pinned to its own core (taskset; cores
# FIRST_CORE, FIRST_CORE + 1, ...) so they do not fight over the same cores;
# one job is pinned only where FIRST_CORE is set.
# JOBs are 'VARIANT T SEED' (or 'heuristic T' / 'tuned T'); the default list,
# in priority order, is printed by `JOBS=list`. A run whose policy exists is not retrained and a job already
# evaluated is skipped, so an interrupted sweep is resumed by running the same
# command again.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/sweep}
parallel=${2:-1}
shift $(( $# < 2 ? $# : 2 ))
gen=${GENERATOR:-maskgit}
case $gen in
  maskgit|sit|dit) step_counts='4 8' ;;
  var) step_counts=6 ;;  # a step per scale
  *) echo "GENERATOR=$gen; use maskgit, sit, dit or var" >&2; exit 2 ;;
esac
# Each generator's config and its recipe (experiment.CPU_FD_*).
prefix=${gen}_ config=--config=configs/fmnist_$gen.py
variants='table table_nonadaptive'

# What each variant adds to its generator's config.
# The adversarial discriminator of the shipped policies: 3 steps, lr 3e-4.
strong_d='--config.reward.d_steps=3 --config.reward.lr=3e-4'
# Reconstructed reals: the discriminator's reals pass the MaskGIT tokenizer
# first, so it cannot score the tokenizer's artefacts (which no policy can
# remove).
recon="$strong_d --config.reward.real_reconstructed=True"
# Started at the tuned schedule (chosen on sampling seed 100, never a table
# seed): rollouts in groups of 4 from one noise, the table at a third of
# the rate.
from_tuned='--config.ppo.group_size=4 --config.policy.table_init=tuned
  --config.ppo.table_learning_rate=0.01'
# The same with the FD reward on DiscBackbone's block 3:
# experiment.CPU_FD_FROM_TUNED, the embedded default's recipe. The backbone
# is named so that the flows' configs (on ContrastNet) use it too.
fidx3_tuned="$from_tuned --config.reward.backbone=fmnist
  --config.reward.feature_index=3"
# The same with 512 trajectories per iteration and a tenth of
# DiscBackbone's class confidence added (the MaskGIT T=8 recipe).
conf01="$fidx3_tuned --config.ppo.trajectories=512
  --config.reward.static_weight=0.1 --config.reward.static_backbone=fmnist"
# The KL penalty towards the starting policy (ppo.kl_coef) that anchors a
# from-tuned run to the tuned start.
kl001='--config.ppo.kl_coef=0.01'
# From the tuned schedule with the FD on DiscBackbone's last block, named
# for the flows' configs (which default to ContrastNet).
disc4="$from_tuned --config.reward.backbone=fmnist
  --config.reward.feature_index=-1"
declare -A FLAGS=(
  # The config's own recipe (FD reward, per-step table at its own rate).
  [table]=''
  [table_nonadaptive]='--config.policy.kind=nonadaptive'
  # The same with rollouts in groups of 4 from one noise and the group's
  # mean reward as the advantage baseline (ppo.make_batch).
  [table_group]='--config.ppo.group_size=4'
  [table_group_nonadaptive]='--config.ppo.group_size=4 --config.policy.kind=nonadaptive'
  # Started at the tuned schedule (chosen on sampling seed 100, never a
  # table seed), the table at a third of the rate.
  [table_group_tuned]="$from_tuned"
  [table_group_tuned_nonadaptive]="$from_tuned --config.policy.kind=nonadaptive"
  # The same with 512 trajectories per iteration (what held the MaskGIT T=4
  # seeds together, table_group_tuned_fidx3_b512), on the config's reward.
  [table_group_tuned_b512]="$from_tuned --config.ppo.trajectories=512"
  # The table frozen at the tuned schedule (learning rate 0): the network
  # learns only each sample's deviation from it, so the schedule-wide part
  # cannot drift with the reward's noise.
  [table_group_frozen]='--config.ppo.group_size=4 --config.policy.table_init=tuned
    --config.ppo.table_learning_rate=0.0'
  # From the tuned schedule with the reward backbone's class confidence
  # added at equal weight (as CPU_FD_CONTRAST_CONF): at T=8 the FD reward
  # alone trades label accuracy for recall.
  [table_group_tuned_conf1]="$from_tuned --config.reward.static_weight=1.0
    --config.reward.static_backbone=fmnist"
  # The same at a third of the weight: at 1.0 the confidence drives the
  # token sampling temperature to 0.2-0.4 and recall to 0.33 at T=8.
  [table_group_tuned_conf03]="$from_tuned --config.reward.static_weight=0.3
    --config.reward.static_backbone=fmnist"
  # The same with the SiT's reward (CPU_FD_CONTRAST_CONF: FD on ContrastNet
  # stage 0 + DiscBackbone's class confidence).
  [table_group_tuned_contrast0_conf1]="$from_tuned --config.reward.backbone=fmnist_contrast
    --config.reward.feature_index=0 --config.reward.static_weight=1.0
    --config.reward.static_backbone=fmnist"
  # DIAGNOSTIC, never shipped: table_group_tuned with the FD reward on
  # FeatureNet against training-split reals (the evaluation network). Does
  # the machinery gain from the tuned optimum when the reward is aligned?
  [diag_group_tuned]="$from_tuned --config.reward.backbone=featurenet_diagnostic"
  # From the tuned schedule with the FD reward on DiscBackbone's block 3,
  # which ranks samples most like FeatureNet (Spearman +0.78 against the
  # diagnostic, docs/experiments/maskgit14_T8_rewards.md).
  [table_group_tuned_fidx3]=$fidx3_tuned
  [table_group_tuned_fidx3_nonadaptive]="$fidx3_tuned --config.policy.kind=nonadaptive"
  # The same with twice the trajectories per iteration (the reward's and
  # the advantage's noise over twice the samples): do the seeds still split?
  [table_group_tuned_fidx3_b512]="$fidx3_tuned --config.ppo.trajectories=512"
  [table_group_tuned_fidx3_b512_nonadaptive]="$fidx3_tuned --config.ppo.trajectories=512
    --config.policy.kind=nonadaptive"
  # The same plus a tenth of DiscBackbone's class confidence: at T=8 block
  # 3's FD pushes sampling warmer and guidance down, the confidence the
  # other way at ~4x the strength (RESULTS, "Why T=8 loses"); 0.3 and 1.0
  # overshoot.
  [table_group_tuned_fidx3_b512_conf01]=$conf01
  [table_group_tuned_fidx3_b512_conf01_nonadaptive]="$conf01 --config.policy.kind=nonadaptive"
  # conf01 anchored to the tuned start by a KL penalty (ppo.kl_coef): does
  # it hold the seed that walks away without freezing the others?
  [table_group_tuned_fidx3_b512_conf01_kl001]="$conf01 $kl001"
  # A third of that anchor: 0.01 holds the drifting seed 2 but moves seed 0
  # off its good end (6.53 against 5.54 unanchored).
  [table_group_tuned_fidx3_b512_conf01_kl0003]="$conf01 --config.ppo.kl_coef=0.003"
  # The same at 1024 trajectories per iteration: at T=4, doubling them
  # (256 -> 512) lowered both the mean and the seed spread.
  [table_group_tuned_fidx3_b1024_conf01_kl0003]="$conf01 --config.ppo.kl_coef=0.003
    --config.ppo.trajectories=1024"
  [table_group_tuned_fidx3_b1024_conf01_kl0003_nonadaptive]="$conf01
    --config.ppo.kl_coef=0.003 --config.ppo.trajectories=1024
    --config.policy.kind=nonadaptive"
  # The last-block recipe (VAR's) with the same anchor.
  [table_group_tuned_kl001]="$from_tuned $kl001"
  [table_group_tuned_kl001_nonadaptive]="$from_tuned $kl001
    --config.policy.kind=nonadaptive"
  # 0.2 x: the weight at which the two pushes on the sampling temperature
  # cancel around the tuned T=8 schedule (0.064 - 0.344 w = 0; RESULTS).
  [table_group_tuned_fidx3_b512_conf02]="$fidx3_tuned --config.ppo.trajectories=512
    --config.reward.static_weight=0.2 --config.reward.static_backbone=fmnist"
  # conf01 with the table at half its rate (0.005): at T=8 one seed in
  # three walks away from the tuned schedule; does a slower table hold it?
  [table_group_tuned_fidx3_b512_conf01_tlr005]='--config.ppo.group_size=4
    --config.policy.table_init=tuned --config.ppo.table_learning_rate=0.005
    --config.reward.backbone=fmnist --config.reward.feature_index=3
    --config.ppo.trajectories=512 --config.reward.static_weight=0.1
    --config.reward.static_backbone=fmnist'
  # The same at 0.3 x: on the DiT, block 3's FD lowers guidance where the
  # diagnostic reward raises it; the confidence pushes guidance up.
  [table_group_tuned_fidx3_b512_conf03]="$fidx3_tuned --config.ppo.trajectories=512
    --config.reward.static_weight=0.3 --config.reward.static_backbone=fmnist"
  # The same at half the rates (table and network) over twice the
  # iterations: the same drift, the noise averaged over twice the updates.
  [table_group_tuned_fidx3_slow]='--config.ppo.group_size=4 --config.policy.table_init=tuned
    --config.ppo.table_learning_rate=0.005 --config.ppo.learning_rate=1.5e-4
    --config.reward.feature_index=3 --config.num_iterations=120
    --config.policy.std_decay_steps=(80,) --config.checkpoint_every=20
    --config.plots_every=40'
  # The FD reward on DiscBackbone's last block (experiment.CPU_FD_TABLE's;
  # for the configs on ContrastNet).
  [table_disc]='--config.reward.backbone=fmnist --config.reward.feature_index=-1'
  # The FD reward on DiscBackbone's block k instead of its last (4).
  [table_fidx1]='--config.reward.feature_index=1'
  [table_fidx2]='--config.reward.feature_index=2'
  [table_fidx3]='--config.reward.feature_index=3'
  [table_fidx2_group]='--config.reward.feature_index=2 --config.ppo.group_size=4'
  # Plus the reward backbone's class confidence (rewards.ConfidenceBonus).
  [table_fidx2_conf]='--config.reward.feature_index=2 --config.reward.static_weight=0.5'
  # The FD reward on stage k of ContrastNet, the self-supervised backbone.
  [table_contrast0]='--config.reward.backbone=fmnist_contrast --config.reward.feature_index=0'
  [table_contrast1]='--config.reward.backbone=fmnist_contrast --config.reward.feature_index=1'
  [table_contrast2]='--config.reward.backbone=fmnist_contrast --config.reward.feature_index=2'
  # The same (stage 0) plus DiscBackbone's class confidence at weight 1.
  [table_contrast0_conf1]='--config.reward.backbone=fmnist_contrast --config.reward.feature_index=0
    --config.reward.static_weight=1.0 --config.reward.static_backbone=fmnist'
  # Stage 0 for 3x the iterations with the table at a third of the rate
  # (the same table lr x iterations, 3x the samples averaged per unit of
  # change): does the seed-to-seed spread come from PPO noise?
  [table_contrast0_slow]='--config.reward.backbone=fmnist_contrast --config.reward.feature_index=0
    --config.num_iterations=180 --config.ppo.table_learning_rate=0.01
    --config.policy.std_decay_steps=(120,) --config.checkpoint_every=30
    --config.plots_every=60'
  # The FD reward on the supervised residual backbone (ContrastNet's CNN
  # trained with labels, configs/pretrain/fmnist_resnet_backbone.py): its
  # last stage, or its middle one (14x14).
  [table_resnet]='--config.reward.backbone=fmnist_resnet --config.reward.feature_index=-1'
  [table_resnet1]='--config.reward.backbone=fmnist_resnet --config.reward.feature_index=1'
  # From the tuned schedule with the FD on DiscBackbone's last block,
  # named for the flows' configs: around the DiT's tuned 4-NFE schedule its
  # action gradient is the closest to the diagnostic's (cosine +0.88).
  [table_group_tuned_disc4]=$disc4
  # The same anchored to the tuned start.
  [table_group_tuned_disc4_kl001]="$disc4 $kl001"
  # The same on the joint (features, label) distribution
  # (reward.label_scale, rewards.FDReward): the one-hot's length is 0.5x /
  # 1x sqrt(trace) of the real features' covariance on that block (22.0).
  [table_group_tuned_disc4_joint05]="$disc4 --config.reward.label_scale=11.0"
  [table_group_tuned_disc4_joint1]="$disc4 --config.reward.label_scale=22.0"
  # 4x the trajectories per iteration: on the MaskGIT each doubling lowered
  # the mean and the seed spread; does the DiT's guidance drift go with it?
  [table_group_tuned_disc4_b1024]="$disc4 --config.ppo.trajectories=1024"
  # The mean of the standardised FD gains on DiscBackbone's last block and
  # on the supervised ResNet's last stage (rewards.FDEnsemble): the two
  # rewards most aligned with the evaluation network around the tuned DiT.
  [table_group_tuned_disc4_resnet]="$disc4 --config.reward.ensemble=fmnist_resnet:-1"
  [table_group_tuned_resnet]="$from_tuned --config.reward.backbone=fmnist_resnet
    --config.reward.feature_index=-1"
  [adversarial]=$strong_d
  [nonadaptive]="--config.policy.kind=nonadaptive $strong_d"
  [fd]='--config.reward.name=fd'
  [static]='--config.reward.name=static'
  # Ablation: each sample normalised on its own in the discriminator heads
  # (virtual batch 1), so it cannot score a group's diversity.
  [adversarial_vbs1]="$strong_d --config.reward.virtual_bs=1"
  [adversarial_recon]=$recon
  # The same with the policy moving 3x slower for 3x as many iterations (the
  # same lr x iterations, 3x the discriminator steps per unit of policy
  # change): does a discriminator that keeps pace reward fidelity?
  [adversarial_recon_slow]="$recon --config.num_iterations=180 --config.ppo.learning_rate=1e-4
    --config.policy.std_decay_steps=(120,) --config.checkpoint_every=30
    --config.plots_every=60"
)
declare -A NAMES=(
  [table]='AdaGen, FD reward, step table'
  [table_nonadaptive]='AdaGen non-adaptive, FD reward'
  [table_group]='AdaGen, FD reward, step table, group baseline (G=4)'
  [table_group_nonadaptive]='AdaGen non-adaptive, FD reward, group baseline (G=4)'
  [table_group_tuned]='AdaGen, FD reward, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_nonadaptive]='AdaGen non-adaptive, FD reward, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_b512]='AdaGen, FD reward, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration'
  [table_group_frozen]='AdaGen, FD reward, group baseline (G=4), table frozen at the tuned schedule'
  [table_group_tuned_conf1]='AdaGen, FD reward + 1.0 x class confidence, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_conf03]='AdaGen, FD reward + 0.3 x class confidence, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_contrast0_conf1]='AdaGen, FD on ContrastNet stage 0 + 1.0 x class confidence, group baseline (G=4), table from the tuned schedule'
  [diag_group_tuned]='DIAGNOSTIC (never shipped): FD on FeatureNet, training split, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_fidx3]='AdaGen, FD reward on DiscBackbone block 3, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_fidx3_nonadaptive]='AdaGen non-adaptive, FD reward on DiscBackbone block 3, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_fidx3_b512]='AdaGen, FD reward on DiscBackbone block 3, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration'
  [table_group_tuned_fidx3_b512_nonadaptive]='AdaGen non-adaptive, FD reward on DiscBackbone block 3, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration'
  [table_group_tuned_fidx3_b512_conf01]='AdaGen, FD reward on DiscBackbone block 3 + 0.1 x class confidence, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration'
  [table_group_tuned_fidx3_b512_conf01_nonadaptive]='AdaGen non-adaptive, FD reward on DiscBackbone block 3 + 0.1 x class confidence, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration'
  [table_group_tuned_fidx3_b512_conf01_kl001]='AdaGen, FD reward on DiscBackbone block 3 + 0.1 x class confidence, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration, KL 0.01 to the start'
  [table_group_tuned_fidx3_b512_conf01_kl0003]='AdaGen, FD reward on DiscBackbone block 3 + 0.1 x class confidence, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration, KL 0.003 to the start'
  [table_group_tuned_fidx3_b1024_conf01_kl0003]='AdaGen, FD reward on DiscBackbone block 3 + 0.1 x class confidence, group baseline (G=4), table from the tuned schedule, 1024 trajectories per iteration, KL 0.003 to the start'
  [table_group_tuned_fidx3_b1024_conf01_kl0003_nonadaptive]='AdaGen non-adaptive, FD reward on DiscBackbone block 3 + 0.1 x class confidence, group baseline (G=4), table from the tuned schedule, 1024 trajectories per iteration, KL 0.003 to the start'
  [table_group_tuned_kl001]='AdaGen, FD reward, group baseline (G=4), table from the tuned schedule, KL 0.01 to the start'
  [table_group_tuned_kl001_nonadaptive]='AdaGen non-adaptive, FD reward, group baseline (G=4), table from the tuned schedule, KL 0.01 to the start'
  [table_group_tuned_fidx3_b512_conf02]='AdaGen, FD reward on DiscBackbone block 3 + 0.2 x class confidence, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration'
  [table_group_tuned_fidx3_b512_conf01_tlr005]='AdaGen, FD reward on DiscBackbone block 3 + 0.1 x class confidence, group baseline (G=4), table from the tuned schedule at half the rate (0.005), 512 trajectories per iteration'
  [table_group_tuned_fidx3_b512_conf03]='AdaGen, FD reward on DiscBackbone block 3 + 0.3 x class confidence, group baseline (G=4), table from the tuned schedule, 512 trajectories per iteration'
  [table_group_tuned_fidx3_slow]='AdaGen, FD reward on DiscBackbone block 3, group baseline (G=4), table from the tuned schedule, 120 iterations at half the rates'
  [table_fidx1]='AdaGen, FD reward on reward-backbone block 1, step table'
  [table_fidx2]='AdaGen, FD reward on reward-backbone block 2, step table'
  [table_fidx3]='AdaGen, FD reward on reward-backbone block 3, step table'
  [table_fidx2_group]='AdaGen, FD reward on reward-backbone block 2, step table, group baseline (G=4)'
  [table_fidx2_conf]='AdaGen, FD reward on reward-backbone block 2 + 0.5 x class confidence, step table'
  [table_disc]='AdaGen, FD reward on DiscBackbone (last block), step table'
  [table_contrast0]='AdaGen, FD reward on ContrastNet stage 0, step table'
  [table_contrast1]='AdaGen, FD reward on ContrastNet stage 1, step table'
  [table_contrast2]='AdaGen, FD reward on ContrastNet stage 2, step table'
  [table_contrast0_slow]='AdaGen, FD reward on ContrastNet stage 0, step table, 180 iterations at a third of the table rate'
  [table_contrast0_conf1]='AdaGen, FD reward on ContrastNet stage 0 + 1.0 x class confidence, step table'
  [table_resnet]='AdaGen, FD reward on the supervised residual backbone (last stage), step table'
  [table_resnet1]='AdaGen, FD reward on the supervised residual backbone (stage 1), step table'
  [table_group_tuned_disc4]='AdaGen, FD reward on DiscBackbone (last block), group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_disc4_kl001]='AdaGen, FD reward on DiscBackbone (last block), group baseline (G=4), table from the tuned schedule, KL 0.01 to the start'
  [table_group_tuned_disc4_joint05]='AdaGen, FD reward on (DiscBackbone last block, label x 11), group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_disc4_joint1]='AdaGen, FD reward on (DiscBackbone last block, label x 22), group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_disc4_b1024]='AdaGen, FD reward on DiscBackbone (last block), group baseline (G=4), table from the tuned schedule, 1024 trajectories per iteration'
  [table_group_tuned_disc4_resnet]='AdaGen, FD rewards on DiscBackbone (last block) and the supervised residual backbone (last stage), averaged standardised, group baseline (G=4), table from the tuned schedule'
  [table_group_tuned_resnet]='AdaGen, FD reward on the supervised residual backbone (last stage), group baseline (G=4), table from the tuned schedule'
  [adversarial]='AdaGen, adversarial reward'
  [nonadaptive]='AdaGen non-adaptive, adversarial reward'
  [fd]='AdaGen, FD reward'
  [static]='AdaGen, static reward (classifier confidence)'
  [adversarial_vbs1]='AdaGen, adversarial reward, per-sample discriminator'
  [adversarial_recon]='AdaGen, adversarial reward, reconstructed reals'
  [adversarial_recon_slow]='AdaGen, adversarial reward, reconstructed reals, 3x iterations at 1/3 lr'
  [heuristic]='hand-crafted (reference constants)'
  [tuned]='tuned hand-crafted'
)

# Every variant has flags and a name (a variant added to one table only
# would fail hours into a sweep instead of here).
for v in "${!FLAGS[@]}" "${!NAMES[@]}"; do
  if [[ $v != heuristic && $v != tuned &&
        ( -z ${FLAGS[$v]+x} || -z ${NAMES[$v]:-} ) ]]; then
    echo "fmnist_sweep.sh: variant '$v' needs an entry in both FLAGS and NAMES" >&2
    exit 2
  fi
done

run_job() {  # VARIANT T [SEED]
  if [[ -z ${NAMES[${1:-none}]:-} ]]; then
    echo "unknown job '$*'; use 'VARIANT T SEED' with VARIANT one of" \
      "${!FLAGS[*]}, or 'heuristic T' / 'tuned T'" >&2
    exit 2
  fi
  local variant=$1 steps=$2 seed=${3:-} dir method seeds name=${NAMES[$1]}
  if [[ $variant == heuristic || $variant == tuned ]]; then
    dir=$runs/${prefix}${variant}_T$steps seeds=0,1,2
    method=$variant
    if [[ $variant == tuned ]]; then
      local tuned=adagen_jax/assets/tuned/fmnist_${gen}_T$steps.json
      [[ -f $tuned ]] || python experiments/fmnist_table.py --stage=tune \
        --generator="$gen" --steps="$steps" --out="$tuned" >> "$dir.log" 2>&1
      method=tuned:$tuned
    fi
  else
    dir=$runs/${prefix}${variant}_T${steps}_s$seed seeds=$seed
    method=policy:$dir/policy
    if [[ ! -f $dir/policy/policy.json ]]; then
      # shellcheck disable=SC2086
      python -m adagen_jax.main $config --workdir="$dir" ${FLAGS[$variant]} \
        --config.generator.steps="$steps" --config.seed="$seed" \
        --config.final_eval_num=0 ${EXTRA:-} >> "$dir.log" 2>&1
    fi
  fi
  [[ -f $dir.evaluated ]] && return 0
  python experiments/fmnist_table.py --stage=eval --generator="$gen" \
    --steps="$steps" --method="$method" --seeds="$seeds" \
    --num="${EVAL_NUM:-10000}" --name="$name" --out="$runs/rows.jsonl" >> "$dir.log" 2>&1
  touch "$dir.evaluated"
  echo "$(date +%H:%M) done: $gen $*"
}

default_jobs() {
  for seed in 0 1 2; do
    for steps in $step_counts; do
      for variant in $variants; do
        echo "$variant $steps $seed"
      done
    done
    if [[ $seed == 0 ]]; then
      for steps in $step_counts; do
        printf '%s\n' "heuristic $steps" "tuned $steps"
      done
    fi
  done
}

if [[ ${JOBS:-} == list ]]; then default_jobs; exit 0; fi
if [[ ${1:-} == --run ]]; then  # one job on core $2 (xargs calls this)
  if (( parallel > 1 )) || [[ -n ${FIRST_CORE:-} ]]; then
    taskset -cp $(( ${FIRST_CORE:-0} + $2 )) $$ > /dev/null ||
      echo "not pinned: core $(( ${FIRST_CORE:-0} + $2 )) is missing" >&2
  fi
  shift 2
  run_job "$@"
  exit 0
fi
mkdir -p "$runs"
# `; exit` on the pipeline's own line: bash parses both before running
# them, so the sweep never reads this file again and it may be edited (new
# variants) while a sweep runs.
{ if (( $# )); then printf '%s\n' "$@"; else default_jobs; fi; } |
  RUNS=$runs GENERATOR=$gen xargs -P "$parallel" -L1 --process-slot-var=SLOT \
    sh -c 'exec bash "$0" "$RUNS" '"$parallel"' --run "$SLOT" "$@"' \
    "$0"; exit
