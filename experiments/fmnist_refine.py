r"""Inference-time refinement on the Fashion-MNIST MaskGIT (paper Tables IX-X).

Every number is FD-FMNIST etc. on the evaluation network (FeatureNet); the
candidates are scored by the policy's own discriminator (DiscBackbone), never
by FeatureNet.

  # Best-of-N for N = 1..6 (and with value lookahead K = 2 at every step but
  # the last): rows appended to --out.
  python experiments/fmnist_refine.py --stage=best_of --policy=RUN/policy \
      --max_n=6 --lookahead=1 --seeds=0,1,2 --num=10000 --out=refine.jsonl
  python experiments/fmnist_refine.py --stage=best_of --policy=RUN/policy \
      --max_n=6 --lookahead=2 --seeds=0,1,2 --num=10000 --out=refine.jsonl

  # The lambda-blend sweep (a PNG grid per lambda under --figures).
  python experiments/fmnist_refine.py --stage=lam --policy=RUN/policy \
      --fidelity_policy=RUN/fidelity/policy --lams=0,0.25,0.5,0.75,1 \
      --seeds=0,1,2 --num=10000 --out=lam.jsonl --figures=docs/figures

  # The same candidates kept by FD gain or by typicality (the Gaussian
  # log-density of the reward features under the real statistics), each a
  # per-sample score, or chosen together for the set's FD in the reward's
  # features (refine.select_for_set).
  python experiments/fmnist_refine.py --stage=scores --policy=RUN/policy \
      --max_n=4 --seeds=0,1,2 --num=2000 --out=scores.jsonl

  # Markdown tables and trade-off plots of the rows files.
  python experiments/fmnist_refine.py --stage=report --out=refine.jsonl \
      --lam_rows=lam.jsonl --figures=docs/figures

Best-of-N draws max_n candidates per sample once and keeps, for each N, the
best-scored of the first N (`refine.candidates`): the candidates are i.i.d.,
so this is best-of-N for every N at the cost of the largest, and N = 1 is
plain sampling with the policy.
"""

import dataclasses
import functools
import os
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax import errors
from adagen_jax import evaluate
from adagen_jax import generators
from adagen_jax import images as images_lib
from adagen_jax import plots
from adagen_jax import progress
from adagen_jax import sample
from adagen_jax.configs import shipped
from adagen_jax.rl import refine
from adagen_jax.rl import rewards as rewards_lib
import rows as rows_lib

_STAGE = flags.DEFINE_enum('stage', 'best_of',
                           ['best_of', 'lam', 'scores', 'report'],
                           'What to run.')
_POLICY = flags.DEFINE_string('policy', None, 'Main policy export folder.')
_FIDELITY = flags.DEFINE_string('fidelity_policy', None,
                                'Fidelity policy export (--stage=lam).')
_STEPS = flags.DEFINE_integer('steps', 8, 'Generation steps T.')
_MAX_N = flags.DEFINE_integer('max_n', 6, 'Largest N of best-of-N.')
_LOOKAHEAD = flags.DEFINE_integer('lookahead', 1, 'K of the value lookahead '
                                  '(1: none), at every step but the last.')
_LAMS = flags.DEFINE_list('lams', ['0', '0.25', '0.5', '0.75', '1'],
                          'Blend weights of --stage=lam.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Sampling seeds.')
_NUM = flags.DEFINE_integer('num', 10000, 'Samples per seed.')
_BATCH = flags.DEFINE_integer('batch', 250, 'Labels per generation call.')
_OUT = flags.DEFINE_string('out', None, 'Rows file (JSON lines).',
                           required=True)
_LAM_ROWS = flags.DEFINE_string('lam_rows', None, 'Lambda rows file of '
                                '--stage=report.')
_FIGURES = flags.DEFINE_string('figures', 'docs/figures', 'PNG folder.')


def _prefix(steps: int) -> str:
  """Figure name prefix of T (one T's figures never overwrite another's)."""
  return f'fmnist_maskgit_T{steps}'


