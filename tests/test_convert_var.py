"""VAR converters: parity with compact PyTorch forwards, published manifests."""

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax.generators import var_nets
from adagen_jax.generators import var_vqvae
from adagen_jax.generators.convert import common
from adagen_jax.generators.convert import var as convert_var

PNS = (1, 2, 3, 4)


def _rel_err(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


# --- A compact PyTorch VAR with the published key names (models/var.py,
# models/basic_var.py). ---


class TorchAttention(nn.Module):

  def __init__(self, c, heads):
    super().__init__()
    self.heads = heads
    self.mat_qkv = nn.Linear(c, 3 * c, bias=False)
    self.q_bias = nn.Parameter(torch.zeros(c))
    self.v_bias = nn.Parameter(torch.zeros(c))
    self.register_buffer('zero_k_bias', torch.zeros(c))
    self.scale_mul_1H11 = nn.Parameter(torch.zeros(1, heads, 1, 1))
    self.proj = nn.Linear(c, c)

  def forward(self, x, attn_bias):
    b, l, c = x.shape
    bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
    qkv = F.linear(x, self.mat_qkv.weight, bias).view(
        b, l, 3, self.heads, c // self.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)
    scale_mul = self.scale_mul_1H11.clamp_max(math.log(100)).exp()
    q = F.normalize(q, dim=-1).mul(scale_mul)
    k = F.normalize(k, dim=-1)
    attn = (q @ k.transpose(-2, -1) + attn_bias).softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, l, c))


class TorchFFN(nn.Module):

  def __init__(self, c, hidden):
    super().__init__()
    self.fc1 = nn.Linear(c, hidden)
    self.act = nn.GELU(approximate='tanh')
    self.fc2 = nn.Linear(hidden, c)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class TorchBlock(nn.Module):

  def __init__(self, c, heads, shared_aln):
    super().__init__()
    self.c, self.shared_aln = c, shared_aln
    self.attn = TorchAttention(c, heads)
    self.ffn = TorchFFN(c, 4 * c)
    self.ln_wo_grad = nn.LayerNorm(c, eps=1e-6, elementwise_affine=False)
    if shared_aln:
      self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, c) / c ** 0.5)
    else:
      self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))

  def forward(self, x, cond, attn_bias):
    if self.shared_aln:
      mods = (self.ada_gss + cond).unbind(2)
    else:
      mods = self.ada_lin(cond).view(-1, 1, 6, self.c).unbind(2)
    gamma1, gamma2, scale1, scale2, shift1, shift2 = mods
    x = x + self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1),
                      attn_bias).mul_(gamma1)
    return x + self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(
        shift2)).mul(gamma2)


class TorchSharedAdaLin(nn.Linear):

  def forward(self, cond):
    return super().forward(cond).view(-1, 1, 6, self.out_features // 6)


class TorchHeadNorm(nn.Module):

  def __init__(self, c):
    super().__init__()
    self.c = c
    self.ln_wo_grad = nn.LayerNorm(c, eps=1e-6, elementwise_affine=False)
    self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 2 * c))

  def forward(self, x, cond):
    scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.c).unbind(2)
    return self.ln_wo_grad(x).mul(scale.add(1)).add_(shift)


