"""FeatureNet, the evaluation network behind FD-FMNIST (adagen_jax.evaluate).

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_features.py

Expected: test accuracy 0.929 after 12 epochs (shipped weights: 0.9290;
per-epoch 0.845 0.892 0.896 0.904 0.905 0.908 0.920 0.922 0.925 0.928 0.930
0.929). About 9 minutes on 2 idle CPU cores (2808 steps at ~0.19 s); the
shipped run took 58 minutes on a machine shared with other jobs. Writes
adagen_jax/assets/fmnist_features.{msgpack,json}; retraining changes
FD-FMNIST values, so compare numbers only under the same weights.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = 'classifier'
  config.net = 'features'
  config.module = ml_collections.ConfigDict(
      dict(widths=(16, 32, 64), convs=(1, 2, 2), embed_dim=128, dropout=0.1))
  config.seed = 0
  config.batch_size = 256
  config.epochs = 12
  config.warmup_epochs = 0.5
  config.lr = 2e-3
  config.weight_decay = 0.02
  config.shift = 1  # pixels of random translation
  config.log_every = 50
  config.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  config.output = ''  # '' = adagen_jax/assets/fmnist_features.msgpack
  return config
