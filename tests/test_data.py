"""Fashion-MNIST IDX loading, search order, batching; ImageNet pipeline."""

import gzip
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax.backbones import fmnist as nets
from adagen_jax.data import fashion_mnist
from adagen_jax.data import imagenet
from adagen_jax.metrics import writers
from adagen_jax.pretrain import classifier
from adagen_jax.pretrain import contrastive


def _write_idx(path, array, magic, compress=True):
  header = magic.to_bytes(4, 'big') + b''.join(
      d.to_bytes(4, 'big') for d in array.shape)
  data = header + array.astype(np.uint8).tobytes()
  if compress:
    with gzip.open(path + '.gz', 'wb') as f:
      f.write(data)
  else:
    with open(path, 'wb') as f:
      f.write(data)


def _write_fmnist(directory, n_train=6, n_test=4, compress=True, seed=0):
  """Tiny IDX files; returns {split: (uint8 images [N,28,28], labels [N])}."""
  rng = np.random.default_rng(seed)
  out = {}
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    img_name, lbl_name = fashion_mnist._FILES[split]
    _write_idx(os.path.join(directory, img_name), images, 0x803, compress)
    _write_idx(os.path.join(directory, lbl_name), labels, 0x801, compress)
    out[split] = (images, labels)
  return out


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
  """Hides every place Fashion-MNIST might be found on this machine."""
  monkeypatch.delenv('ADAGEN_DATA_DIR', raising=False)
  monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR', str(tmp_path / 'none'))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))


@pytest.mark.parametrize('compress', [True, False])
def test_load_tiny_idx_via_env(tmp_path, monkeypatch, compress):
  written = _write_fmnist(str(tmp_path), compress=compress)
  monkeypatch.setenv('ADAGEN_DATA_DIR', str(tmp_path))
  assert fashion_mnist.find_dir() == str(tmp_path)
  for split in ('train', 'test'):
    images, labels = fashion_mnist.load(split)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.shape == written[split][0].shape + (1,)
    np.testing.assert_array_equal(images[..., 0] * 255.0, written[split][0])
    np.testing.assert_array_equal(labels, written[split][1])


def test_explicit_path_beats_env(tmp_path, monkeypatch):
  env_dir, arg_dir = tmp_path / 'env', tmp_path / 'arg'
  env_dir.mkdir()
  arg_dir.mkdir()
  _write_fmnist(str(env_dir), n_test=3, seed=1)
  _write_fmnist(str(arg_dir), n_test=5, seed=2)
  monkeypatch.setenv('ADAGEN_DATA_DIR', str(env_dir))
  assert fashion_mnist.load('test', str(arg_dir))[0].shape[0] == 5
  assert fashion_mnist.load('test')[0].shape[0] == 3


def test_missing_everywhere_names_the_fix(no_system_data):
  with pytest.raises(errors.UserError, match='apt-get update && apt-get '
                     'install -y dataset-fashion-mnist'):
    fashion_mnist.find_dir()


def test_named_dir_without_files_is_an_error(tmp_path, monkeypatch):
  # A wrong ADAGEN_DATA_DIR must not silently fall back to other data.
  monkeypatch.setenv('ADAGEN_DATA_DIR', str(tmp_path))
  with pytest.raises(errors.UserError, match='ADAGEN_DATA_DIR'):
    fashion_mnist.load('train')


def test_corrupt_files_are_user_errors(tmp_path):
  bad_magic, truncated = tmp_path / 'magic', tmp_path / 'trunc'
  for d in (bad_magic, truncated):
    d.mkdir()
    _write_fmnist(str(d))
  images = np.zeros((2, 28, 28), np.uint8)
  # Labels magic on an images file.
  _write_idx(str(bad_magic / 't10k-images-idx3-ubyte'), images, 0x801)
  with gzip.open(truncated / 't10k-labels-idx1-ubyte.gz', 'rb') as f:
    data = f.read()
  with gzip.open(truncated / 't10k-labels-idx1-ubyte.gz', 'wb') as f:
    f.write(data[:-1])
  with pytest.raises(errors.UserError, match='magic'):
    fashion_mnist.load('test', str(bad_magic))
  with pytest.raises(errors.UserError, match='truncated'):
    fashion_mnist.load('test', str(truncated))


