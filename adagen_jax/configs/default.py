"""The embedded default: AdaGen on the shipped Fashion-MNIST SiT at 4 NFE.

  python -m adagen_jax.main          # this config, workdir workdir/default

Sized for a 2-core CPU (11.6 minutes measured, docs/RESULTS.md has the
time and numbers): 60 PPO iterations of one 256-trajectory rollout, the FD
reward on the reward backbone (DiscBackbone, never the evaluation network)
and a per-step action table beside the policy network at its own Adam rate
(experiment.CPU_FD_TABLE says why). It ends by printing the FD-FMNIST of
the hand-crafted schedule (the reference constants), the tuned hand-crafted
schedule (adagen_jax/assets/tuned/fmnist_sit_T4.json) and AdaGen on the
same 5000 class-balanced samples per method.

Expected (docs/RESULTS.md, "AdaGen on the SiT at 4 NFE"): hand-crafted
13.72 and tuned 9.39 (deterministic); AdaGen 12.12 on the development CPU
(another CPU trains a slightly different policy): the policy lowers early
guidance and moves the time grid, but not yet as far as the tuned
constants.

The generator section (adagen_jax/configs/shipped.py) is shared with
configs/fmnist_sit.py (the same experiment at any NFE).
"""

import ml_collections

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None) -> ml_collections.ConfigDict:
  return experiment.adagen_config(shipped.fmnist_flow_generator('sit', 4),
                                  arg, overrides=experiment.CPU_FD_TABLE)
