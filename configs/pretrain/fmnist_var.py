"""The small Fashion-MNIST VAR (multi-scale VQVAE + next-scale transformer).

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_var.py \
      --workdir=runs/fmnist_var_pretrain

Writes adagen_jax/assets/fmnist_var.{msgpack,json} and fmnist_var_vqvae.msgpack,
sampled by configs/fmnist_var.py; adagen_jax/pretrain/var.py says how. The
sizes are adagen_jax/configs/shipped.py's `fmnist_var_generator`. VAR's
structure at Fashion-MNIST size: 28x28 -> 7x7x16 latents (3 levels, 2
down-samplings), 512 codes quantised residually at scales 1, 2, 3, 4, 5, 7
(104 tokens, 6 sampling steps), a depth-6 transformer of width 128 (4 heads).
The hand-crafted sampler is VAR's published one (guidance 1.5 ramped over
the scales, top-p 0.96, temperature 1) with top-k at its fraction of the
codebook (900 of 4096 -> 112 of 512).

Sized for the 2-core CPU. Measured per step with
benchmarks/var_train_step.py (CPU time of one XLA thread, with two PPO jobs
on the two cores, so upper bounds; 2026-12-05): the VQVAE 0.27 s per 32
images (29 GFLOP), the transformer 1.42 s per 128 token maps (116 GFLOP).
So 8000 + 6000 steps take ~35 min + ~2.4 h of one core. (The width-192,
256-code design: 5000 x 0.49 s + 8000 x 2.29 s = 0.7 + 5.1 h; 0.9 + 8 h
without the huge-page allocator that every command now sets up
(adagen_jax/cli.py), 1.7 + 18 h in docs/RESULTS.md's pinned-core
measurement.) Stage 2 first tokenizes the 70k images (~2 min); the final evaluation (reconstructions,
then 3 seeds x 5k samples) adds ~10 minutes (--config.eval.num=0 skips it).
Each stage resumes from its Orbax checkpoint in --workdir, so the run may
span sessions: rerun the same command. To check the tokenizer (its test
reconstructions should reach FD-FMNIST <= ~5) before the transformer's
hours: the same command with --config.vqvae_only=True, then without it
(the finished VQVAE is reused).
"""

import ml_collections

from adagen_jax.configs import shipped

_SAMPLING = ('cfg', 'top_k', 'top_p', 'samp_temp', 'smoothing', 'obs_side')
_NOT_MODEL = _SAMPLING + ('name', 'steps', 'var_weights', 'vae_weights')


def get_config():
  c = ml_collections.ConfigDict()
  c.trainer = 'var'
  c.seed = 0
  c.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  c.output = ''    # '' = adagen_jax/assets/fmnist_var.msgpack
  # True: stop after stage 1 and score the VQVAE's reconstructions of the
  # test split (tokenizer check; no asset is written).
  c.vqvae_only = False
  # Sizes and sampler: the shipped generator section (one source of truth).
  gen = shipped.fmnist_var_generator().to_dict()
  c.model = ml_collections.ConfigDict(
      {k: v for k, v in gen.items() if k not in _NOT_MODEL})
  c.sampling = ml_collections.ConfigDict({k: gen[k] for k in _SAMPLING})
  # Small batches, many updates (the MaskGIT tokenizer's finding): batch 32
  # costs half of batch 64 per step, so 8000 steps see 256k images in ~35
  # minutes.
  c.vqvae_train = ml_collections.ConfigDict(dict(
      steps=8000, batch_size=32, lr=1e-3, warmup_steps=200, beta=0.25,
      restart_after=200))
  # 6000 x 128 maps: ~13 epochs of the train split in ~2.4 h of one core.
  c.var_train = ml_collections.ConfigDict(dict(
      steps=6000, batch_size=128, lr=1e-3, warmup_steps=300,
      weight_decay=0.05, label_smoothing=0.1, p_uncond=0.1,
      ema_decay=0.999))
  # Final evaluation of the written asset; num=0 skips it.
  c.eval = ml_collections.ConfigDict(dict(seeds=(0, 1, 2), num=5000,
                                          batch=500))
  return c
