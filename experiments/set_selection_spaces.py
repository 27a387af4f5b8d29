r"""Best-of-N rules beyond the per-sample argmax (issue 19 item 7).

A diagnostic beside `fmnist_refine.py --stage=scores`, with its flags:

  python experiments/set_selection_spaces.py \
      --policy=adagen_jax/assets/policies/fmnist_maskgit_T4_adagen \
      --steps=4 --max_n=4 --seeds=0 --num=2000 \
      --out=docs/results/fmnist_maskgit_T4_set_selection.json
  # The outlier rejection alone, on the seeds not used to look at it:
  python experiments/set_selection_spaces.py --policy=... --steps=4 \
      --max_n=4 --seeds=1,2 --num=2000 --rules=typical_first \
      --out=docs/results/fmnist_maskgit_T4_typical_first.json

Draws max_n candidates per sample (as fmnist_refine.py does), then chooses
them with `refine.select_for_set` on the pooled features of

- DiscBackbone block 3 (the policy's FD reward), blocks 1-4 together,
  ContrastNet's three stages (self-supervised), and all eight;
- DiscBackbone block 3 and blocks 1-4 stopped after a few rounds of 2%;

and, per sample, by rejecting outliers: keep the first candidate whose
Gaussian log-density in DiscBackbone block k's features (k = 3, 4; real
statistics of 10 000 training images) is above the p-th percentile of
10 000 other training images' (p = 10, 25), the best one where none is.
A candidate replaces a sample only if the sample is atypical, so the set
keeps its diversity. And by a Gaussian density ratio (`--rules=ratio`):
each sample draws one of its first N candidates in proportion to
(p_real / p_gen)^beta, both Gaussians in block k's features (k = 3, 4;
p_gen fitted on the whole candidate pool):

  python experiments/set_selection_spaces.py --policy=... --steps=4 \
      --max_n=8 --seeds=0 --num=2000 --rules=ratio \
      --out=docs/results/fmnist_maskgit_T4_gaussian_ratio.json

(the linear discriminator that replaced it: discriminator_best_of.py).

Real statistics: 20 000 training images (never the test split).
FeatureNet scores every choice against the test split, as everywhere;
nothing here is used to pick a shipped setting.
"""

import json

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax import evaluate
from adagen_jax.data import fashion_mnist
from adagen_jax.metrics import fid
from adagen_jax.rl import refine
from adagen_jax.rl import rewards as rewards_lib
import fmnist_refine

_REALS = refine.TYPICAL_REALS
_CHUNK = 500
_ROUNDS = (0, 1, 2, 3, 5, 8, 12, 20, 40)
_PERCENTILES = (10, 25)
_BETAS = (0.25, 0.5, 1.0)
_RULES = flags.DEFINE_list(
    'rules', ['set_fd', 'early_stop', 'typical_first'],
    'Which rules to run: set_fd (every space, to convergence), early_stop '
    '(disc3 and disc1-4 after a few rounds), typical_first, ratio.')


def _pooled_sets(backbone, images: np.ndarray) -> list[np.ndarray]:
  """Per feature set of the backbone, float32 [M, D] token means."""
  fn = jax.jit(lambda x: [jnp.mean(f, axis=1)
                          for f in backbone.features(backbone.variables, x)])
  out = [fn(images[i:i + _CHUNK]) for i in range(0, images.shape[0], _CHUNK)]
  return [np.concatenate([np.asarray(o[k]) for o in out])
          for k in range(len(out[0]))]


def feature_spaces(flat: np.ndarray, num: int, n: int
                   ) -> tuple[dict, dict]:
  """name -> (feats [num, n, D], mu_r, sigma_r) of every reward feature set;
  name -> real features [R, D]."""
  reals = fashion_mnist.load('train')[0][:_REALS]
  spaces, real_feats = {}, {}
  for name, backbone in (('disc', rewards_lib.fmnist_backbone()),
                         ('contrast', rewards_lib.fmnist_contrast_backbone())):
    for k, (fake, real) in enumerate(zip(_pooled_sets(backbone, flat),
                                         _pooled_sets(backbone, reals))):
      spaces[f'{name}{k}'] = (fake.reshape(num, n, -1),
                              *fid.feature_stats(real))
      real_feats[f'{name}{k}'] = real
  return spaces, real_feats


def typical_first(feats: np.ndarray, reals: np.ndarray, percentile: float
                  ) -> np.ndarray:
  """int [M]: per sample, the first of its candidates (feats [M, N, D])
  whose log-density under the first half of `reals` is above the
  percentile of the second half's; the densest where none is (the rule
  `adagen_jax.sample --best_of_rule=typical` runs)."""
  half = reals.shape[0] // 2
  mu, prec = refine.gaussian(*fid.feature_stats(reals[:half]))
  density = lambda x: refine.typicality(jnp.asarray(x), mu, prec)
  tau = jnp.percentile(density(reals[half:]), percentile)
  score = density(feats.reshape(-1, feats.shape[-1])).reshape(feats.shape[:2])
  return np.asarray(refine.first_typical(score, tau))


