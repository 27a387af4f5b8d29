"""VAR's multi-scale residual VQVAE (FoundationVision/VAR `vqvae.py`).

paradigms.md §3.2. An image is encoded to a latent map f [h, w, Cvae]
(h = w = patch_nums[-1]) and quantised into K token maps of growing side
pn_k (the scale schedule `patch_nums`): at scale k the residual f - f_hat is
area-downsampled to pn_k x pn_k, its nearest codes are looked up, upsampled
back bicubically and refined by a 3x3 conv "phi":

  phi_k(h) = (1 - r) h + r conv3x3_k(h),  r = quant_resi = 0.5
  f_hat += phi_k(bicubic_up(embed(ids_k)))

The last scale is already full size, so it is not resized. Four phi convs are
shared by the ten scales as the reference's `PhiPartiallyShared` picks them
(`phi_indices`). Decoding is `decoder(post_quant_conv(f_hat))`.

The resizes must be PyTorch's, not `jax.image.resize`'s (paradigms.md §3.2):
`F.interpolate(mode='bicubic', align_corners=False)` uses the Keys kernel
with a = -0.75 and replicates edge pixels; `mode='area'` is adaptive average
pooling over bins [floor(i n / m), ceil((i + 1) n / m)). Both are built here
as [out, in] NumPy matrices applied separably.

Flax names (the converter maps the published keys onto them):
  encoder/{conv_in, down_{i}_block_{j}, down_{i}_attn_{j},
           down_{i}_downsample, mid_block_1, mid_attn_1, mid_block_2,
           norm_out, conv_out}
  decoder/{conv_in, mid_block_1, mid_attn_1, mid_block_2,
           up_{i}_block_{j}, up_{i}_attn_{j}, up_{i}_upsample, norm_out,
           conv_out}
  quant_conv, post_quant_conv, quantize/embedding, quantize/phi_{k}
Level i of both is the taming numbering: i = 0 is the full resolution.
Images are NHWC float32 in [0, 1] at this module's boundary (the reference
works in [-1, 1]).
"""

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

_GN_EPS = 1e-6
_CUBIC_A = -0.75  # PyTorch's bicubic kernel parameter.
_HIGHEST = jax.lax.Precision.HIGHEST


# --- PyTorch-exact resizing as [out, in] matrices. ---


def _cubic_weights(t: float) -> tuple[float, float, float, float]:
  """Weights of pixels i0 - 1 .. i0 + 2 at fractional offset t (a=-0.75)."""
  a = _CUBIC_A

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  return far(t + 1), near(t), near(1 - t), far(2 - t)


@functools.cache
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """float32 [n_out, n_in]: 1-D `F.interpolate(bicubic, align_corners=False)`.

  Source coordinates are (o + 0.5) n_in / n_out - 0.5 without clamping (as
  PyTorch's cubic path); taps outside [0, n_in) read the edge pixel.
  """
  m = np.zeros((n_out, n_in), np.float64)
  for o in range(n_out):
    src = (o + 0.5) * n_in / n_out - 0.5
    i0 = math.floor(src)
    for tap, w in enumerate(_cubic_weights(src - i0)):
      m[o, min(max(i0 - 1 + tap, 0), n_in - 1)] += w
  return m.astype(np.float32)


