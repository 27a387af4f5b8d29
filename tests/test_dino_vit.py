"""DINO ViT backbone: area resize, manifest, parity with a PyTorch ViT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax.backbones import dino_vit
from adagen_jax.generators.convert import common

torch = pytest.importorskip('torch')
tnn = torch.nn
F = torch.nn.functional

MEAN = torch.tensor(dino_vit.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(dino_vit.IMAGENET_STD).view(1, 3, 1, 1)


# A compact PyTorch ViT laid out like timm's VisionTransformer, so that its
# state_dict has the key names of dino_deitsmall16_pretrain.pth.
class _Attention(tnn.Module):

  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = tnn.Linear(dim, 3 * dim)
    self.proj = tnn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) * (c // self.heads)**-0.5).softmax(-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(tnn.Module):

  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = tnn.Linear(dim, hidden)
    self.fc2 = tnn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class _Block(tnn.Module):

  def __init__(self, dim, heads, hidden):
    super().__init__()
    self.norm1 = tnn.LayerNorm(dim, eps=1e-6)
    self.attn = _Attention(dim, heads)
    self.norm2 = tnn.LayerNorm(dim, eps=1e-6)
    self.mlp = _Mlp(dim, hidden)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class _PatchEmbed(tnn.Module):

  def __init__(self, dim, patch):
    super().__init__()
    self.proj = tnn.Conv2d(3, dim, patch, patch)


class _TorchViT(tnn.Module):

  def __init__(self, dim, depth, heads, hidden, patch, grid):
    super().__init__()
    self.patch_embed = _PatchEmbed(dim, patch)
    self.cls_token = tnn.Parameter(torch.randn(1, 1, dim) * 0.5)
    self.pos_embed = tnn.Parameter(torch.randn(1, 1 + grid**2, dim) * 0.5)
    self.blocks = tnn.ModuleList(
        [_Block(dim, heads, hidden) for _ in range(depth)])
    self.norm = tnn.LayerNorm(dim, eps=1e-6)

  def forward(self, images, size):
    """[0, 1] NCHW -> the discriminator's 5 feature sets."""
    x = F.interpolate(images, size, mode='area')
    x = self.patch_embed.proj((x - MEAN) / STD)
    b, d, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = self.pos_embed
    grid = int(round((pos.shape[1] - 1)**0.5))
    if (gh, gw) != (grid, grid):
      patches = pos[:, 1:].reshape(1, grid, grid, d).permute(0, 3, 1, 2)
      patches = F.interpolate(patches, (gh, gw), mode='bilinear',
                              align_corners=False)
      pos = torch.cat([pos[:, :1], patches.flatten(2).transpose(1, 2)], 1)
    x = torch.cat([self.cls_token.expand(b, -1, -1), x], 1) + pos
    feats = [x]
    for i, block in enumerate(self.blocks):
      x = block(x)
      if i in dino_vit.FEATURE_BLOCKS:
        feats.append(x)
    return feats


TINY = dict(width=32, depth=12, num_heads=2, mlp_dim=64, patch=8)


def _tiny_torch_vit(grid):
  torch.manual_seed(0)
  model = _TorchViT(TINY['width'], TINY['depth'], TINY['num_heads'],
                    TINY['mlp_dim'], TINY['patch'], grid)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, tnn.LayerNorm):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
  return model.eval()


def _rel_err(a, b):
  return np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))


@pytest.mark.parametrize('image_size,pos_grid', [(32, None), (24, 4)])
def test_parity_with_pytorch_vit(image_size, pos_grid):
  """Full input path; (24, 4) resamples a 4x4 pos-embed to the 3x3 grid."""
  torch_model = _tiny_torch_vit(grid=pos_grid or image_size // TINY['patch'])
  model = dino_vit.DinoViT(image_size=image_size, pos_grid=pos_grid, **TINY)
  state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  params = dino_vit.convert_dino_vits16(state, model)

  images = np.random.default_rng(0).uniform(0, 1, (2, 40, 40, 3))
  images = images.astype(np.float32)
  with torch.no_grad():
    ref = torch_model(torch.from_numpy(images).permute(0, 3, 1, 2),
                      image_size)
  with jax.default_matmul_precision('highest'):
    feats = jax.jit(model.apply)({'params': params}, images)
  tokens = 1 + (image_size // TINY['patch'])**2
  assert len(feats) == 5
  for out, want in zip(feats, ref):
    assert out.shape == (2, tokens, TINY['width'])
    assert _rel_err(out, want.numpy()) < 1e-4


def test_grayscale_is_repeated_to_rgb():
  model = dino_vit.DinoViT(image_size=16, **TINY)
  state = {k: v.detach().numpy()
           for k, v in _tiny_torch_vit(grid=2).state_dict().items()}
  params = {'params': dino_vit.convert_dino_vits16(state, model)}
  gray = np.random.default_rng(1).uniform(0, 1, (2, 20, 20, 1))
  apply = jax.jit(model.apply)
  for a, b in zip(apply(params, gray), apply(params, np.repeat(gray, 3, -1))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('src,dst', [((256, 256), (224, 224)),
                                     ((37, 30), (13, 7)),
                                     ((28, 28), (224, 224)),
                                     ((224, 224), (224, 224))])
def test_area_resize_matches_torch(src, dst):
  x = np.random.default_rng(0).uniform(0, 1, (2, *src, 3)).astype(np.float32)
  ref = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), dst,
                      mode='area').permute(0, 2, 3, 1).numpy()
  out = np.asarray(dino_vit.area_resize(jnp.asarray(x), dst))
  assert out.shape == (2, *dst, 3)
  np.testing.assert_allclose(out, ref, atol=1e-6)


def test_manifest_matches_module_at_real_sizes():
  manifest = dino_vit.dino_manifest()
  assert len(manifest) == 4 + 12 * 12 + 2
  assert manifest['pos_embed'] == (1, 197, 384)
  assert manifest['patch_embed.proj.weight'] == (384, 3, 16, 16)
  assert manifest['blocks.11.attn.qkv.weight'] == (1152, 384)
  assert manifest['blocks.0.mlp.fc1.weight'] == (1536, 384)
  params = dino_vit.convert_dino_vits16(common.placeholder_state(manifest))
  model = dino_vit.DinoViT()
  common.check_module_layout({'params': params}, model.init,
                             jax.random.key(0),
                             jnp.zeros((1, 224, 224, 3), jnp.float32))
  out = jax.eval_shape(model.apply, {'params': params},
                       jnp.zeros((3, 256, 256, 3), jnp.float32))
  assert [o.shape for o in out] == [(3, 197, 384)] * 5


def test_tiny_manifest_matches_torch_state_dict():
  torch_model = _tiny_torch_vit(grid=4)
  ref = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
  assert dino_vit.dino_manifest(dino_vit.DinoViT(image_size=32, **TINY)) == ref


def test_bad_state_dicts_are_user_errors(tmp_path):
  state = common.placeholder_state(dino_vit.dino_manifest())
  del state['blocks.3.norm2.bias']
  with pytest.raises(errors.UserError, match='missing.*blocks.3.norm2.bias'):
    dino_vit.convert_dino_vits16(state)
  with pytest.raises(errors.UserError, match='--dino_weights='):
    dino_vit.load_dino_vits16(str(tmp_path / dino_vit.FILENAME))
