"""MaskGIT checkpoint import: parity with PyTorch twins, manifests, the CLI.

The torch modules below mirror the published networks (ImprovedNAT/AdaGen
UViT; MAGE's taming port of the MaskGIT tokenizer) with their real key
names, at small sizes, on random weights.
"""
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax.generators import maskgit as maskgit_generator
from adagen_jax.generators import maskgit_nets
from adagen_jax.generators.convert import common
from adagen_jax.generators.convert import maskgit

UVIT = dict(codebook_size=32, num_tokens=16, num_classes=10, width=64,
            depth=4, num_heads=8, mlp_ratio=4.0)  # heads: MaskGIT-L's
# (1, 2, 2): a channel-changing ResBlock in encoder and decoder, and decoder
# levels 2 and 1 of equal shapes, so only parity can tell them apart.
VQGAN = dict(filters=32, channel_mult=(1, 2, 2), num_res_blocks=2,
             embedding_dim=8, codebook_size=32, out_channels=3, norm_groups=32)


def _rel_err(got, want):
  """max |got - want| / max |want|."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.abs(got - want).max() / np.abs(want).max()


def _randomize(module, seed):
  """Perturbs every parameter, so LayerNorm/GroupNorm scales and zero-init
  biases carry information too."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return module.eval()


def _numpy_state(module):
  return {k: v.numpy() for k, v in module.state_dict().items()}


# --- UViT twin (ImprovedNAT libs/nat_model.py layout) ---------------------


class _Bert(nn.Module):

  def __init__(self, vocab, width, positions):
    super().__init__()
    self.word_embeddings = nn.Embedding(vocab, width)
    self.position_embeddings = nn.Embedding(positions, width)
    # pylint: disable-next=invalid-name
    self.LayerNorm = nn.LayerNorm(width, eps=1e-6)
    # Some versions save this buffer; the converter must drop it.
    self.register_buffer('position_ids', torch.arange(positions)[None])

  def forward(self, ids):
    pos = self.position_embeddings.weight[:ids.shape[1]]
    return self.LayerNorm(self.word_embeddings(ids) + pos)


class _Attention(nn.Module):

  def __init__(self, width, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(width, 3 * width, bias=False)
    self.proj = nn.Linear(width, width)

  def forward(self, x):
    b, n, c = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1,
                                                                   4)
    a = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
    return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):

  def __init__(self, width, hidden):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):

  def __init__(self, width, heads, skip=False):
    super().__init__()
    self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
    self.attn = _Attention(width, heads)
    self.mlp = _Mlp(width, 4 * width)
    self.skip_linear = nn.Linear(2 * width, width) if skip else None

  def forward(self, x, skip=None):
    if self.skip_linear is not None:
      x = self.skip_linear(torch.cat([x, skip], -1))
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class _MlmLayer(nn.Module):

  def __init__(self, width, vocab):
    super().__init__()
    self.fc, self.ln = nn.Linear(width, width), nn.LayerNorm(width)
    self.bias = nn.Parameter(torch.zeros(1, 1, vocab))

  def forward(self, x, emb):
    return self.ln(F.gelu(self.fc(x))) @ emb.T + self.bias


