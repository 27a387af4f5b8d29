"""FID Inception: converter manifest and parity with a PyTorch forward."""

import jax
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax.metrics import inception

torch = pytest.importorskip('torch')
tnn = torch.nn
F = torch.nn.functional


# A compact PyTorch FID Inception (pytorch-fid's FIDInception* blocks on
# torchvision's Inception3), with the published module names so that its
# state_dict has the keys and shapes of pt_inception-2015-12-05-6726825d.pth.
class _Conv(tnn.Module):

  def __init__(self, cin, cout, kernel=1, stride=1, padding=0):
    super().__init__()
    self.conv = tnn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    self.bn = tnn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _avg(x):
  return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class _A(tnn.Module):

  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = _Conv(cin, 64)
    self.branch5x5_1 = _Conv(cin, 48)
    self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = _Conv(cin, 64)
    self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
    self.branch_pool = _Conv(cin, pool_features)

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_avg(x))], 1)


class _B(tnn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = _Conv(cin, 384, 3, 2)
    self.branch3x3dbl_1 = _Conv(cin, 64)
    self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _Conv(96, 96, 3, 2)

  def forward(self, x):
    return torch.cat([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        F.max_pool2d(x, 3, 2)], 1)


class _C(tnn.Module):

  def __init__(self, cin, c7):
    super().__init__()
    self.branch1x1 = _Conv(cin, 192)
    self.branch7x7_1 = _Conv(cin, c7)
    self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = _Conv(cin, c7)
    self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = _Conv(cin, 192)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f'branch7x7dbl_{i}')(bd)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg(x))], 1)


class _D(tnn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = _Conv(cin, 192)
    self.branch3x3_2 = _Conv(192, 320, 3, 2)
    self.branch7x7x3_1 = _Conv(cin, 192)
    self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = _Conv(192, 192, 3, 2)

  def forward(self, x):
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f'branch7x7x3_{i}')(b7)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                      F.max_pool2d(x, 3, 2)], 1)


class _E(tnn.Module):

  def __init__(self, cin, max_pool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = _Conv(cin, 320)
    self.branch3x3_1 = _Conv(cin, 384)
    self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = _Conv(cin, 448)
    self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = _Conv(cin, 192)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pool = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg(x)
    return torch.cat([
        self.branch1x1(x),
        self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
        self.branch_pool(pool)], 1)


class _TorchFIDInception(tnn.Module):

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = _Conv(3, 32, 3, 2)
    self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
    self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = _Conv(64, 80)
    self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
    self.Mixed_5b = _A(192, 32)
    self.Mixed_5c = _A(256, 64)
    self.Mixed_5d = _A(288, 64)
    self.Mixed_6a = _B(288)
    self.Mixed_6b = _C(768, 128)
    self.Mixed_6c = _C(768, 160)
    self.Mixed_6d = _C(768, 160)
    self.Mixed_6e = _C(768, 192)
    self.Mixed_7a = _D(768)
    self.Mixed_7b = _E(1280, max_pool=False)
    self.Mixed_7c = _E(2048, max_pool=True)
    self.fc = tnn.Linear(2048, 1008)

  def forward(self, x):
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
    x = F.max_pool2d(x, 3, 2)
    for name in ('5b', '5c', '5d', '6a', '6b', '6c', '6d', '6e', '7a', '7b',
                 '7c'):
      x = getattr(self, f'Mixed_{name}')(x)
    pool = x.mean((2, 3))
    return pool, pool @ self.fc.weight.T  # torch-fidelity's logits_unbiased


def _random_torch_inception():
  """Random weights; BN running stats from the statistics of a random batch.

  A floor of 0.1 on the variances keeps channels that the small calibration
  batch left (nearly) dead from being blown up at test time.
  """
  torch.manual_seed(0)
  model = _TorchFIDInception()
  for m in model.modules():
    if isinstance(m, tnn.BatchNorm2d):
      m.momentum = None  # Cumulative average: after one batch, its stats.
  with torch.no_grad():
    model.train()(torch.rand(4, 3, 75, 75) * 2 - 1)
    for m in model.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.running_var.add_(0.1)
  return model.eval()


def _rel_err(a, b):
  return np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))


