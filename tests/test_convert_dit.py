"""DiT / SiT and SD-VAE converters: parity with compact PyTorch forwards
(written here, with the published key names) on synthetic weights, error
paths, and the full-size layouts by shapes only."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from adagen_jax import errors
from adagen_jax import generators
from adagen_jax.generators import dit_nets
from adagen_jax.generators import sd_vae
from adagen_jax.generators.convert import common
from adagen_jax.generators.convert import dit as convert

# --------------------------------------------------------- PyTorch DiT ----


def mae_pos_embed(dim, grid):
  """DiT's get_2d_sincos_pos_embed, written out as the reference does it."""
  grid_h = np.arange(grid, dtype=np.float32)
  grid_w = np.arange(grid, dtype=np.float32)
  mesh = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid,
                                                               grid)

  def one_d(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.einsum('m,d->md', pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([one_d(dim // 2, mesh[0]), one_d(dim // 2, mesh[1])],
                        axis=1)


def modulate(x, shift, scale):
  return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TAttention(nn.Module):

  def __init__(self, d, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(d, 3 * d)
    self.proj = nn.Linear(d, d)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
    x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    return self.proj(x)


class TMlp(nn.Module):

  def __init__(self, d, hidden):
    super().__init__()
    self.fc1 = nn.Linear(d, hidden)
    self.fc2 = nn.Linear(hidden, d)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x), approximate='tanh'))


class TBlock(nn.Module):

  def __init__(self, d, heads, ratio):
    super().__init__()
    self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
    self.attn = TAttention(d, heads)
    self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
    self.mlp = TMlp(d, int(d * ratio))
    self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

  def forward(self, x, c):
    sm, cm, gm, sf, cf, gf = self.adaLN_modulation(c).chunk(6, dim=1)
    x = x + gm.unsqueeze(1) * self.attn(modulate(self.norm1(x), sm, cm))
    return x + gf.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sf, cf))


class TFinal(nn.Module):

  def __init__(self, d, out):
    super().__init__()
    self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
    self.linear = nn.Linear(d, out)
    self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

  def forward(self, x, c):
    shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
    return self.linear(modulate(self.norm_final(x), shift, scale))


class TPatchEmbed(nn.Module):

  def __init__(self, c, d, p):
    super().__init__()
    self.proj = nn.Conv2d(c, d, p, stride=p)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class TTimestep(nn.Module):

  def __init__(self, d, freq=256):
    super().__init__()
    self.freq = freq
    self.mlp = nn.Sequential(nn.Linear(freq, d), nn.SiLU(), nn.Linear(d, d))

  def forward(self, t):
    half = self.freq // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half,
                                                      dtype=torch.float32)
                      / half)
    args = t[:, None].float() * freqs[None]
    return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class TLabel(nn.Module):

  def __init__(self, n, d):
    super().__init__()
    self.embedding_table = nn.Embedding(n + 1, d)

  def forward(self, y):
    return self.embedding_table(y)


