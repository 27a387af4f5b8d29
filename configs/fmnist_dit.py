"""AdaGen on the small Fashion-MNIST DIT (pixel space) of the package.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:dit
  python -m adagen_jax.main --config=configs/fmnist_dit.py:steps=4 \
      --workdir=runs/fmnist_dit_nfe4
  python -m adagen_jax.sample --config=configs/fmnist_dit.py --steps=4 \
      --num=10000 --seed=0 --policy=heuristic --out=/tmp/dit_nfe4.npz

`:steps=NFE` sets the model evaluations (the policy makes NFE + 1
decisions: the start time, then a time and a guidance weight after each
evaluation). The network ships (adagen_jax/assets/fmnist_dit.*: v-prediction,
5500 CPU steps at the SiT's noise levels, docs/RESULTS.md); the first
command retrains it (~1 h of one core, resumable). RL settings are the
2-core CPU ones (experiment.CPU_RL, as in the embedded default); for a GPU
raise ppo.trajectories and num_iterations.

Expected at 4 NFE (docs/RESULTS.md, "AdaGen on the DiT at 4 NFE"): the
hand-crafted grid FD-FMNIST 13.01 +- 0.22, label accuracy 0.941 (10k
samples, seeds 0-2); the tuned grid 10.93; AdaGen with this config's
recipe (experiment.CPU_FD_CONTRAST) 12.28 +- 2.15 over training seeds 0-2
(11.61 for seed 0, the shipped policy), label accuracy 0.918; ~5 min of
training each on one core. At 50 NFE the hand-crafted grid scores 6.50.

At 8 NFE (`:steps=8`; "AdaGen on the DiT at 8 NFE"): hand-crafted 9.12,
tuned 6.91. This recipe's seed 0 scores 15.29 there (its reward moves the
start time to 0.96); the shipped 8-NFE policies are seed 0 of
experiment.CPU_FD_FROM_TUNED, the MaskGIT's from-tuned recipe (add
--config.ppo.group_size=4 --config.policy.table_init=tuned
--config.ppo.table_learning_rate=0.01 --config.reward.backbone=fmnist
--config.reward.feature_index=3): AdaGen 8.41, non-adaptive 6.73 on
sampling seed 0 (tuned 7.11), 10-14 min of training each on one core.
"""

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None):
  return experiment.adagen_config(
      shipped.fmnist_flow_generator('dit'), arg,
      overrides=experiment.CPU_FD_CONTRAST)
