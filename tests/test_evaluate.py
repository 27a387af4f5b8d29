"""Evaluator metrics, the evaluate CLI, samples I/O and the two backbones."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax import evaluate
from adagen_jax import samples_io
from adagen_jax import train
from adagen_jax.backbones import fmnist as nets
from adagen_jax.data import fashion_mnist

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, seed):
  """uint8 [n, 28, 28, 1] blobs of random brightness and size."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:28, :28]
  r = rng.uniform(3, 12, (n, 1, 1))
  level = rng.uniform(0.3, 1.0, (n, 1, 1))
  disc = ((yy - 14) ** 2 + (xx - 14) ** 2 < r ** 2) * level
  return np.round(disc[..., None] * 255).astype(np.uint8)


@pytest.fixture(scope='module')
def small_evaluator():
  """A random-init FeatureNet against 64 synthetic reference images."""
  module = nets.FeatureNet(widths=(4, 8, 8), embed_dim=16)
  variables = module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  ref = _images(64, seed=0)
  return evaluate.Evaluator.from_images('synthetic', module, variables, ref,
                                        batch_size=24), ref


def test_identical_sets_give_zero_fd_and_full_pr(small_evaluator):
  evaluator, ref = small_evaluator
  metrics = evaluator(ref, np.zeros(64, np.int32))
  assert abs(metrics['fd']) < 1e-6 * max(1.0, np.trace(evaluator.ref_stats[1]))
  assert metrics['precision'] == 1.0 and metrics['recall'] == 1.0
  assert metrics['n'] == 64


def test_float_and_uint8_inputs_agree(small_evaluator):
  evaluator, _ = small_evaluator
  images = _images(30, seed=1)
  labels = np.arange(30) % 10
  as_uint8 = evaluator(images, labels)
  as_float = evaluator(images.astype(np.float32) / 255.0, labels)
  assert as_uint8 == as_float
  assert as_uint8['fd'] > 0.0
  # Label accuracy is the fraction of argmax == label.
  _, preds = evaluator.features(images)
  assert as_uint8['label_acc'] == np.mean(preds == labels)


def test_bad_inputs_are_user_errors(small_evaluator):
  evaluator, _ = small_evaluator
  with pytest.raises(errors.UserError, match='28, 28, 1'):
    evaluator(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int32))
  with pytest.raises(errors.UserError, match='labels'):
    evaluator(np.zeros((4, 28, 28, 1), np.uint8), np.zeros(3, np.int32))
  with pytest.raises(errors.UserError, match='at least 2'):
    evaluator(np.zeros((1, 28, 28, 1), np.uint8), np.zeros(1, np.int32))


def test_samples_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
  images[0, 0, 0, 0], images[0, 0, 1, 0] = 1.5, -0.2  # clipped
  labels = np.arange(5)
  path = samples_io.save_samples(str(tmp_path / 'a' / 's.npz'), images,
                                 labels)
  got_images, got_labels = samples_io.load_samples(path)
  assert got_images.dtype == np.uint8 and got_labels.dtype == np.int32
  np.testing.assert_array_equal(
      got_images, np.clip(np.round(images * 255), 0, 255).astype(np.uint8))
  np.testing.assert_array_equal(got_labels, labels)
  with np.load(path) as data:
    assert sorted(data.files) == ['arr_0', 'labels']
  assert os.listdir(tmp_path / 'a') == ['s.npz']  # no temporary left over


