"""The StyleGAN-T / AdaNAT projected discriminator (adagen_reference.md §3).

A frozen backbone turns images into several token feature sets [B, L_i, C_i]
(DINO ViT-S/16: the patch embedding and blocks 2, 5, 8, 11). Each set gets its
own head:

  SpectralConv1d(k=1) -> BatchNormLocal -> LeakyReLU(0.2)
  residual: (f(x) + x) / sqrt(2),
            f = SpectralConv1d(k=9, circular) -> BNL -> LeakyReLU(0.2)
  cls: SpectralConv1d(k=1) -> cmap_dim channels
  projection: sum_ch(out * cmapper(c)) / sqrt(cmap_dim) -> [B, L_i] logits

with c a class embedding from a StyleGAN2 mapping network (one-hot -> FC ->
normalize_2nd_moment -> FC+lrelu layers at lr multiplier 0.01). Logits of all
heads are concatenated: [B, sum_i L_i] (5 x 196 = 980 for DINO).

Two behaviours are easy to miss and are kept on purpose:
- BatchNormLocal has no running statistics: in training and in evaluation a
  sample is normalised with the statistics of its group of batch-mates
  (B / ceil(B / virtual_bs) contiguous samples), so scores depend on the batch
  composition. Keep batch sizes multiples of 8 (and per-device batches too:
  then no group straddles two devices).
- The random crop fires with probability p_crop once per forward call, for
  the whole batch, also when computing rewards.

Spectral norm is Flax's `nn.SpectralNorm` (1 power iteration, eps 1e-12, u
and sigma in the 'batch_stats' collection). PyTorch views a Conv1d kernel
(O, I, k) as an (O, I k) matrix, Flax views (k, I, O) as (k I, O): the same
singular values. With update_stats=False Flax still does one power
iteration from the stored u (without saving it), where PyTorch's eval mode
reuses the stored u, v: a slightly better sigma estimate, not a different
normalisation.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adagen_jax.backbones import dino_vit


class BatchNormLocal(nn.Module):
  """Batch norm over virtual batches, with no running statistics.

  The batch is split into G = ceil(B / virtual_bs) groups of B / G contiguous
  samples (B must be divisible by G); each group is normalised with its own
  mean and biased variance over (samples, tokens), per channel.
  """
  virtual_bs: int = 8
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, virtual_bs: int | None = None
               ) -> jax.Array:
    """x: float [B, L, C] -> float32 [B, L, C]."""
    b = x.shape[0]
    groups = -(-b // (virtual_bs or self.virtual_bs))
    if b % groups:
      raise ValueError(f'BatchNormLocal: batch {b} does not split into '
                       f'{groups} equal groups; use a multiple of '
                       f'{virtual_bs or self.virtual_bs}.')
    xg = x.astype(jnp.float32).reshape((groups, b // groups) + x.shape[1:])
    mean = jnp.mean(xg, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=(1, 2), keepdims=True)
    xg = (xg - mean) * jax.lax.rsqrt(var + self.eps)
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    return xg.reshape(x.shape) * scale + bias


class SpectralConv1d(nn.Module):
  """A spectrally normalised 1-D conv over tokens; circular padding."""
  features: int
  kernel_size: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
    """x: float [B, L, C] -> float32 [B, L, features]."""
    # The reference pads k // 2 on each side, wrapping around the tokens.
    conv = nn.Conv(self.features, (self.kernel_size,), padding='CIRCULAR',
                   name='conv')
    return nn.SpectralNorm(conv, n_steps=1, epsilon=1e-12)(
        x, update_stats=update_stats)


class EqualizedDense(nn.Module):
  """StyleGAN2's FullyConnectedLayer: equalized learning rate.

  The stored weight is N(0, 1 / lr_mult^2) and is used times
  lr_mult / sqrt(fan_in); the bias is used times lr_mult. With lr_mult < 1
  the layer learns lr_mult times slower under Adam. 'lrelu' is leaky ReLU
  (0.2) times sqrt(2), StyleGAN's bias_act gain.
  """
  features: int
  lr_mult: float = 1.0
  activation: str = 'linear'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    w = self.param(
        'kernel',
        lambda k, s: jax.random.normal(k, s, jnp.float32) / self.lr_mult,
        (fan_in, self.features))
    b = self.param('bias', nn.initializers.zeros, (self.features,),
                   jnp.float32)
    y = x @ (w * (self.lr_mult / math.sqrt(fan_in))) + b * self.lr_mult
    if self.activation == 'lrelu':
      y = nn.leaky_relu(y, 0.2) * math.sqrt(2.0)
    return y


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True)
                           + eps)


class MappingNetwork(nn.Module):
  """StyleGAN2 mapping network with z_dim = 0: labels -> class embedding."""
  num_classes: int
  dim: int = 512
  num_layers: int = 8
  lr_mult: float = 0.01

  @nn.compact
  def __call__(self, labels: jax.Array) -> jax.Array:
    """labels: int32 [B] -> float32 [B, dim]."""
    c = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
    x = normalize_2nd_moment(EqualizedDense(self.dim, name='embed')(c))
    for i in range(self.num_layers):
      x = EqualizedDense(self.dim, self.lr_mult, 'lrelu', name=f'fc{i}')(x)
    return x


class DiscHead(nn.Module):
  """One projected head over a token feature set."""
  cmap_dim: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array | None, update_stats: bool,
               virtual_bs: int | None = None) -> jax.Array:
    """x: [B, L, C]; c: float32 [B, c_dim] or None -> float32 [B, L]."""
    ch = x.shape[-1]

    def block(h, k, name):
      h = SpectralConv1d(ch, k, name=f'{name}_conv')(h, update_stats)
      h = BatchNormLocal(name=f'{name}_norm')(h, virtual_bs)
      return nn.leaky_relu(h, 0.2)

    h = block(x.astype(jnp.float32), 1, 'block1')
    h = (block(h, 9, 'block2') + h) / math.sqrt(2.0)
    if c is None:
      return SpectralConv1d(1, 1, name='cls')(h, update_stats)[..., 0]
    out = SpectralConv1d(self.cmap_dim, 1, name='cls')(h, update_stats)
    cmap = EqualizedDense(self.cmap_dim, name='cmapper')(c)
    return jnp.sum(out * cmap[:, None, :], axis=-1) / math.sqrt(self.cmap_dim)


class ProjectedDiscriminator(nn.Module):
  """Heads over a list of frozen feature sets, class-projected.

  Attributes:
    num_classes: label count (0: unconditional heads, no mapping network).
    cmap_dim: projection width (64).
    mapping_dim, mapping_layers, mapping_lr_mult: the class mapping network
      (reference: 512, 8, 0.01).
    virtual_bs: BatchNormLocal's virtual batch (8).
  """
  num_classes: int
  cmap_dim: int = 64
  mapping_dim: int = 512
  mapping_layers: int = 8
  mapping_lr_mult: float = 0.01
  virtual_bs: int = 8

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], labels: jax.Array,
               update_stats: bool = False,
               virtual_bs: int | None = None) -> jax.Array:
    """features: list of [B, L_i, C_i] -> logits float32 [B, sum_i L_i].

    update_stats: advance the spectral-norm power iteration (training).
    virtual_bs: overrides the BatchNormLocal group size for this call.
    """
    c = None
    if self.num_classes:
      c = MappingNetwork(self.num_classes, self.mapping_dim,
                         self.mapping_layers, self.mapping_lr_mult,
                         name='mapping')(labels)
    vbs = virtual_bs or self.virtual_bs
    return jnp.concatenate(
        [DiscHead(self.cmap_dim, name=f'head_{i}')(f, c, update_stats, vbs)
         for i, f in enumerate(features)], axis=1)


def add_readout(tokens: jax.Array) -> jax.Array:
  """ViT [B, 1 + L, C] with cls first -> [B, L, C]: cls added to each token."""
  return tokens[:, 1:] + tokens[:, :1]


def random_crop(images: jax.Array, rng: jax.Array, p: float, crop_size: int,
                pad: int = 0) -> jax.Array:
  """The discriminator's input augmentation, -> [B, crop_size, crop_size, C].

  With probability p (one coin per call, for the whole batch, as the
  reference's per-forward np.random): zero-pad by `pad` pixels and take one
  random crop_size window (the same offset for every image). Otherwise the
  images are area-resized to crop_size (PyTorch's 'area', shared with the
  DINO input path; a no-op when it is their size), so
  both branches have one shape: the reference's RandomCrop(224) vs
  interpolate(224, 'area') on 256-pixel images, or a small translate-crop
  (crop_size = H, pad > 0) for 28-pixel ones.
  """
  b, h, w, c = images.shape
  span_y, span_x = h + 2 * pad - crop_size, w + 2 * pad - crop_size
  if min(span_y, span_x) < 0:
    raise ValueError(f'crop {crop_size} does not fit {h}x{w} images padded '
                     f'by {pad}.')
  size = (crop_size, crop_size)
  if p <= 0.0 or (span_y == span_x == 0 and crop_size == h == w):
    return dino_vit.area_resize(images, size)
  k_coin, k_y, k_x = jax.random.split(rng, 3)

  def crop(x):
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oy = jax.random.randint(k_y, (), 0, span_y + 1)
    ox = jax.random.randint(k_x, (), 0, span_x + 1)
    return jax.lax.dynamic_slice(x, (0, oy, ox, 0),
                                 (b, crop_size, crop_size, c))

  return jax.lax.cond(jax.random.bernoulli(k_coin, p), crop,
                      lambda x: dino_vit.area_resize(x, size), images)
