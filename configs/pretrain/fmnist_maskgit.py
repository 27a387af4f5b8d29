"""The small Fashion-MNIST MaskGIT (VQ tokenizer + UViT), trained on CPU.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_maskgit.py \
      --workdir=/tmp/fmnist_maskgit

Writes adagen_jax/assets/fmnist_maskgit.{msgpack,json} (the sizes below must
match adagen_jax/configs/shipped.py, which samples it). Sizes are chosen for
2 CPU cores, where 10k samples at T=8 take a few minutes. The shipped weights
took 7 minutes (tokenizer) + 17 minutes (transformer) on 2 cores shared with
other jobs, then ~20 minutes for the final evaluation (3 seeds x T=4, 8, 16 x
5k samples; --config.eval.num=0 skips it). A rerun with the same --workdir
reuses every finished stage and the kept samples.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.trainer = 'maskgit'
  c.seed = 0
  c.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  c.output = ''    # '' = adagen_jax/assets/fmnist_maskgit.msgpack
  # True: stop after stage 1 and score the tokenizer's reconstructions of
  # the test split (tokenizer experiments; no asset is written).
  c.tokenizer_only = False

  # Sizes: the fields of a MaskGIT `config.generator`.
  c.model = ml_collections.ConfigDict(dict(
      image_size=28, image_channels=1, num_classes=10,
      tokens=7,            # 7x7 token grid (28 / 4)
      codebook_size=128,
      width=64, depth=4, heads=4, mlp_ratio=4.0,
      token_group=1,       # g x g ids per transformer position
      tokenizer=dict(filters=16, channel_mult=(1, 1, 2), num_res_blocks=1,
                     embedding_dim=16, norm_groups=32),
  ))
  # Sampling defaults written into the JSON (AdaGen's MaskGIT values).
  c.sampling = ml_collections.ConfigDict(dict(
      steps=16, schedule='cosine', smoothing=0.8, temp_init=1.0,
      samp_temp_init=1.0, cfg_init=1.0))

  # Small batches, many updates: for the same images seen, 4x the updates of
  # batch 128 gave much sharper reconstructions.
  c.tokenizer_train = ml_collections.ConfigDict(dict(
      steps=2400, batch_size=32, lr=1e-3, warmup_steps=100,
      commitment=0.25, ema_decay=0.99, restart_after=100))
  c.transformer_train = ml_collections.ConfigDict(dict(
      steps=1500, batch_size=128, lr=2e-3, warmup_steps=100, b1=0.9, b2=0.98,
      weight_decay=0.03, label_smoothing=0.1, p_uncond=0.15, dropout=0.0,
      ema_decay=0.998))
  # Final evaluation of the written asset (cosine schedule); num=0 skips it.
  c.eval = ml_collections.ConfigDict(dict(
      steps=(4, 8, 16), seeds=(0, 1, 2), num=5000, batch=500))
  return c
