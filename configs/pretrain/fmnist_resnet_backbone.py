"""The supervised residual reward backbone: ContrastNet's CNN with a classifier.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_resnet_backbone.py

Writes adagen_jax/assets/fmnist_resnet_backbone.{msgpack,json}, read by
`--config.reward.backbone=fmnist_resnet`. Why: the FD reward on
DiscBackbone (a ViT at 0.849 test accuracy) ranks samples unlike the
evaluation, while FeatureNet's own features (the diagnostic) let PPO beat
the tuned schedules (docs/RESULTS.md); issue 19 asks for a stronger reward
backbone built and trained unlike FeatureNet. This one is residual with
GroupNorm, strided convolutions and a full-resolution first stage, trained
with translations and flips and no dropout (FeatureNet: a VGG stack with
BatchNorm, max-pooling and dropout). Used by rewards only, never by
evaluation. Expected and cost: docs/RESULTS.md, "Fashion-MNIST evaluation
networks".
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = 'classifier'
  config.net = 'resnet_backbone'
  config.module = ml_collections.ConfigDict(
      dict(widths=(16, 32, 64), groups=4, num_classes=10))
  config.seed = 0
  config.batch_size = 128
  config.epochs = 6
  config.warmup_epochs = 0.25
  config.lr = 2e-3
  config.weight_decay = 1e-4
  config.shift = 2  # pixels of random translation (+ random flip)
  config.log_every = 50
  config.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  config.output = ''  # '' = adagen_jax/assets/fmnist_resnet_backbone.msgpack
  return config
