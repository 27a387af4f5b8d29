"""The embedded default: AdaGen on the shipped Fashion-MNIST MaskGIT, T=8.

  python -m adagen_jax.main          # this config, workdir workdir/default

Sized for a 2-core CPU (about 10 minutes, docs/RESULTS.md has the measured
time): one 256-trajectory rollout per PPO iteration, the discriminator
trained on that iteration's samples rather than fresh ones, and a larger
learning rate than the reference's 1e-5 (which assumes ~1000 iterations of
4096 trajectories). It ends by printing hand-crafted vs AdaGen FD-FMNIST on
the same 5000 class-balanced samples per method.

The generator section (adagen_jax/configs/shipped.py) is shared with configs/fmnist_maskgit.py (the full
experiment config); the sizes are those of adagen_jax/assets/
fmnist_maskgit.json.
"""

import ml_collections

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None) -> ml_collections.ConfigDict:
  return experiment.adagen_config(shipped.fmnist_maskgit_generator(), arg,
                                  overrides=experiment.CPU_RL)