def test_manifest_matches_pytorch_model():
  ref = {k: tuple(v.shape) for k, v in _TorchFIDInception().state_dict().items()
         if not k.endswith('num_batches_tracked')}
  manifest = inception.inception_manifest()
  assert manifest == ref
  assert len(manifest) == 94 * 5 + 2  # 94 conv+BN units, fc weight and bias


def test_parity_with_pytorch_forward(tmp_path):
  model = _random_torch_inception()
  path = tmp_path / inception.FILENAME
  torch.save(model.state_dict(), path)  # num_batches_tracked included
  variables = inception.load_pt_inception(str(path))

  # 107 is the smallest size with a 2x2 map in Mixed_7b/c, where max and
  # average pooling (with or without padding in the count) differ.
  x = torch.rand(2, 3, 107, 107) * 2 - 1
  with torch.no_grad():
    pool_ref, logits_ref = (t.numpy() for t in model(x))
  with jax.default_matmul_precision('highest'):
    pool, logits = jax.jit(inception.InceptionV3().apply)(
        variables, x.permute(0, 2, 3, 1).numpy())
  assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
  assert _rel_err(pool, pool_ref) < 1e-4
  assert _rel_err(logits, logits_ref) < 1e-4
  # The fc bias is not part of logits_unbiased.
  assert 'bias' not in variables['params']['fc']


@pytest.mark.parametrize('size,channels', [(28, 1), (64, 3), (320, 3)])
def test_preprocess_matches_torch_bilinear(size, channels):
  rng = np.random.default_rng(size)
  images = rng.uniform(-0.1, 1.1, (2, size, size, channels)).astype(np.float32)
  x = torch.from_numpy(images).clamp(0, 1).permute(0, 3, 1, 2)
  x = x.expand(-1, 3, -1, -1)
  ref = F.interpolate(x, (299, 299), mode='bilinear', align_corners=False)
  ref = (ref * 2 - 1).permute(0, 2, 3, 1).numpy()
  out = np.asarray(inception.preprocess(images))
  assert out.shape == (2, 299, 299, 3)
  np.testing.assert_allclose(out, ref, atol=2e-6)


def _he_variables(seed=0):
  """Converted variables from a He-scaled random state dict (no Flax init,
  which takes tens of seconds on a CPU for this network)."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in inception.inception_manifest().items():
    if key.endswith('running_var') or key.endswith('bn.weight'):
      state[key] = np.ones(shape, np.float32)
    elif len(shape) > 1:
      std = np.sqrt(2.0 / np.prod(shape[1:]))
      state[key] = (std * rng.standard_normal(shape)).astype(np.float32)
    else:
      state[key] = np.zeros(shape, np.float32)
  return inception.convert_pt_inception(state)


def test_extract_pads_the_last_batch():
  variables = _he_variables()
  images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), np.uint8)
  pool, logits = inception.extract(variables, images, batch_size=2)
  assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
  assert pool.dtype == np.float32 and np.all(pool >= 0)  # after a ReLU
  # Batches were [0, 1] and [2, padding]; a batch [2, 0] (same compiled
  # shape) must give the same rows: eval-mode Inception is per-sample.
  ref_pool, ref_logits = inception._features(variables, images[[2, 0]] / 255)
  np.testing.assert_allclose(pool[[2, 0]], ref_pool, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logits[[2, 0]], ref_logits, rtol=1e-5,
                             atol=1e-5)
  assert np.std(pool, axis=0).max() > 0  # the images are told apart


def test_converter_rejects_bad_state_dicts():
  good = {k: np.zeros(s, np.float32)
          for k, s in inception.inception_manifest().items()}
  missing = dict(good)
  del missing['Mixed_7c.branch_pool.bn.running_var']
  with pytest.raises(errors.UserError, match='missing.*Mixed_7c.branch_pool'):
    inception.convert_pt_inception(missing)
  with pytest.raises(errors.UserError, match='unexpected.*AuxLogits'):
    inception.convert_pt_inception(
        {**good, 'AuxLogits.fc.weight': np.zeros((1008, 768))})
  with pytest.raises(errors.UserError,
                     match=r'wrong shape.*fc.weight \[1000, 2048\]'):
    inception.convert_pt_inception(
        {**good, 'fc.weight': np.zeros((1000, 2048))})


def test_missing_weights_file_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match='--inception_weights='):
    inception.load_pt_inception(str(tmp_path / inception.FILENAME))
