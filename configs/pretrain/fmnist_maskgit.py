"""The small Fashion-MNIST MaskGIT (VQ tokenizer + UViT), trained on CPU.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_maskgit.py \
      --workdir=/tmp/fmnist_maskgit

Writes adagen_jax/assets/fmnist_maskgit.{msgpack,json} (the sizes below must
match adagen_jax/configs/shipped.py, which samples it). A 14x14 grid of
2x2-pixel tokens: the 7x7 grid's tokenizer could not reconstruct the
strokes (FD-FMNIST 38 on the test split; this one 0.99). The transformer
reads 2x2 cells of ids (token_group=2, 49 positions), so it costs what a
7x7 model of its width does. The shipped weights took ~20 minutes
(tokenizer, 3000 steps) + ~3.3 hours (transformer, 12 000 steps at ~1
step/s) of wall time on the 2-core CPU shared with PPO runs, over three
sessions: each stage resumes from its Orbax checkpoint. The final evaluation
(3 seeds x T=4, 8, 16 x 5k samples) adds ~25 minutes (--config.eval.num=0
skips it). A rerun with the same --workdir reuses every finished stage.
Expected (docs/RESULTS.md, "The shipped 14x14 MaskGIT"): T=8 FD-FMNIST
13.40 +- 0.16 with the reference constants (10k samples, seeds 0-2).
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
      tokens=14,           # 14x14 token grid (28 / 2)
      codebook_size=512,
      width=128, depth=4, heads=4, mlp_ratio=4.0,
      token_group=2,       # g x g ids per transformer position
      tokenizer=dict(filters=32, channel_mult=(1, 2), num_res_blocks=1,
                     embedding_dim=16, norm_groups=32),
  ))
  # Sampling defaults written into the JSON (AdaGen's MaskGIT values).
  c.sampling = ml_collections.ConfigDict(dict(
      steps=16, schedule='cosine', smoothing=0.8, temp_init=1.0,
      samp_temp_init=1.0, cfg_init=1.0))

  # Small batches, many updates: for the same images seen, 4x the updates of
  # batch 128 gave much sharper reconstructions.
  c.tokenizer_train = ml_collections.ConfigDict(dict(
      steps=3000, batch_size=32, lr=1e-3, warmup_steps=100,
      commitment=0.25, ema_decay=0.99, restart_after=100))
  c.transformer_train = ml_collections.ConfigDict(dict(
      steps=12000, batch_size=128, lr=2e-3, warmup_steps=100, b1=0.9, b2=0.98,
      weight_decay=0.03, label_smoothing=0.1, p_uncond=0.15, dropout=0.0,
      ema_decay=0.998))
  # Final evaluation of the written asset (cosine schedule); num=0 skips it.
  c.eval = ml_collections.ConfigDict(dict(
      steps=(4, 8, 16), seeds=(0, 1, 2), num=5000, batch=500))
  return c
