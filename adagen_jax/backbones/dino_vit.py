"""DINO ViT-S/16 in Flax: the frozen backbone of the projected discriminator.

timm's `vit_small_patch16_224_dino` with the weights `dino_deitsmall16_pretrain
.pth` (adagen_reference.md §3.1): 16x16 patch conv, cls token, learned
absolute pos-embed [1, 197, 384], 12 pre-norm blocks (LayerNorm eps 1e-6,
6-head attention with qkv bias, MLP 384 -> 1536 -> 384 with exact-erf GELU).

`DinoViT.__call__` takes images in [0, 1] and runs the discriminator's input
path: PyTorch 'area' resize to `image_size` (adaptive average pooling, see
`area_resize`), ImageNet mean/std normalisation, then returns the 5 feature
sets the discriminator hooks: the tokens after adding the pos-embed (timm's
`pos_drop` output, cls first) and the outputs of blocks 2, 5, 8, 11 (before
the final norm), each [B, 1 + num_patches, width]. The random crop (p=0.5)
belongs to the discriminator, not here. The final LayerNorm is in the
checkpoint but unused by those features, so the converter checks and drops it.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax.generators.convert import common

FILENAME = 'dino_deitsmall16_pretrain.pth'
_FIX = (f'download {FILENAME} (dl.fbaipublicfiles.com/dino/'
        f'dino_deitsmall16_pretrain/) and pass its path, e.g. '
        f'--dino_weights=/path/{FILENAME}')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_BLOCKS = (2, 5, 8, 11)


def _adaptive_avg_matrix(n_in: int, n_out: int) -> np.ndarray:
  """float32 [n_out, n_in] averaging matrix of PyTorch's adaptive_avg_pool.

  Row i averages inputs floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out)
  - 1: bins overlap when the ratio is not an integer, and n_out > n_in
  upsamples.
  """
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start = (i * n_in) // n_out
    end = -(-((i + 1) * n_in) // n_out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def area_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """torch F.interpolate(mode='area') = adaptive_avg_pool2d, on NHWC.

  Not `jax.image.resize(..., 'area')`, which is TF's fractional-area resize
  and differs for non-integer ratios. Bins are rectangles, so the 2-D average
  is a row average followed by a column average.

  Args:
    x: float [B, H, W, C].
    size: (out_h, out_w).

  Returns:
    float [B, out_h, out_w, C].
  """
  h, w = x.shape[1:3]
  if (h, w) == tuple(size):
    return x
  rows = jnp.asarray(_adaptive_avg_matrix(h, size[0]), x.dtype)
  cols = jnp.asarray(_adaptive_avg_matrix(w, size[1]), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum('oh,bhwc->bowc', rows, x, precision=hi)
  return jnp.einsum('pw,bowc->bopc', cols, x, precision=hi)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (timm layout)."""
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, d = x.shape
    head_dim = d // self.num_heads
    qkv = nn.Dense(3 * d, dtype=self.dtype, name='qkv')(x)
    # The 3d outputs are ordered (q|k|v, head, head_dim), as in timm.
    q, k, v = jnp.moveaxis(qkv.reshape(b, n, 3, self.num_heads, head_dim),
                           2, 0)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * head_dim**-0.5
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(
        self.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', attn, v).reshape(b, n, d)
    return nn.Dense(d, dtype=self.dtype, name='proj')(out)


class Block(nn.Module):
  """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    norm = lambda name: nn.LayerNorm(1e-6, dtype=self.dtype,
                                     use_fast_variance=False, name=name)
    x = x + Attention(self.num_heads, self.dtype, name='attn')(
        norm('norm1')(x))
    y = norm('norm2')(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(y)
    y = nn.gelu(y, approximate=False)  # timm's nn.GELU: exact erf.
    y = nn.Dense(d, dtype=self.dtype, name='fc2')(y)
    return x + y


class DinoViT(nn.Module):
  """ViT feature extractor; the defaults are DINO ViT-S/16 at 224.

  Attributes:
    image_size: the side the images are area-resized to.
    patch: patch side.
    width, depth, num_heads, mlp_dim: transformer sizes.
    pos_grid: side of the learned pos-embed grid; None = image_size // patch.
      When it differs from the token grid, the patch part of the pos-embed is
      bilinearly resampled (half-pixel centres, no antialias, i.e. torch
      F.interpolate 'bilinear', align_corners=False).
    feature_blocks: blocks whose outputs are returned.
    dtype: compute dtype (parameters stay float32).
  """
  image_size: int = 224
  patch: int = 16
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  pos_grid: int | None = None
  feature_blocks: tuple[int, ...] = FEATURE_BLOCKS
  dtype: Any = jnp.float32

  @property
  def pos_side(self) -> int:
    """Side of the learned pos-embed grid."""
    return self.pos_grid or self.image_size // self.patch

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, ...]:
    """The discriminator's feature sets.

    Args:
      images: float [B, H, W, C] in [0, 1], C in {1 (repeated to RGB), 3}.

    Returns:
      1 + len(feature_blocks) arrays (dtype) [B, 1 + (image_size //
      patch)**2, width]: the tokens after the pos-embed, then the outputs of
      `feature_blocks`.
    """
    if max(self.feature_blocks) >= self.depth:
      raise ValueError(f'feature_blocks {self.feature_blocks} need depth > '
                       f'{max(self.feature_blocks)}, got {self.depth}.')
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = area_resize(x, (self.image_size, self.image_size))
    x = (x - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)
    x = nn.Conv(self.width, (self.patch, self.patch), self.patch,
                padding='VALID', dtype=self.dtype,
                name='patch_embed_proj')(x)
    b, gh, gw, _ = x.shape
    x = x.reshape(b, gh * gw, self.width)  # row-major, as timm's flatten(2)
    cls = self.param('cls_token', nn.initializers.normal(1e-6),
                     (1, 1, self.width))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.width)).astype(
        x.dtype), x], axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(0.02),
                     (1, 1 + self.pos_side**2, self.width))
    x = x + _resample_pos_embed(pos, self.pos_side, (gh, gw)).astype(x.dtype)
    feats = [x]
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_dim, self.dtype, name=f'blocks_{i}')(x)
      if i in self.feature_blocks:
        feats.append(x)
    return tuple(feats)


def _resample_pos_embed(pos, grid: int, new_grid: tuple[int, int]):
  """[1, 1 + grid^2, D] -> [1, 1 + gh gw, D]; the cls position is kept."""
  if new_grid == (grid, grid):
    return pos
  d = pos.shape[-1]
  patches = pos[:, 1:].reshape(1, grid, grid, d)
  patches = jax.image.resize(patches, (1, *new_grid, d), 'bilinear',
                             antialias=False)
  return jnp.concatenate([pos[:, :1], patches.reshape(1, -1, d)], axis=1)


# --- dino_deitsmall16_pretrain.pth -> Flax params. ---


def _bare(state, key):
  return np.asarray(state[key], np.float32)


def _layers(model: DinoViT) -> list[common.Layer]:
  """The torch layers of `model`'s sizes, final norm excluded."""
  d, mlp = model.width, model.mlp_dim
  layers = [
      common.Layer('cls_token', 'cls_token', {'cls_token': (1, 1, d)}, _bare),
      common.Layer('pos_embed', 'pos_embed',
                   {'pos_embed': (1, 1 + model.pos_side**2, d)}, _bare),
      common.conv_layer('patch_embed.proj', 'patch_embed_proj', 3, d,
                        (model.patch, model.patch)),
  ]
  for i in range(model.depth):
    t, f = f'blocks.{i}', f'blocks_{i}'
    layers += [
        common.norm_layer(f'{t}.norm1', f'{f}/norm1', d),
        common.linear_layer(f'{t}.attn.qkv', f'{f}/attn/qkv', d, 3 * d),
        common.linear_layer(f'{t}.attn.proj', f'{f}/attn/proj', d, d),
        common.norm_layer(f'{t}.norm2', f'{f}/norm2', d),
        common.linear_layer(f'{t}.mlp.fc1', f'{f}/fc1', d, mlp),
        common.linear_layer(f'{t}.mlp.fc2', f'{f}/fc2', mlp, d),
    ]
  return layers


# The final LayerNorm: in the checkpoint, unused by the features.
_FINAL_NORM = ('norm.weight', 'norm.bias')


def dino_manifest(model: DinoViT = DinoViT()) -> dict[str, tuple[int, ...]]:
  """{key: shape} of a timm/DINO ViT state dict of `model`'s sizes.

  The default is exactly dino_deitsmall16_pretrain.pth.
  """
  manifest = common.manifest(_layers(model))
  manifest.update({k: (model.width,) for k in _FINAL_NORM})
  return manifest


def convert_dino_vits16(state_dict: dict[str, np.ndarray],
                        model: DinoViT = DinoViT()) -> dict[str, Any]:
  """timm/DINO ViT state dict -> `model`'s params (float32).

  Raises UserError unless the keys and shapes are exactly
  `dino_manifest(model)`; the final norm is checked, then dropped.
  """
  what = 'timm/DINO ViT weights'
  common.check_manifest(state_dict, dino_manifest(model), what, _FIX)
  state_dict = {k: v for k, v in state_dict.items() if k not in _FINAL_NORM}
  return common.convert(state_dict, _layers(model), what, _FIX)


def load_dino_vits16(path: str) -> dict[str, Any]:
  """Reads dino_deitsmall16_pretrain.pth into DinoViT() params."""
  return convert_dino_vits16(common.read_torch_state_dict(
      path, 'DINO ViT-S/16 weights', _FIX))
