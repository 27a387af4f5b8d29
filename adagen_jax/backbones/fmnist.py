"""The two in-house Fashion-MNIST networks, and loaders for their weights.

They are built differently on purpose (DESIGN.md, "Correctness anchors"): a
policy must never be trained against the features that judge it.

- `FeatureNet` (a VGG-style CNN with BatchNorm) defines FD-FMNIST: its
  penultimate embedding is what `adagen_jax.evaluate` compares. Evaluation
  only.
- `DiscBackbone` (a small ViT on 4x4 patches) stands in for DINO ViT-S/16 in
  the rewards: the discriminator reads its token features and the static /
  fidelity reward reads its logits. Never used for evaluation.
- `ContrastNet` (a residual CNN with GroupNorm, trained without labels by a
  contrastive objective, adagen_jax/pretrain/contrastive.py) is the
  self-supervised reward backbone, the small-scale analogue of DINO
  (`reward.backbone=fmnist_contrast`). Never used for evaluation.
- The same residual CNN with a classifier head, trained with labels
  (`num_classes=10`; configs/pretrain/fmnist_resnet_backbone.py), is the
  strong supervised reward backbone (`reward.backbone=fmnist_resnet`):
  built unlike FeatureNet (residual, GroupNorm, strided convolutions,
  GELU, a full-resolution first stage) and trained unlike it (random
  translation and flips, no dropout). Never used for evaluation.

Both take float images [B, 28, 28, 1] in [0, 1]. Retrain the shipped weights
with `python -m adagen_jax.pretrain --config=configs/pretrain/NAME.py`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adagen_jax import assets
from adagen_jax import errors

NUM_CLASSES = 10
# Per-pixel mean/std of the Fashion-MNIST train images; normalising inside the
# networks keeps the input convention [0, 1] everywhere else.
_MEAN, _STD = 0.2860, 0.3530

FEATURES_ASSET = 'fmnist_features.msgpack'
DISC_BACKBONE_ASSET = 'fmnist_disc_backbone.msgpack'
CONTRAST_ASSET = 'fmnist_contrast_backbone.msgpack'
RESNET_ASSET = 'fmnist_resnet_backbone.msgpack'


class FeatureNet(nn.Module):
  """VGG-style CNN: stages of [conv3x3-BN-ReLU] x n + max-pool, two dense.

  With the defaults: 28x28 -> conv 16, pool -> 14x14 -> conv 32 x2, pool ->
  7x7 -> conv 64 x2, pool -> 3x3x64 -> flatten -> dense 128 (ReLU: the
  embedding) -> dropout -> dense 10.

  Attributes:
    widths: channels of each conv stage.
    convs: convolutions in each stage.
    embed_dim: D, the embedding (penultimate, after ReLU) width.
    dropout: dropout rate on the embedding while training.
  """
  widths: Sequence[int] = (16, 32, 64)
  convs: Sequence[int] = (1, 2, 2)
  embed_dim: int = 128
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: float [B, 28, 28, 1] in [0, 1].

    Returns:
      embedding: float32 [B, embed_dim].
      logits: float32 [B, 10].
    """
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    h = (jnp.asarray(x, jnp.float32) - _MEAN) / _STD
    for stage, (width, convs) in enumerate(zip(self.widths, self.convs)):
      for i in range(convs):
        h = nn.Conv(width, (3, 3), use_bias=False, name=f'conv{stage}_{i}')(h)
        h = nn.relu(norm()(h))
      h = nn.max_pool(h, (2, 2), (2, 2))
    h = h.reshape(h.shape[0], -1)
    embedding = nn.relu(nn.Dense(self.embed_dim, name='embed')(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(embedding)
    logits = nn.Dense(NUM_CLASSES, name='head')(h)
    return embedding, logits


class _Block(nn.Module):
  """Pre-LN transformer block: x + MHSA(LN x), then x + MLP(LN x)."""
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
    y = nn.LayerNorm()(x)
    y = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp_dim)(y)))
    return x + y


