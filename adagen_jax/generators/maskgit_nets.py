"""MaskGIT networks: the VQGAN tokenizer and the UViT masked-token model.

Both follow the networks AdaGen's MaskGIT-L uses (adagen_reference.md §4.1-4.2,
paradigms.md §4), with every size configurable so the same code runs the
published model and the small Fashion-MNIST one this project trains.

Submodule names mirror the published PyTorch keys, so a converter is a rename
plus the usual layout changes (Linear weight -> kernel.T, Conv2d OIHW -> HWIO,
LayerNorm/GroupNorm weight -> scale, Embedding weight -> embedding):

  VQGAN (MAGE `vqgan_jax_strongaug.ckpt`, taming-style keys)
    encoder.conv_in                      encoder/conv_in
    encoder.down.{i}.block.{j}.*         encoder/down_{i}_block_{j}/*
    encoder.mid.block_{k}.*              encoder/mid_block_{k}/*   (k from 1)
    encoder.norm_out, encoder.conv_out   encoder/norm_out, encoder/conv_out
    decoder.conv_in                      decoder/conv_in
    decoder.mid.block_{k}.*              decoder/mid_block_{k}/*   (k from 1)
    decoder.up.{i}.block.{j}.*           decoder/up_{i}_block_{j}/*
    decoder.up.{i}.upsample.conv         decoder/up_{i}_upsample_conv
    decoder.norm_out, decoder.conv_out   decoder/norm_out, decoder/conv_out
    quantize.embedding.weight [K, D]     quantize/embedding [K, D]
    ResBlock: norm1, conv1, norm2, conv2[, nin_shortcut]  (same names)

  UViT (`MaskGIT-L.pth`)
    token_emb.{word_embeddings,position_embeddings}.weight
                                         token_emb/{word_embeddings,
                                           position_embeddings}/embedding
    token_emb.LayerNorm                  token_emb/LayerNorm
    context_embed.*                      context_embed/* (same layout)
    in_blocks.{i}.*, mid_block.*, out_blocks.{i}.*
                                         in_blocks_{i}/*, mid_block/*,
                                           out_blocks_{i}/*
      block: norm1, attn.qkv (no bias), attn.proj, norm2, mlp.fc1, mlp.fc2
             [, skip_linear]           -> norm1, attn/qkv, attn/proj, norm2,
                                           mlp/fc1, mlp/fc2[, skip_linear]
    norm                                 norm
    mlm_layer.fc, mlm_layer.ln           mlm_layer/fc, mlm_layer/ln
    mlm_layer.bias [1, 1, V]             mlm_layer/bias [V]

Images are float [B, H, W, C] in [0, 1] in and out (NHWC).
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adagen_jax import ops

# Epsilons of the reference networks (adagen_reference.md §8.9).
_GN_EPS = 1e-6
_EMBED_LN_EPS = 1e-6
_BLOCK_LN_EPS = 1e-5


def _group_norm(channels: int, max_groups: int, name: str) -> nn.GroupNorm:
  # 32 groups as the reference; small widths use the largest divisor of C
  # not above max_groups, so any width works.
  return nn.GroupNorm(num_groups=math.gcd(channels, max_groups),
                      epsilon=_GN_EPS, name=name)


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
  """TF-style 2x2 stride-2 average pool, SAME padding.

  Padded cells are excluded from the average (TF semantics; Flax's avg_pool
  would count them). For even sizes this is the plain 2x2 mean.
  """
  window, strides = (1, 2, 2, 1), (1, 2, 2, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, 'SAME')
  # The cell counts depend on (H, W) only; counting on a [1, H, W, 1] map
  # keeps XLA from constant-folding a full-size tensor of ones.
  count = jax.lax.reduce_window(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype),
                                0.0, jax.lax.add, window, strides, 'SAME')
  return total / count


def _upsample_nearest_2x(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResBlock(nn.Module):
  """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, plus a shortcut.

  Attributes:
    features: output channels.
    norm_groups: at most this many GroupNorm groups.
  """
  features: int
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float32 [B, H, W, C_in] -> float32 [B, H, W, features]."""
    h = _group_norm(x.shape[-1], self.norm_groups, 'norm1')(x)
    h = nn.swish(h)
    h = nn.Conv(self.features, (3, 3), use_bias=False, name='conv1')(h)
    h = _group_norm(self.features, self.norm_groups, 'norm2')(h)
    h = nn.swish(h)
    h = nn.Conv(self.features, (3, 3), use_bias=False, name='conv2')(h)
    if x.shape[-1] != self.features:
      # The MaskGIT quirk (paradigms.md §4.1, adagen_reference.md §4.2): when
      # the width changes, the input is dropped and the "residual" is a bias-
      # free 1x1 conv of the block OUTPUT h, so the block returns
      # h + conv1x1(h). The published weights were trained this way.
      return h + nn.Conv(self.features, (1, 1), use_bias=False,
                         name='nin_shortcut')(h)
    return x + h