class TDiT(nn.Module):

  def __init__(self, size, c, p, d, depth, heads, ratio, classes,
               learn_sigma):
    super().__init__()
    self.c, self.p = c, p
    self.out = 2 * c if learn_sigma else c
    self.x_embedder = TPatchEmbed(c, d, p)
    self.t_embedder = TTimestep(d)
    self.y_embedder = TLabel(classes, d)
    n = (size // p) ** 2
    self.pos_embed = nn.Parameter(torch.zeros(1, n, d), requires_grad=False)
    self.pos_embed.data.copy_(torch.from_numpy(
        mae_pos_embed(d, size // p)).float().unsqueeze(0))
    self.blocks = nn.ModuleList(TBlock(d, heads, ratio)
                                for _ in range(depth))
    self.final_layer = TFinal(d, p * p * self.out)

  def forward(self, x, t, y):
    x = self.x_embedder(x) + self.pos_embed
    c = self.t_embedder(t) + self.y_embedder(y)
    for block in self.blocks:
      x = block(x, c)
    feat = x
    x = self.final_layer(x, c)
    b, h, p = x.shape[0], int(x.shape[1] ** 0.5), self.p
    x = x.reshape(b, h, h, p, p, self.out)
    x = torch.einsum('nhwpqc->nchpwq', x).reshape(b, self.out, h * p, h * p)
    return x, feat


TINY_DIT = dict(input_size=8, in_channels=4, patch_size=2, hidden_size=64,
                depth=2, num_heads=4, mlp_ratio=4.0, num_classes=10,
                learn_sigma=True)


def _randomize(module, seed):
  """Every parameter random (adaLN-Zero's zeros would hide mistakes)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name == 'pos_embed':
        continue
      scale = 0.5 if p.ndim == 1 else 1.0 / math.sqrt(p[0].numel())
      p.copy_(torch.randn(p.shape, generator=g) * scale)
      if name.endswith('norm.weight') or '.norm1.weight' in name or (
          '.norm2.weight' in name) or name.endswith('norm_out.weight'):
        p.add_(1.0)
  return module


def _state(module):
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _torch_dit(kw=TINY_DIT, seed=0):
  return _randomize(TDiT(kw['input_size'], kw['in_channels'],
                         kw['patch_size'], kw['hidden_size'], kw['depth'],
                         kw['num_heads'], kw['mlp_ratio'],
                         kw['num_classes'], kw['learn_sigma']), seed).eval()


def _dit_inputs(kw=TINY_DIT, b=3):
  rs = np.random.RandomState(1)
  s, c = kw['input_size'], kw['in_channels']
  x = rs.randn(b, s, s, c).astype(np.float32)
  t = np.asarray([0.0, 437.5, 999.0][:b], np.float32)
  y = np.asarray([0, 7, kw['num_classes']][:b], np.int64)  # incl. null
  return x, t, y


@pytest.mark.parametrize('learn_sigma', [True, False])
def test_dit_parity(learn_sigma):
  kw = dict(TINY_DIT, learn_sigma=learn_sigma)
  tnet = _torch_dit(kw)
  net = dit_nets.DiT(**kw)
  variables = convert.convert_dit(_state(tnet), net)
  common.check_module_layout(variables, net.init,
                             *convert.dit_init_args(net))
  x, t, y = _dit_inputs(kw)
  with torch.no_grad():
    t_out, t_feat = tnet(torch.from_numpy(x).permute(0, 3, 1, 2),
                         torch.from_numpy(t), torch.from_numpy(y))
  with jax.default_matmul_precision('highest'):
    out, feat = net.apply(variables, jnp.asarray(x), jnp.asarray(t),
                          jnp.asarray(y, jnp.int32))
  assert out.shape == (3, 8, 8, 8 if learn_sigma else 4)
  assert _rel_err(out, t_out.permute(0, 2, 3, 1).numpy()) < 1e-4
  assert _rel_err(feat, t_feat.numpy()) < 1e-4


def test_sincos_pos_embed_matches_reference():
  np.testing.assert_allclose(dit_nets.sincos_pos_embed(64, 4),
                             mae_pos_embed(64, 4), atol=1e-6)


def test_dit_converter_errors():
  net = dit_nets.DiT(**TINY_DIT)
  state = _state(_torch_dit())
  for broken, match in [
      ({k: v for k, v in state.items() if k != 'blocks.1.mlp.fc2.bias'},
       '1 missing .*blocks.1.mlp.fc2.bias'),
      (dict(state, **{'blocks.2.attn.qkv.weight': np.zeros((192, 64))}),
       '1 unexpected'),
      (dict(state, **{'final_layer.linear.weight': np.zeros((16, 64))}),
       'wrong shape .*final_layer.linear.weight'),
      (dict(state, pos_embed=state['pos_embed'] + 0.1), 'pos_embed')]:
    with pytest.raises(errors.UserError, match=match):
      convert.convert_dit(broken, net)


def test_dit_config_from_shapes():
  state = _state(_torch_dit())
  assert convert.dit_config(state, num_heads=4) == TINY_DIT
  with pytest.raises(errors.UserError, match='--num_heads'):
    convert.dit_config(state)


# --------------------------------------------------------- PyTorch VAE ----


def normalize(c):
  return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class TResnet(nn.Module):

  def __init__(self, c_in, c_out):
    super().__init__()
    self.norm1 = normalize(c_in)
    self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
    self.norm2 = normalize(c_out)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
    if c_in != c_out:
      self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

  def forward(self, x):
    h = self.conv1(F.silu(self.norm1(x)))
    h = self.conv2(F.silu(self.norm2(h)))
    if hasattr(self, 'nin_shortcut'):
      x = self.nin_shortcut(x)
    return x + h


class TAttn(nn.Module):

  def __init__(self, c):
    super().__init__()
    self.norm = normalize(c)
    self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1)
                                             for _ in range(4))

  def forward(self, x):
    h = self.norm(x)
    q, k, v = self.q(h), self.k(h), self.v(h)
    b, c, hh, ww = q.shape
    q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
    w = torch.bmm(q, k.reshape(b, c, hh * ww)) * c ** -0.5
    w = F.softmax(w, dim=2)
    h = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1))
    return x + self.proj_out(h.reshape(b, c, hh, ww))


class TUpsample(nn.Module):

  def __init__(self, c):
    super().__init__()
    self.conv = nn.Conv2d(c, c, 3, padding=1)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class TDecoder(nn.Module):

  def __init__(self, ch, ch_mult, num_res_blocks, z, out):
    super().__init__()
    c = ch * ch_mult[-1]
    self.conv_in = nn.Conv2d(z, c, 3, padding=1)
    self.mid = nn.Module()
    self.mid.block_1 = TResnet(c, c)
    self.mid.attn_1 = TAttn(c)
    self.mid.block_2 = TResnet(c, c)
    self.up = nn.ModuleList()
    for i in reversed(range(len(ch_mult))):
      up = nn.Module()
      up.block = nn.ModuleList()
      for _ in range(num_res_blocks + 1):
        up.block.append(TResnet(c, ch * ch_mult[i]))
        c = ch * ch_mult[i]
      up.attn = nn.ModuleList()
      if i != 0:
        up.upsample = TUpsample(c)
      self.up.insert(0, up)
    self.norm_out = normalize(c)
    self.conv_out = nn.Conv2d(c, out, 3, padding=1)

  def forward(self, z):
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
    for i in reversed(range(len(self.up))):
      for block in self.up[i].block:
        h = block(h)
      if i != 0:
        h = self.up[i].upsample(h)
    return self.conv_out(F.silu(self.norm_out(h)))


class TAutoencoderKL(nn.Module):
  """The decoding half of CompVis AutoencoderKL, plus stand-ins for the
  encoder-side keys the converter drops."""

  def __init__(self, ch, ch_mult, num_res_blocks, z=4, out=3):
    super().__init__()
    self.encoder = nn.Module()
    self.encoder.conv_in = nn.Conv2d(out, ch, 3, padding=1)
    self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
    self.post_quant_conv = nn.Conv2d(z, z, 1)
    self.decoder = TDecoder(ch, ch_mult, num_res_blocks, z, out)

  def decode(self, latents):
    return self.decoder(self.post_quant_conv(latents / 0.18215))


TINY_VAE = dict(z_channels=4, scale_factor=0.18215, ch=32, ch_mult=(1, 2),
                num_res_blocks=1, out_channels=3, norm_groups=32)


def test_vae_parity():
  tvae = _randomize(TAutoencoderKL(32, (1, 2), 1), 2).eval()
  state = _state(tvae)
  assert 'encoder.conv_in.weight' in state and 'quant_conv.bias' in state
  assert convert.vae_config(state) == TINY_VAE
  vae = sd_vae.VAEDecoder(**TINY_VAE)
  variables = convert.convert_vae(state, vae)
  common.check_module_layout(variables, vae.init,
                             *convert.vae_init_args(vae))
  z = np.random.RandomState(3).randn(2, 4, 4, 4).astype(np.float32) * 0.3
  with torch.no_grad():
    want = tvae.decode(torch.from_numpy(z).permute(0, 3, 1, 2))
  with jax.default_matmul_precision('highest'):
    got = vae.apply(variables, jnp.asarray(z))
  assert got.shape == (2, 8, 8, 3)
  assert _rel_err(got, want.permute(0, 2, 3, 1).numpy()) < 1e-4
  images = sd_vae.to_images(got)
  np.testing.assert_allclose(
      images, np.clip(0.5 * (np.asarray(got) + 1), 0, 1), atol=1e-7)


def test_vae_converter_errors():
  state = _state(_randomize(TAutoencoderKL(32, (1, 2), 1), 2))
  vae = sd_vae.VAEDecoder(**TINY_VAE)
  del state['decoder.mid.attn_1.q.bias']
  with pytest.raises(errors.UserError, match='missing .*attn_1.q.bias'):
    convert.convert_vae(state, vae)


# ------------------------------------------------ files and full sizes ----


def test_convert_files_then_build(tmp_path):
  """torch.save -> convert_files -> build a generator from the files."""
  tnet, tvae = _torch_dit(), _randomize(TAutoencoderKL(32, (1, 2), 1), 2)
  torch.save({'model': tnet.state_dict(), 'ema': tnet.state_dict()},
             tmp_path / 'dit.pt')
  torch.save(tvae.state_dict(), tmp_path / 'vae.pth')
  out = tmp_path / 'weights'
  written = convert.convert_files(str(out), dit=str(tmp_path / 'dit.pt'),
                                  vae=str(tmp_path / 'vae.pth'), num_heads=4)
  assert [p.rsplit('/', 1)[1] for p in written] == ['dit.msgpack',
                                                    'sd_vae.msgpack']
  gen, params = generators.build(ml_collections.ConfigDict(dict(
      name='dit', steps=4, smoothing=0.4, cfg_init=1.0, model=TINY_DIT,
      vae=TINY_VAE, weights=str(out / 'dit.msgpack'),
      vae_weights=str(out / 'sd_vae.msgpack'))))
  x, t, y = _dit_inputs()
  with torch.no_grad():
    t_out, _ = tnet(torch.from_numpy(x).permute(0, 3, 1, 2),
                    torch.from_numpy(t), torch.from_numpy(y))
  with jax.default_matmul_precision('highest'):
    out_, _ = gen.net.apply(params['dit'], jnp.asarray(x), jnp.asarray(t),
                            jnp.asarray(y, jnp.int32))
  assert _rel_err(out_, t_out.permute(0, 2, 3, 1).numpy()) < 1e-4
  with pytest.raises(errors.UserError, match='not found'):
    convert.convert_files(str(out), sit=str(tmp_path / 'nope.pt'))


XL2 = dict(input_size=32, in_channels=4, patch_size=2, hidden_size=1152,
           depth=28, num_heads=16, mlp_ratio=4.0, num_classes=1000,
           learn_sigma=True)
SD_VAE = dict(z_channels=4, scale_factor=0.18215, ch=128,
              ch_mult=(1, 2, 4, 4), num_res_blocks=2, out_channels=3,
              norm_groups=32)


def test_xl2_layout_by_shapes():
  """DiT-XL/2's manifest converts onto the Flax module's exact layout."""
  net = dit_nets.DiT(**XL2)
  manifest = convert.dit_manifest(net)
  for key, shape in [('pos_embed', (1, 256, 1152)),
                     ('x_embedder.proj.weight', (1152, 4, 2, 2)),
                     ('t_embedder.mlp.0.weight', (1152, 256)),
                     ('y_embedder.embedding_table.weight', (1001, 1152)),
                     ('blocks.27.attn.qkv.weight', (3456, 1152)),
                     ('blocks.27.mlp.fc1.weight', (4608, 1152)),
                     ('blocks.27.adaLN_modulation.1.weight', (6912, 1152)),
                     ('final_layer.linear.weight', (32, 1152)),
                     ('final_layer.adaLN_modulation.1.weight', (2304,
                                                                1152))]:
    assert manifest[key] == shape, key
  assert len(manifest) == 1 + 7 + 28 * 10 + 4
  state = common.placeholder_state(manifest)
  state['pos_embed'] = dit_nets.sincos_pos_embed(1152, 16)[None]
  variables = convert.convert_dit(state, net)
  common.check_module_layout(variables, net.init,
                             *convert.dit_init_args(net))
  num = sum(int(np.prod(s)) for s in manifest.values())
  # DiT's published count (pos_embed included): 675,129,632.
  assert num == 675_129_632


def test_sd_vae_layout_by_shapes():
  vae = sd_vae.VAEDecoder(**SD_VAE)
  manifest = convert.vae_manifest(vae)
  assert manifest['decoder.conv_in.weight'] == (512, 4, 3, 3)
  assert manifest['decoder.up.0.block.0.nin_shortcut.weight'] == (128, 256,
                                                                  1, 1)
  assert manifest['decoder.up.3.upsample.conv.weight'] == (512, 512, 3, 3)
  assert 'decoder.up.0.upsample.conv.weight' not in manifest
  assert manifest['decoder.mid.attn_1.q.weight'] == (512, 512, 1, 1)
  variables = convert.convert_vae(common.placeholder_state(manifest), vae)
  common.check_module_layout(variables, vae.init,
                             *convert.vae_init_args(vae))
  # post_quant_conv 2 + conv_in 2 + mid (2 resnets 16, attention 10) + up
  # levels 3, 2 (3 resnets 24 + upsample 2 each), 1 (24 + 2 shortcut + 2),
  # 0 (24 + 2 shortcut) + norm_out 2 + conv_out 2.
  assert len(manifest) == 140
