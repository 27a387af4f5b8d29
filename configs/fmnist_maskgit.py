"""AdaGen on the small Fashion-MNIST MaskGIT shipped with the package.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_maskgit.py
  python -m adagen_jax.main --config=configs/fmnist_maskgit.py:steps=8 \
      --workdir=runs/fmnist_maskgit_T8
  python -m adagen_jax.sample --config=configs/fmnist_maskgit.py --steps=16 \
      --num=10000 --seed=0 --policy=heuristic --out=/tmp/maskgit_T16.npz

`:steps=T` sets T (also `runlocal`; see adagen_jax/configs/experiment.py).
The generator (adagen_jax/configs/shipped.py: 14x14 tokens, 512 codes, a
width-128 UViT) ships; the first command retrains it (~3.5 h of wall time on
the shared 2-core CPU, resumable). RL settings: the 2-core CPU recipe
(experiment.CPU_FD_TABLE: 60 PPO iterations of 256 trajectories, FD on
DiscBackbone's last block, never the evaluation network, and a per-step
table beside the policy network; the rewards tried on this generator are
in docs/experiments/maskgit14_T8_rewards.md); for a GPU raise
ppo.trajectories and num_iterations.

Expected (docs/RESULTS.md, "Fashion-MNIST MaskGIT: AdaGen at T=4 and
T=8"; 10k samples, FD-FMNIST, seeds 0-2): hand-crafted 13.40 +- 0.16 at
T=8 and 19.06 +- 0.15 at T=4; tuned (`--policy=tuned`) 6.27 +- 0.11 and
11.63 +- 0.09. This recipe: 11.04 at T=8 and 24.70 at T=4 (training seed
0, label accuracy 0.91-0.92), ~15 min of training on the 2-core CPU.
Started at the tuned schedule with the FD on DiscBackbone's block 3
(experiment.CPU_FD_FROM_TUNED, the embedded default's recipe: add
--config.ppo.group_size=4 --config.policy.table_init=tuned
--config.ppo.table_learning_rate=0.01 --config.reward.feature_index=3)
and 512 trajectories per iteration (`python -m adagen_jax.main
--config.ppo.trajectories=512 --config.seed=S`, or the sweep's
table_group_tuned_fidx3_b512, which evaluates seed S on 10k samples of
sampling seed S): 10.40 +- 0.48 at T=4 over training seeds 0-2, 10.6%
below tuned (seed 0 is the shipped T=4 --policy=adagen), ~18 min of
training each on one core. At T=8 that recipe loses to the tuned 6.27
(6.90 +- 0.75); with a tenth of DiscBackbone's class confidence added
(--config.reward.static_weight=0.1 --config.reward.static_backbone=fmnist,
the sweep's table_group_tuned_fidx3_b512_conf01) it is 6.16 +- 0.64
(5.54, 5.90, 7.03), ~45 min of training each on one core. Its
non-adaptive ablation (--config.policy.kind=nonadaptive) scores 5.97 +-
0.37 (5.46, 6.15, 6.32); anchored to its starting policy by a KL penalty (--config.ppo.kl_coef=0.003, the sweep's
table_group_tuned_fidx3_b512_conf01_kl0003) the adaptive one scores 6.03
+- 0.31 (5.70, 6.44, 5.94). The best T=8 recipe is that one with 1024
trajectories per iteration (--config.ppo.trajectories=1024, the sweep's
table_group_tuned_fidx3_b1024_conf01_kl0003): 5.57 +- 0.19 (5.45, 5.43,
5.83), 11.2% below tuned, ~80 min of training each on one core; seed 0 is
the shipped T=8 --policy=adagen, and its non-adaptive ablation's seed 0
(5.73) the shipped T=8 --policy=nonadaptive.
"""

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None):
  return experiment.adagen_config(
      shipped.fmnist_maskgit_generator(steps=8), arg,
      overrides=experiment.CPU_FD_TABLE)