class Encoder(nn.Module):
  """Image -> continuous latents at 1 / 2^(len(channel_mult) - 1) resolution.

  Attributes:
    filters: base width; level i has filters * channel_mult[i] channels.
    channel_mult: width multipliers, one per resolution level.
    num_res_blocks: ResBlocks per level, and in the middle.
    embedding_dim: D, channels of the latents.
    norm_groups: GroupNorm groups (at most).
  """
  filters: int
  channel_mult: Sequence[int]
  num_res_blocks: int
  embedding_dim: int
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float32 [B, H, W, C] in [0, 1] -> float32 [B, h, w, D]."""
    x = nn.Conv(self.filters, (3, 3), use_bias=False, name='conv_in')(x)
    for i, mult in enumerate(self.channel_mult):
      for j in range(self.num_res_blocks):
        x = ResBlock(self.filters * mult, self.norm_groups,
                     name=f'down_{i}_block_{j}')(x)
      if i < len(self.channel_mult) - 1:
        x = _avg_pool_2x2(x)
    for k in range(self.num_res_blocks):
      x = ResBlock(x.shape[-1], self.norm_groups, name=f'mid_block_{k + 1}')(x)
    x = _group_norm(x.shape[-1], self.norm_groups, 'norm_out')(x)
    x = nn.swish(x)
    return nn.Conv(self.embedding_dim, (1, 1), name='conv_out')(x)


class Decoder(nn.Module):
  """Latents -> image (unclipped); the mirror image of `Encoder`.

  Attributes:
    filters, channel_mult, num_res_blocks, norm_groups: as `Encoder`.
    out_channels: image channels.
  """
  filters: int
  channel_mult: Sequence[int]
  num_res_blocks: int
  out_channels: int
  norm_groups: int = 32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """z: float32 [B, h, w, D] -> float32 [B, H, W, out_channels]."""
    width = self.filters * self.channel_mult[-1]
    x = nn.Conv(width, (3, 3), name='conv_in')(z)
    for k in range(self.num_res_blocks):
      x = ResBlock(width, self.norm_groups, name=f'mid_block_{k + 1}')(x)
    for i in reversed(range(len(self.channel_mult))):
      width = self.filters * self.channel_mult[i]
      for j in range(self.num_res_blocks):
        x = ResBlock(width, self.norm_groups, name=f'up_{i}_block_{j}')(x)
      if i > 0:
        x = _upsample_nearest_2x(x)
        x = nn.Conv(width, (3, 3), name=f'up_{i}_upsample_conv')(x)
    x = _group_norm(x.shape[-1], self.norm_groups, 'norm_out')(x)
    x = nn.swish(x)
    return nn.Conv(self.out_channels, (3, 3), name='conv_out')(x)


class VectorQuantizer(nn.Module):
  """Nearest-code quantization against a [K, D] codebook.

  Attributes:
    codebook_size: K.
    embedding_dim: D.
  """
  codebook_size: int
  embedding_dim: int

  def setup(self):
    self.embedding = self.param(
        'embedding',
        nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'),
        (self.codebook_size, self.embedding_dim))

  def encode(self, z: jax.Array) -> jax.Array:
    """z: float32 [..., D] -> int32 [...] ids of the nearest codes (L2)."""
    codebook = self.embedding
    dist = (jnp.sum(z * z, -1, keepdims=True) - 2.0 * z @ codebook.T +
            jnp.sum(codebook * codebook, -1))
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)

  def lookup(self, ids: jax.Array) -> jax.Array:
    """int32 [...] -> float32 [..., D]."""
    return jnp.take(self.embedding, ids, axis=0)

  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    ids = self.encode(z)
    return ids, self.lookup(ids)


class VQGAN(nn.Module):
  """The tokenizer: Encoder, VectorQuantizer and Decoder (no attention).

  Attributes:
    filters: base width (MaskGIT-L's tokenizer: 128).
    channel_mult: per-level multipliers ((1, 1, 2, 2, 4): /16 downsampling).
    num_res_blocks: ResBlocks per level (2).
    embedding_dim: D (256).
    codebook_size: K (1024).
    out_channels: image channels (3).
    norm_groups: GroupNorm groups, at most (32).
  """
  filters: int = 128
  channel_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  embedding_dim: int = 256
  codebook_size: int = 1024
  out_channels: int = 3
  norm_groups: int = 32

  def setup(self):
    sizes = dict(filters=self.filters, channel_mult=tuple(self.channel_mult),
                 num_res_blocks=self.num_res_blocks,
                 norm_groups=self.norm_groups)
    self.encoder = Encoder(embedding_dim=self.embedding_dim, **sizes)
    self.quantize = VectorQuantizer(self.codebook_size, self.embedding_dim)
    self.decoder = Decoder(out_channels=self.out_channels, **sizes)

  def encode(self, images: jax.Array) -> jax.Array:
    """float32 [B, H, W, C] in [0, 1] -> int32 [B, h, w] token ids."""
    return self.quantize.encode(self.encoder(images))

  def decode_ids(self, ids: jax.Array) -> jax.Array:
    """int32 [B, h, w] -> float32 [B, H, W, C] images clipped to [0, 1]."""
    return jnp.clip(self.decoder(self.quantize.lookup(ids)), 0.0, 1.0)

  def reconstruct(self, images: jax.Array) -> jax.Array:
    """float32 [B, H, W, C] in [0, 1] -> the same, through the codebook."""
    return self.decode_ids(self.encode(images))

  def __call__(self, images: jax.Array):
    """Training forward with the straight-through estimator.

    Args:
      images: float32 [B, H, W, C] in [0, 1].

    Returns:
      recon: float32 [B, H, W, C] unclipped reconstruction, its gradient
        passed straight through the quantizer to the encoder.
      z: float32 [B, h, w, D] encoder output.
      z_q: float32 [B, h, w, D] embeddings of the nearest codes.
      ids: int32 [B, h, w] their ids.
    """
    z = self.encoder(images)
    ids, z_q = self.quantize(z)
    recon = self.decoder(z + jax.lax.stop_gradient(z_q - z))
    return recon, z, z_q, ids


_dense_init = nn.initializers.truncated_normal(0.02)
_embed_init = nn.initializers.normal(0.02)


def group_tokens(x: jax.Array, group: int) -> jax.Array:
  """[B, N, E] on a square grid -> [B, N / g^2, g^2 E], g x g cells.

  The cells are row-major over the grid of cells, and each cell's g^2
  tokens (row-major) are concatenated on the last axis.
  """
  if group == 1:
    return x
  b, n, e = x.shape
  side = math.isqrt(n)
  cells = side // group
  x = x.reshape(b, cells, group, cells, group, e).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, cells * cells, group * group * e)


def ungroup_tokens(x: jax.Array, group: int) -> jax.Array:
  """Inverse of `group_tokens`: [B, N / g^2, g^2 E] -> [B, N, E]."""
  if group == 1:
    return x
  b, m, ge = x.shape
  cells, e = math.isqrt(m), ge // (group * group)
  x = x.reshape(b, cells, cells, group, group, e).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, m * group * group, e)


class BertEmbeddings(nn.Module):
  """Word + learned position embeddings, LayerNorm (eps 1e-6), dropout.

  With group g > 1 the ids lie on a square grid and each g x g cell becomes
  one position: its g^2 word embeddings (hidden_size / g^2 wide each) are
  concatenated, then the cell's position embedding is added.

  Attributes:
    vocab_size: number of ids.
    hidden_size: width.
    max_positions: length of the position table (cells when grouped).
    dropout: rate (training only).
    group: g, the cell side in ids (1: one position per id, the published
      models).
  """
  vocab_size: int
  hidden_size: int
  max_positions: int
  dropout: float = 0.1
  group: int = 1

  def setup(self):
    self.word_embeddings = nn.Embed(
        self.vocab_size, self.hidden_size // (self.group * self.group),
        embedding_init=_embed_init)
    self.position_embeddings = nn.Embed(self.max_positions, self.hidden_size,
                                        embedding_init=_embed_init)
    # pylint: disable-next=invalid-name
    self.LayerNorm = nn.LayerNorm(epsilon=_EMBED_LN_EPS)  # the torch name
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, ids: jax.Array, train: bool = False) -> jax.Array:
    """ids: int32 [B, L] -> float32 [B, L / g^2, hidden_size]."""
    x = group_tokens(self.word_embeddings(ids), self.group)
    x = x + self.position_embeddings.embedding[None, :x.shape[1]]
    return self.drop(self.LayerNorm(x), deterministic=not train)


class Attention(nn.Module):
  """Multi-head self-attention with a fused bias-free qkv projection."""
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float32 [B, L, C] -> float32 [B, L, C]."""
    b, l, c = x.shape
    qkv = nn.Dense(3 * c, use_bias=False, kernel_init=_dense_init,
                   name='qkv')(x)
    # PyTorch splits the 3C outputs as (3, heads, head_dim).
    q, k, v = jnp.moveaxis(qkv.reshape(b, l, 3, self.num_heads, -1), 2, 0)
    out = ops.self_attention(q, k, v)
    return nn.Dense(c, kernel_init=_dense_init, name='proj')(
        out.reshape(b, l, c))


class Mlp(nn.Module):
  """fc1 -> exact GELU -> fc2 (timm Mlp)."""
  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Dense(self.hidden, kernel_init=_dense_init, name='fc1')(x)
    h = ops.gelu(h)
    return nn.Dense(x.shape[-1], kernel_init=_dense_init, name='fc2')(h)


class Block(nn.Module):
  """Pre-LN transformer block, with an optional long-skip input projection.

  Attributes:
    num_heads: attention heads.
    mlp_ratio: MLP hidden width / width.
    skip: whether the block takes a long skip (U-ViT out_blocks).
  """
  num_heads: int
  mlp_ratio: float
  skip: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array | None = None
               ) -> jax.Array:
    """x, skip: float32 [B, L, C] -> float32 [B, L, C]."""
    if self.skip:
      x = nn.Dense(x.shape[-1], kernel_init=_dense_init, name='skip_linear')(
          jnp.concatenate([x, skip], axis=-1))
    x = x + Attention(self.num_heads, name='attn')(
        nn.LayerNorm(epsilon=_BLOCK_LN_EPS, name='norm1')(x))
    x = x + Mlp(int(x.shape[-1] * self.mlp_ratio), name='mlp')(
        nn.LayerNorm(epsilon=_BLOCK_LN_EPS, name='norm2')(x))
    return x


