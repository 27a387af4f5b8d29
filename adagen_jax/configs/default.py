"""The embedded default: AdaGen on the shipped Fashion-MNIST MaskGIT at T=4.

  python -m adagen_jax.main          # this config, workdir workdir/default

Sized for a 2-core CPU (~10 minutes, docs/RESULTS.md has the time and
numbers): 60 PPO iterations of one 256-trajectory rollout, started at the
tuned hand-crafted schedule (adagen_jax/assets/tuned/fmnist_maskgit_T4.json),
with a per-step action table beside the policy network at its own Adam
rate (experiment.CPU_FD_FROM_TUNED says why). The reward is the FD on
DiscBackbone's block 3, never the evaluation network. It ends by printing
the FD-FMNIST of the hand-crafted schedule (the reference constants), the
tuned hand-crafted schedule and AdaGen on the same 5000 class-balanced
samples per method.

Expected (docs/RESULTS.md, "The default run"): hand-crafted 19.14 and
tuned 11.66 (deterministic); AdaGen ~10.4 for training seed 0 on the
development CPU (`--config.seed=S` for others), below both, with label
accuracy between them. Another CPU trains a slightly different policy.

The generator section (adagen_jax/configs/shipped.py) is shared with
configs/fmnist_maskgit.py (the same generator at any T).
"""

import ml_collections

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None) -> ml_collections.ConfigDict:
  return experiment.adagen_config(
      shipped.fmnist_maskgit_generator(steps=4), arg,
      overrides=experiment.CPU_FD_FROM_TUNED)
