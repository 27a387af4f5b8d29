"""DiscBackbone, the ViT whose tokens feed the reward discriminator.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_disc_backbone.py

Expected: test accuracy 0.849 after 4 epochs (shipped weights: 0.8493;
per-epoch 0.786 0.812 0.846 0.849). About 8 minutes on 2 idle CPU cores (936
steps at ~0.5 s); the shipped run took 48 minutes on a machine shared with
other jobs. More epochs (--config.epochs=8) should fit better; the reward
needs token features more than top accuracy. Writes
adagen_jax/assets/fmnist_disc_backbone.{msgpack,json}. Used by rewards only,
never by evaluation.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = 'classifier'
  config.net = 'disc_backbone'
  config.module = ml_collections.ConfigDict(
      dict(width=96, depth=4, num_heads=4, mlp_dim=192, stem_width=32))
  config.seed = 0
  config.batch_size = 256
  config.epochs = 4
  config.warmup_epochs = 0.5
  config.lr = 1e-3
  config.weight_decay = 0.05
  config.shift = 1  # pixels of random translation
  config.log_every = 50
  config.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  config.output = ''  # '' = adagen_jax/assets/fmnist_disc_backbone.msgpack
  return config
