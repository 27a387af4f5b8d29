"""DiT / SiT: the adaLN-Zero latent transformer (flax.linen).

Follows facebookresearch/DiT `models.py` (willisma/SiT's `models.py` is the
same network with the same keys; paradigms.md §2.1), every size
configurable, so the same code runs DiT-XL/2 / SiT-XL/2 and small models
this project trains. `DiT.__call__` returns the full final-layer output
(2C channels with `learn_sigma`, else C) and the last block's tokens; the
generators keep channels [:C] (DiT: eps; SiT: velocity, the sigma half is
dropped as SiT's own forward does).

Submodule names mirror the published PyTorch keys (dots -> '/', a list
index joins its list's name with '_'):

  x_embedder.proj                     x_embedder/proj  (Conv, k = stride = p)
  pos_embed [1, N, D]                 not a parameter: the fixed 2-D sin-cos
                                      table, recomputed (`sincos_pos_embed`)
  t_embedder.mlp.{0,2}                t_embedder/mlp_0, t_embedder/mlp_2
  y_embedder.embedding_table          y_embedder/embedding_table
  blocks.{i}.attn.{qkv,proj}          blocks_{i}/attn/{qkv,proj}
  blocks.{i}.mlp.{fc1,fc2}            blocks_{i}/mlp/{fc1,fc2}
  blocks.{i}.adaLN_modulation.1       blocks_{i}/adaLN_modulation_1
  final_layer.linear                  final_layer/linear
  final_layer.adaLN_modulation.1      final_layer/adaLN_modulation_1

Latents are NHWC: float [B, H, W, C]; tokens are row-major over the
(H / p, W / p) patch grid, as the PyTorch flatten of an NCHW map.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import ops

_LN_EPS = 1e-6          # every DiT LayerNorm (affine-free)
FREQ_DIM = 256         # sinusoid width of the timestep embedder
_MAX_PERIOD = 10000.0


def timestep_embedding(t: jax.Array, dim: int = FREQ_DIM,
                       max_period: float = _MAX_PERIOD) -> jax.Array:
  """float [B] -> float32 [B, dim] sinusoids, [cos | sin] (DiT's order)."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=jnp.float32)
                  / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def sincos_pos_embed(dim: int, grid: int) -> np.ndarray:
  """float32 [grid * grid, dim]: DiT's fixed 2-D position table.

  Token n = (row i, column j) row-major. The first dim / 2 channels encode
  the column j and the last dim / 2 the row i (MAE's `meshgrid(w, h)`
  order); each half is [sin | cos] with frequencies 1e4^(-k / (dim / 4)).
  Computed in float64 like the reference, then rounded.
  """
  quarter = dim // 4
  omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)

  def embed_1d(pos):
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64),
                           np.arange(grid, dtype=np.float64), indexing='ij')
  return np.concatenate([embed_1d(cols), embed_1d(rows)],
                        axis=1).astype(np.float32)


def _layer_norm(dtype) -> nn.LayerNorm:
  # Two-pass variance like torch: DiT activations grow large with depth.
  return nn.LayerNorm(epsilon=_LN_EPS, use_bias=False, use_scale=False,
                      use_fast_variance=False, dtype=dtype)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """x [B, N, D]; shift, scale [B, D]."""
  return x * (1.0 + scale[:, None]) + shift[:, None]


# DiT's initialisation: xavier-uniform Linear weights with zero bias, N(0,
# 0.02) for the label table and timestep MLP, zeros for every adaLN
# modulation and the final linear (adaLN-Zero: each block starts as the
# identity and the output as zero).
_xavier = nn.initializers.xavier_uniform()
_normal = nn.initializers.normal(0.02)
_zeros = nn.initializers.zeros


class PatchEmbed(nn.Module):
  """[B, H, W, C] -> [B, (H / p) (W / p), D] by a p x p stride-p conv."""
  patch_size: int
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.patch_size
    # Xavier over the flattened [D, C p p] weight, as DiT does.
    init = nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3)
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID',
                kernel_init=init, dtype=self.dtype, name='proj')(x)
    return x.reshape(x.shape[0], -1, self.hidden_size)


class TimestepEmbedder(nn.Module):
  """float [B] (the model's time input) -> [B, D]."""
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    x = timestep_embedding(t)
    x = nn.Dense(self.hidden_size, kernel_init=_normal, dtype=self.dtype,
                 name='mlp_0')(x)
    return nn.Dense(self.hidden_size, kernel_init=_normal, dtype=self.dtype,
                    name='mlp_2')(nn.silu(x))


