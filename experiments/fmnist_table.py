r"""The Fashion-MNIST results tables: evaluates schedules and trained policies.

Two stages, both on the evaluation network (FeatureNet), never on a reward,
for any shipped Fashion-MNIST generator (--generator=maskgit|sit|dit|var;
its tuning grid is GRIDS[generator]):

  # 1. Tune the hand-crafted schedule on a separate sampling seed (100), so
  #    the table's seeds never pick it: the grid, then the best point's
  #    neighbours, one step past the grid's edge where it lies on one,
  #    until the best is a local optimum (--expand rounds). The file is
  #    what `adagen_jax.sample --policy=tuned` ships (with the weights
  #    digest it was tuned on), so write it into the assets. Trials already
  #    in the file are reused: an interrupted tune resumes, and --grid
  #    (JSON) adds points to a finished one.
  python experiments/fmnist_table.py --stage=tune --steps=8 \
      --out=adagen_jax/assets/tuned/fmnist_maskgit_T8.json

  # 2. One table row: `num` class-balanced samples per seed, mean +- std.
  python experiments/fmnist_table.py --stage=eval --steps=8 \
      --method=heuristic --seeds=0,1,2 --out=results/rows.jsonl
  python experiments/fmnist_table.py --stage=eval --steps=8 \
      --method=tuned:adagen_jax/assets/tuned/fmnist_maskgit_T8.json \
      --seeds=0,1,2 --out=...
  python experiments/fmnist_table.py --stage=eval --steps=8 \
      --method=policy:runs/adv_T8_s{seed}/policy --seeds=0,1,2 --out=...

`policy:DIR` may contain `{seed}`: seed s then evaluates the policy trained
with seed s, sampled with seed s (one number per independently trained
policy). Rows are appended to --out as JSON lines; --stage=table prints the
markdown table of a rows file, pooling the rows of one name (a sweep
evaluates each training seed as it finishes:
experiments/fmnist_sweep.sh).
"""

import itertools
import json
import os

from absl import flags

from adagen_jax import cli
from adagen_jax import errors
from adagen_jax import evaluate
from adagen_jax import generators
from adagen_jax import sample
from adagen_jax.configs import shipped
import rows as rows_lib
import tuning

_STAGE = flags.DEFINE_enum('stage', 'eval', ['tune', 'eval', 'table'],
                           'What to run.')
_GENERATOR = flags.DEFINE_enum('generator', 'maskgit',
                               list(shipped.FMNIST_GENERATORS),
                               'Which shipped Fashion-MNIST model.')
_STEPS = flags.DEFINE_integer('steps', 8, 'Generation steps T (NFE for sit '
                              'and dit; var has one step per scale, 6).')
_METHOD = flags.DEFINE_string(
    'method', 'heuristic', "'heuristic', 'tuned:FILE.json' or 'policy:DIR'.")
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Sampling seeds.')
_NUM = flags.DEFINE_integer('num', 10000, 'Samples per seed.')
_NAME = flags.DEFINE_string('name', '', 'Row name (default: --method).')
_OUT = flags.DEFINE_string('out', None, 'Output JSON / JSONL file.',
                           required=True)
_GRID = flags.DEFINE_string(
    'grid', '', 'JSON {constant: [values]} replacing GRIDS[--generator] in '
    '--stage=tune.')
_EXPAND = flags.DEFINE_integer(
    'expand', 8, 'Rounds of --stage=tune after the grid that sample the '
    "best point's neighbours, one grid step past the edge where it lies on "
    'one (0: the grid only).')

# The tuning grids of the hand-crafted schedules, per generator.
GRIDS = {
    # Guidance at the end of the ramp, token sampling temperature, re-mask
    # (Gumbel) temperature scale. Down to no guidance and up to 4x the
    # re-mask noise: the 14x14 model's samples are precise but not diverse
    # (recall 0.33 at T=8 with the reference constants).
    'maskgit': dict(cfg_init=(0.0, 0.5, 1.0, 2.0, 3.0),
                    samp_temp_init=(1.0, 1.2), temp_init=(0.5, 1.0, 2.0, 4.0)),
    # Constant guidance w, the time grid (even in t, or even in log-SNR),
    # and the start time.
    'sit': dict(cfg_init=(0.0, 0.5, 1.0, 1.5, 2.5, 4.0),
                schedule=('reference', 'logsnr'), t_start=(0.01, 0.05, 0.1)),
    'dit': dict(cfg_init=(0.0, 0.5, 1.0, 1.5, 2.5, 4.0),
                schedule=('reference', 'logsnr'), t_start=(0.9, 1.0)),
    # Guidance (VAR's ramp to it), top-k (the published 112 of 512 codes,
    # or all), top-p and the sampling temperature: on the MaskGIT the
    # optimum sampled colder than the reference.
    'var': dict(cfg=(1.0, 1.5, 2.5, 4.0), top_k=(112.0, 512.0),
                top_p=(0.96, 1.0), samp_temp=(0.8, 1.0)),
}
# Largest values a tune may extend a constant to (`tuning.neighbourhood`): the
# DiT starts at most at pure noise, top-p is a probability and top-k at
# most VAR's codebook.
UPPER = {'dit': dict(t_start=1.0), 'var': dict(top_p=1.0, top_k=512.0)}
TUNE_SEED, TUNE_NUM = 100, 2000


def _generator(steps: int, overrides: dict | None = None):
  """The shipped Fashion-MNIST generator of --generator at `steps`."""
  cfg = shipped.fmnist_generator(_GENERATOR.value, steps)
  cfg.update(overrides or {})
  return generators.build(cfg)


