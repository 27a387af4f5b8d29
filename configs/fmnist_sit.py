"""AdaGen on the small Fashion-MNIST SIT (pixel space) of the package.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:sit
  python -m adagen_jax.main --config=configs/fmnist_sit.py:steps=4 \
      --workdir=runs/fmnist_sit_nfe4
  python -m adagen_jax.sample --config=configs/fmnist_sit.py --steps=4 \
      --num=10000 --seed=0 --policy=heuristic --out=/tmp/sit_nfe4.npz

`:steps=NFE` sets the model evaluations (the policy makes NFE + 1
decisions: the start time, then a time and a guidance weight after each
evaluation). The network ships (adagen_jax/assets/fmnist_sit.*: 5500 CPU steps,
docs/RESULTS.md); the first command retrains it (~1.1 h of the idle 2-core
CPU, resumable). RL settings are the 2-core CPU ones (experiment.CPU_RL,
as in the embedded default); for a GPU raise ppo.trajectories and
num_iterations.

Expected at 4 NFE (docs/RESULTS.md, "AdaGen on the SiT at 4 NFE"): the
hand-crafted grid FD-FMNIST 13.74 +- 0.06, label accuracy 0.959 (10k
samples, seeds 0-2); the tuned schedule 9.43; AdaGen with this config's
recipe (experiment.CPU_FD_CONTRAST_CONF) 10.67 +- 0.33 over training
seeds 0-2 (11.04 for seed 0, the shipped policy), label accuracy 0.951;
~6 min of training each on the 2-core CPU.
"""

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None):
  return experiment.adagen_config(
      shipped.fmnist_flow_generator('sit'), arg,
      overrides=experiment.CPU_FD_CONTRAST_CONF)
