r"""Diagnostic: which per-sample score makes best-of-N help an FD-trained policy.

Best-of-N with an FD-reward policy keeps, per sample, the candidate with the
largest FD gain over fixed reference samples (`refine.score_samples`, the
training reward with the batch-mates held fixed). This script draws the
same candidates once and compares that choice with the candidate most
typical of the real images: the largest Gaussian log-density of its reward
features (DiscBackbone, never FeatureNet) under the real statistics the FD
reward holds. FeatureNet only evaluates.

  python experiments/best_of_scores.py \
      --policy=adagen_jax/assets/policies/fmnist_maskgit_T4_adagen --steps=4 \
      --max_n=4 --seeds=0,1,2 --num=2000 --out=ROWS
"""

import functools

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax import evaluate
from adagen_jax import generators
from adagen_jax import sample
from adagen_jax.configs import shipped
from adagen_jax.rl import refine
from adagen_jax.rl import rewards as rewards_lib
import rows as rows_lib

_POLICY = flags.DEFINE_string('policy', None, 'Policy export trained with the '
                              'FD reward.', required=True)
_STEPS = flags.DEFINE_integer('steps', 4, 'Generation steps T.')
_MAX_N = flags.DEFINE_integer('max_n', 4, 'Candidates per sample.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Sampling seeds.')
_NUM = flags.DEFINE_integer('num', 2000, 'Samples per seed.')
_BATCH = flags.DEFINE_integer('batch', 250, 'Labels per generation call.')
_OUT = flags.DEFINE_string('out', None, 'Rows file (JSON lines).',
                           required=True)

# Ridge on the real covariance, as a fraction of its mean eigenvalue: the
# log-density must not be dominated by near-empty feature directions.
_RIDGE = 1e-3


def log_density(features: jax.Array, mu: jax.Array,
                sigma: jax.Array) -> jax.Array:
  """float32 [M]: Gaussian log-density (up to a constant) of features [M, D]."""
  d = mu.shape[0]
  prec = jnp.linalg.inv(sigma + _RIDGE * jnp.trace(sigma) / d * jnp.eye(d))
  z = features - mu
  return -0.5 * jnp.einsum('bi,ij,bj->b', z, prec, z)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scored(refinement, n, variables, gen_params, labels, rng):
  """Candidates [B, N, H, W, C] with FD-gain and log-density scores [B, N]."""
  model, state = refinement.reward_model, variables['reward']
  images, gain = refine.candidates(
      refinement.generator, gen_params, labels, rng,
      refinement.act_fn(variables), model,
      state, n, transition=refinement.transition(variables))
  feats = model.pooled(state.frozen, images.reshape((-1,) + images.shape[2:]))
  density = log_density(feats, *model.real_stats(state))
  return images, gain, density.reshape(images.shape[:2])


def main(argv):
  del argv
  gen, gen_params = generators.build(
      shipped.fmnist_maskgit_generator(_STEPS.value))
  n = _MAX_N.value
  refinement, variables = refine.load_refinement(_POLICY.value, gen,
                                                 best_of=max(n, 2))
  if not isinstance(refinement.reward_model, rewards_lib.FDReward):
    raise SystemExit(f'{_POLICY.value} was not trained with the FD reward.')
  evaluator = evaluate.Evaluator.create('fmnist-test')
  seeds = [int(s) for s in _SEEDS.value]
  per = {}  # (score, N) -> per-seed metrics
  for seed in seeds:
    labels = sample.class_balanced_labels(_NUM.value, gen.num_classes)
    key = jax.random.key(seed)
    parts = []
    for i, start in enumerate(range(0, _NUM.value, _BATCH.value)):
      chunk = jnp.asarray(labels[start:start + _BATCH.value])
      parts.append([np.asarray(a) for a in _scored(
          refinement, n, variables, gen_params, chunk,
          jax.random.fold_in(key, i))])
    images, gain, density = (np.concatenate(p) for p in zip(*parts))
    rows = np.arange(images.shape[0])
    for name, score in (('fd_gain', gain), ('log_density', density)):
      for m in range(1, n + 1):
        pick = images[rows, np.argmax(score[:, :m], axis=1)]
        per.setdefault((name, m), []).append(evaluator(pick, labels))
        print(f'seed {seed} {name} best-of-{m}: '
              f'{evaluate.format_metrics(per[name, m][-1])}', flush=True)
  for (name, m), metrics in per.items():
    rows_lib.append(_OUT.value, rows_lib.summarise(
        metrics, stage='best_of_score', policy=_POLICY.value,
        steps=_STEPS.value, score=name, best_of=m, seeds=seeds,
        num=_NUM.value))


if __name__ == '__main__':
  cli.run(main)
