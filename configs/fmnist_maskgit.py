"""AdaGen on the small Fashion-MNIST MaskGIT shipped with the package.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_maskgit.py
  python -m adagen_jax.main --config=configs/fmnist_maskgit.py:steps=8 \
      --workdir=runs/fmnist_maskgit_T8
  python -m adagen_jax.sample --config=configs/fmnist_maskgit.py --steps=16 \
      --num=10000 --seed=0 --policy=heuristic --out=/tmp/maskgit_T16.npz

`:steps=T` sets T (also `runlocal`; see adagen_jax/configs/experiment.py).
The generator (adagen_jax/configs/shipped.py: 14x14 tokens, 512 codes, a
width-128 UViT) ships; the first command retrains it (~1.3 h of the idle
2-core CPU, resumable). RL settings: the 2-core CPU recipe
(experiment.CPU_FD_DISC3: 60 PPO iterations of 256 trajectories, FD on
DiscBackbone's block 3, never the evaluation network, and a per-step table
beside the policy network); for a GPU raise ppo.trajectories and
num_iterations.

Expected (docs/RESULTS.md, "AdaGen on the 14x14 MaskGIT"): see the table
there for the hand-crafted, tuned and AdaGen FD-FMNIST at T=4 and T=8.
"""

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None):
  return experiment.adagen_config(
      shipped.fmnist_maskgit_generator(steps=8), arg,
      overrides=experiment.CPU_FD_DISC3)