class TorchVAR(nn.Module):

  def __init__(self, net: var_nets.VAR):
    super().__init__()
    c, pns = net.width, net.patch_nums
    self.first_l, self.shared_aln = pns[0] ** 2, net.shared_aln
    seq = sum(p * p for p in pns)
    self.word_embed = nn.Linear(net.cvae, c)
    self.class_emb = nn.Embedding(net.num_classes + 1, c)
    self.pos_start = nn.Parameter(torch.randn(1, self.first_l, c) * 0.1)
    self.pos_1LC = nn.Parameter(torch.randn(1, seq, c) * 0.1)
    self.lvl_embed = nn.Embedding(len(pns), c)
    if net.shared_aln:
      self.shared_ada_lin = nn.Sequential(nn.SiLU(),
                                          TorchSharedAdaLin(c, 6 * c))
    self.blocks = nn.ModuleList([TorchBlock(c, net.num_heads, net.shared_aln)
                                 for _ in range(net.depth)])
    d = torch.cat([torch.full((p * p,), i) for i, p in enumerate(pns)]
                  ).view(1, seq, 1)
    dt = d.transpose(1, 2)
    self.register_buffer('lvl_1L', dt[:, 0].contiguous())
    self.register_buffer('attn_bias_for_masking', torch.where(
        d >= dt, 0., -torch.inf).reshape(1, 1, seq, seq))
    self.head_nm = TorchHeadNorm(c)
    self.head = nn.Linear(c, net.vocab_size)

  def forward(self, label, x_wo_first_l):
    b = label.shape[0]
    cond = self.class_emb(label)
    sos = cond.unsqueeze(1).expand(b, self.first_l, -1) + self.pos_start
    x = torch.cat((sos, self.word_embed(x_wo_first_l)), dim=1)
    x = x + self.lvl_embed(self.lvl_1L.expand(b, -1)) + self.pos_1LC
    block_cond = self.shared_ada_lin(cond) if self.shared_aln else cond
    for block in self.blocks:
      x = block(x, block_cond, self.attn_bias_for_masking)
    return self.head(self.head_nm(x, cond))