def _generator(steps: int):
  return generators.build(shipped.fmnist_maskgit_generator(steps))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _candidates(refinement, n: int, variables, gen_params, labels, rng):
  """One batch of n scored candidates per label (compiled once per run)."""
  return refine.candidates(
      refinement.generator, gen_params, labels, rng,
      refinement.act_fn(variables), refinement.reward_model,
      variables['reward'], n, transition=refinement.transition(variables))


def scored_candidates(refinement, variables, gen_params, num: int, seed: int,
                      n: int, batch: int) -> tuple[np.ndarray, np.ndarray,
                                                   np.ndarray]:
  """n scored candidates for each of `num` class-balanced labels.

  Returns:
    images float32 [num, n, H, W, C]; scores float32 [num, n]; labels int32
    [num]. Batch i draws from fold_in(key(seed), i), as in sample.py.
  """
  gen = refinement.generator
  labels = sample.class_balanced_labels(num, gen.num_classes)
  key = jax.random.key(seed)
  images, scores = [], []
  bar = progress.Progress(num, f'best-of-{n} candidates, seed {seed}')
  for i, start in enumerate(range(0, num, batch)):
    chunk = labels[start:start + batch]
    padded = np.pad(chunk, (0, batch - chunk.shape[0]))
    x, s = _candidates(refinement, n, variables, gen_params,
                       jnp.asarray(padded), jax.random.fold_in(key, i))
    images.append(np.asarray(x)[:chunk.shape[0]])
    scores.append(np.asarray(s)[:chunk.shape[0]])
    bar.update(chunk.shape[0])
  return np.concatenate(images), np.concatenate(scores), labels


