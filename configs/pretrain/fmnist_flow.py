"""The small Fashion-MNIST SiT (rectified flow) or DiT (VP diffusion).

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:sit \
      --workdir=/tmp/fmnist_sit
  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:dit \
      --workdir=/tmp/fmnist_dit

Writes adagen_jax/assets/fmnist_{sit,dit}.{msgpack,json}, sampled by
configs/fmnist_{sit,dit}.py. A DiT-style network in pixel space (adaLN-Zero,
patch 4 -> 7x7 tokens, width 128, 6 blocks) trained on the 60k training
images with the paradigm's objective (adagen_jax/pretrain/flow.py): SiT's
velocity on the linear interpolant, or DiT's eps on the VP-linear schedule.
The sampling defaults are the paradigm's reference values (SiT: start 0.01,
w = 1.5, smoothing 0.8; DiT: start 0.9, w = 1.0, smoothing 0.4). Measured
results are in docs/RESULTS.md and in the JSON beside the weights.
"""

import ml_collections


def get_config(paradigm: str = 'sit'):
  c = ml_collections.ConfigDict()
  c.trainer = 'flow'
  c.paradigm = paradigm  # 'sit' | 'dit'
  c.seed = 0
  c.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  c.output = ''    # '' = adagen_jax/assets/fmnist_{paradigm}.msgpack
  # The fields of dit_nets.DiT.
  c.model = ml_collections.ConfigDict(dict(
      input_size=28, in_channels=1, patch_size=4, hidden_size=128, depth=6,
      num_heads=4, mlp_ratio=4.0, num_classes=10, learn_sigma=False))
  dit = paradigm == 'dit'
  # Sampling defaults written into the JSON's generator section.
  c.sampling = ml_collections.ConfigDict(dict(
      steps=4, smoothing=0.4 if dit else 0.8, cfg_init=1.0 if dit else 1.5,
      solver='dpm2s', schedule='reference', t_start=0.9 if dit else 0.01,
      cfg_channels=1))
  c.train = ml_collections.ConfigDict(dict(
      steps=6000, batch_size=128, lr=1e-3, warmup_steps=200,
      weight_decay=0.0, grad_clip=1.0, p_uncond=0.1, ema_decay=0.999,
      t_range=(0.001, 1.0) if dit else (0.0, 1.0)))
  # Final evaluation of the written asset (hand-crafted grid); num=0 skips.
  c.eval = ml_collections.ConfigDict(dict(
      steps=(4, 8, 50), seeds=(0, 1, 2), num=5000, batch=500))
  return c
