"""AdaGen on the small Fashion-MNIST MaskGIT shipped with the package.

  python -m adagen_jax.main --config=configs/fmnist_maskgit.py:steps=8 \
      --workdir=runs/fmnist_maskgit_T8
  python -m adagen_jax.sample --config=configs/fmnist_maskgit.py --steps=16 \
      --num=10000 --seed=0 --policy=heuristic --out=/tmp/maskgit_T16.npz

`:steps=T` sets T (also `runlocal`; see adagen_jax/configs/experiment.py). The
generator section is the embedded default's (adagen_jax/configs/shipped.py,
sizes of adagen_jax/assets/fmnist_maskgit.json); this config keeps the
reference's RL settings (4096 trajectories per iteration, fresh samples for
every discriminator step), meant for a GPU. The 2-core CPU setting is
`python -m adagen_jax.main` with no flags.
"""

from adagen_jax.configs import experiment
from adagen_jax.configs import shipped


def get_config(arg=None):
  return experiment.adagen_config(
      shipped.fmnist_maskgit_generator(steps=16), arg, overrides=dict(
          policy=dict(hidden=128), ppo=dict(learning_rate=1e-4),
          reward=dict(mapping_layers=2), num_iterations=300, eval_every=25))
