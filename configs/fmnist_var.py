"""AdaGen on the small Fashion-MNIST VAR of the package.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_var.py
  python -m adagen_jax.main --config=configs/fmnist_var.py \
      --workdir=runs/fmnist_var
  python -m adagen_jax.sample --config=configs/fmnist_var.py \
      --num=10000 --seed=0 --policy=heuristic --out=/tmp/var.npz

One policy decision per scale (6 scales: 1, 2, 3, 4, 5, 7): guidance, top-k,
top-p and sampling temperature per sample. The first command retrains the
shipped model (adagen_jax/assets/fmnist_var*). RL settings: the MaskGIT's
2-core CPU recipe (experiment.CPU_FD_TABLE: 60 PPO iterations of 256
trajectories, FD on DiscBackbone's last block, never the evaluation
network, a per-step table beside the policy network); for a GPU raise
ppo.trajectories and num_iterations.

Expected (docs/RESULTS.md, "Fashion-MNIST VAR"; FD-FMNIST on sampling
seeds x 10 000): VAR's published-style sampler 13.82 +- 0.18 (3 seeds; the
issue-18 bar is 15); the tuned sampler (`--policy=tuned`: guidance 2.5, no
top-k or top-p truncation) 9.61 +- 0.16, label accuracy 0.884. The shipped
`--policy=adagen` started at the tuned sampler, anchored to it by a KL
penalty, 15 min of one core:

  python -m adagen_jax.main --config=configs/fmnist_var.py \
      --workdir=runs/var_adagen --config.ppo.group_size=4 \
      --config.policy.table_init=tuned --config.ppo.table_learning_rate=0.01 \
      --config.ppo.kl_coef=0.01

scores 9.14 on sampling seed 0 (label accuracy 0.923); over training seeds
0-2, 9.11 +- 0.08: 34% below the published-style sampler and 5.1% below
tuned. The same with --config.policy.kind=nonadaptive
(`--policy=nonadaptive`) scores 9.61 on seed 0, 9.54 +- 0.23 over seeds 0-2.
"""

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None):
  return experiment.adagen_config(
      shipped.fmnist_var_generator(), arg,
      overrides=experiment.CPU_FD_TABLE)
