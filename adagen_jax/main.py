"""AdaGen training entry point.

  python -m adagen_jax.main [--config=configs/NAME.py[:ARG]] [--workdir=DIR]
                            [--config.key=value ...]

With no flags it runs the embedded default: the shipped Fashion-MNIST
MaskGIT at T=4, a policy trained for about 6 minutes on a 2-core CPU,
ending with hand-crafted, tuned and AdaGen FD-FMNIST. User errors print
one line and exit 2.
"""

import os

from absl import flags
from absl import logging
import jax

from adagen_jax import cli
from adagen_jax import errors

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), 'configs',
                               'default.py')
_CONFIG = cli.define_config(_DEFAULT_CONFIG,
                            'Experiment config file (configs/*.py[:ARG]).')
_WORKDIR = flags.DEFINE_string('workdir', 'workdir/default',
                               'Checkpoints, logs, samples and plots; an '
                               'existing run there is resumed.')


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments {argv[1:]}; flags only.')
  from adagen_jax import train  # pylint: disable=g-import-not-at-top
  from adagen_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  distributed.maybe_initialize()
  logging.info('JAX %s on %d %s device(s), %d process(es).', jax.__version__,
               jax.device_count(), jax.default_backend(), jax.process_count())
  results = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0 and 'heuristic' in results:
    steps = _CONFIG.value.generator.steps
    print(f'\nFD-FMNIST at T={steps} ({_CONFIG.value.final_eval_num} samples)')
    for tag in ('heuristic', 'tuned', 'adagen'):
      if tag not in results:  # 'tuned': where a tuned schedule ships
        continue
      m = results[tag]
      print(f'  {tag:10s} FD {m["fd"]:.3f}  precision {m["precision"]:.3f}  '
            f'recall {m["recall"]:.3f}  label acc {m["label_acc"]:.3f}')
    print(f'Outputs in {_WORKDIR.value}/ (samples_*.png, schedules*.png, '
          'policy/, metrics.jsonl).')


if __name__ == '__main__':
  cli.run(main)
