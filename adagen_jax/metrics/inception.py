"""The FID InceptionV3 in Flax: pytorch-fid's port of TF's 2015-12-05 graph.

This is the network behind every published FID and IS (the weights file
`pt_inception-2015-12-05-6726825d.pth` of pytorch-fid, which torch-fidelity
and the AdaGen reference load too). It is torchvision's Inception3 with the
TF graph's quirks (adagen_reference.md §5, paradigms.md §5.1):

- every 3x3 average pool of a branch uses count_include_pad=False;
- Mixed_7c's pool branch is a 3x3 MAX pool (Mixed_7b's is an average pool);
- BatchNorm eps is 1e-3; there is no aux classifier; the fc is 1008-way.

The module returns the 2048-d pool features (FID, precision/recall) and
torch-fidelity's 'logits_unbiased' = pool @ fc.weight.T, WITHOUT the fc bias
(the logits the reference's Inception Score uses). The bias is read from the
checkpoint, checked and dropped, since nothing uses it.

Input path of the AdaGen reference (its vendored torch-fidelity extractor):
float images in [0, 1], clamped, resized to 299x299 with PyTorch's bilinear
interpolation (align_corners=False, no antialias; not torch-fidelity's
TF1-compatible resize), then 2x - 1. There is no uint8 round trip.
"""

import functools
from typing import Any

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax.generators.convert import common

FILENAME = 'pt_inception-2015-12-05-6726825d.pth'
INPUT_SIZE = 299
NUM_LOGITS = 1008
_FIX = (f'download {FILENAME} (github.com/mseitzer/pytorch-fid, release '
        f'fid_weights) and pass --inception_weights=/path/{FILENAME}')
# TPUs (and GPUs with TF32) run float32 convolutions at reduced precision by
# default; FID needs the float32 network the reference numbers came from.
_PRECISION = jax.lax.Precision.HIGHEST


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm (running stats, eps 1e-3) -> ReLU."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False,
                precision=_PRECISION, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


# Factorised n x 1 / 1 x n convolutions keep the spatial size.
_ROW3 = dict(kernel=(1, 3), padding=(0, 1))
_COL3 = dict(kernel=(3, 1), padding=(1, 0))
_ROW7 = dict(kernel=(1, 7), padding=(0, 3))
_COL7 = dict(kernel=(7, 1), padding=(3, 0))


