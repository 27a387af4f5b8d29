"""Trains the small networks this project ships (generators, feature nets).

  python -m adagen_jax.pretrain --config=configs/pretrain/NAME.py \
      [--workdir=DIR] [--config.key=value ...]

The config's `trainer` names a module of adagen_jax.pretrain with a function
`train(config, workdir)`; it writes its weights into `config.output` (by
default the package's assets folder, so a retrained model replaces the shipped
one).
"""

import importlib

from absl import flags

from adagen_jax import cli
from adagen_jax import errors
from adagen_jax.pretrain import common

_CONFIG = cli.define_config(None, 'Pretrain config (configs/pretrain/*.py).')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/adagen_pretrain',
                               'Where logs and intermediate files go.')


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    raise errors.UserError('--config is required, e.g. '
                          '--config=configs/pretrain/fmnist_maskgit.py')
  common.check_schedules(config)
  trainer = importlib.import_module(f'adagen_jax.pretrain.{config.trainer}')
  trainer.train(config, _WORKDIR.value)


if __name__ == '__main__':
  cli.run(main)
