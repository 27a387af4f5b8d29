r"""Best-of-N by the fitted discriminator, against N (issue 19 item 7).

  python experiments/discriminator_best_of.py --generator=maskgit --steps=4 \
      --policy=adagen_jax/assets/policies/fmnist_maskgit_T4_adagen \
      --max_n=8 --seeds=0,1,2 --num=2000 \
      --out=docs/results/fmnist_maskgit_T4_discriminator_best_of.jsonl

The discriminator is the sampler's (`adagen_jax.sample
--best_of_rule=discriminator`, `refine.load_refinement`): fitted once per
policy on refine.DISCRIMINATOR_PILOT samples of sampling seed
refine.DISCRIMINATOR_SEED, never an evaluation seed, against training
images. Per sampling seed, max_n candidates per sample are drawn once; for
every N <= max_n, each sample draws from its first N candidates with the
same Gumbel noise (the sampler's draw, nested so that N alone changes), and
also keeps its largest logit (the paper's best-of-N with a discriminator).
FeatureNet scores every set against the test split, as everywhere.
"""

import functools
import json
import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax import evaluate
from adagen_jax import generators
from adagen_jax import plots
from adagen_jax import progress
from adagen_jax import sample
from adagen_jax.configs import shipped
from adagen_jax.rl import refine

_GENERATOR = flags.DEFINE_enum('generator', 'maskgit', ['maskgit', 'var'],
                               'Shipped Fashion-MNIST generator.')
_POLICY = flags.DEFINE_string('policy', None, 'Policy export folder.',
                              required=True)
_STEPS = flags.DEFINE_integer('steps', 4, 'Generation steps T.')
_MAX_N = flags.DEFINE_integer('max_n', 8, 'Largest N of best-of-N.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Sampling seeds.')
_NUM = flags.DEFINE_integer('num', 2000, 'Samples per seed.')
_BATCH = flags.DEFINE_integer('batch', 250, 'Labels per generation call.')
_PILOT = flags.DEFINE_integer('pilot', refine.DISCRIMINATOR_PILOT,
                              'Policy samples the discriminator is fitted '
                              'on (the sampler: the default).')
_OUT = flags.DEFINE_string('out', None, 'Rows file (JSON lines); the plot '
                           'goes beside it.', required=True)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _candidates(refinement, n, variables, gen_params, labels, rng):
  """[B, n, H, W, C] candidates and their logits [B, n] (the sampler's)."""
  return refine.discriminator_candidates(
      refinement.generator, gen_params, labels, rng,
      refinement.act_fn(variables), refinement.backbones,
      variables['discriminator'], n,
      transition=refinement.transition(variables))


def main(argv):
  del argv
  n, num = _MAX_N.value, _NUM.value
  gen, gen_params = generators.build(
      shipped.fmnist_generator(_GENERATOR.value, _STEPS.value))
  refinement, variables = refine.load_refinement(
      _POLICY.value, gen, best_of=max(n, 2), best_of_rule='discriminator',
      gen_params=gen_params, pilot=_PILOT.value)
  evaluator = evaluate.Evaluator.create('fmnist-test')
  rows = []
  for seed in [int(s) for s in _SEEDS.value]:
    labels = sample.class_balanced_labels(num, gen.num_classes)
    key = jax.random.key(seed)
    images, logits = [], []
    bar = progress.Progress(num, f'{n} candidates, seed {seed}')
    for i, start in enumerate(range(0, num, _BATCH.value)):
      chunk = labels[start:start + _BATCH.value]
      padded = np.pad(chunk, (0, _BATCH.value - chunk.shape[0]))
      x, s = _candidates(refinement, n, variables, gen_params,
                         jnp.asarray(padded), jax.random.fold_in(key, i))
      images.append(np.asarray(x)[:chunk.shape[0]])
      logits.append(np.asarray(s)[:chunk.shape[0]])
      bar.update(chunk.shape[0])
    images, logits = np.concatenate(images), np.concatenate(logits)
    # A key no generation batch uses (batch i uses fold_in(key, i)).
    gumbel = np.asarray(jax.random.gumbel(jax.random.fold_in(key, 2**31 - 1),
                                          logits.shape))
    for best_of in range(1, n + 1):
      first = np.arange(n) < best_of
      for rule, chosen in (
          ('ratio', np.argmax(np.where(first, logits + gumbel, -np.inf), 1)),
          ('argmax', np.argmax(np.where(first, logits, -np.inf), 1))):
        if best_of == 1 and rule == 'argmax':
          continue  # the same set as the ratio rule's N = 1
        metrics = evaluator(images[np.arange(num), chosen], labels)
        row = dict(rule=rule, best_of=best_of, seed=seed, num=num,
                   steps=_STEPS.value, generator=_GENERATOR.value,
                   policy=_POLICY.value, **metrics)
        print(json.dumps(row), flush=True)
        rows.append(row)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  curves = {}
  for rule, name in (('ratio', 'draw ~ p_real / p_policy (the sampler)'),
                     ('argmax', 'largest logit')):
    ns = range(1 if rule == 'ratio' else 2, n + 1)
    curves[name] = (list(ns), [np.mean([
        r['fd'] for r in rows if r['best_of'] == k and (
            r['rule'] == rule or k == 1)]) for k in ns])
  fig = os.path.splitext(_OUT.value)[0] + '.png'
  plots.plot_curves(fig, curves, 'best-of N', 'FD-FMNIST (mean over seeds)',
                    f'{_GENERATOR.value} T={_STEPS.value}: the fitted '
                    'discriminator')
  print(f'wrote {_OUT.value} and {fig}')


if __name__ == '__main__':
  cli.run(main)