def test_bad_split(tmp_path):
  with pytest.raises(errors.UserError, match='split'):
    fashion_mnist.load('validation', str(tmp_path))


def test_real_data_shapes_and_ranges():
  try:
    fashion_mnist.find_dir()
  except errors.UserError as e:
    pytest.skip(str(e))
  for split, n in (('train', 60000), ('test', 10000)):
    images, labels = fashion_mnist.load(split)
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (n,) and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    # Fashion-MNIST is balanced: 6000 / 1000 images per class.
    np.testing.assert_array_equal(np.bincount(labels), [n // 10] * 10)
    assert not images.flags.writeable  # the cached copy is shared


def test_process_slices_partition_global_batches():
  n, global_batch, steps = 10, 4, 5  # 20 examples = exactly two epochs
  images, labels = np.arange(n) * 10, np.arange(n)
  whole = fashion_mnist.batches(images, labels, global_batch, seed=3,
                                process_index=0, process_count=1)
  parts = [fashion_mnist.batches(images, labels, global_batch, seed=3,
                                 process_index=i, process_count=2)
           for i in range(2)]
  stream = []
  for _ in range(steps):
    x, y = next(whole)
    np.testing.assert_array_equal(x, y * 10)
    pieces = [next(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]), y)
    stream.extend(y)
  # Each epoch is a permutation; the two epochs are shuffled differently.
  assert sorted(stream[:n]) == sorted(stream[n:]) == list(range(n))
  assert stream[:n] != stream[n:]


def test_batches_rejects_uneven_split():
  with pytest.raises(errors.UserError, match='multiple'):
    next(fashion_mnist.batches(np.zeros(8), np.zeros(8), 6, 0,
                               process_index=0, process_count=4))


def test_center_crop_geometry():
  # 1100 x 600 (W x H): short side 600 >= 512 -> one BOX halving to 550 x 300,
  # then BICUBIC to 469 x 256 and the central 256 columns.
  image = np.zeros((600, 1100, 3), np.uint8)
  image[:300] = 255  # top half white
  out = imagenet.center_crop(image, 256)
  assert out.shape == (256, 256, 3) and out.dtype == np.uint8
  assert (out[:120] == 255).all() and (out[-120:] == 0).all()
  small = np.full((20, 30, 3), 7, np.uint8)  # upsampling path
  np.testing.assert_array_equal(imagenet.center_crop(small, 32), 7)


def test_imagenet_pipeline_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    ds = imagenet.make_dataset('train', global_batch=4, seed=0,
                               image_size=16)
    it = iter(ds)
    for _ in range(2):  # crosses the epoch boundary (6 examples)
      images, labels = next(it)
      assert images.shape == (4, 16, 16, 3) and images.dtype == np.float32
      assert labels.shape == (4,) and labels.dtype == np.int32
      assert 0.0 <= images.min() and images.max() <= 1.0
      assert ((0 <= labels) & (labels < imagenet.NUM_CLASSES)).all()
    evals = imagenet.make_dataset('validation', global_batch=4, seed=0,
                                  train=False, image_size=16)
    assert len(evals) == 1  # 6 examples, last incomplete batch dropped


def test_imagenet_missing_is_user_error(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(errors.UserError, match='prepare_imagenet.sh'):
    imagenet.make_dataset('train', 4, 0, data_dir=str(tmp_path))


def test_tfds_reader_with_mock_data(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=5,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    images, labels = fashion_mnist._load_tfds(str(tmp_path), 'test')
  assert images.shape == (5, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (5,) and ((0 <= labels) & (labels < 10)).all()


def test_augment_translates_and_mirrors():
  images = np.zeros((64, 28, 28, 1), np.float32)
  images[:, 10, 12] = 1.0
  out = np.asarray(classifier.augment(jax.random.key(0), images, shift=2))
  assert out.shape == images.shape
  np.testing.assert_array_equal(out.sum(axis=(1, 2, 3)), 1.0)  # moved only
  ys, xs = np.nonzero(out[..., 0])[1:]
  mirrored = xs > 13
  xs = np.where(mirrored, 27 - xs, xs)
  assert (np.abs(ys - 10) <= 2).all() and (np.abs(xs - 12) <= 2).all()
  assert 0 < mirrored.mean() < 1  # both flipped and unflipped examples
  assert len(set(zip(ys, xs))) > 5  # several different shifts


def test_classifier_train_writes_asset(tmp_path):
  _write_fmnist(str(tmp_path), n_train=64, n_test=8)
  config = ml_collections.ConfigDict(dict(
      trainer='classifier', net='features',
      module=dict(widths=(4, 4, 4), convs=(1, 1, 1), embed_dim=8),
      seed=0, batch_size=32, epochs=1, warmup_epochs=0.5, lr=1e-3,
      weight_decay=0.0, shift=1, log_every=1, data_dir=str(tmp_path),
      output=str(tmp_path / 'out' / 'net.msgpack')))
  meta = classifier.train(config, str(tmp_path / 'work'))
  assert meta['epochs'] == 1 and 0.0 <= meta['test_accuracy'] <= 1.0
  assert assets.load_meta(config.output) == json.loads(json.dumps(meta))
  variables = assets.load_variables(config.output, 'net', 'retrain')
  assert set(variables) == {'params', 'batch_stats'}
  records = writers.read_jsonl(str(tmp_path / 'work' / 'metrics.jsonl'))
  # Two train steps, then the epoch's test accuracy.
  assert [r['step'] for r in records] == [1, 2, 2]
  assert records[-1]['test/accuracy'] == meta['test_accuracy']


def test_nt_xent_prefers_partners():
  rs = np.random.RandomState(0)
  z1 = rs.randn(8, 16).astype(np.float32)
  z1 /= np.linalg.norm(z1, axis=1, keepdims=True)
  near = z1 + 0.05 * rs.randn(8, 16).astype(np.float32)
  near /= np.linalg.norm(near, axis=1, keepdims=True)
  loss_pairs, acc_pairs = contrastive.nt_xent(jnp.asarray(z1),
                                              jnp.asarray(near), 0.2)
  loss_rand, _ = contrastive.nt_xent(jnp.asarray(z1),
                                     jnp.asarray(near[::-1].copy()), 0.2)
  assert float(acc_pairs) == 1.0
  assert float(loss_pairs) < float(loss_rand) - 1.0


def test_cutout_zeroes_one_square():
  images = np.ones((64, 28, 28, 1), np.float32)
  out = np.asarray(contrastive.cutout(jax.random.key(0), images, 10, 0.5))
  zeros = (out == 0).sum(axis=(1, 2, 3))
  assert ((zeros == 0) | ((zeros >= 25) & (zeros <= 100))).all()
  assert 0 < (zeros > 0).mean() < 1  # some images cut, some not


def test_contrastive_train_writes_backbone(tmp_path):
  _write_fmnist(str(tmp_path), n_train=64, n_test=8)
  config = ml_collections.ConfigDict(dict(
      trainer='contrastive', module=dict(widths=(4, 8), groups=2),
      train=dict(steps=3, batch_size=16, lr=1e-3, warmup_steps=1,
                 weight_decay=0.0, ema_decay=0.9, temperature=0.2,
                 proj_dim=8, shift=2, cutout=6, p_cutout=0.5),
      knn_k=3, seed=0, data_dir=str(tmp_path),
      output=str(tmp_path / 'out' / 'contrast.msgpack')))
  meta = contrastive.train(config, str(tmp_path / 'work'))
  assert meta['steps'] == 3 and 0.0 <= meta['knn_test_accuracy'] <= 1.0
  variables = assets.load_variables(config.output, 'net', 'retrain')
  assert set(variables) == {'params'} and 'head' not in variables['params']
  module = nets.ContrastNet(widths=(4, 8), groups=2)
  feats, logits = module.apply(variables, jnp.zeros((2, 28, 28, 1)))
  assert logits is None
  assert [f.shape for f in feats] == [(2, 784, 4), (2, 196, 8)]
  # A rerun finds the finished stage's checkpoint and trains no further.
  again = contrastive.train(config, str(tmp_path / 'work'))
  assert again['knn_test_accuracy'] == meta['knn_test_accuracy']
