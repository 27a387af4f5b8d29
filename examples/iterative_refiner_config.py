"""AdaGen on the user-written generator of examples/iterative_refiner.py.

From the repository root (so `examples` is importable):

  # Train (:runlocal = 4 PPO iterations of 256 trajectories):
  python -m adagen_jax.main \
      --config=examples/iterative_refiner_config.py:runlocal \
      --workdir=runs/iterative_refiner
  # Sample with the trained policy, and with the hand-crafted schedule:
  python -m adagen_jax.sample --config=examples/iterative_refiner_config.py \
      --policy=runs/iterative_refiner/policy --num=1000 \
      --out=/tmp/refiner_adagen.npz
  python -m adagen_jax.sample --config=examples/iterative_refiner_config.py \
      --policy=heuristic --num=1000 --out=/tmp/refiner_heuristic.npz
  # Evaluate the samples (FD-FMNIST etc.):
  python -m adagen_jax.evaluate --samples=/tmp/refiner_adagen.npz

Without `:runlocal` it trains with the 2-core CPU settings of the embedded
default (experiment.CPU_RL: 60 iterations of 256 trajectories). `:steps=T`
sets T; `--config.generator.KEY=VALUE` overrides one generator setting. The
sampling config must build the generator the policy was trained on: the
same T and generator settings (the policy's identity check refuses others).

The generator makes 28 x 28 x 1 Fashion-MNIST-shaped images of its 10
classes, so the default reward (the adversarial discriminator on the shipped
Fashion-MNIST backbone), the real data and the FD-FMNIST evaluation all work
unchanged.
"""

import ml_collections

from adagen_jax.configs import experiment


def generator_section(steps: int = 8) -> ml_collections.ConfigDict:
  """config.generator: `name` is the module path the registry imports."""
  return ml_collections.ConfigDict(dict(
      name='examples.iterative_refiner',
      steps=steps,
      smoothing=0.5,     # EMA of the actions in pre-activation space
      exemplars=64,      # K training images per class: the "weights"
      bandwidth=0.1,     # kernel width b of the exemplar density
      sigma_max=20.0,    # starting noise level
      sigma_min=0.05,    # last noise level of the hand-crafted ladder
      rho=7.0,           # spacing of that ladder (Karras et al. 2022)
      data_path='',      # Fashion-MNIST location; '' = the default search
  ))


def get_config(arg=None) -> ml_collections.ConfigDict:
  return experiment.adagen_config(generator_section(), arg,
                                  overrides=experiment.CPU_RL)
