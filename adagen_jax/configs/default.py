"""The embedded default: AdaGen on the shipped Fashion-MNIST SiT at 4 NFE.

  python -m adagen_jax.main          # this config, workdir workdir/default

Sized for a 2-core CPU (~11 minutes, docs/RESULTS.md has the time and
numbers): 60 PPO iterations of one 256-trajectory rollout and a per-step
action table beside the policy network at its own Adam rate
(experiment.CPU_FD_TABLE says why). The reward is the FD on ContrastNet's
full-resolution features plus DiscBackbone's class confidence
(experiment.CPU_FD_CONTRAST_CONF says why); neither is the evaluation network.
It ends by printing the FD-FMNIST of the hand-crafted schedule (the
reference constants), the tuned hand-crafted schedule
(adagen_jax/assets/tuned/fmnist_sit_T4.json) and AdaGen on the same 5000
class-balanced samples per method.

Expected (docs/RESULTS.md, "The default run"): hand-crafted 13.72 and
tuned 9.39 (deterministic); AdaGen 10.79 +- 0.21 over training seeds 0/1/2
on the development CPU (11.01, 10.76, 10.59: 20-23% below hand-crafted,
label accuracy within 0.02), still above the tuned constants. Another CPU
trains a slightly different policy.

The generator section (adagen_jax/configs/shipped.py) is shared with
configs/fmnist_sit.py (the same generator at any NFE).
"""

import ml_collections

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None) -> ml_collections.ConfigDict:
  return experiment.adagen_config(
      shipped.fmnist_flow_generator('sit', 4), arg,
      overrides=experiment.CPU_FD_CONTRAST_CONF)
