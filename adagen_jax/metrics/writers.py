"""A TensorFlow-free metric writer with clu's MetricWriter method names.

clu.metric_writers imports TensorFlow (jax_anchors.md §4), so this writes:

  workdir/metrics.jsonl   one JSON object per write_scalars call:
                          {"step": 100, "loss": 0.25, "lr": 0.001}
  workdir/hparams.json    the last write_hparams call
  workdir/tb/events.*     TensorBoard event files via tensorboardX

Only process 0 writes; on the other processes every method is a no-op, so
callers need no `if jax.process_index() == 0` of their own.
"""

import json
import math
import os
from typing import Any, Mapping

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import numpy as np

JSONL_NAME = 'metrics.jsonl'
HPARAMS_NAME = 'hparams.json'
TB_DIR = 'tb'


def _to_float(value) -> float:
  return float(np.asarray(jax.device_get(value)))


def _json_safe(value: float):
  # JSON has no NaN/inf; write them as strings a reader can still parse.
  return value if math.isfinite(value) else str(value)


class MetricWriter:
  """Writes scalars to JSONL and TensorBoard, images to TensorBoard.

  Attributes:
    workdir: the run directory (created if missing).
    enabled: False on processes other than 0.
  """

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    if self.enabled:
      # Imported here: only the writing process needs tensorboardX.
      import tensorboardX  # pylint: disable=g-import-not-at-top
      os.makedirs(workdir, exist_ok=True)
      # Appending keeps the history of a resumed run in one file.
      self._jsonl = open(os.path.join(workdir, JSONL_NAME), 'a',
                         encoding='utf-8')
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, TB_DIR))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    """Logs {name: scalar} at `step` (device arrays are fetched here)."""
    if not self.enabled:
      return
    values = {k: _to_float(v) for k, v in scalars.items()}
    record = {'step': int(step)}
    record.update({k: _json_safe(v) for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    for name, value in values.items():
      self._tb.add_scalar(name, value, int(step))

  def write_images(self, step: int, images: Mapping[str, Any]):
    """Logs {name: float [0, 1] or uint8 [N, H, W, C] or [H, W, C]}."""
    if not self.enabled:
      return
    for name, value in images.items():
      value = np.asarray(jax.device_get(value))
      if value.ndim == 3:
        value = value[None]
      if value.ndim != 4:
        raise ValueError(f'Image {name!r} must be [N, H, W, C] or [H, W, C], '
                         f'got shape {value.shape}.')
      if value.dtype != np.uint8:
        value = np.clip(np.round(value * 255.0), 0, 255).astype(np.uint8)
      self._tb.add_images(name, value, int(step), dataformats='NHWC')

  def write_hparams(self, hparams: Mapping[str, Any]):
    """Writes hparams.json and a TensorBoard text summary of them."""
    if not self.enabled:
      return
    hparams = dict(hparams)
    with open(os.path.join(self.workdir, HPARAMS_NAME), 'w',
              encoding='utf-8') as f:
      json.dump(hparams, f, indent=2, sort_keys=True, default=str)
    table = '\n'.join(f'| {k} | {v} |' for k, v in sorted(hparams.items()))
    self._tb.add_text('hparams', '| name | value |\n|---|---|\n' + table, 0)

  def flush(self):
    if self.enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self):
    if self.enabled and self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()
      self._jsonl = self._tb = None
      self.enabled = False


def average_into(window: dict | None, scalars: Mapping[str, Any]) -> dict:
  """Merges one step's scalars into a window of clu.metrics.Average.

  What a loop writes every N steps is then the window's mean
  ({k: m.compute()}), not the last step's noisy value. Scalars may be
  device arrays; nothing is fetched here.
  """
  new = {k: clu_metrics.Average.from_model_output(jnp.asarray(v, jnp.float32))
         for k, v in scalars.items()}
  if window is None:
    return new
  return {k: window[k].merge(m) if k in window else m for k, m in new.items()}


def window_means(window: dict) -> dict:
  """{name: float mean} of an `average_into` window."""
  return {k: float(m.compute()) for k, m in window.items()}


def create_writer(workdir: str) -> MetricWriter:
  """The project's default writer for `workdir` (no-op off process 0)."""
  return MetricWriter(workdir)


def read_jsonl(path: str) -> list[dict]:
  """Reads back metrics.jsonl (one dict per write_scalars call)."""
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