def ratio_resample(feats: np.ndarray, reals: np.ndarray, beta: float,
                   gumbel: np.ndarray) -> np.ndarray:
  """int [M]: per sample, one of its candidates (feats [M, N, D]) drawn with
  probability proportional to (p_real(f) / p_gen(f))^beta.

  Sampling-importance-resampling: with the true density ratio and beta = 1
  the kept samples are distributed as p_gen x p_real / p_gen = p_real as N
  grows, so the set moves towards the real distribution as a whole instead
  of towards the highest per-sample score. Both densities are Gaussians in
  the reward backbone's features: p_real on `reals`, p_gen on every
  candidate of the pool (the generator's own distribution). Their
  normalising constants are the same for every candidate, so they cancel.
  `gumbel` [M, N] makes the draw; the same noise for every N keeps the
  choices nested.
  """
  m, n, d = feats.shape
  flat = jnp.asarray(feats.reshape(-1, d))
  mu_r, prec_r = refine.gaussian(*fid.feature_stats(reals))
  mu_g, prec_g = refine.gaussian(*fid.feature_stats(np.asarray(flat)))
  log_w = (refine.typicality(flat, mu_r, prec_r)
           - refine.typicality(flat, mu_g, prec_g)).reshape(m, n)
  return np.asarray(jnp.argmax(beta * log_w + gumbel, axis=1))


def main(argv):
  del argv
  steps, n, num = (fmnist_refine._STEPS.value, fmnist_refine._MAX_N.value,
                   fmnist_refine._NUM.value)
  gen, gen_params = fmnist_refine._generator(steps)
  refinement, variables = refine.load_refinement(
      fmnist_refine._POLICY.value, gen, best_of=max(n, 2))
  evaluator = evaluate.Evaluator.create('fmnist-test')
  groups = {'disc3': ['disc3'], 'disc1-4': ['disc1', 'disc2', 'disc3', 'disc4'],
            'contrast0-2': ['contrast0', 'contrast1', 'contrast2']}
  results = []
  for seed in [int(s) for s in fmnist_refine._SEEDS.value]:
    images, _, labels = fmnist_refine.scored_candidates(
        refinement, variables, gen_params, num, seed, n,
        fmnist_refine._BATCH.value)
    spaces, real_feats = feature_spaces(
        images.reshape((-1,) + images.shape[2:]), num, n)
    groups['all'] = list(spaces)
    rows = np.arange(num)

    def record(chosen, **fields):
      metrics = evaluator(images[rows, chosen], labels)
      row = dict(fields, seed=seed, num=num, switched=int(np.sum(chosen > 0)),
                 **metrics)
      print(json.dumps(row), flush=True)
      results.append(row)

    def evaluate_choice(**fields):
      keys = groups[fields['spaces']]
      chosen, history = refine.select_for_set(
          [spaces[k] for k in keys], **fields.get('options', {}))
      record(chosen, rule='set_fd', objective=[history[0], history[-1]],
             **fields)

    rules = set(_RULES.value)
    for name in groups if 'set_fd' in rules else ():
      evaluate_choice(spaces=name, best_of=n)
    for name in ('disc3', 'disc1-4') if 'early_stop' in rules else ():
      for rounds in _ROUNDS:
        evaluate_choice(spaces=name, best_of=n,
                        options=dict(fraction=0.02, max_rounds=rounds))
    for name in ('disc3', 'disc4') if 'typical_first' in rules else ():
      for p in _PERCENTILES:
        for best_of in range(1, n + 1):
          record(typical_first(spaces[name][0][:, :best_of], real_feats[name],
                               p), rule='typical_first', spaces=name,
                 percentile=p, best_of=best_of)
    gumbel = np.asarray(jax.random.gumbel(jax.random.key(seed), (num, n)))
    for name in ('disc3', 'disc4') if 'ratio' in rules else ():
      for beta in _BETAS:
        for best_of in range(1, n + 1):
          # The generated Gaussian is fitted on the whole pool for every
          # N, so N only changes how many candidates a sample draws from.
          # Candidates past the N-th get -inf noise: never drawn.
          chosen = ratio_resample(spaces[name][0], real_feats[name], beta,
                                  np.where(np.arange(n) < best_of, gumbel,
                                           -np.inf))
          record(chosen, rule='ratio', spaces=name, beta=beta,
                 best_of=best_of)
  with open(fmnist_refine._OUT.value, 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  cli.run(main)