class _UViT(nn.Module):

  def __init__(self, codebook_size, num_tokens, num_classes, width, depth,
               num_heads, mlp_ratio):
    super().__init__()
    assert mlp_ratio == 4.0
    self.k = codebook_size
    self.token_emb = _Bert(codebook_size + 1, width, num_tokens)
    self.context_embed = _Bert(num_classes + 1, width, 1)
    self.in_blocks = nn.ModuleList(
        [_Block(width, num_heads) for _ in range(depth // 2)])
    self.mid_block = _Block(width, num_heads)
    self.out_blocks = nn.ModuleList(
        [_Block(width, num_heads, skip=True) for _ in range(depth // 2)])
    self.norm = nn.LayerNorm(width)
    self.mlm_layer = _MlmLayer(width, codebook_size + 1)

  def forward(self, ids, labels):
    x = torch.cat([self.context_embed(labels[:, None]), self.token_emb(ids)],
                  1)
    skips = []
    for blk in self.in_blocks:
      x = blk(x)
      skips.append(x)
    x = self.mid_block(x)
    for blk in self.out_blocks:
      x = blk(x, skips.pop())
    x = self.norm(x)
    logits = self.mlm_layer(x, self.token_emb.word_embeddings.weight)
    return logits[:, 1:, :self.k], x[:, 1:]


# --- VQGAN twin (MAGE taming/modules/diffusionmodules/model.py layout) ----


def _gn(c):
  return nn.GroupNorm(32, c, eps=1e-6)


class _ResBlock(nn.Module):

  def __init__(self, c_in, c_out):
    super().__init__()
    self.norm1, self.norm2 = _gn(c_in), _gn(c_out)
    self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
    if c_in != c_out:
      self.nin_shortcut = nn.Conv2d(c_out, c_out, 1, bias=False)

  def forward(self, x):
    h = self.conv1(F.silu(self.norm1(x)))
    h = self.conv2(F.silu(self.norm2(h)))
    if hasattr(self, 'nin_shortcut'):
      x = self.nin_shortcut(h)  # The quirk: the shortcut reads h.
    return x + h


def _level(c_in, c_out, num_blocks):
  level = nn.Module()
  level.block = nn.ModuleList(
      [_ResBlock(c_in if j == 0 else c_out, c_out) for j in range(num_blocks)])
  return level


def _mid(c):
  mid = nn.Module()
  mid.block_1, mid.block_2 = _ResBlock(c, c), _ResBlock(c, c)
  return mid


class _Encoder(nn.Module):

  def __init__(self, filters, channel_mult, num_res_blocks, embedding_dim,
               channels):
    super().__init__()
    widths = [filters * m for m in channel_mult]
    self.conv_in = nn.Conv2d(channels, filters, 3, padding=1, bias=False)
    self.down = nn.ModuleList(
        [_level(([filters] + widths)[i], widths[i], num_res_blocks)
         for i in range(len(widths))])
    self.mid = _mid(widths[-1])
    self.norm_out = _gn(widths[-1])
    self.conv_out = nn.Conv2d(widths[-1], embedding_dim, 1)

  def forward(self, x):
    h = self.conv_in(x)
    for i, level in enumerate(self.down):
      for blk in level.block:
        h = blk(h)
      if i < len(self.down) - 1:
        h = F.avg_pool2d(h, 2, 2)
    h = self.mid.block_2(self.mid.block_1(h))
    return self.conv_out(F.silu(self.norm_out(h)))


class _Decoder(nn.Module):

  def __init__(self, filters, channel_mult, num_res_blocks, embedding_dim,
               channels):
    super().__init__()
    widths = [filters * m for m in channel_mult]
    c = widths[-1]
    self.conv_in = nn.Conv2d(embedding_dim, c, 3, padding=1)
    self.mid = _mid(c)
    self.up = nn.ModuleList()
    for i in reversed(range(len(widths))):
      level = _level(c, widths[i], num_res_blocks)
      c = widths[i]
      if i != 0:
        level.upsample = nn.Module()
        level.upsample.conv = nn.Conv2d(c, c, 3, padding=1)
      self.up.insert(0, level)  # taming: up[i] is resolution level i.
    self.norm_out = _gn(c)
    self.conv_out = nn.Conv2d(c, channels, 3, padding=1)

  def forward(self, z):
    h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
    for i in reversed(range(len(self.up))):
      for blk in self.up[i].block:
        h = blk(h)
      if i != 0:
        h = self.up[i].upsample.conv(F.interpolate(h, scale_factor=2.0,
                                                   mode='nearest'))
    return self.conv_out(F.silu(self.norm_out(h)))


class _VQModel(nn.Module):

  def __init__(self, filters, channel_mult, num_res_blocks, embedding_dim,
               codebook_size, out_channels, norm_groups):
    super().__init__()
    assert norm_groups == 32 and num_res_blocks == 2  # taming's fixed mid.
    sizes = (filters, channel_mult, num_res_blocks, embedding_dim,
             out_channels)
    self.encoder, self.decoder = _Encoder(*sizes), _Decoder(*sizes)
    self.quantize = nn.Module()
    self.quantize.embedding = nn.Embedding(codebook_size, embedding_dim)


@pytest.fixture(scope='module')
def uvit_twin():
  torch.manual_seed(0)
  return _randomize(_UViT(**UVIT), seed=1)


@pytest.fixture(scope='module')
def vqgan_twin():
  """The twin, its codebook drawn near its encoder outputs so that the
  nearest-code ids are varied, and test images."""
  torch.manual_seed(0)
  model = _randomize(_VQModel(**VQGAN), seed=2)
  images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
  with torch.no_grad():
    z = model.encoder(images).permute(0, 2, 3, 1).reshape(-1, 8)
    pick = torch.randperm(z.shape[0],
                          generator=torch.Generator().manual_seed(4))
    model.quantize.embedding.weight.copy_(
        z[pick[:32]] + 0.1 * z.std() * torch.randn(32, 8))
  return model, images


def test_uvit_parity(uvit_twin):
  gen = torch.Generator().manual_seed(5)
  ids = torch.randint(0, 33, (3, 16), generator=gen)  # 32 = [MASK]
  labels = torch.tensor([0, 7, 10])  # 10 = null class
  with torch.no_grad():
    want_logits, want_feat = uvit_twin(ids, labels)
  net = maskgit_nets.UViT(**UVIT)
  params = maskgit.convert_uvit(_numpy_state(uvit_twin), net)
  with jax.default_matmul_precision('highest'):
    logits, feat = jax.jit(net.apply)({'params': params}, ids.numpy(),
                                      labels.numpy())
  assert logits.shape == (3, 16, 32) and feat.shape == (3, 16, 64)
  assert _rel_err(logits, want_logits) < 1e-4
  assert _rel_err(feat, want_feat) < 1e-4


def test_vqgan_parity(vqgan_twin):
  model, images = vqgan_twin
  emb = model.quantize.embedding.weight
  with torch.no_grad():
    want_z = model.encoder(images).permute(0, 2, 3, 1)
    flat = want_z.reshape(-1, 8)
    want_ids = torch.argmin(
        (flat ** 2).sum(1, keepdim=True) + (emb ** 2).sum(1) - 2 * flat @ emb.T,
        1).reshape(2, 4, 4)
    want_images = model.decoder(emb[want_ids].permute(0, 3, 1, 2))
    want_images = want_images.permute(0, 2, 3, 1)

  net = maskgit_nets.VQGAN(**VQGAN)
  state = _numpy_state(model)

  def forward(m, x, i):
    # Encoder, quantizer, raw decoder, clipped decoder.
    return (m.encoder(x), m.encode(x), m.decoder(m.quantize.lookup(i)),
            m.decode_ids(i))

  run = jax.jit(lambda p, x, i: net.apply({'params': p}, x, i,
                                          method=forward))
  x = images.permute(0, 2, 3, 1).numpy()
  with jax.default_matmul_precision('highest'):
    z, ids, raw, decoded = run(maskgit.convert_vqgan(state, net), x,
                               want_ids.numpy())
    # Decoder levels 1 and 2 have equal shapes: taken in the wrong order,
    # the conversion goes through but the images are wrong.
    swapped = {k.replace('up.1.', 'up.#.').replace('up.2.', 'up.1.')
                .replace('up.#.', 'up.2.'): v for k, v in state.items()}
    wrong = run(maskgit.convert_vqgan(swapped, net), x, want_ids.numpy())[2]
  assert _rel_err(z, want_z) < 1e-4
  assert len(np.unique(want_ids)) > 8  # a meaningful id comparison
  np.testing.assert_array_equal(ids, want_ids.numpy())
  assert _rel_err(raw, want_images) < 1e-4
  np.testing.assert_allclose(decoded, want_images.clamp(0, 1).numpy(),
                             atol=1e-4 * np.abs(want_images.numpy()).max())
  assert _rel_err(wrong, want_images) > 1e-2


def _flax_layout(cls, kwargs, manifest, convert, init_args):
  """Converts zero-cost placeholders with the manifest's shapes; compares
  the result with the module's own layout (eval_shape, no compute)."""
  net = cls(**kwargs)
  params = convert(common.placeholder_state(manifest), net)
  common.check_module_layout({'params': params}, net.init, *init_args(net))


def test_manifests_at_maskgit_l_sizes():
  uvit = maskgit.uvit_manifest(maskgit_nets.UViT(**maskgit.MASKGIT_L_UVIT))
  assert len(uvit) == 314
  assert sum(np.prod(s) for s in uvit.values()) == 193_655_297
  for key, shape in {
      'token_emb.word_embeddings.weight': (1025, 768),
      'token_emb.position_embeddings.weight': (256, 768),
      'context_embed.word_embeddings.weight': (1001, 768),
      'context_embed.position_embeddings.weight': (1, 768),
      'in_blocks.11.attn.qkv.weight': (2304, 768),
      'mid_block.mlp.fc1.weight': (3072, 768),
      'out_blocks.11.skip_linear.weight': (768, 1536),
      'mlm_layer.bias': (1, 1, 1025)}.items():
    assert uvit[key] == shape, key
  assert 'in_blocks.12.norm1.weight' not in uvit
  assert not any(k.endswith('qkv.bias') for k in uvit)
  _flax_layout(maskgit_nets.UViT, maskgit.MASKGIT_L_UVIT, uvit,
               maskgit.convert_uvit, maskgit.uvit_init_args)

  vq = maskgit.vqgan_manifest(maskgit_nets.VQGAN(**maskgit.MASKGIT_VQGAN))
  assert vq['quantize.embedding.weight'] == (1024, 256)
  assert vq['decoder.conv_in.weight'] == (512, 256, 3, 3)
  assert vq['encoder.conv_out.weight'] == (256, 512, 1, 1)
  assert vq['decoder.up.4.upsample.conv.weight'] == (512, 512, 3, 3)
  assert vq['decoder.up.0.block.1.conv2.weight'] == (128, 128, 3, 3)
  assert sorted(k for k in vq if 'nin_shortcut' in k) == [
      'decoder.up.1.block.0.nin_shortcut.weight',
      'decoder.up.3.block.0.nin_shortcut.weight',
      'encoder.down.2.block.0.nin_shortcut.weight',
      'encoder.down.4.block.0.nin_shortcut.weight']
  assert not any(s in k for k in vq for s in (
      'downsample', 'quant_conv', 'up.0.upsample', 'attn', '.conv1.bias'))
  _flax_layout(maskgit_nets.VQGAN, maskgit.MASKGIT_VQGAN, vq,
               maskgit.convert_vqgan, maskgit.vqgan_init_args)
  # The published sizes are what the CLI reads off such a checkpoint.
  assert maskgit.uvit_config(
      common.placeholder_state(uvit)) == maskgit.MASKGIT_L_UVIT
  assert maskgit.vqgan_config(
      common.placeholder_state(vq)) == maskgit.MASKGIT_VQGAN


def test_bad_state_dicts_are_user_errors():
  net = maskgit_nets.UViT(**UVIT)
  good = common.placeholder_state(maskgit.uvit_manifest(net))
  bad = dict(good)
  del bad['mid_block.attn.proj.bias']
  bad['in_blocks.0.attn.qkv.bias'] = np.zeros(192, np.float32)
  bad['norm.weight'] = np.zeros(65, np.float32)
  with pytest.raises(errors.UserError) as e:
    maskgit.convert_uvit(bad, net)
  msg = str(e.value)
  assert '\n' not in msg
  for part in ('1 missing (mid_block.attn.proj.bias)',
               '1 unexpected (in_blocks.0.attn.qkv.bias)',
               '1 wrong shape (norm.weight [65] != [64])', '--uvit=PATH'):
    assert part in msg, msg
  # Many missing keys: the first few are named, then a count.
  vq_net = maskgit_nets.VQGAN(**VQGAN)
  with pytest.raises(errors.UserError, match=r'missing \(.*, \.\.\. \d+ more'):
    maskgit.convert_vqgan({}, vq_net)
  with pytest.raises(errors.UserError, match='have no token_emb'):
    maskgit.uvit_config({})
  with pytest.raises(errors.UserError, match='pass --num_heads=H'):
    maskgit.uvit_config(good)
  with pytest.raises(errors.UserError, match='does not divide the width 64'):
    maskgit.uvit_config(good, num_heads=3)
  assert maskgit.uvit_config(good, num_heads=2)['num_heads'] == 2


def test_read_torch_state_dict(tmp_path):
  state = {'a.weight': torch.ones(2, 3),
           'b.bias': torch.zeros(2, dtype=torch.half)}
  for wrap in (None, 'state_dict', 'model'):
    path = str(tmp_path / f'{wrap}.pth')
    torch.save(state if wrap is None else {wrap: state, 'epoch': 3}, path)
    got = common.read_torch_state_dict(path, 'w', 'fix')
    assert sorted(got) == ['a.weight', 'b.bias']
    assert got['b.bias'].dtype == np.float32
  with pytest.raises(errors.UserError, match='w not found at .*; fix'):
    common.read_torch_state_dict(str(tmp_path / 'nope.pth'), 'w', 'fix')
  (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
  with pytest.raises(errors.UserError, match='could not be read as a tensor-only'):
    common.read_torch_state_dict(str(tmp_path / 'junk.pth'), 'w', 'fix')


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'adagen_jax.generators.convert.maskgit', *args],
      capture_output=True, text=True, env=env, check=False)


def test_cli(tmp_path, uvit_twin, vqgan_twin):
  uvit_path, vqgan_path = str(tmp_path / 'u.pth'), str(tmp_path / 'v.ckpt')
  torch.save(uvit_twin.state_dict(), uvit_path)  # bare, like MaskGIT-L.pth
  torch.save({'state_dict': vqgan_twin[0].state_dict()}, vqgan_path)
  out = str(tmp_path / 'out')
  # Sizes the weights cannot reveal are refused, not guessed.
  for flag, path in (('--num_heads', f'--uvit={uvit_path}'),
                     ('--norm_groups', f'--vqgan={vqgan_path}')):
    refused = _cli(path, f'--out={out}')
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), refused.stderr
    assert f'pass {flag}=' in lines[0], lines[0]
    assert not os.path.exists(out)
  done = _cli(f'--uvit={uvit_path}', f'--vqgan={vqgan_path}', f'--out={out}',
              f'--num_heads={UVIT["num_heads"]}',
              f'--norm_groups={VQGAN["norm_groups"]}')
  assert done.returncode == 0, done.stderr
  # The entries the MaskGIT generator loads (generators/maskgit.py).
  for name, entry, cls, kwargs, twin in (
      (maskgit.UVIT_FILE, 'transformer', maskgit_nets.UViT, UVIT, uvit_twin),
      (maskgit.VQGAN_FILE, 'tokenizer', maskgit_nets.VQGAN, VQGAN,
       vqgan_twin[0])):
    path = os.path.join(out, name)
    meta = assets.load_meta(path)['module']
    assert cls(**{k: tuple(v) if isinstance(v, list) else v
                  for k, v in meta.items()}) == cls(**kwargs)
    loaded = assets.load_variables(path, name, 'rerun')
    convert = (maskgit.convert_uvit if cls is maskgit_nets.UViT
               else maskgit.convert_vqgan)
    want = {entry: convert(_numpy_state(twin), cls(**kwargs))}
    assert jax.tree.structure(loaded) == jax.tree.structure(want)
    chex.assert_trees_all_equal(loaded, want)
  # The MaskGIT generator's own loader takes the two files.
  params = maskgit_generator.load_params(
      ','.join(os.path.join(out, f)
               for f in (maskgit.UVIT_FILE, maskgit.VQGAN_FILE)),
      maskgit_nets.VQGAN(**VQGAN), maskgit_nets.UViT(**UVIT), (16, 16, 3),
      UVIT['num_tokens'])
  assert sorted(params) == ['tokenizer', 'transformer']

  missing = _cli(f'--uvit={tmp_path / "MaskGIT-L.pth"}', f'--out={out}')
  assert missing.returncode == 2
  lines = missing.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: MaskGIT-L UViT'), (
      missing.stderr)
  assert 'huggingface.co/nzl-thu/MaskGIT-L' in lines[0]