def _grid() -> dict:
  """The tuning grid: GRIDS[--generator], or --grid over the same keys."""
  grid = GRIDS[_GENERATOR.value]
  if not _GRID.value:
    return grid
  try:
    override = json.loads(_GRID.value)
  except json.JSONDecodeError as e:
    raise errors.UserError(f'--grid is not JSON ({e}); write e.g. '
                           '\'{"cfg_init": [3, 4]}\'') from None
  if not isinstance(override, dict) or set(override) != set(grid):
    raise errors.UserError(f'--grid must give values for exactly '
                           f'{sorted(grid)}, got {override!r}.')
  return {k: tuple(float(v) if isinstance(v, (int, float)) else v
                   for v in override[k]) for k in grid}


def _earlier_trials(identity: dict, steps: int) -> list[dict]:
  """Trials of a finished tune of the same weights in --out (else [])."""
  if not os.path.exists(_OUT.value):
    return []
  with open(_OUT.value) as f:
    old = json.load(f)
  same = (old.get('weights_digest') == identity['weights_digest'] and
          old.get('steps') == steps and old.get('seed') == TUNE_SEED and
          old.get('num') == TUNE_NUM)
  return old['trials'] if same else []


def tune(steps: int, write) -> dict:
  """FD-FMNIST of every grid point on seed 100; returns the best point.

  Then, for --expand rounds, the best point's neighbours
  (`tuning.neighbourhood`), until they are all sampled: the tuned schedule
  is a local optimum of the constants, not a grid's corner. Trials already in --out (same weights,
  steps, seed and size) are kept and not sampled again, and `write` gets
  the result after every trial, so an interrupted tune resumes and a
  second grid extends the first; the best is chosen over all trials.
  """
  grid = _grid()  # first: a bad --grid fails before any loading
  evaluator = evaluate.Evaluator.create('fmnist-test')
  identity = _generator(steps)[0].identity()
  trials = _earlier_trials(identity, steps)

  def result():
    best = min(trials, key=lambda r: r['fd'])
    return dict(weights=identity['weights'],
                weights_digest=identity['weights_digest'], steps=steps,
                seed=TUNE_SEED, num=TUNE_NUM, trials=trials,
                best={k: best[k] for k in grid}, best_fd=best['fd'])

  def run(values_grid: dict) -> int:
    done = {tuple(float(t[k]) if isinstance(t[k], (int, float)) else t[k]
                  for k in grid) for t in trials}
    new = 0
    for values in itertools.product(*values_grid.values()):
      if values in done:
        continue
      point = dict(zip(grid, values))
      gen, params = _generator(steps, point)
      images, labels = sample.generate_with(gen, params, TUNE_NUM,
                                            TUNE_SEED)
      fd = evaluator(images, labels)['fd']
      trials.append(dict(point, fd=fd))
      new += 1
      print(f'T={steps} {point} FD {fd:.3f}', flush=True)
      write(result())
    return new

  run(grid)
  for _ in range(_EXPAND.value):
    if not run(tuning.neighbourhood(
        grid, trials, result()['best'], UPPER.get(_GENERATOR.value, {}))):
      break
  else:
    if _EXPAND.value:
      print(f'--expand={_EXPAND.value} rounds ended before the best point\'s '
            'neighbours were all sampled; run again to go on.', flush=True)
  return result()


def evaluate_method(method: str, steps: int, seeds: list[int], num: int
                    ) -> dict:
  """Metrics of one method per seed, and their mean and std."""
  evaluator = evaluate.Evaluator.create('fmnist-test')
  kind, _, arg = method.partition(':')
  overrides = {}
  if kind == 'tuned':
    with open(arg) as f:
      overrides = json.load(f)['best']
  elif kind not in ('heuristic', 'policy'):
    raise errors.UserError(f'unknown --method={method}')
  gen, params = _generator(steps, overrides)
  per_seed = []
  for seed in seeds:
    act_fn = (sample.make_act_fn(arg.format(seed=seed), gen)
              if kind == 'policy' else None)
    images, labels = sample.generate_with(gen, params, num, seed, act_fn)
    per_seed.append(evaluator(images, labels))
    print(f'{method} T={steps} seed {seed}: {per_seed[-1]}', flush=True)
  return rows_lib.summarise(per_seed, generator=_GENERATOR.value,
                            method=method, steps=steps,
                            seeds=seeds, num=num, overrides=overrides)


def table(rows_file: str) -> str:
  lines = ['| generator | T | method | seeds x samples | FD-FMNIST | '
           'precision | recall | label accuracy |',
           '|---|---|---|---|---|---|---|---|']
  # Per generator and T: the schedules first, then policies as evaluated.
  for r in sorted(rows_lib.pool(rows_lib.read(rows_file)),
                  key=lambda r: (r.get('generator', 'maskgit'), r['steps'],
                                 r['method'].startswith('policy'))):
    lines.append(f'| {r.get("generator", "maskgit")} | {r["steps"]} | '
                 f'{r.get("name") or r["method"]} | '
                 f'{len(r["seeds"])} x {r["num"]} | {rows_lib.cells(r)} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  if _STAGE.value == 'tune':
    # Written atomically after every trial: an interrupted tune leaves the
    # best so far (never an empty file where a shipped tuned asset was).
    def write(result):
      with open(_OUT.value + '.tmp', 'w') as f:
        json.dump(result, f, indent=1)
      os.replace(_OUT.value + '.tmp', _OUT.value)
    write(tune(_STEPS.value, write))
  elif _STAGE.value == 'eval':
    row = evaluate_method(_METHOD.value, _STEPS.value,
                          [int(s) for s in _SEEDS.value], _NUM.value)
    row['name'] = _NAME.value or _METHOD.value
    rows_lib.append(_OUT.value, row)
  else:
    print(table(_OUT.value))


if __name__ == '__main__':
  cli.run(main)