def best_prefix(images: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
  """[num, H, W, C]: per sample, the best-scored of its first n candidates."""
  chosen = np.argmax(scores[:, :n], axis=1)
  return images[np.arange(images.shape[0]), chosen]


def run_best_of(policy: str, steps: int, max_n: int, lookahead: int,
                seeds: list[int], num: int, batch: int) -> list[dict]:
  """One row per N = 1..max_n, each over the seeds."""
  gen, gen_params = _generator(steps)
  refinement, variables = refine.load_refinement(
      policy, gen, best_of=max(max_n, 2), lookahead=lookahead)
  evaluator = evaluate.Evaluator.create('fmnist-test')
  per_n = {n: [] for n in range(1, max_n + 1)}
  seconds = []
  for seed in seeds:
    start = time.time()
    images, scores, labels = scored_candidates(
        refinement, variables, gen_params, num, seed, max_n, batch)
    seconds.append(time.time() - start)
    for n in per_n:
      per_n[n].append(evaluator(best_prefix(images, scores, n), labels))
      print(f'seed {seed} lookahead {lookahead} best-of-{n}: '
            f'{evaluate.format_metrics(per_n[n][-1])}', flush=True)
  rows = []
  for n, per_seed in per_n.items():
    # Refinement.cost counts what the reward scores per candidate: the
    # adversarial heads see its whole group, the FD score one feature vector.
    cost = dataclasses.replace(refinement, best_of=n).cost()
    rows.append(rows_lib.summarise(
        per_seed, stage='best_of', policy=os.path.abspath(policy),
        steps=steps, best_of=n, lookahead=lookahead,
        lookahead_steps=list(refinement.steps), seeds=seeds, num=num,
        cost=cost, seconds_per_seed_all_candidates=seconds))
  return rows


def run_lam(policy: str, fidelity: str, steps: int, lams: list[float],
            seeds: list[int], num: int, figures: str) -> list[dict]:
  """One row per lambda; a PNG grid of seed seeds[0]'s first samples."""
  gen, gen_params = _generator(steps)
  evaluator = evaluate.Evaluator.create('fmnist-test')
  refinement, variables = refine.load_refinement(
      policy, gen, lam=0.0, fidelity_policy=fidelity)
  rows = []
  for lam in lams:
    # The blend weight is an array argument: no recompilation across lam.
    variables = dict(variables, lam=jnp.float32(lam))
    per_seed = []
    for seed in seeds:
      images, labels = sample.generate_with(
          gen, gen_params, num, seed, refinement=(refinement, variables))
      per_seed.append(evaluator(images, labels))
      print(f'lam {lam} seed {seed}: '
            f'{evaluate.format_metrics(per_seed[-1])}', flush=True)
      if seed == seeds[0]:
        images_lib.save_grid(
            os.path.join(figures, f'{_prefix(steps)}_lam{lam:g}.png'),
            images[:100], nrow=gen.num_classes, upscale=2)
    rows.append(rows_lib.summarise(
        per_seed, stage='lam', policy=os.path.abspath(policy),
        fidelity_policy=os.path.abspath(fidelity), steps=steps, lam=lam,
        seeds=seeds, num=num))
  return rows


@functools.partial(jax.jit, static_argnums=0)
def _pooled(reward_model, reward_state, images, labels):
  """float32 [M, D]: the FD reward's pooled features (never FeatureNet)."""
  return reward_model.pooled(reward_state.frozen, images, labels)


def run_scores(policy: str, steps: int, max_n: int, seeds: list[int],
               num: int, batch: int) -> list[dict]:
  """Best-of-N of an FD-reward policy kept by three rules.

  - fd_gain: the FD gain over fixed reference samples, the training reward
    with the batch-mates held fixed (per sample);
  - log_density: the Gaussian log-density of the candidate's reward
    features under the real statistics the FD reward holds (per sample);
  - set_fd: every sample's candidate chosen together, by descent on the
    reward's FD of the whole chosen set (`refine.select_for_set`).
  One row per (rule, N), all over the same candidates; set_fd rows also
  carry the reward's own FD before and after the selection.
  """
  gen, gen_params = _generator(steps)
  refinement, variables = refine.load_refinement(policy, gen,
                                                 best_of=max(max_n, 2))
  model, state = refinement.reward_model, variables['reward']
  if not isinstance(model, rewards_lib.FDReward):
    raise errors.UserError(f'--stage=scores needs a policy trained with the '
                           f'FD reward; {policy} was not.')
  evaluator = evaluate.Evaluator.create('fmnist-test')
  mu_r, sigma_r = model.real_stats(state)
  real = refine.gaussian(mu_r, sigma_r)
  per, reward_fd = {}, {}  # (rule, N) -> per-seed metrics / reward FDs
  for seed in seeds:
    images, gain, labels = scored_candidates(
        refinement, variables, gen_params, num, seed, max_n, batch)
    flat = images.reshape((-1,) + images.shape[2:])
    flat_labels = np.repeat(labels, max_n)  # each label's n candidates
    feats = np.concatenate([
        np.asarray(_pooled(model, state, flat[i:i + batch * max_n],
                           flat_labels[i:i + batch * max_n]))
        for i in range(0, flat.shape[0], batch * max_n)])
    density = np.asarray(refine.typicality(feats, *real)).reshape(gain.shape)
    feats = feats.reshape(gain.shape + feats.shape[1:])
    for n in range(1, max_n + 1):
      chosen, history = refine.select_for_set([(feats[:, :n], mu_r, sigma_r)])
      picks = {'fd_gain': best_prefix(images, gain, n),
               'log_density': best_prefix(images, density, n),
               'set_fd': images[np.arange(num), chosen]}
      reward_fd.setdefault(n, []).append((history[0], history[-1]))
      for name, kept in picks.items():
        per.setdefault((name, n), []).append(evaluator(kept, labels))
        print(f'seed {seed} {name} best-of-{n}: '
              f'{evaluate.format_metrics(per[name, n][-1])}', flush=True)
      print(f'seed {seed} set_fd best-of-{n}: reward FD {history[0]:.3f} -> '
            f'{history[-1]:.3f} in {len(history) - 1} rounds', flush=True)
  rows = []
  for (name, n), metrics in per.items():
    extra = {}
    if name == 'set_fd':
      extra = dict(reward_fd_before=[b for b, _ in reward_fd[n]],
                   reward_fd_after=[a for _, a in reward_fd[n]])
    rows.append(rows_lib.summarise(metrics, stage='best_of_score',
                                   policy=os.path.abspath(policy),
                                   steps=steps, score=name, best_of=n,
                                   seeds=seeds, num=num, **extra))
  return rows


def report(rows_file: str, lam_file: str | None, figures: str) -> str:
  """Markdown tables; writes the trade-off plots under `figures`."""
  metrics = 'FD-FMNIST | precision | recall | label accuracy |'
  out = []
  rows = sorted(rows_lib.read(rows_file),
                key=lambda r: (r['lookahead'], r['best_of']))
  if rows:
    lines = ['| lookahead K | best-of N | generator transitions / sample | '
             'discriminator forwards / sample | ' + metrics,
             '|---' * 8 + '|']
    curves = {}
    for r in rows:
      c = r['cost']
      lines.append(f'| {r["lookahead"]} | {r["best_of"]} | '
                   f'{c["generator_transitions"]:.0f} | '
                   f'{c["discriminator_forwards"]:.0f} | '
                   f'{rows_lib.cells(r)} |')
      name = ('best-of-N' if r['lookahead'] == 1 else
              f'best-of-N + lookahead K={r["lookahead"]}')
      xs, ys = curves.setdefault(name, ([], []))
      xs.append(c['generator_transitions'])
      ys.append(r['fd']['mean'])
    fig = os.path.join(figures, f'{_prefix(rows[0]["steps"])}_best_of_n.png')
    max_n = max(r['best_of'] for r in rows)
    plots.plot_curves(fig, curves, 'generator transitions per sample',
                      'FD-FMNIST (lower is better)',
                      f'best-of-N (N = 1..{max_n}) and lookahead')
    out += ['\n'.join(lines), f'Plot: {fig}']
  if lam_file:
    lam_rows = sorted(rows_lib.read(lam_file), key=lambda r: r['lam'])
    lines = ['| lambda | ' + metrics, '|---' * 5 + '|']
    lines += [f'| {r["lam"]:g} | {rows_lib.cells(r)} |' for r in lam_rows]
    lams = [r['lam'] for r in lam_rows]
    prefix = _prefix(lam_rows[0]['steps'])
    fig = os.path.join(figures, f'{prefix}_lam_tradeoff.png')
    plots.plot_curves(fig, {m: (lams, [r[m]['mean'] for r in lam_rows])
                            for m in ('precision', 'recall', 'label_acc')},
                      'lambda (0: main policy, 1: fidelity policy)',
                      'metric', 'fidelity-diversity blend')
    fd_fig = os.path.join(figures, f'{prefix}_lam_fd.png')
    plots.plot_curves(fd_fig, {'FD-FMNIST': (lams, [r['fd']['mean']
                                                    for r in lam_rows])},
                      'lambda', 'FD-FMNIST', 'fidelity-diversity blend')
    out += ['\n'.join(lines), f'Plots: {fig}, {fd_fig}']
  return '\n\n'.join(out)


def main(argv):
  del argv
  seeds = [int(s) for s in _SEEDS.value]
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  if _STAGE.value == 'report':
    print(report(_OUT.value, _LAM_ROWS.value, _FIGURES.value))
    return
  if not _POLICY.value:
    raise errors.UserError('--policy=RUN/policy is required.')
  if _STAGE.value == 'best_of':
    new = run_best_of(_POLICY.value, _STEPS.value, _MAX_N.value,
                      _LOOKAHEAD.value, seeds, _NUM.value, _BATCH.value)
  elif _STAGE.value == 'scores':
    new = run_scores(_POLICY.value, _STEPS.value, _MAX_N.value, seeds,
                     _NUM.value, _BATCH.value)
  else:
    if not _FIDELITY.value:
      raise errors.UserError('--stage=lam needs --fidelity_policy.')
    new = run_lam(_POLICY.value, _FIDELITY.value, _STEPS.value,
                  [float(x) for x in _LAMS.value], seeds, _NUM.value,
                  _FIGURES.value)
  for row in new:
    rows_lib.append(_OUT.value, row)


if __name__ == '__main__':
  cli.run(main)
