"""Metric writer, progress lines and PNG grids."""

import glob
import json
import os

import numpy as np
from PIL import Image
import pytest

from adagen_jax import images
from adagen_jax import progress
from adagen_jax.metrics import writers


def test_writer_jsonl_tensorboard_and_hparams(tmp_path):
  writer = writers.create_writer(str(tmp_path))
  writer.write_hparams({'lr': 1e-3, 'net': 'features'})
  writer.write_scalars(1, {'loss': np.float32(0.5), 'acc': 1})
  writer.write_scalars(2, {'loss': float('nan')})
  writer.write_images(2, {'grid': np.zeros((8, 8, 1), np.float32),
                          'batch': np.full((2, 8, 8, 3), 255, np.uint8)})
  writer.flush()
  writer.close()
  records = writers.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert records == [{'step': 1, 'loss': 0.5, 'acc': 1.0},
                     {'step': 2, 'loss': 'nan'}]
  assert glob.glob(str(tmp_path / 'tb' / 'events.out.tfevents.*'))
  with open(tmp_path / 'hparams.json') as f:
    assert json.load(f) == {'lr': 1e-3, 'net': 'features'}
  # A resumed run appends to the same history.
  writer = writers.create_writer(str(tmp_path))
  writer.write_scalars(3, {'loss': 0.25})
  writer.close()
  assert [r['step'] for r in writers.read_jsonl(
      str(tmp_path / 'metrics.jsonl'))] == [1, 2, 3]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = writers.MetricWriter(str(tmp_path / 'w'), enabled=False)
  writer.write_scalars(1, {'loss': 1.0})
  writer.write_images(1, {'x': np.zeros((4, 4, 1))})
  writer.write_hparams({'a': 1})
  writer.flush()
  writer.close()
  assert not os.path.exists(tmp_path / 'w')


def test_writer_rejects_bad_image_shape(tmp_path):
  writer = writers.create_writer(str(tmp_path))
  with pytest.raises(ValueError, match='N, H, W, C'):
    writer.write_images(0, {'x': np.zeros((4, 4))})
  writer.close()


def test_format_seconds():
  assert progress.format_seconds(7.2) == '7s'
  assert progress.format_seconds(258) == '4m18s'
  assert progress.format_seconds(3725) == '1h02m'


def test_progress_lines(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
  bar = progress.Progress(total=1000, desc='train', every_s=10,
                          enabled=True)
  assert bar.update(10) is None  # first update starts the clock
  clock[0] += 5.0
  assert bar.update(50, loss=0.123456) is None  # not due yet
  clock[0] += 5.0
  # 100 items in the 10 s since the first update: 10 it/s, 890 left.
  assert bar.update(50, loss=0.123456) == (
      'train 110/1000 (11%) 10 it/s ETA 1m29s loss=0.1235')
  clock[0] += 1.0
  # The end always logs; a None value (a metric this run lacks) is left out.
  assert bar.update(890, step=np.int32(7), extra=None) == (
      'train 1000/1000 (100%) 90 it/s done step=7')


def test_save_grid(tmp_path):
  batch = np.zeros((5, 4, 3, 1), np.float32)
  batch[1] = 1.0
  path = images.save_grid(str(tmp_path / 'g' / 'grid.png'), batch, nrow=3,
                          upscale=2)
  assert os.listdir(tmp_path / 'g') == ['grid.png']
  grid = np.asarray(Image.open(path))
  # 2 rows x 3 columns of 4 x 3 tiles, 2 px padding, then x2.
  assert grid.shape == (2 * (2 * 6 + 2), 2 * (3 * 5 + 2))
  assert (grid[4:12, 4:10] == 0).all()  # tile 0, black
  assert (grid[4:12, 14:20] == 255).all()  # tile 1, white
  rgb = images.make_grid(np.zeros((2, 4, 4, 3), np.uint8))
  assert rgb.shape == (8, 14, 3)  # 1 row of 2
  with pytest.raises(ValueError):
    images.make_grid(np.zeros((2, 4, 4, 2)))