@functools.cache
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """float32 [n_out, n_in]: 1-D `F.interpolate(mode='area')`.

  That is adaptive average pooling; bins overlap when n_out does not divide
  n_in (e.g. 16 -> 13, 10, 6, 5, 3).
  """
  m = np.zeros((n_out, n_in), np.float64)
  for o in range(n_out):
    start = (o * n_in) // n_out
    end = -((-(o + 1) * n_in) // n_out)  # ceil
    m[o, start:end] = 1.0 / (end - start)
  return m.astype(np.float32)


def _resize(x: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
  x = jnp.einsum('oh,bhwc->bowc', rows, x, precision=_HIGHEST)
  return jnp.einsum('pw,bowc->bopc', cols, x, precision=_HIGHEST)


def resize_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """float [B, H, W, C] -> [B, size[0], size[1], C], PyTorch bicubic."""
  return _resize(x, bicubic_matrix(x.shape[1], size[0]),
                 bicubic_matrix(x.shape[2], size[1]))


def resize_area(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """float [B, H, W, C] -> [B, size[0], size[1], C], PyTorch 'area'."""
  return _resize(x, area_matrix(x.shape[1], size[0]),
                 area_matrix(x.shape[2], size[1]))


def phi_indices(num_scales: int, num_phi: int) -> tuple[int, ...]:
  """Which phi conv each scale uses (`PhiPartiallyShared`).

  Scale k sits at k / (num_scales - 1) on [0, 1] and takes the nearest of
  `num_phi` ticks. This is the reference's float64 NumPy expression: with
  ten scales and four phis, scales 2 and 7 are exact ties that its rounding
  breaks to [0, 0, 1, 1, 1, 2, 2, 3, 3, 3] (tested).
  """
  k = num_phi
  if k == 4:
    ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k)
  else:
    ticks = np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)
  at = [si / (num_scales - 1) if num_scales > 1 else 0.0
        for si in range(num_scales)]
  return tuple(int(np.argmin(np.abs(ticks - a))) for a in at)


# --- Networks. ---


def init_inputs(vae: 'VQVAE') -> jax.Array:
  """A dummy image batch for `vae.init` / `jax.eval_shape`."""
  side = vae.image_side
  return jnp.zeros((1, side, side, vae.image_channels), jnp.float32)


def _group_norm(groups: int, name: str) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, epsilon=_GN_EPS,
                      use_fast_variance=False, name=name)


class ResnetBlock(nn.Module):
  """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus (1x1 conv) x."""
  features: int
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float32 [B, H, W, C_in] -> float32 [B, H, W, features]."""
    h = nn.silu(_group_norm(self.norm_groups, 'norm1')(x))
    h = nn.Conv(self.features, (3, 3), padding=1, name='conv1')(h)
    h = nn.silu(_group_norm(self.norm_groups, 'norm2')(h))
    h = nn.Conv(self.features, (3, 3), padding=1, name='conv2')(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), name='nin_shortcut')(x)
    return x + h


class AttnBlock(nn.Module):
  """Single-head spatial self-attention with a fused 1x1-conv qkv."""
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float32 [B, H, W, C] -> float32 [B, H, W, C]."""
    b, hh, ww, c = x.shape
    qkv = nn.Conv(3 * c, (1, 1), name='qkv')(
        _group_norm(self.norm_groups, 'norm')(x))
    # PyTorch reshapes the 3C channels as (3, C).
    q, k, v = jnp.split(qkv.reshape(b, hh * ww, 3 * c), 3, axis=-1)
    w = jax.nn.softmax(jnp.einsum('bic,bjc->bij', q, k) * c ** -0.5, axis=-1)
    h = jnp.einsum('bij,bjc->bic', w, v).reshape(b, hh, ww, c)
    return x + nn.Conv(c, (1, 1), name='proj_out')(h)


