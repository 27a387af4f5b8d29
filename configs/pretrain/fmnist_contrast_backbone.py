"""ContrastNet, the self-supervised reward backbone (no labels; SimCLR).

  python -m adagen_jax.pretrain \
      --config=configs/pretrain/fmnist_contrast_backbone.py \
      --workdir=runs/contrast_backbone

Writes adagen_jax/assets/fmnist_contrast_backbone.{msgpack,json}, read by
`--config.reward.backbone=fmnist_contrast`. Expected: a 20-nearest-
neighbour probe of the embedding classifies 0.742 of the test images
(shipped weights; DiscBackbone's supervised head: 0.849); ~21 min with the
2 cores shared (docs/RESULTS.md, "Fashion-MNIST evaluation networks").
Resumable: rerun the same command after a stop. Used by rewards only,
never by evaluation.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = 'contrastive'
  config.module = ml_collections.ConfigDict(dict(widths=(16, 32, 64),
                                                 groups=4))
  config.train = ml_collections.ConfigDict(dict(
      steps=2000, batch_size=128, lr=2e-3, warmup_steps=100,
      weight_decay=1e-4, ema_decay=0.99,
      temperature=0.2,   # SimCLR's small-batch value
      proj_dim=64,
      shift=3,           # pixels of random translation (+ random flip)
      cutout=10, p_cutout=0.5))
  config.knn_k = 20
  config.seed = 0
  config.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  config.output = ''  # '' = adagen_jax/assets/fmnist_contrast_backbone.msgpack
  return config