class DiscBackbone(nn.Module):
  """Small ViT: a two-conv stem makes 7x7 = 49 tokens, then `depth` blocks.

  The stem (3x3 stride-2 convs, 28 -> 14 -> 7) replaces a 4x4 patchify
  layer: convolutional stems make ViTs train far faster, which matters for a
  network trained in minutes on a CPU. The token features mirror AdaNAT's
  DINO hooks (the embedded tokens plus block outputs before the final norm,
  adagen_reference.md §3.1): with the defaults, 1 + depth = 5 maps of
  [B, 49, 96]. There is no cls token, so no readout is needed; the
  classifier mean-pools the final normed tokens.

  Attributes:
    width: token width C.
    depth: number of transformer blocks.
    num_heads: attention heads.
    mlp_dim: hidden width of each block's MLP.
    stem_width: channels of the first stem conv.
  """
  width: int = 96
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 192
  stem_width: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: float [B, 28, 28, 1] in [0, 1].

    Returns:
      features: list of 1 + depth float32 [B, 49, width]: [embedded tokens
        (+ position), block 1 output, ..., block `depth` output].
      logits: float32 [B, 10].
    """
    del train  # No dropout or batch statistics; kept for a uniform API.
    h = (jnp.asarray(x, jnp.float32) - _MEAN) / _STD
    h = nn.gelu(nn.Conv(self.stem_width, (3, 3), strides=2, name='stem')(h))
    h = nn.Conv(self.width, (3, 3), strides=2, name='embedding')(h)
    h = h.reshape(h.shape[0], -1, self.width)
    pos = self.param('pos_embedding', nn.initializers.normal(0.02),
                     (1,) + h.shape[1:])
    h = h + pos
    features = [h]
    for i in range(self.depth):
      h = _Block(self.num_heads, self.mlp_dim, name=f'block{i}')(h)
      features.append(h)
    h = nn.LayerNorm(name='final_norm')(h).mean(axis=1)
    logits = nn.Dense(NUM_CLASSES, name='head')(h)
    return features, logits


class _ResBlock(nn.Module):
  """Pre-activation residual block: x + conv(act(GN(conv(act(GN x)))))."""
  groups: int

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    y = nn.Conv(width, (3, 3))(nn.gelu(nn.GroupNorm(self.groups)(x)))
    y = nn.Conv(width, (3, 3))(nn.gelu(nn.GroupNorm(self.groups)(y)))
    return x + y


class ContrastNet(nn.Module):
  """Residual CNN with GroupNorm: the self-supervised reward backbone.

  Built unlike FeatureNet (a VGG stack with BatchNorm and max-pooling,
  supervised) and DiscBackbone (a ViT on a strided stem): its first stage
  runs at the full 28x28 resolution, so its features keep the fine detail
  that separates a sharp sample from a blurred one, and it is trained on
  images only (no labels), as DINO is. Stages halve the side with a
  strided conv: 28 -> 14 -> 7.

  Attributes:
    widths: channels of each stage.
    groups: GroupNorm groups.
    num_classes: with > 0, a linear classifier on the last stage's mean
      feature (the supervised backbone); 0 for the self-supervised one.
  """
  widths: Sequence[int] = (16, 32, 64)
  groups: int = 4
  num_classes: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: float [B, 28, 28, 1] in [0, 1].

    Returns:
      features: list of float32 [B, L_s, widths[s]], one per stage (L = 784,
        196, 49 with the defaults).
      logits: float32 [B, num_classes], or None without a classifier.
    """
    del train  # No dropout or batch statistics; kept for a uniform API.
    h = (jnp.asarray(x, jnp.float32) - _MEAN) / _STD
    h = nn.Conv(self.widths[0], (3, 3), name='stem')(h)
    features = []
    for stage, width in enumerate(self.widths):
      if stage:
        h = nn.Conv(width, (3, 3), strides=2, name=f'down{stage}')(h)
      h = _ResBlock(self.groups, name=f'block{stage}')(h)
      features.append(h.reshape(h.shape[0], -1, width))
    if not self.num_classes:
      return features, None
    pooled = nn.gelu(nn.GroupNorm(self.groups, name='head_norm')(h)).mean(
        (1, 2))
    return features, nn.Dense(self.num_classes, name='head')(pooled)


NETS = {'features': (FeatureNet, FEATURES_ASSET),
        'disc_backbone': (DiscBackbone, DISC_BACKBONE_ASSET),
        'contrast_backbone': (ContrastNet, CONTRAST_ASSET),
        'resnet_backbone': (ContrastNet, RESNET_ASSET)}


def _load(net: str) -> tuple[nn.Module, Any]:
  cls, asset = NETS[net]
  path = assets.asset_path(asset)
  fix = ('retrain it with python -m adagen_jax.pretrain '
         f'--config=configs/pretrain/fmnist_{net}.py')
  variables = assets.load_variables(path, f'Fashion-MNIST {net} weights', fix)
  try:
    kwargs = assets.load_meta(path)['module']
  except (OSError, KeyError, ValueError):
    raise errors.UserError(f'metadata of {path} is missing or has no '
                           f'"module" entry; {fix}') from None
  # JSON has no tuples; module attributes must be hashable.
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  return cls(**kwargs), variables


def load_feature_net() -> tuple[FeatureNet, Any]:
  """(module, variables) of the shipped evaluation network."""
  return _load('features')


def load_disc_backbone() -> tuple[DiscBackbone, Any]:
  """(module, variables) of the shipped reward backbone."""
  return _load('disc_backbone')


def load_contrast_backbone() -> tuple[ContrastNet, Any]:
  """(module, variables) of the shipped self-supervised reward backbone."""
  return _load('contrast_backbone')


def load_resnet_backbone() -> tuple[ContrastNet, Any]:
  """(module, variables) of the shipped supervised residual backbone."""
  return _load('resnet_backbone')