def _randomize(module: nn.Module, seed: int):
  """Non-trivial weights everywhere (biases, gates, scales included)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      fan_in = p.shape[1] if p.ndim >= 2 else 1
      fan_in *= int(np.prod(p.shape[2:])) if p.ndim > 2 else 1
      std = 0.3 if name.endswith('scale_mul_1H11') else fan_in ** -0.5
      p.copy_(torch.randn(p.shape, generator=gen) * std)
      if name.endswith(('norm1.weight', 'norm2.weight', 'norm.weight',
                        'norm_out.weight')):
        p.add_(1.0)


def _state(module: nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize('shared_aln', [False, True])
def test_var_parity(shared_aln):
  net = var_nets.VAR(num_classes=10, vocab_size=48, cvae=8, depth=2, width=64,
                     num_heads=2, patch_nums=PNS, shared_aln=shared_aln)
  torch_net = TorchVAR(net)
  _randomize(torch_net, 0)
  variables = convert_var.convert_var(_state(torch_net), net)
  common.check_module_layout(variables, net.init, jax.random.key(0),
                             *var_nets.init_inputs(net))
  rs = np.random.RandomState(0)
  labels = np.array([3, 10, 0], np.int64)  # 10 = the null class
  x_in = rs.randn(3, net.seq_len - 1, net.cvae).astype(np.float32)
  with torch.no_grad():
    want = torch_net(torch.from_numpy(labels), torch.from_numpy(x_in)).numpy()
  with jax.default_matmul_precision('highest'):
    got = net.apply(variables, jnp.asarray(labels, jnp.int32),
                    jnp.asarray(x_in))
  assert got.shape == (3, net.seq_len, 48)
  assert _rel_err(got, want) < 1e-4


# --- A compact PyTorch VQVAE with the published key names
# (models/vqvae.py, models/quant.py, models/basic_vae.py). ---


def _gn(c):
  return nn.GroupNorm(32, c, eps=1e-6)


class TorchResBlock(nn.Module):

  def __init__(self, c_in, c_out):
    super().__init__()
    self.norm1, self.conv1 = _gn(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
    self.norm2, self.conv2 = _gn(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
    self.nin_shortcut = (nn.Conv2d(c_in, c_out, 1) if c_in != c_out
                         else nn.Identity())

  def forward(self, x):
    h = self.conv1(F.silu(self.norm1(x)))
    return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class TorchAttnBlock(nn.Module):

  def __init__(self, c):
    super().__init__()
    self.c = c
    self.norm, self.qkv = _gn(c), nn.Conv2d(c, 3 * c, 1)
    self.proj_out = nn.Conv2d(c, c, 1)

  def forward(self, x):
    b, c, h, w = x.shape
    q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h, w).unbind(1)
    q = q.view(b, c, h * w).permute(0, 2, 1)
    weights = F.softmax(torch.bmm(q, k.view(b, c, h * w)) * c ** -0.5, dim=2)
    out = torch.bmm(v.view(b, c, h * w), weights.permute(0, 2, 1))
    return x + self.proj_out(out.view(b, c, h, w))


class TorchLevel(nn.Module):
  pass


class TorchEncoder(nn.Module):

  def __init__(self, vae: var_vqvae.VQVAE):
    super().__init__()
    ch, mult, last = vae.ch, vae.ch_mult, len(vae.ch_mult) - 1
    self.conv_in = nn.Conv2d(vae.image_channels, ch, 3, padding=1)
    self.down = nn.ModuleList()
    c = ch
    for i, m in enumerate(mult):
      level = TorchLevel()
      level.block, level.attn = nn.ModuleList(), nn.ModuleList()
      for _ in range(vae.num_res_blocks):
        level.block.append(TorchResBlock(c, ch * m))
        c = ch * m
        if i == last:
          level.attn.append(TorchAttnBlock(c))
      if i != last:
        level.downsample = TorchLevel()
        level.downsample.conv = nn.Conv2d(c, c, 3, stride=2)
      self.down.append(level)
    self.mid = TorchLevel()
    self.mid.block_1, self.mid.attn_1 = TorchResBlock(c, c), TorchAttnBlock(c)
    self.mid.block_2 = TorchResBlock(c, c)
    self.norm_out = _gn(c)
    self.conv_out = nn.Conv2d(c, vae.z_channels, 3, padding=1)

  def forward(self, x):
    h = self.conv_in(x)
    for level in self.down:
      for j, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
          h = level.attn[j](h)
      if hasattr(level, 'downsample'):
        h = level.downsample.conv(F.pad(h, (0, 1, 0, 1)))
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
    return self.conv_out(F.silu(self.norm_out(h)))


class TorchDecoder(nn.Module):

  def __init__(self, vae: var_vqvae.VQVAE):
    super().__init__()
    ch, mult, last = vae.ch, vae.ch_mult, len(vae.ch_mult) - 1
    c = ch * mult[-1]
    self.conv_in = nn.Conv2d(vae.z_channels, c, 3, padding=1)
    self.mid = TorchLevel()
    self.mid.block_1, self.mid.attn_1 = TorchResBlock(c, c), TorchAttnBlock(c)
    self.mid.block_2 = TorchResBlock(c, c)
    self.up = nn.ModuleList()
    for i in reversed(range(len(mult))):
      level = TorchLevel()
      level.block, level.attn = nn.ModuleList(), nn.ModuleList()
      for _ in range(vae.num_res_blocks + 1):
        level.block.append(TorchResBlock(c, ch * mult[i]))
        c = ch * mult[i]
        if i == last:
          level.attn.append(TorchAttnBlock(c))
      if i != 0:
        level.upsample = TorchLevel()
        level.upsample.conv = nn.Conv2d(c, c, 3, padding=1)
      self.up.insert(0, level)
    self.norm_out = _gn(c)
    self.conv_out = nn.Conv2d(c, vae.image_channels, 3, padding=1)

  def forward(self, z):
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
    for i in reversed(range(len(self.up))):
      level = self.up[i]
      for j, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
          h = level.attn[j](h)
      if i != 0:
        h = level.upsample.conv(F.interpolate(h, scale_factor=2,
                                              mode='nearest'))
    return self.conv_out(F.silu(self.norm_out(h)))


class TorchPhi(nn.Conv2d):

  def forward(self, h):
    return h.mul(0.5) + super().forward(h).mul_(0.5)


class TorchQuantizer(nn.Module):

  def __init__(self, vae: var_vqvae.VQVAE):
    super().__init__()
    self.pns = vae.patch_nums
    self.embedding = nn.Embedding(vae.vocab_size, vae.z_channels)
    self.quant_resi = TorchLevel()
    self.quant_resi.qresi_ls = nn.ModuleList([
        TorchPhi(vae.z_channels, vae.z_channels, 3, padding=1)
        for _ in range(vae.share_quant_resi)])
    k = vae.share_quant_resi
    self.ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k)
    self.register_buffer('ema_vocab_hit_SV',
                         torch.zeros(len(vae.patch_nums), vae.vocab_size))

  def phi(self, at):
    return self.quant_resi.qresi_ls[int(np.argmin(np.abs(self.ticks - at)))]

  def f_to_idx(self, f):
    b, c, s, _ = f.shape
    f_rest, f_hat, out = f.clone(), torch.zeros_like(f), []
    n = len(self.pns)
    for si, pn in enumerate(self.pns):
      z = (F.interpolate(f_rest, size=(pn, pn), mode='area')
           if si != n - 1 else f_rest).permute(0, 2, 3, 1).reshape(-1, c)
      e = self.embedding.weight
      d = (z.square().sum(1, keepdim=True) + e.square().sum(1)
           ).addmm_(z, e.T, alpha=-2, beta=1)
      idx = d.argmin(1)
      h = self.embedding(idx.view(b, pn, pn)).permute(0, 3, 1, 2)
      if si != n - 1:
        h = F.interpolate(h, size=(s, s), mode='bicubic')
      h = self.phi(si / (n - 1))(h)
      f_hat, f_rest = f_hat + h, f_rest - h
      out.append(idx.reshape(b, pn * pn))
    return out

  def next_input(self, si, f_hat, h):
    n, s = len(self.pns), self.pns[-1]
    if si != n - 1:
      f_hat = f_hat + self.phi(si / (n - 1))(
          F.interpolate(h, size=(s, s), mode='bicubic'))
      nxt = self.pns[si + 1]
      return f_hat, F.interpolate(f_hat, size=(nxt, nxt), mode='area')
    f_hat = f_hat + self.phi(si / (n - 1))(h)
    return f_hat, f_hat


class TorchVQVAE(nn.Module):

  def __init__(self, vae: var_vqvae.VQVAE):
    super().__init__()
    self.encoder, self.decoder = TorchEncoder(vae), TorchDecoder(vae)
    self.quantize = TorchQuantizer(vae)
    z = vae.z_channels
    self.quant_conv = nn.Conv2d(z, z, 3, padding=1)
    self.post_quant_conv = nn.Conv2d(z, z, 3, padding=1)

  def fhat_to_img(self, f_hat):
    return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)


@pytest.fixture(scope='module')
def vqvae():
  vae = var_vqvae.VQVAE(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2),
                        num_res_blocks=1, patch_nums=PNS)
  torch_vae = TorchVQVAE(vae)
  _randomize(torch_vae, 1)
  variables = convert_var.convert_vae(_state(torch_vae), vae)
  common.check_module_layout(variables, vae.init, jax.random.key(0),
                             var_vqvae.init_inputs(vae))
  return vae, torch_vae, variables


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(
      np.transpose(np.asarray(x), (0, 3, 1, 2))))


def _nhwc(x):
  return np.transpose(x.detach().numpy(), (0, 2, 3, 1))


def test_vqvae_decoder_parity(vqvae):
  vae, torch_vae, variables = vqvae
  f_hat = np.random.RandomState(0).randn(2, 4, 4, 8).astype(np.float32)
  with torch.no_grad():
    want = (_nhwc(torch_vae.fhat_to_img(_nchw(f_hat))) + 1) / 2
  with jax.default_matmul_precision('highest'):
    got = vae.apply(variables, jnp.asarray(f_hat),
                    method=var_vqvae.VQVAE.decode)
  assert got.shape == (2, 8, 8, 3)
  # Decoded images clamp to [-1, 1]; check the decoder wasn't all clipped.
  assert 0.05 < float(np.mean((want > 0) & (want < 1)))
  assert _rel_err(got, want) < 1e-4


def test_vqvae_phi_and_next_input_parity(vqvae):
  """get_next_autoregressive_input at every scale, phis included."""
  vae, torch_vae, variables = vqvae
  rs = np.random.RandomState(1)
  f_hat = np.zeros((2, 4, 4, 8), np.float32)
  t_fhat = _nchw(f_hat)
  assert var_vqvae.phi_indices(4, 4) == (0, 1, 2, 3)  # each phi once
  for si, pn in enumerate(PNS):
    h = rs.randn(2, pn, pn, 8).astype(np.float32)
    with torch.no_grad():
      t_fhat, t_next = torch_vae.quantize.next_input(si, t_fhat, _nchw(h))
    with jax.default_matmul_precision('highest'):
      f_hat = vae.apply(variables, jnp.asarray(f_hat), jnp.asarray(h), si,
                        method=var_vqvae.VQVAE.add_scale)
    assert _rel_err(f_hat, _nhwc(t_fhat)) < 1e-4
    if si + 1 < len(PNS):
      nxt = var_vqvae.resize_area(f_hat, (PNS[si + 1],) * 2)
      assert _rel_err(nxt, _nhwc(t_next)) < 1e-4


def test_vqvae_encoder_and_scales_parity(vqvae):
  """img_to_idxBl: encoder, quant_conv, residual multi-scale quantisation."""
  vae, torch_vae, variables = vqvae
  images = np.random.RandomState(2).rand(2, 8, 8, 3).astype(np.float32)
  with torch.no_grad():
    f = torch_vae.quant_conv(torch_vae.encoder(_nchw(2 * images - 1)))
    want_ids = [i.numpy() for i in torch_vae.quantize.f_to_idx(f)]
  with jax.default_matmul_precision('highest'):
    got_f = vae.apply(variables, jnp.asarray(images),
                      method=var_vqvae.VQVAE.encode)
    ids, _ = vae.apply(variables, got_f, method=var_vqvae.VQVAE.to_scales)
  assert _rel_err(got_f, _nhwc(f)) < 1e-4
  for got, want in zip(ids, want_ids):
    np.testing.assert_array_equal(got, want)


def test_manifest_errors(vqvae):
  vae, torch_vae, _ = vqvae
  state = _state(torch_vae)
  bad = dict(state)
  del bad['decoder.conv_in.bias']
  bad['extra.weight'] = np.zeros(3, np.float32)
  bad['quantize.embedding.weight'] = np.zeros((63, 8), np.float32)
  with pytest.raises(errors.UserError,
                     match='1 missing.*1 unexpected.*1 wrong'):
    convert_var.convert_vae(bad, vae)


def test_convert_files(vqvae, tmp_path, monkeypatch):
  """The CLI path: .pth files in, msgpack + JSON out (tiny sizes)."""
  vae, torch_vae, variables = vqvae
  net = var_nets.VAR(num_classes=10, vocab_size=64, cvae=8, depth=2,
                     width=64, num_heads=2, patch_nums=PNS)
  torch_net = TorchVAR(net)
  _randomize(torch_net, 3)
  kwargs = {k: getattr(net, k) for k in (
      'num_classes', 'vocab_size', 'cvae', 'depth', 'width', 'num_heads',
      'patch_nums')}
  monkeypatch.setattr(convert_var, 'PUBLISHED_DEPTHS', (2,))
  monkeypatch.setattr(convert_var, 'published_var', lambda depth: kwargs)
  monkeypatch.setattr(convert_var, 'VAE_CH160V4096Z32', {
      k: getattr(vae, k) for k in ('vocab_size', 'z_channels', 'ch',
                                   'ch_mult', 'num_res_blocks', 'patch_nums')})
  torch.save(torch_net.state_dict(), tmp_path / 'var_d2.pth')
  torch.save(torch_vae.state_dict(), tmp_path / 'vae.pth')
  out = tmp_path / 'out'
  written = convert_var.convert_files(
      str(out), var=str(tmp_path / 'var_d2.pth'), vae=str(tmp_path / 'vae.pth'),
      command='test')
  assert written == [str(out / 'var_d2.msgpack'),
                     str(out / convert_var.VAE_FILE)]
  got = assets.load_variables(written[1], 'vae', 'fix')
  chex.assert_trees_all_equal(got, variables)
  meta = json.loads((out / 'var_d2.json').read_text())
  assert meta['module']['width'] == 64 and meta['source'] == 'var_d2.pth'
  assert meta['num_params'] == sum(
      v.size for k, v in _state(torch_net).items()
      if k in common.manifest(convert_var.var_layers(net)))
  with pytest.raises(errors.UserError, match='not found'):
    convert_var.convert_files(str(out), var=str(tmp_path / 'none.pth'))
  monkeypatch.setattr(convert_var, 'PUBLISHED_DEPTHS', (16, 30))
  with pytest.raises(errors.UserError, match='2 blocks'):
    convert_var.convert_files(str(out), var=str(tmp_path / 'var_d2.pth'))
  assert not os.path.exists(out / 'var_d16.msgpack')


def _published_var_manifest(depth):
  net = var_nets.VAR(**convert_var.published_var(depth))
  manifest = convert_var.var_manifest(net)
  variables = convert_var.convert_var(common.placeholder_state(manifest), net)
  # The converted layout is exactly the module's (shapes only, no compute).
  common.check_module_layout(variables, net.init, jax.random.key(0),
                             *var_nets.init_inputs(net))
  return manifest, variables


@pytest.mark.parametrize('depth,c', [(16, 1024), (30, 1920)])
def test_published_var_manifest(depth, c):
  manifest, variables = _published_var_manifest(depth)
  # paradigms.md §3.1's keys and shapes.
  want = {'word_embed.weight': (c, 32), 'class_emb.weight': (1001, c),
          'pos_start': (1, 1, c), 'pos_1LC': (1, 680, c),
          'lvl_embed.weight': (10, c),
          'blocks.0.attn.scale_mul_1H11': (1, depth, 1, 1),
          'blocks.3.attn.q_bias': (c,), 'blocks.3.attn.zero_k_bias': (c,),
          f'blocks.{depth - 1}.attn.mat_qkv.weight': (3 * c, c),
          'blocks.0.attn.proj.weight': (c, c),
          'blocks.0.ffn.fc1.weight': (4 * c, c),
          'blocks.0.ffn.fc2.weight': (c, 4 * c),
          'blocks.0.ada_lin.1.weight': (6 * c, c),
          'head_nm.ada_lin.1.weight': (2 * c, c),
          'head.weight': (4096, c), 'head.bias': (4096,),
          'lvl_1L': (1, 680), 'attn_bias_for_masking': (1, 1, 680, 680)}
  assert {k: manifest[k] for k in want} == want
  assert f'blocks.{depth}.ffn.fc1.weight' not in manifest
  # 13 keys per block and 12 others: nothing else is expected.
  assert len(manifest) == 13 * depth + 12
  num = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables))
  # VAR README: d16 310M, d30 2.0B parameters.
  assert {16: 310e6, 30: 2.0e9}[depth] * 0.95 < num < {
      16: 310e6, 30: 2.0e9}[depth] * 1.05, num


def test_published_vae_manifest():
  vae = var_vqvae.VQVAE(**convert_var.VAE_CH160V4096Z32)
  manifest = convert_var.vae_manifest(vae)
  variables = convert_var.convert_vae(common.placeholder_state(manifest), vae)
  common.check_module_layout(variables, vae.init, jax.random.key(0),
                             var_vqvae.init_inputs(vae))
  want = {'quantize.embedding.weight': (4096, 32),
          'quantize.ema_vocab_hit_SV': (10, 4096),
          'quantize.quant_resi.qresi_ls.3.weight': (32, 32, 3, 3),
          'post_quant_conv.weight': (32, 32, 3, 3),
          'decoder.conv_in.weight': (640, 32, 3, 3),
          'decoder.mid.attn_1.qkv.weight': (1920, 640, 1, 1),
          'decoder.up.4.attn.2.proj_out.weight': (640, 640, 1, 1),
          'decoder.up.3.block.0.nin_shortcut.weight': (320, 640, 1, 1),
          'decoder.up.1.upsample.conv.weight': (160, 160, 3, 3),
          'decoder.conv_out.weight': (3, 160, 3, 3),
          'encoder.down.4.attn.1.norm.weight': (640,),
          'encoder.down.0.downsample.conv.weight': (160, 160, 3, 3),
          'encoder.conv_out.weight': (32, 640, 3, 3)}
  assert {k: manifest[k] for k in want} == want
  assert 'decoder.up.0.upsample.conv.weight' not in manifest
  assert 'encoder.down.4.downsample.conv.weight' not in manifest
  assert not any('attn' in k for k in manifest
                 if k.startswith(('decoder.up.3', 'encoder.down.3')))