class Attention(nn.Module):
  """timm Attention: fused qkv (with bias), rows [q | k | v], heads within."""
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    qkv = nn.Dense(3 * d, kernel_init=_xavier, dtype=self.dtype,
                   name='qkv')(x)
    qkv = qkv.reshape(b, n, 3, self.num_heads, d // self.num_heads)
    # [B, N, H, Dh] each; scale 1 / sqrt(Dh).
    out = ops.self_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    return nn.Dense(d, kernel_init=_xavier, dtype=self.dtype,
                    name='proj')(out.reshape(b, n, d))


class Mlp(nn.Module):
  """fc1 -> tanh-GELU -> fc2 (DiT's `GELU(approximate='tanh')`)."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    x = nn.Dense(self.hidden, kernel_init=_xavier, dtype=self.dtype,
                 name='fc1')(x)
    x = nn.gelu(x, approximate=True)
    return nn.Dense(d, kernel_init=_xavier, dtype=self.dtype, name='fc2')(x)


class DiTBlock(nn.Module):
  """adaLN-Zero block: gated attention and MLP, modulated by c."""
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    """x [B, N, D], c [B, D] -> [B, N, D]."""
    d = x.shape[-1]
    mod = nn.Dense(6 * d, kernel_init=_zeros, dtype=self.dtype,
                   name='adaLN_modulation_1')(nn.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        jnp.split(mod, 6, axis=-1))
    h = _modulate(_layer_norm(self.dtype)(x), shift_msa, scale_msa)
    x = x + gate_msa[:, None] * Attention(self.num_heads, self.dtype,
                                          name='attn')(h)
    h = _modulate(_layer_norm(self.dtype)(x), shift_mlp, scale_mlp)
    return x + gate_mlp[:, None] * Mlp(int(d * self.mlp_ratio), self.dtype,
                                       name='mlp')(h)


class FinalLayer(nn.Module):
  """adaLN (shift, scale) then a linear map to p * p * C_out per token."""
  out_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    d = x.shape[-1]
    mod = nn.Dense(2 * d, kernel_init=_zeros, dtype=self.dtype,
                   name='adaLN_modulation_1')(nn.silu(c))
    shift, scale = jnp.split(mod, 2, axis=-1)
    x = _modulate(_layer_norm(self.dtype)(x), shift, scale)
    return nn.Dense(self.out_features, kernel_init=_zeros, dtype=self.dtype,
                    name='linear')(x)


class LabelEmbedder(nn.Module):
  """int32 [B] -> [B, D]; row num_classes is the null (CFG) class."""
  num_classes: int
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y: jax.Array) -> jax.Array:
    return nn.Embed(self.num_classes + 1, self.hidden_size,
                    embedding_init=_normal, dtype=self.dtype,
                    name='embedding_table')(y)


class DiT(nn.Module):
  """Class-conditional latent transformer (DiT; SiT has the same network).

  Attributes:
    input_size: latent side H = W (32 for 256 x 256 images).
    in_channels: latent channels C.
    patch_size: p.
    hidden_size: D.
    depth: number of blocks.
    num_heads: attention heads (D divisible by it).
    mlp_ratio: MLP width / D.
    num_classes: real classes; label `num_classes` is the null class of
      classifier-free guidance (the table has num_classes + 1 rows).
    learn_sigma: the final layer also predicts C variance channels.
    dtype: computation dtype (parameters stay float32).
  """
  input_size: int = 32
  in_channels: int = 4
  patch_size: int = 2
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  num_classes: int = 1000
  learn_sigma: bool = True
  dtype: Any = jnp.float32

  @property
  def out_channels(self) -> int:
    return 2 * self.in_channels if self.learn_sigma else self.in_channels

  @property
  def num_tokens(self) -> int:
    return (self.input_size // self.patch_size) ** 2

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array,
               y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Runs the network.

    Args:
      x: float [B, H, W, C] latents.
      t: float [B] the model's time input (DiT: 1000 t_VP; SiT: t).
      y: int32 [B] labels in [0, num_classes] (num_classes = null).

    Returns:
      out: float32 [B, H, W, out_channels].
      feat: float32 [B, N, D], the last block's tokens (before final_layer).
    """
    b, p, d = x.shape[0], self.patch_size, self.hidden_size
    grid = self.input_size // p
    h = PatchEmbed(p, d, self.dtype, name='x_embedder')(x)
    h = h + jnp.asarray(sincos_pos_embed(d, grid), h.dtype)[None]
    c = TimestepEmbedder(d, self.dtype, name='t_embedder')(t)
    c = c + LabelEmbedder(self.num_classes, d, self.dtype,
                          name='y_embedder')(y)
    for i in range(self.depth):
      h = DiTBlock(self.num_heads, self.mlp_ratio, self.dtype,
                   name=f'blocks_{i}')(h, c)
    out = FinalLayer(p * p * self.out_channels, self.dtype,
                     name='final_layer')(h, c)
    # unpatchify: [B, h, w, (p, q, C)] -> [B, h p, w q, C].
    out = out.reshape(b, grid, grid, p, p, self.out_channels)
    out = out.transpose(0, 1, 3, 2, 4, 5).reshape(
        b, grid * p, grid * p, self.out_channels)
    return out.astype(jnp.float32), h.astype(jnp.float32)
