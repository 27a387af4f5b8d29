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


def cells(row: dict) -> str:
  """'mean +- std' of every metric, joined as markdown table cells."""
  return ' | '.join(f'{row[m]["mean"]:.{2 if m == "fd" else 3}f} +- '
                    f'{row[m]["std"]:.{2 if m == "fd" else 3}f}'
                    for m in METRICS)
