r"""Value lookahead judged by the fitted discriminator, against K (issue 19
item 7).

  python experiments/discriminator_lookahead.py --generator=maskgit \
      --steps=4 --policy=adagen_jax/assets/policies/fmnist_maskgit_T4_adagen \
      --ks=1,2,4 --rules=discriminator,critic --seeds=0,1,2 --num=2000 \
      --out=docs/results/fmnist_maskgit_T4_discriminator_lookahead.jsonl

The sampler's `--lookahead=K --lookahead_rule=discriminator`
(`refine.discriminator_judge`): at every step but the last, K candidate
next states; each sample draws one with probability ~ exp(logit) of the
image it would decode to now. The discriminator is fitted once per policy,
as the sampler fits it (refine.DISCRIMINATOR_PILOT samples of the policy
without lookahead, sampling seed refine.DISCRIMINATOR_SEED, never an
evaluation seed). K = 1 is plain sampling; the 'critic' rule is the
paper's judge (the export's critic, the largest value). The same sampling
seeds for every K and rule; FeatureNet scores every set against the test
split, as everywhere.
"""

import dataclasses
import json
import os

from absl import flags
import numpy as np

from adagen_jax import cli
from adagen_jax import evaluate
from adagen_jax import generators
from adagen_jax import plots
from adagen_jax import sample
from adagen_jax.configs import shipped
from adagen_jax.rl import refine

_GENERATOR = flags.DEFINE_enum('generator', 'maskgit', ['maskgit', 'var'],
                               'Shipped Fashion-MNIST generator.')
_POLICY = flags.DEFINE_string('policy', None, 'Policy export folder.',
                              required=True)
_STEPS = flags.DEFINE_integer('steps', 4, 'Generation steps T.')
_KS = flags.DEFINE_list('ks', ['1', '2', '4'], 'Lookahead K values.')
_AT = flags.DEFINE_list('lookahead_steps', None, 'Steps t of the lookahead '
                        '(default: all but the last), as the sampler.')
_RULES = flags.DEFINE_list('rules', ['discriminator'],
                           f'Judges, of {refine.LOOKAHEAD_RULES}.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Sampling seeds.')
_NUM = flags.DEFINE_integer('num', 2000, 'Samples per seed.')
_BATCH = flags.DEFINE_integer('batch', 250, 'Labels per generation call.')
_PILOT = flags.DEFINE_integer('pilot', refine.DISCRIMINATOR_PILOT,
                              'Policy samples the discriminator is fitted '
                              'on (the sampler: the default).')
_OUT = flags.DEFINE_string('out', None, 'Rows file (JSON lines); the plot '
                           'goes beside it.', required=True)


def main(argv):
  del argv
  ks = sorted({int(k) for k in _KS.value})
  at = None if _AT.value is None else [int(t) for t in _AT.value]
  gen, gen_params = generators.build(
      shipped.fmnist_generator(_GENERATOR.value, _STEPS.value))
  refinement, variables = refine.load_refinement(
      _POLICY.value, gen, lookahead=max(max(ks), 2), lookahead_steps=at,
      lookahead_rule='discriminator', gen_params=gen_params,
      pilot=_PILOT.value)
  evaluator = evaluate.Evaluator.create('fmnist-test')
  rows = []
  runs = [('plain', 1)] + [(rule, k) for rule in _RULES.value
                           for k in ks if k > 1]
  for rule, k in runs:
    refined = dataclasses.replace(refinement, lookahead=k,
                                  lookahead_rule=rule)
    for seed in [int(s) for s in _SEEDS.value]:
      images, labels = sample.generate_with(
          gen, gen_params, _NUM.value, seed, batch=_BATCH.value,
          refinement=(refined, variables))
      row = dict(rule=rule, lookahead=k, at=list(refinement.steps),
                 seed=seed, num=_NUM.value,
                 steps=_STEPS.value, generator=_GENERATOR.value,
                 policy=_POLICY.value, **evaluator(images, labels))
      print(json.dumps(row), flush=True)
      rows.append(row)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  plain = np.mean([r['fd'] for r in rows if r['rule'] == 'plain'])
  curves = {}
  for rule in _RULES.value:
    curves[f'judge: {rule}'] = ([1] + [k for k in ks if k > 1], [plain] + [
        np.mean([r['fd'] for r in rows if r['rule'] == rule and
                 r['lookahead'] == k]) for k in ks if k > 1])
  fig = os.path.splitext(_OUT.value)[0] + '.png'
  plots.plot_curves(fig, curves, 'lookahead K', 'FD-FMNIST (mean over seeds)',
                    f'{_GENERATOR.value} T={_STEPS.value}: lookahead judges')
  print(f'wrote {_OUT.value} and {fig}')


if __name__ == '__main__':
  cli.run(main)