def test_load_samples_validation(tmp_path):
  with pytest.raises(errors.UserError, match='not found'):
    samples_io.load_samples(str(tmp_path / 'missing.npz'))
  (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
  with pytest.raises(errors.UserError, match='cannot read'):
    samples_io.load_samples(str(tmp_path / 'junk.npz'))
  np.savez(tmp_path / 'nolabels.npz', arr_0=np.zeros((2, 28, 28, 1),
                                                     np.uint8))
  with pytest.raises(errors.UserError, match='lacks labels'):
    samples_io.load_samples(str(tmp_path / 'nolabels.npz'))
  np.savez(tmp_path / 'float.npz', arr_0=np.zeros((2, 28, 28, 1)),
           labels=np.zeros(2, np.int64))
  with pytest.raises(errors.UserError, match='uint8'):
    samples_io.load_samples(str(tmp_path / 'float.npz'))
  np.savez(tmp_path / 'count.npz', arr_0=np.zeros((2, 28, 28, 1), np.uint8),
           labels=np.zeros(3, np.int64))
  with pytest.raises(errors.UserError, match='labels must be'):
    samples_io.load_samples(str(tmp_path / 'count.npz'))


def test_backbone_output_shapes():
  x = jnp.zeros((2, 28, 28, 1))
  feature_net = nets.FeatureNet()
  emb, logits = feature_net.apply(feature_net.init(jax.random.key(0), x), x)
  assert emb.shape == (2, 128) and logits.shape == (2, 10)
  backbone = nets.DiscBackbone(width=32, depth=2, num_heads=2, mlp_dim=64)
  feats, logits = backbone.apply(backbone.init(jax.random.key(0), x), x)
  assert [f.shape for f in feats] == [(2, 49, 32)] * 3
  assert logits.shape == (2, 10)
  for classes, want in ((0, None), (10, (2, 10))):
    resnet = nets.ContrastNet(widths=(4, 8), num_classes=classes)
    feats, logits = resnet.apply(resnet.init(jax.random.key(0), x), x)
    assert [f.shape for f in feats] == [(2, 784, 4), (2, 196, 8)]
    assert (logits if logits is None else logits.shape) == want


def test_shipped_weights_classify_test_images():
  try:
    images, labels = fashion_mnist.load('test')
  except errors.UserError as e:
    pytest.skip(str(e))
  # Shipped test accuracies (10k images): 0.929, 0.849 and 0.903.
  for loader, floor in ((nets.load_feature_net, 0.9),
                        (nets.load_disc_backbone, 0.8),
                        (nets.load_resnet_backbone, 0.88)):
    module, variables = loader()
    logits = module.apply(variables, images[:500])[1]
    acc = float(np.mean(np.argmax(logits, -1) == labels[:500]))
    assert acc > floor, (loader.__name__, acc)


def test_shipped_contrast_backbone_sees_blur():
  try:
    images, _ = fashion_mnist.load('test')
  except errors.UserError as e:
    pytest.skip(str(e))
  module, variables = nets.load_contrast_backbone()
  # A 3x3 box blur of the first 200 images, against 200 other sharp ones.
  x = np.asarray(images[:200])
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  blurred = sum(padded[:, i:i + 28, j:j + 28] for i in range(3)
                for j in range(3)) / 9.0
  feats, logits = module.apply(variables, np.concatenate(
      [x, blurred, images[200:400]]))
  assert logits is None
  assert [f.shape[1] for f in feats] == [784, 196, 49]
  pooled = np.asarray(feats[0]).mean(axis=1)
  sharp, blur, other = pooled[:200], pooled[200:400], pooled[400:]
  gap = lambda a, b: float(np.linalg.norm(a.mean(0) - b.mean(0)))
  # The first stage's statistics move further under blur than between
  # two sets of sharp images (the reward must see sharpness).
  assert gap(sharp, blur) > 3 * gap(sharp, other), (gap(sharp, blur),
                                                    gap(sharp, other))


def test_missing_weights_name_the_pretrain_command(tmp_path, monkeypatch):
  monkeypatch.setattr(assets, 'ASSET_DIR', str(tmp_path))
  with pytest.raises(errors.UserError, match=(
      'python -m adagen_jax.pretrain '
      '--config=configs/pretrain/fmnist_disc_backbone.py')):
    nets.load_disc_backbone()


def _run_cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'adagen_jax.evaluate', *args], cwd=_ROOT,
      capture_output=True, text=True, timeout=300, check=False)


def test_cli_exit_codes(tmp_path):
  missing = _run_cli(f'--samples={tmp_path / "missing.npz"}')
  assert missing.returncode == 2
  assert missing.stderr.startswith('error: samples file not found')
  (tmp_path / 'bad.npz').write_bytes(b'garbage')
  bad = _run_cli(f'--samples={tmp_path / "bad.npz"}')
  assert bad.returncode == 2 and 'error: cannot read' in bad.stderr
  samples_io.save_samples(str(tmp_path / 'rgb.npz'),
                          np.zeros((4, 32, 32, 3), np.uint8),
                          np.zeros(4, np.int32))
  shape = _run_cli(f'--samples={tmp_path / "rgb.npz"}')
  assert shape.returncode == 2 and '28, 28, 1' in shape.stderr


def test_cli_ok_on_real_test_images(tmp_path):
  try:
    images, labels = fashion_mnist.load('test')
  except errors.UserError as e:
    pytest.skip(str(e))
  path = samples_io.save_samples(str(tmp_path / 's.npz'), images[:200],
                                 labels[:200])
  ok = _run_cli(f'--samples={path}', '--json')
  assert ok.returncode == 0, ok.stderr
  metrics = json.loads(ok.stdout.strip().splitlines()[-1])
  assert metrics['n'] == 200 and metrics['reference'] == 'fmnist-test'
  # Real test images are a subset of the reference: all inside its manifold.
  assert metrics['precision'] == 1.0
  assert metrics['label_acc'] > 0.85
  lines = evaluate.format_metrics(metrics).splitlines()
  assert [l.split(':')[0] for l in lines] == [
      'FD-FMNIST', 'precision', 'recall', 'label accuracy', 'N']


@pytest.mark.parametrize('name,sets,classifier', [
    ('fmnist', 5, True), ('fmnist_contrast', 3, False),
    ('fmnist_resnet', 3, True)])
def test_reward_backbones_by_name(name, sets, classifier):
  backbone = train.make_backbone(ml_collections.ConfigDict(dict(
      backbone=name)))
  assert backbone.classifier == classifier
  x = jnp.zeros((2, 28, 28, 1))
  assert len(backbone.features(backbone.variables, x)) == sets
  if classifier:
    assert backbone.logits(backbone.variables, x).shape == (2, 10)


def test_unknown_reward_backbone_is_a_user_error():
  with pytest.raises(errors.UserError, match='fmnist_resnet'):
    train.make_backbone(ml_collections.ConfigDict(dict(backbone='resnet')))
