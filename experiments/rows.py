"""Result rows shared by the experiment scripts: per-seed metrics -> row."""

import json

import numpy as np

METRICS = ('fd', 'precision', 'recall', 'label_acc')


def summarise(per_seed: list[dict], **fields) -> dict:
  """A row: `fields` plus {metric: {mean, std, values}} over the seeds."""
  row = dict(fields)
  for m in METRICS:
    values = [float(r[m]) for r in per_seed]
    row[m] = dict(mean=float(np.mean(values)), std=float(np.std(values)),
                  values=values)
  return row


def append(path: str, row: dict):
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')


def read(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def pool(rows: list[dict]) -> list[dict]:
  """Merges rows of one (generator, steps, name), in first-seen order.

  A sweep evaluates each independently trained seed on its own (one row per
  training seed); the table wants one row per method over all of them.
  """
  groups = {}
  for r in rows:
    key = (r.get('generator', 'maskgit'), r['steps'],
           r.get('name') or r['method'])
    groups.setdefault(key, []).append(r)
  pooled = []
  for group in groups.values():
    values = {m: [v for r in group for v in r[m]['values']] for m in METRICS}
    per_seed = [{m: values[m][i] for m in METRICS}
                for i in range(len(values[METRICS[0]]))]
    first = {k: v for k, v in group[0].items() if k not in METRICS}
    first['seeds'] = sum((list(r['seeds']) for r in group), [])
    pooled.append(summarise(per_seed, **first))
  return pooled


def cells(row: dict) -> str:
  """'mean +- std' of every metric (the mean alone for one seed), joined as
  markdown table cells."""
  out = []
  for m in METRICS:
    digits = 2 if m == 'fd' else 3
    cell = f'{row[m]["mean"]:.{digits}f}'
    if len(row[m]['values']) > 1:
      cell += f' +- {row[m]["std"]:.{digits}f}'
    out.append(cell)
  return ' | '.join(out)
