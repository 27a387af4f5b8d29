r"""A policy export whose parameters are the mean of a run's kept
checkpoints (Polyak-Ruppert averaging of the end of a PPO run).

  python experiments/average_checkpoints.py --run=WORKDIR --out=OUT \
      [--steps=40,50]
  python experiments/fmnist_table.py --stage=eval --generator=G --steps=T \
      --method=policy:OUT --seeds=S --num=10000 --out=ROWS

WORKDIR is a finished `adagen_jax.main` run: its checkpoints/ (the CPU
recipes keep iterations 40, 50 and 60) and its policy/ export, whose card
and reward state OUT copies. Measured on 17 Fashion-MNIST policies
(docs/RESULTS.md, "Averaging the last checkpoints"): no gain on the mean,
and the VAR policies get worse, so training exports the last iterate.
"""

import os
import shutil

from absl import flags
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from adagen_jax import cli
from adagen_jax import errors

_RUN = flags.DEFINE_string('run', None, 'Finished run folder.', required=True)
_OUT = flags.DEFINE_string('out', None, 'Export folder to write.',
                           required=True)
_STEPS = flags.DEFINE_list('steps', None, 'Iterations of the checkpoints to '
                           'average (default: every kept one); a single one '
                           'exports that iterate, to follow a run.')


def main(argv):
  del argv
  run, out = os.path.abspath(_RUN.value), os.path.abspath(_OUT.value)
  kept = sorted(int(s) for s in os.listdir(os.path.join(run, 'checkpoints'))
                if s.isdigit())
  steps = [int(s) for s in _STEPS.value] if _STEPS.value else kept
  if not set(steps) <= set(kept):
    raise errors.UserError(
        f'--steps={",".join(map(str, steps))}: {run} keeps checkpoints '
        f'{kept} only; pick from those.')
  # The raw tree: {'ppo': {'params': ...}, ...} as the trainer saved it.
  trees = [ocp.PyTreeCheckpointer().restore(
      os.path.join(run, 'checkpoints', str(s), 'state'))['ppo']['params']
           for s in steps]
  mean = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs), axis=0), *trees)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.makedirs(out)
  shutil.copy(os.path.join(run, 'policy', 'policy.json'), out)
  shutil.copytree(os.path.join(run, 'policy', 'reward'),
                  os.path.join(out, 'reward'))
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(out, 'params'), mean)
  ckptr.wait_until_finished()
  print(f'wrote {out}: the mean of checkpoints {steps}')


if __name__ == '__main__':
  cli.run(main)
