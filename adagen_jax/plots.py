"""Figures people look at: learned per-sample schedules (paper Fig. 15)."""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _save(fig, path: str):
  """Writes the figure as a PNG atomically (the folder is created)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)


def plot_schedules(path: str, actions: np.ndarray, names, scores: np.ndarray,
                   heuristic: np.ndarray | None = None, num_each: int = 4,
                   title: str = '', tuned: np.ndarray | None = None):
  """Per-sample actions against the step, for easy and hard samples.

  Args:
    path: PNG file to write.
    actions: float [T, B, A] executed (activated) actions.
    names: the A action names.
    scores: float [B] per-sample score (e.g. the reward); the `num_each`
      highest are drawn as "easy" (blue), the lowest as "hard" (red).
    heuristic: optional float [T, A] hand-crafted schedule (dashed black).
    num_each: samples drawn per group.
    title: figure title.
    tuned: optional float [T, A] tuned hand-crafted schedule (dotted green).
  """
  actions = np.asarray(actions, np.float64)
  order = np.argsort(np.asarray(scores))
  hard, easy = order[:num_each], order[-num_each:]
  steps = np.arange(actions.shape[0])
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0),
                           squeeze=False)
  for a, (ax, name) in enumerate(zip(axes[0], names)):
    for i, b in enumerate(easy):
      ax.plot(steps, actions[:, b, a], color='tab:blue', alpha=0.8,
              label='easy (high reward)' if i == 0 else None)
    for i, b in enumerate(hard):
      ax.plot(steps, actions[:, b, a], color='tab:red', alpha=0.8,
              label='hard (low reward)' if i == 0 else None)
    if heuristic is not None:
      ax.plot(steps, heuristic[:, a], 'k--', label='hand-crafted')
    if tuned is not None:
      ax.plot(steps, tuned[:, a], 'g:', label='tuned hand-crafted')
    ax.set_title(name, fontsize=9)
    ax.set_xlabel('step')
  axes[0][0].legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)


def plot_curves(path: str, curves: dict, xlabel: str, ylabel: str,
                title: str = ''):
  """Line plot of named curves {name: (xs, ys)} (trade-offs, sweeps)."""
  fig, ax = plt.subplots(figsize=(4.5, 3.4))
  for name, (xs, ys) in curves.items():
    ax.plot(xs, ys, marker='o', label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  _save(fig, path)