def _avg_pool_3x3(x):
  # count_include_pad=False: the TF graph averages over valid pixels only.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """Mixed_5b/c/d: 35x35 block, 224 + pool_features channels out."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, name='branch1x1')(x)
    b5 = BasicConv2d(48, name='branch5x5_1')(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv2d(64, name='branch3x3dbl_1')(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv2d(self.pool_features, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: stride-2 reduction, 768 channels out."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), 2, name='branch3x3')(x)
    bd = BasicConv2d(64, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv2d(96, (3, 3), 2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..e: factorised 7x7 block, 768 channels out."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    row, col = _ROW7, _COL7
    b1 = BasicConv2d(192, name='branch1x1')(x)
    b7 = BasicConv2d(c7, name='branch7x7_1')(x)
    b7 = BasicConv2d(c7, **row, name='branch7x7_2')(b7)
    b7 = BasicConv2d(192, **col, name='branch7x7_3')(b7)
    bd = BasicConv2d(c7, name='branch7x7dbl_1')(x)
    bd = BasicConv2d(c7, **col, name='branch7x7dbl_2')(bd)
    bd = BasicConv2d(c7, **row, name='branch7x7dbl_3')(bd)
    bd = BasicConv2d(c7, **col, name='branch7x7dbl_4')(bd)
    bd = BasicConv2d(192, **row, name='branch7x7dbl_5')(bd)
    bp = BasicConv2d(192, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: stride-2 reduction, 1280 channels out."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, name='branch3x3_1')(x)
    b3 = BasicConv2d(320, (3, 3), 2, name='branch3x3_2')(b3)
    b7 = BasicConv2d(192, name='branch7x7x3_1')(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv2d(192, (3, 3), 2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (pool='avg') and Mixed_7c (pool='max'): 2048 channels out."""
  pool: str

  @nn.compact
  def __call__(self, x):
    row, col = _ROW3, _COL3
    b1 = BasicConv2d(320, name='branch1x1')(x)
    b3 = BasicConv2d(384, name='branch3x3_1')(x)
    b3 = jnp.concatenate([BasicConv2d(384, **row, name='branch3x3_2a')(b3),
                          BasicConv2d(384, **col, name='branch3x3_2b')(b3)],
                         axis=-1)
    bd = BasicConv2d(448, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([BasicConv2d(384, **row, name='branch3x3dbl_3a')(bd),
                          BasicConv2d(384, **col, name='branch3x3dbl_3b')(bd)],
                         axis=-1)
    if self.pool == 'avg':
      bp = _avg_pool_3x3(x)
    else:  # The TF graph's last block max-pools (a bug kept for parity).
      bp = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    bp = BasicConv2d(192, name='branch_pool')(bp)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """The FID Inception trunk on already preprocessed images.

  Input: float32 [B, H, W, 3] in [-1, 1], H, W >= 75 (299 for FID).
  Output: (pool float32 [B, 2048], logits_unbiased float32 [B, 1008]), the
  logits being pool @ fc.weight.T without the fc bias.
  Variables: {'params', 'batch_stats'}; submodule names are the PyTorch ones.
  """

  @nn.compact
  def __call__(self, x):
    x = BasicConv2d(32, (3, 3), 2, name='Conv2d_1a_3x3')(x)
    x = BasicConv2d(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, name='Conv2d_3b_1x1')(x)
    x = BasicConv2d(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE('avg', name='Mixed_7b')(x)
    x = InceptionE('max', name='Mixed_7c')(x)
    pool = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_LOGITS, use_bias=False, precision=_PRECISION,
                      name='fc')(pool)
    return pool, logits


def preprocess(images: jax.Array) -> jax.Array:
  """The reference's input path: [0, 1] images -> Inception input.

  Args:
    images: float [B, H, W, C] in [0, 1], C = 1 (repeated to RGB) or 3.

  Returns:
    float32 [B, 299, 299, 3] in [-1, 1]: clamp, bilinear resize with
    half-pixel centres and no antialiasing (= torch F.interpolate 'bilinear',
    align_corners=False, up- and downsampling), 2x - 1.
  """
  x = jnp.clip(jnp.asarray(images, jnp.float32), 0.0, 1.0)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3),
                         'bilinear', antialias=False)
  return 2.0 * x - 1.0


@jax.jit
def _features(variables, images):
  return InceptionV3().apply(variables, preprocess(images))


def extract(variables: Any, images: np.ndarray,
            batch_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
  """Pool features and unbiased logits of a set of images, batch by batch.

  Args:
    variables: {'params', 'batch_stats'} from `convert_pt_inception` or
      `load_pt_inception`.
    images: [N, H, W, C] float in [0, 1], or uint8 (divided by 255).
    batch_size: images per jitted call; the last batch is padded, so there is
      a single compilation.

  Returns:
    (pool float32 [N, 2048], logits_unbiased float32 [N, 1008]) in NumPy.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  if not images.shape[0]:
    raise ValueError('extract() needs at least one image.')
  pools, logits = [], []
  for start in range(0, images.shape[0], batch_size):
    batch = images[start:start + batch_size]
    pad = batch_size - batch.shape[0]
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:],
                                              batch.dtype)])
    p, l = _features(variables, batch)
    pools.append(np.asarray(p)[:batch_size - pad])
    logits.append(np.asarray(l)[:batch_size - pad])
  return np.concatenate(pools), np.concatenate(logits)


# --- pt_inception-2015-12-05-6726825d.pth -> Flax variables. ---

# Flax leaf (collection, leaf name) -> (PyTorch leaf name, axes permutation
# taking the PyTorch array to the Flax one).
_LEAVES = {
    ('params', 'kernel', 4): ('weight', (2, 3, 1, 0)),  # OIHW -> HWIO
    ('params', 'kernel', 2): ('weight', (1, 0)),  # [out, in] -> [in, out]
    ('params', 'scale', 1): ('weight', (0,)),
    ('params', 'bias', 1): ('bias', (0,)),
    ('batch_stats', 'mean', 1): ('running_mean', (0,)),
    ('batch_stats', 'var', 1): ('running_var', (0,)),
}


@functools.cache
def _flax_leaves() -> tuple[tuple[tuple[str, ...], str, tuple[int, ...],
                                  tuple[int, ...]], ...]:
  """(Flax path, PyTorch key, PyTorch shape, permutation) per variable."""
  shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0),
                          jnp.zeros((1, 75, 75, 3), jnp.float32))
  leaves = []
  for path, leaf in traverse_util.flatten_dict(shapes).items():
    torch_leaf, perm = _LEAVES[(path[0], path[-1], leaf.ndim)]
    torch_shape = [0] * leaf.ndim
    for i, p in enumerate(perm):
      torch_shape[p] = leaf.shape[i]
    key = '.'.join(path[1:-1] + (torch_leaf,))
    leaves.append((path, key, tuple(torch_shape), perm))
  return tuple(leaves)


def inception_manifest() -> dict[str, tuple[int, ...]]:
  """Every key of pt_inception-2015-12-05-6726825d.pth and its shape."""
  manifest = {key: shape for _, key, shape, _ in _flax_leaves()}
  manifest['fc.bias'] = (NUM_LOGITS,)  # Read and dropped (module docstring).
  return manifest


def convert_pt_inception(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """pytorch-fid Inception state dict -> {'params', 'batch_stats'} (float32).

  BatchNorm 'num_batches_tracked' counters may be present or not. Raises
  UserError on missing/unexpected keys or wrong shapes.
  """
  state_dict = common.drop(state_dict, ('num_batches_tracked',))
  common.check_manifest(state_dict, inception_manifest(),
                        'pytorch-fid Inception weights', _FIX)
  flat = {path: np.transpose(np.asarray(state_dict[key], np.float32), perm)
          for path, key, _, perm in _flax_leaves()}
  return traverse_util.unflatten_dict(flat)


def load_pt_inception(path: str) -> dict[str, Any]:
  """Reads pt_inception-2015-12-05-6726825d.pth into Flax variables."""
  return convert_pt_inception(
      common.read_torch_state_dict(path, 'Inception weights', _FIX))
