"""VAR's next-scale transformer (FoundationVision/VAR `var.py`, `basic_var.py`).

paradigms.md §3.1. The sequence is the K token maps of the scale schedule,
coarse to fine, L = sum(pn^2) tokens: scale 0 is the class embedding plus
`pos_start`, scale k > 0 is `word_embed` of the (area-downsampled) running
f_hat of the VQVAE; every token adds `lvl_embed(scale)` and `pos_1LC`.
Attention is block-causal by scale (a token sees its own and coarser
scales): a mask for teacher forcing, a KV cache when sampling scale by
scale. Each block is adaLN-modulated by the class embedding:

  gamma1, gamma2, scale1, scale2, shift1, shift2 = ada_lin(cond)  # this order
  x += attn(LN(x) (1 + scale1) + shift1) gamma1
  x += ffn(LN(x) (1 + scale2) + shift2) gamma2

(with `shared_aln`, one SiLU + Linear before the blocks gives the six and
each block adds its own `ada_gss`). Attention normalises q and k per head
and multiplies q by exp(min(s_h, log 100)) with a learned s_h, softmax scale
1. The head is `head(AdaLNBeforeHead(x, cond))` with (scale, shift) order.
Sizes scale with depth d: width 64 d, d heads (`var_sizes`).

Flax names (the converter maps `var_d*.pth` keys onto them): word_embed,
class_emb, pos_start [first_l, C], pos_1LC [L, C], lvl_embed,
blocks_{i}/{ada_lin, ada_gss [6, C], attn/{mat_qkv, q_bias, v_bias,
scale_mul [H], proj}, ffn/{fc1, fc2}}, shared_ada_lin, head_nm/ada_lin,
head.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax.generators import var_vqvae

_MAX_SCALE_MUL = math.log(100.0)
_NORMALIZE_EPS = 1e-12  # F.normalize's.


def var_sizes(depth: int) -> dict[str, int]:
  """The published depth-scaled sizes: width 64 d, d heads."""
  return dict(depth=depth, width=64 * depth, num_heads=depth)


def scale_levels(patch_nums: Sequence[int]) -> np.ndarray:
  """int32 [L]: the scale index of every token of the sequence."""
  return np.concatenate([np.full(pn * pn, k, np.int32)
                         for k, pn in enumerate(patch_nums)])


def scale_offsets(patch_nums: Sequence[int]) -> tuple[int, ...]:
  """(K + 1,) start of every scale in the sequence, then L."""
  return tuple(np.concatenate([[0], np.cumsum(
      [pn * pn for pn in patch_nums])]).tolist())


def block_causal_mask(patch_nums: Sequence[int]) -> np.ndarray:
  """bool [L, L]: query i may attend key j iff scale(j) <= scale(i)."""
  lvl = scale_levels(patch_nums)
  return lvl[:, None] >= lvl[None, :]


def init_inputs(var: 'VAR') -> tuple[jax.Array, jax.Array | None]:
  """Dummy (labels, x_in) for `var.init` / `jax.eval_shape` (batch 1)."""
  x_in = None
  if len(var.patch_nums) > 1:
    x_in = jnp.zeros((1, var.seq_len - var.first_l, var.cvae), jnp.float32)
  return jnp.zeros((1,), jnp.int32), x_in


def _normalize(x: jax.Array) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, _NORMALIZE_EPS)


def _layer_norm(x: jax.Array, eps: float) -> jax.Array:
  """LayerNorm without affine parameters (`ln_wo_grad`), in float32."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class SelfAttention(nn.Module):
  """Multi-head attention with a bias-free qkv and separate q/v biases.

  Attributes:
    num_heads: H.
    l2_norm: normalise q and k (VAR's attn_l2_norm=True) with the learned
      per-head scale; else the softmax scale is 0.25 / sqrt(head_dim).
    init_std: std of the truncated-normal weight init.
    proj_std: std of the output projection's init.
    dtype: computation dtype.
  """
  num_heads: int
  l2_norm: bool = True
  init_std: float = 0.02
  proj_std: float = 0.02
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               past: tuple[jax.Array, jax.Array] | None = None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Attends x (and a cached prefix) with an optional mask.

    Args:
      x: [B, N, C] queries' inputs.
      mask: bool [N, P + N], True where a query may attend a key; None
        attends everything.
      past: cached (k, v) [B, P, H, Dh] of earlier scales, or None.

    Returns:
      out [B, N, C], and this input's (k, v) [B, N, H, Dh] (the new cache
      entries; k already normalised).
    """
    b, n, c = x.shape
    h = self.num_heads

    def dense(features, std, bias, name):
      return nn.Dense(features, use_bias=bias, dtype=self.dtype, name=name,
                      kernel_init=nn.initializers.truncated_normal(std))

    qkv = dense(3 * c, self.init_std, False, 'mat_qkv')(x)
    q_bias = self.param('q_bias', nn.initializers.zeros, (c,))
    v_bias = self.param('v_bias', nn.initializers.zeros, (c,))
    qkv = qkv + jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]
                                ).astype(qkv.dtype)
    # PyTorch views the 3C outputs as (3, heads, head_dim).
    q, k, v = jnp.moveaxis(qkv.reshape(b, n, 3, h, c // h), 2, 0)
    if self.l2_norm:
      scale_mul = self.param('scale_mul', nn.initializers.constant(
          math.log(4.0)), (h,))
      q = _normalize(q) * jnp.exp(jnp.minimum(
          scale_mul, _MAX_SCALE_MUL))[:, None].astype(q.dtype)
      k = _normalize(k)
      scale = 1.0
    else:
      scale = 0.25 / math.sqrt(c // h)
    keys, values = k, v
    if past is not None:
      keys = jnp.concatenate([past[0].astype(k.dtype), k], axis=1)
      values = jnp.concatenate([past[1].astype(v.dtype), v], axis=1)
    logits = jnp.einsum('bnhd,bmhd->bhnm', q * scale, keys,
                        preferred_element_type=jnp.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    out = jnp.einsum('bhnm,bmhd->bnhd', weights, values).reshape(b, n, c)
    return dense(c, self.proj_std, True, 'proj')(out), (k, v)


class FFN(nn.Module):
  """fc1 -> GELU (tanh) -> fc2."""
  hidden: int
  init_std: float = 0.02
  out_std: float = 0.02
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.truncated_normal
    h = nn.Dense(self.hidden, dtype=self.dtype, name='fc1',
                 kernel_init=init(self.init_std))(x)
    h = nn.gelu(h, approximate=True)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name='fc2',
                    kernel_init=init(self.out_std))(h)


def _ada_lin_init(width: int, num_gammas: int, std: float):
  """VAR's init_weights for an ada_lin kernel [D, k C].

  Truncated normal with std `std`, times 1e-5 on the first num_gammas C
  outputs (the residual gates start near 0) and 0.5 on the rest.
  """
  def init(key, shape, dtype=jnp.float32):
    w = nn.initializers.truncated_normal(std)(key, shape, dtype)
    gain = jnp.where(jnp.arange(shape[-1]) < num_gammas * width, 1e-5, 0.5)
    return w * gain.astype(dtype)
  return init


class AdaLNSelfAttn(nn.Module):
  """One adaLN transformer block (see the module docstring).

  Attributes:
    num_heads, mlp_ratio: attention heads, FFN width / width.
    shared_aln: the six modulations come precomputed from `shared_ada_lin`
      (cond [B, 6, C]) plus this block's `ada_gss`; else from this block's
      `ada_lin` on cond [B, D].
    l2_norm: normalised q/k attention.
    norm_eps: LayerNorm epsilon.
    init_std, out_std: weight init std, and that of proj / fc2.
    dtype: computation dtype.
  """
  num_heads: int
  mlp_ratio: float = 4.0
  shared_aln: bool = False
  l2_norm: bool = True
  norm_eps: float = 1e-6
  init_std: float = 0.02
  out_std: float = 0.02
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array,
               mask: jax.Array | None = None,
               past: tuple[jax.Array, jax.Array] | None = None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """x [B, N, C], cond [B, D] (or [B, 6, C]) -> (x, new (k, v))."""
    c = x.shape[-1]
    if self.shared_aln:
      gss = self.param('ada_gss', nn.initializers.normal(c ** -0.5), (6, c))
      mods = gss + cond
    else:
      mods = nn.Dense(6 * c, dtype=self.dtype, name='ada_lin',
                      kernel_init=_ada_lin_init(c, 2, self.init_std))(
                          nn.silu(cond)).reshape(-1, 6, c)
    mods = mods.astype(x.dtype)
    gamma1, gamma2, scale1, scale2, shift1, shift2 = (
        mods[:, None, i] for i in range(6))
    ln = lambda y: _layer_norm(y, self.norm_eps)
    a, kv = SelfAttention(self.num_heads, self.l2_norm, self.init_std,
                          self.out_std, self.dtype, name='attn')(
                              ln(x) * (1 + scale1) + shift1, mask, past)
    x = x + a * gamma1
    f = FFN(round(c * self.mlp_ratio), self.init_std, self.out_std,
            self.dtype, name='ffn')(ln(x) * (1 + scale2) + shift2)
    return x + f * gamma2, kv


class AdaLNBeforeHead(nn.Module):
  """LN(x) (1 + scale) + shift with (scale, shift) = ada_lin(cond)."""
  norm_eps: float = 1e-6
  init_std: float = 0.02
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    """x [B, N, C], cond [B, D] -> [B, N, C]."""
    c = x.shape[-1]
    mods = nn.Dense(2 * c, dtype=self.dtype, name='ada_lin',
                    kernel_init=_ada_lin_init(c, 0, self.init_std))(
                        nn.silu(cond)).reshape(-1, 1, 2, c).astype(x.dtype)
    return _layer_norm(x, self.norm_eps) * (1 + mods[:, :, 0]) + mods[:, :, 1]


class VAR(nn.Module):
  """The VAR transformer; defaults are VAR-d16 (`var_d16.pth`).

  Class `num_classes` is the null class of classifier-free guidance.

  Attributes:
    num_classes: real classes.
    vocab_size: V, the VQVAE codebook size.
    cvae: the VQVAE latent channels.
    depth, width, num_heads: blocks, C (= cond dim D), heads.
    mlp_ratio: FFN width / C.
    patch_nums: the scale schedule.
    shared_aln: one adaLN projection shared by all blocks.
    attn_l2_norm: normalised q/k attention.
    norm_eps: LayerNorm epsilon.
    dtype: computation dtype (params stay float32).
  """
  num_classes: int = 1000
  vocab_size: int = 4096
  cvae: int = 32
  depth: int = 16
  width: int = 1024
  num_heads: int = 16
  mlp_ratio: float = 4.0
  patch_nums: Sequence[int] = var_vqvae.PATCH_NUMS
  shared_aln: bool = False
  attn_l2_norm: bool = True
  norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  def setup(self):
    c = self.width
    std = math.sqrt(1.0 / c / 3.0)  # VAR's init_std
    trunc = nn.initializers.truncated_normal(std)
    self.word_embed = nn.Dense(c, dtype=self.dtype, kernel_init=trunc)
    self.class_emb = nn.Embed(self.num_classes + 1, c, embedding_init=trunc)
    self.pos_start = self.param('pos_start', trunc, (self.first_l, c))
    self.pos_1LC = self.param('pos_1LC', trunc, (self.seq_len, c))  # pylint: disable=invalid-name
    self.lvl_embed = nn.Embed(len(self.patch_nums), c, embedding_init=trunc)
    if self.shared_aln:
      self.shared_ada_lin = nn.Dense(6 * c, dtype=self.dtype,
                                     kernel_init=trunc)
    out_std = std / math.sqrt(2 * self.depth)
    self.blocks = [
        AdaLNSelfAttn(self.num_heads, self.mlp_ratio, self.shared_aln,
                      self.attn_l2_norm, self.norm_eps, std, out_std,
                      self.dtype, name=f'blocks_{i}')
        for i in range(self.depth)]
    self.head_nm = AdaLNBeforeHead(self.norm_eps, std, self.dtype)
    self.head = nn.Dense(self.vocab_size, dtype=self.dtype,
                         kernel_init=nn.initializers.truncated_normal(
                             0.02 * std))

  @property
  def first_l(self) -> int:
    return self.patch_nums[0] ** 2

  @property
  def seq_len(self) -> int:
    return scale_offsets(self.patch_nums)[-1]

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  def _lvl_pos(self) -> jax.Array:
    """float32 [L, C]: level plus position embedding of every token."""
    return (self.lvl_embed(jnp.asarray(scale_levels(self.patch_nums))) +
            self.pos_1LC)

  def _block_cond(self, cond: jax.Array) -> jax.Array:
    if self.shared_aln:
      return self.shared_ada_lin(nn.silu(cond)).reshape(-1, 6, self.width)
    return cond

  def embed_class(self, labels: jax.Array) -> jax.Array:
    """int32 [B] (num_classes = null) -> cond float32 [B, C]."""
    return self.class_emb(labels)

  def first_tokens(self, cond: jax.Array) -> jax.Array:
    """cond [B, C] -> scale 0's input tokens [B, first_l, C] (the SOS)."""
    return (cond[:, None] + self.pos_start +
            self._lvl_pos()[:self.first_l]).astype(self.dtype)

  def scale_tokens(self, f_down: jax.Array, si: int) -> jax.Array:
    """Input tokens of scale si >= 1 (static).

    Args:
      f_down: float32 [B, pn_si^2, Cvae], the running f_hat at pn_si.
      si: scale index.

    Returns:
      [B, pn_si^2, C].
    """
    start, end = scale_offsets(self.patch_nums)[si:si + 2]
    return (self.word_embed(f_down) +
            self._lvl_pos()[start:end]).astype(self.dtype)

  def blocks_cached(self, x: jax.Array, cond: jax.Array, cache_k: jax.Array,
                    cache_v: jax.Array, start: int
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One scale through all blocks, attending to the cached coarser ones.

    Args:
      x: [B, n, C] input tokens of the scale starting at `start`.
      cond: float32 [B, C] class embeddings.
      cache_k, cache_v: [depth, B, >= start, H, Dh]; positions < start
        (static) hold the earlier scales' keys/values.
      start: static sequence offset of this scale.

    Returns:
      hidden [B, n, C] (last block's output, before head_nm), and this
      scale's keys and values [depth, B, n, H, Dh].
    """
    cond = self._block_cond(cond)
    ks, vs = [], []
    for i, block in enumerate(self.blocks):
      x, (k, v) = block(x, cond, None,
                        (cache_k[i, :, :start], cache_v[i, :, :start]))
      ks.append(k)
      vs.append(v)
    return x, jnp.stack(ks), jnp.stack(vs)

  def logits(self, hidden: jax.Array, cond: jax.Array) -> jax.Array:
    """hidden [B, n, C], cond [B, C] -> float32 logits [B, n, V]."""
    return self.head(self.head_nm(hidden, cond)).astype(jnp.float32)

  def __call__(self, labels: jax.Array, x_in: jax.Array | None = None,
               return_hidden: bool = False):
    """Teacher-forced forward over the whole sequence (block-causal mask).

    Args:
      labels: int32 [B] classes (num_classes = null; the caller drops
        labels for classifier-free guidance training).
      x_in: float32 [B, L - first_l, Cvae], the VQVAE's teacher-forcing
        inputs of scales 1.. (`VQVAE.teacher_inputs`); None for a
        one-scale schedule.
      return_hidden: also return the last block's output.

    Returns:
      logits float32 [B, L, V] (and hidden [B, L, C]).
    """
    cond = self.embed_class(labels)
    x = self.first_tokens(cond)
    if x_in is not None:
      rest = self.word_embed(x_in) + self._lvl_pos()[self.first_l:]
      x = jnp.concatenate([x, rest.astype(x.dtype)], axis=1)
    mask = jnp.asarray(block_causal_mask(self.patch_nums))
    block_cond = self._block_cond(cond)
    for block in self.blocks:
      x, _ = block(x, block_cond, mask)
    logits = self.logits(x, cond)
    return (logits, x) if return_hidden else logits
