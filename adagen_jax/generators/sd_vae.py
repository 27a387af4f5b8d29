"""The Stable Diffusion kl-f8 VAE decoder (flax.linen), as DiT / SiT use it.

LDM/CompVis `AutoencoderKL` (paradigms.md §2.6): `post_quant_conv` (1x1)
then a Decoder of width ch * ch_mult[-1] -> ch, `num_res_blocks + 1`
ResnetBlocks per level, nearest-2x upsampling + 3x3 conv between levels, a
single-head attention block in the middle and no other attention (SD's
`attn_resolutions: []`); GroupNorm(32, eps 1e-6), swish. AdaGen decodes with
U-ViT's `autoencoder_kl_ema.pth` (sd-vae-ft-EMA in CompVis keys), so the
submodule names mirror those keys (dots -> '/', list index joined by '_'):

  post_quant_conv                     post_quant_conv
  decoder.conv_in                     decoder/conv_in
  decoder.mid.block_{1,2}             decoder/mid_block_{1,2}
  decoder.mid.attn_1.{norm,q,k,v,proj_out}
                                      decoder/mid_attn_1/{norm,q,k,v,proj_out}
                                      (1x1 convs, as the torch file)
  decoder.up.{i}.block.{j}            decoder/up_{i}_block_{j}
  decoder.up.{i}.upsample.conv        decoder/up_{i}_upsample_conv
  decoder.norm_out, decoder.conv_out  decoder/norm_out, decoder/conv_out
  ResnetBlock: norm1, conv1, norm2, conv2[, nin_shortcut]  (same names)

`up.{i}` is resolution level i (0 = full resolution); the decoder runs
i = L-1 .. 0, as CompVis builds the list by inserting at the front.
NHWC throughout: latents float [B, h, w, 4] -> images [B, 8h, 8w, 3].
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adagen_jax import ops

_GN_EPS = 1e-6
SCALE_FACTOR = 0.18215  # SD latents = scale * VAE posterior sample


def _group_norm(groups: int, name: str, dtype) -> nn.GroupNorm:
  # Two-pass variance, as torch.
  return nn.GroupNorm(num_groups=groups, epsilon=_GN_EPS,
                      use_fast_variance=False, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, plus the input.

  When the width changes the input goes through a 1x1 `nin_shortcut`.
  """
  features: int
  norm_groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, C_in] -> [B, H, W, features]."""
    conv = lambda k, name: nn.Conv(self.features, (k, k), dtype=self.dtype,
                                   name=name)
    h = nn.swish(_group_norm(self.norm_groups, 'norm1', self.dtype)(x))
    h = conv(3, 'conv1')(h)
    h = nn.swish(_group_norm(self.norm_groups, 'norm2', self.dtype)(h))
    h = conv(3, 'conv2')(h)
    if x.shape[-1] != self.features:
      x = conv(1, 'nin_shortcut')(x)
    return x + h


class AttnBlock(nn.Module):
  """Single-head self-attention over all positions, 1x1-conv projections."""
  norm_groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = _group_norm(self.norm_groups, 'norm', self.dtype)(x)
    proj = lambda name, v: nn.Conv(c, (1, 1), dtype=self.dtype,
                                   name=name)(v).reshape(b, h * w, 1, c)
    # [B, HW, 1, C]: one head of width C, scale C^-1/2.
    out = ops.self_attention(proj('q', y), proj('k', y), proj('v', y))
    out = nn.Conv(c, (1, 1), dtype=self.dtype,
                  name='proj_out')(out.reshape(b, h, w, c))
    return x + out


def _upsample_nearest_2x(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Decoder(nn.Module):
  """Latents (after post_quant_conv) -> image in about [-1, 1].

  Attributes:
    ch: base width; level i has ch * ch_mult[i] channels.
    ch_mult: width multipliers per level (SD: 1, 2, 4, 4).
    num_res_blocks: SD's 2 (each decoder level runs num_res_blocks + 1).
    out_channels: image channels.
    norm_groups: GroupNorm groups (32 in SD).
    dtype: computation dtype.
  """
  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  out_channels: int = 3
  norm_groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """z: float [B, h, w, z_channels] -> float32 [B, H, W, out_channels]."""
    g, dt = self.norm_groups, self.dtype
    width = self.ch * self.ch_mult[-1]
    x = nn.Conv(width, (3, 3), dtype=dt, name='conv_in')(z)
    x = ResnetBlock(width, g, dt, name='mid_block_1')(x)
    x = AttnBlock(g, dt, name='mid_attn_1')(x)
    x = ResnetBlock(width, g, dt, name='mid_block_2')(x)
    for i in reversed(range(len(self.ch_mult))):
      width = self.ch * self.ch_mult[i]
      for j in range(self.num_res_blocks + 1):
        x = ResnetBlock(width, g, dt, name=f'up_{i}_block_{j}')(x)
      if i > 0:
        x = _upsample_nearest_2x(x)
        x = nn.Conv(width, (3, 3), dtype=dt, name=f'up_{i}_upsample_conv')(x)
    x = nn.swish(_group_norm(g, 'norm_out', dt)(x))
    x = nn.Conv(self.out_channels, (3, 3), dtype=dt, name='conv_out')(x)
    return x.astype(jnp.float32)


class VAEDecoder(nn.Module):
  """SD latents (scaled by `scale_factor`) -> decoder output in ~[-1, 1].

  Attributes:
    z_channels: latent channels (4).
    scale_factor: the latents are divided by it first (SD's 0.18215).
    ch, ch_mult, num_res_blocks, out_channels, norm_groups, dtype: as
      `Decoder`.
  """
  z_channels: int = 4
  scale_factor: float = SCALE_FACTOR
  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  out_channels: int = 3
  norm_groups: int = 32
  dtype: Any = jnp.float32

  @property
  def downsample(self) -> int:
    """Image side / latent side (8 for SD)."""
    return 2 ** (len(self.ch_mult) - 1)

  @nn.compact
  def __call__(self, latents: jax.Array) -> jax.Array:
    """latents: float [B, h, w, z] -> float32 [B, H, W, out_channels]."""
    z = latents / self.scale_factor
    z = nn.Conv(self.z_channels, (1, 1), dtype=self.dtype,
                name='post_quant_conv')(z)
    return Decoder(self.ch, tuple(self.ch_mult), self.num_res_blocks,
                   self.out_channels, self.norm_groups, self.dtype,
                   name='decoder')(z)


class PixelDecoder(nn.Module):
  """The 'decoder' of a pixel-space model: its latents are the images.

  For the small Fashion-MNIST DiT / SiT (`config.generator.decoder =
  'pixels'`), trained on images scaled to [-1, 1]; no parameters.
  """
  out_channels: int = 1
  dtype: Any = jnp.float32
  downsample = 1  # image side / latent side

  def __call__(self, latents: jax.Array) -> jax.Array:
    return latents.astype(jnp.float32)


def to_images(x: jax.Array) -> jax.Array:
  """Decoder output -> float32 images in [0, 1]: clip(0.5 (x + 1))."""
  return jnp.clip(0.5 * (x.astype(jnp.float32) + 1.0), 0.0, 1.0)