class Encoder(nn.Module):
  """Image -> latents at 1 / 2^(len(ch_mult) - 1) resolution."""
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  z_channels: int
  using_sa: bool = True
  using_mid_sa: bool = True
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float32 [B, H, W, C] in [-1, 1] -> float32 [B, h, w, z]."""
    g = self.norm_groups
    last = len(self.ch_mult) - 1
    h = nn.Conv(self.ch, (3, 3), padding=1, name='conv_in')(x)
    for i, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        h = ResnetBlock(self.ch * mult, g, name=f'down_{i}_block_{j}')(h)
        if i == last and self.using_sa:
          h = AttnBlock(g, name=f'down_{i}_attn_{j}')(h)
      if i != last:
        # PyTorch pads (0, 1) on the right/bottom, then a valid s2 conv.
        h = nn.Conv(h.shape[-1], (3, 3), strides=2, padding=((0, 1), (0, 1)),
                    name=f'down_{i}_downsample')(h)
    h = ResnetBlock(h.shape[-1], g, name='mid_block_1')(h)
    if self.using_mid_sa:
      h = AttnBlock(g, name='mid_attn_1')(h)
    h = ResnetBlock(h.shape[-1], g, name='mid_block_2')(h)
    h = nn.silu(_group_norm(g, 'norm_out')(h))
    return nn.Conv(self.z_channels, (3, 3), padding=1, name='conv_out')(h)


class Decoder(nn.Module):
  """Latents -> image in about [-1, 1]; levels run coarsest first."""
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  out_channels: int
  using_sa: bool = True
  using_mid_sa: bool = True
  norm_groups: int = 32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """z: float32 [B, h, w, z] -> float32 [B, H, W, out_channels]."""
    g = self.norm_groups
    last = len(self.ch_mult) - 1
    h = nn.Conv(self.ch * self.ch_mult[-1], (3, 3), padding=1,
                name='conv_in')(z)
    h = ResnetBlock(h.shape[-1], g, name='mid_block_1')(h)
    if self.using_mid_sa:
      h = AttnBlock(g, name='mid_attn_1')(h)
    h = ResnetBlock(h.shape[-1], g, name='mid_block_2')(h)
    for i in reversed(range(len(self.ch_mult))):
      # The decoder has one more block per level than the encoder.
      for j in range(self.num_res_blocks + 1):
        h = ResnetBlock(self.ch * self.ch_mult[i], g,
                        name=f'up_{i}_block_{j}')(h)
        if i == last and self.using_sa:
          h = AttnBlock(g, name=f'up_{i}_attn_{j}')(h)
      if i != 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest 2x
        h = nn.Conv(h.shape[-1], (3, 3), padding=1,
                    name=f'up_{i}_upsample')(h)
    h = nn.silu(_group_norm(g, 'norm_out')(h))
    return nn.Conv(self.out_channels, (3, 3), padding=1, name='conv_out')(h)


class Quantizer(nn.Module):
  """The codebook and the phi refinement convs (`VectorQuantizer2`)."""
  vocab_size: int
  z_channels: int
  num_phi: int
  quant_resi: float

  def setup(self):
    bound = 1.0 / self.vocab_size  # VAR: uniform(-1/V, 1/V)

    def init(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -bound, bound)

    self.embedding = nn.Embed(self.vocab_size, self.z_channels,
                              embedding_init=init)
    self.phis = [nn.Conv(self.z_channels, (3, 3), padding=1, name=f'phi_{k}')
                 for k in range(self.num_phi)]

  def lookup(self, ids: jax.Array) -> jax.Array:
    """int32 [...] -> float32 [..., Cvae]."""
    return self.embedding(ids)

  def nearest(self, z: jax.Array) -> jax.Array:
    """float32 [..., Cvae] -> int32 [...] ids of the nearest codes (L2)."""
    e = self.embedding.embedding
    dist = (jnp.sum(z * z, -1, keepdims=True) - 2.0 * jnp.einsum(
        '...c,vc->...v', z, e, precision=_HIGHEST) + jnp.sum(e * e, -1))
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)

  def phi(self, h: jax.Array, k: int) -> jax.Array:
    """float32 [B, H, W, Cvae] -> phi_k(h)."""
    r = abs(self.quant_resi)
    return (1.0 - r) * h + r * self.phis[k](h)

  def __call__(self, ids: jax.Array) -> list[jax.Array]:
    """int32 [B, h, w] -> [phi_k(lookup(ids)) for every k] (for init)."""
    h = self.lookup(ids)
    return [self.phi(h, k) for k in range(self.num_phi)]


class VQVAE(nn.Module):
  """Multi-scale residual VQVAE; defaults are `vae_ch160v4096z32.pth`.

  Attributes:
    vocab_size: codebook size V.
    z_channels: Cvae, latent channels.
    ch: base width of encoder and decoder.
    ch_mult: per-level width multipliers (downsampling 2^(len - 1)).
    num_res_blocks: encoder ResnetBlocks per level (decoder: one more).
    using_sa: attention after every block of the coarsest level.
    using_mid_sa: attention in the middle.
    quant_resi: r of phi(h) = (1 - r) h + r conv(h).
    share_quant_resi: number of phi convs shared by the scales (>= 2; the
      reference's partially-shared variant).
    patch_nums: the scale schedule; the last is the latent side.
    image_channels: channels of images.
    norm_groups: GroupNorm groups.
  """
  vocab_size: int = 4096
  z_channels: int = 32
  ch: int = 160
  ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  using_sa: bool = True
  using_mid_sa: bool = True
  quant_resi: float = 0.5
  share_quant_resi: int = 4
  patch_nums: Sequence[int] = PATCH_NUMS
  image_channels: int = 3
  norm_groups: int = 32

  def setup(self):
    sizes = dict(ch=self.ch, ch_mult=tuple(self.ch_mult),
                 num_res_blocks=self.num_res_blocks, using_sa=self.using_sa,
                 using_mid_sa=self.using_mid_sa, norm_groups=self.norm_groups)
    self.encoder = Encoder(z_channels=self.z_channels, **sizes)
    self.decoder = Decoder(out_channels=self.image_channels, **sizes)
    self.quant_conv = nn.Conv(self.z_channels, (3, 3), padding=1)
    self.post_quant_conv = nn.Conv(self.z_channels, (3, 3), padding=1)
    self.quantize = Quantizer(self.vocab_size, self.z_channels,
                              self.share_quant_resi, self.quant_resi)

  @property
  def latent_side(self) -> int:
    return self.patch_nums[-1]

  @property
  def image_side(self) -> int:
    return self.latent_side * 2 ** (len(self.ch_mult) - 1)

  def _phi_of(self, si: int) -> int:
    return phi_indices(len(self.patch_nums), self.share_quant_resi)[si]

  def lookup(self, ids: jax.Array) -> jax.Array:
    """int32 [...] -> float32 [..., Cvae] code embeddings."""
    return self.quantize.lookup(ids)

  def add_scale(self, f_hat: jax.Array, h: jax.Array, si: int) -> jax.Array:
    """f_hat + phi(bicubic_up(h)): adds scale `si`'s codes to f_hat.

    Args:
      f_hat: float32 [B, s, s, Cvae], s = patch_nums[-1].
      h: float32 [B, pn, pn, Cvae] code embeddings of scale si.
      si: static scale index.
    """
    s = self.latent_side
    if h.shape[1] != s:
      h = resize_bicubic(h, (s, s))
    return f_hat + self.quantize.phi(h, self._phi_of(si))

  def encode(self, images: jax.Array) -> jax.Array:
    """float32 [B, H, W, C] in [0, 1] -> f float32 [B, s, s, Cvae]."""
    return self.quant_conv(self.encoder(2.0 * images - 1.0))

  def to_scales(self, f: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """Residual multi-scale quantisation (`f_to_idxBl_or_fhat`).

    Args:
      f: float32 [B, s, s, Cvae] encoder latents.

    Returns:
      K int32 [B, pn_k^2] row-major token maps, and their f_hat float32
      [B, s, s, Cvae].
    """
    b, s = f.shape[0], self.latent_side
    f_hat = jnp.zeros_like(f)
    ids_all = []
    for si, pn in enumerate(self.patch_nums):
      rest = f - f_hat
      z = rest if pn == s else resize_area(rest, (pn, pn))
      ids = self.quantize.nearest(z)
      f_hat = self.add_scale(f_hat, self.lookup(ids), si)
      ids_all.append(ids.reshape(b, pn * pn))
    return ids_all, f_hat

  def teacher_inputs(self, ids: Sequence[jax.Array]) -> jax.Array:
    """Teacher-forcing inputs of VAR (`idxBl_to_var_input`).

    Args:
      ids: K int32 [B, pn_k^2] token maps (`to_scales`).

    Returns:
      float32 [B, L - pn_0^2, Cvae]: for k >= 1, the area-downsampled
      f_hat of scales < k, at pn_k x pn_k, flattened row-major.
    """
    b, s = ids[0].shape[0], self.latent_side
    f_hat = jnp.zeros((b, s, s, self.z_channels), jnp.float32)
    out = []
    for si in range(len(self.patch_nums) - 1):
      pn, nxt = self.patch_nums[si], self.patch_nums[si + 1]
      h = self.lookup(ids[si]).reshape(b, pn, pn, -1)
      f_hat = self.add_scale(f_hat, h, si)
      out.append(resize_area(f_hat, (nxt, nxt)).reshape(b, nxt * nxt, -1))
    return jnp.concatenate(out, axis=1)

  def decode(self, f_hat: jax.Array) -> jax.Array:
    """float32 [B, s, s, Cvae] -> images float32 [B, H, W, C] in [0, 1]."""
    x = self.decoder(self.post_quant_conv(f_hat))
    return (jnp.clip(x, -1.0, 1.0) + 1.0) * 0.5

  def __call__(self, images: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """Reconstruction through the quantiser (also initialises everything).

    Args:
      images: float32 [B, H, W, C] in [0, 1].

    Returns:
      (reconstruction float32 [B, H, W, C] in [0, 1], K int32 [B, pn^2]).
    """
    ids, f_hat = self.to_scales(self.encode(images))
    if self.is_initializing():
      # Initialises the phis that no scale of a short schedule uses.
      self.quantize(ids[0].reshape(images.shape[0], 1, -1))
    return self.decode(f_hat), ids
