"""Progress lines with rate and ETA for every long loop.

  progress = Progress(total=1000, desc='train')
  for step in range(1000):
    ...
    progress.update(loss=loss)  # logs at most every 10 s, and at the end

prints lines like `train 120/1000 (12%) 3.4 it/s ETA 4m18s loss=0.2345`.
The rate is measured from the first `update` on, so the first call (which
usually pays for jit compilation) does not distort the ETA. Scalars may be
device arrays; they are fetched only when a line is printed.

Why not clu.periodic_actions.ReportProgress: it imports clu.metric_writers,
which imports TensorFlow (checked with clu 0.0.12: ModuleNotFoundError
without it), and a CPU user of this library should not need TensorFlow for
a progress line. clu.metrics and clu.parameter_overview need no TensorFlow
and are used (train.py).
"""

import time

from absl import logging
import jax
import numpy as np


def format_seconds(seconds: float) -> str:
  """3725 -> '1h02m', 258 -> '4m18s', 7.2 -> '7s'."""
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  if seconds >= 60:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds}s'


def _format_scalar(value) -> str:
  # Values may be device arrays: converting only here, when a line is due,
  # keeps the loop from waiting on the device at every step.
  value = np.asarray(value)
  if value.dtype.kind == 'f':
    return f'{float(value):.4g}'
  return str(value.item() if value.ndim == 0 else value)


class Progress:
  """Counts work items and logs `desc i/total (p%) rate ETA scalars`.

  Attributes:
    total: number of items the loop will process.
    desc: what the loop does; starts every line.
    every_s: minimum seconds between two lines (the last item always logs).
    enabled: log at all; by default only on process 0, so a multi-host run
      prints one line per update, not one per host.
  """

  def __init__(self, total: int, desc: str, every_s: float = 10.0,
               enabled: bool | None = None):
    self.total = int(total)
    self.desc = desc
    self.every_s = every_s
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.count = 0
    self._t0 = None  # time and count at the first update
    self._count0 = 0
    self._last_log = None

  def rate(self) -> float | None:
    """Items per second since the first update, or None before two."""
    if self._t0 is None or self.count == self._count0:
      return None
    elapsed = time.monotonic() - self._t0
    return (self.count - self._count0) / elapsed if elapsed > 0 else None

  def line(self, **scalars) -> str:
    """The status line `desc i/total (p%) r it/s ETA t key=value ...`;
    None values are left out."""
    pct = 100.0 * self.count / self.total if self.total else 100.0
    parts = [f'{self.desc} {self.count}/{self.total} ({pct:.0f}%)']
    rate = self.rate()
    if rate:
      parts.append(f'{rate:.0f} it/s' if rate >= 100 else f'{rate:.3g} it/s')
      remaining = max(self.total - self.count, 0)
      parts.append(f'ETA {format_seconds(remaining / rate)}' if remaining
                   else 'done')
    parts += [f'{k}={_format_scalar(v)}' for k, v in scalars.items()
              if v is not None]
    return ' '.join(parts)

  def update(self, n: int = 1, **scalars) -> str | None:
    """Adds `n` finished items; returns the line if one was logged."""
    now = time.monotonic()
    self.count += n
    if self._t0 is None:
      self._t0, self._count0, self._last_log = now, self.count, now
    due = (now - self._last_log >= self.every_s or self.count >= self.total)
    if not (due and self.enabled):
      return None
    text = self.line(**scalars)
    logging.info('%s', text)
    # Formatting waited for the device (async dispatch), so restart the
    # interval from here.
    self._last_log = time.monotonic()
    return text