class MlmLayer(nn.Module):
  """LN(GELU(Dense(x))) @ E^T + bias, E the tied word embeddings.

  With group g > 1 each position is a g x g cell of ids: the Dense output
  splits into g^2 vectors (`ungroup_tokens`), one per id.
  """
  vocab_size: int
  group: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, word_embeddings: jax.Array) -> jax.Array:
    """x: [B, L, C]; word_embeddings: [V, C / g^2] -> logits [B, L g^2, V].
    """
    h = nn.Dense(word_embeddings.shape[-1] * self.group * self.group,
                 kernel_init=_dense_init, name='fc')(x)
    h = nn.LayerNorm(epsilon=_BLOCK_LN_EPS, name='ln')(ungroup_tokens(
        ops.gelu(h), self.group))
    bias = self.param('bias', nn.initializers.zeros, (self.vocab_size,))
    return h @ word_embeddings.T + bias


class UViT(nn.Module):
  """U-ViT masked-token transformer with an in-context class token.

  Sequence: [class token, N image tokens]; depth // 2 in_blocks, a mid_block
  and depth // 2 out_blocks that take the in_blocks' outputs in reverse
  (long skips). Token id `codebook_size` is [MASK]; class `num_classes` is
  the null (unconditional) class.

  Attributes:
    codebook_size: K codes (vocabulary K + 1 with [MASK]).
    num_tokens: N image tokens (a square grid).
    num_classes: real classes (context vocabulary num_classes + 1).
    width: hidden size (MaskGIT-L: 768).
    depth: 2 * (number of in_blocks) (24 -> 25 blocks).
    num_heads: attention heads (8).
    mlp_ratio: MLP expansion (4).
    dropout: token-embedding dropout, training only (0.1).
    token_group: g; each g x g cell of ids is one transformer position
      (1: one per id, the published models). Masking, sampling and the
      logits stay per id; only the network sees N / g^2 positions, so a
      14 x 14 grid costs what a 7 x 7 one does (as DiT's patch size 2 does
      on latents).
  """
  codebook_size: int = 1024
  num_tokens: int = 256
  num_classes: int = 1000
  width: int = 768
  depth: int = 24
  num_heads: int = 8
  mlp_ratio: float = 4.0
  dropout: float = 0.1
  token_group: int = 1

  @property
  def num_positions(self) -> int:
    """Image positions the transformer sees (and features it returns)."""
    return self.num_tokens // (self.token_group * self.token_group)

  def setup(self):
    self.token_emb = BertEmbeddings(self.codebook_size + 1, self.width,
                                    self.num_positions, self.dropout,
                                    self.token_group)
    self.context_embed = BertEmbeddings(self.num_classes + 1, self.width, 1)
    blocks = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
    self.in_blocks = [Block(**blocks, name=f'in_blocks_{i}')
                      for i in range(self.depth // 2)]
    self.mid_block = Block(**blocks)
    self.out_blocks = [Block(**blocks, skip=True, name=f'out_blocks_{i}')
                       for i in range(self.depth // 2)]
    self.norm = nn.LayerNorm(epsilon=_BLOCK_LN_EPS)
    self.mlm_layer = MlmLayer(self.codebook_size + 1, self.token_group)

  def __call__(self, ids: jax.Array, labels: jax.Array, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    """Logits and features of one forward pass.

    Args:
      ids: int32 [B, N] token ids, `codebook_size` where masked.
      labels: int32 [B] classes, `num_classes` for unconditional.
      train: enables the embedding dropout (needs a 'dropout' rng).

    Returns:
      logits: float32 [B, N, codebook_size] (class token and [MASK] dropped).
      features: float32 [B, N / g^2, width], the final-norm hidden states
        of the image positions (the policy's observation).
    """
    x = self.token_emb(ids, train)
    context = self.context_embed(labels[:, None])
    x = jnp.concatenate([context, x], axis=1)
    skips = []
    for blk in self.in_blocks:
      x = blk(x)
      skips.append(x)
    x = self.mid_block(x)
    for blk in self.out_blocks:
      x = blk(x, skips.pop())
    x = self.norm(x)
    # The reference detaches the tied embeddings in the head.
    embeddings = jax.lax.stop_gradient(self.token_emb.word_embeddings.embedding)
    logits = self.mlm_layer(x[:, 1:], embeddings)
    return (logits[..., :self.codebook_size].astype(jnp.float32),
            x[:, 1:].astype(jnp.float32))
