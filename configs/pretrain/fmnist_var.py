"""The small Fashion-MNIST VAR (multi-scale VQVAE + next-scale transformer).

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_var.py \
      --workdir=/tmp/fmnist_var

Writes adagen_jax/assets/fmnist_var.{msgpack,json} and fmnist_var_vqvae.msgpack,
sampled by configs/fmnist_var.py; adagen_jax/pretrain/var.py says how. The
sizes are adagen_jax/configs/shipped.py's `fmnist_var_generator`. VAR's
structure at Fashion-MNIST size: 28x28 -> 7x7x16 latents (3 levels, 2
down-samplings), 256 codes quantised residually at scales 1, 2, 3, 4, 5, 7
(104 tokens, 6 sampling steps), a depth-6 transformer of width 192. The
hand-crafted sampler is VAR's published one (guidance 1.5 ramped over the
scales, top-p 0.96, temperature 1) with top-k scaled to the codebook
(900 of 4096 -> 64 of 256). Sized for a GPU; measured results in
docs/RESULTS.md and the JSON beside the weights.
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
  # Sizes and sampler: the shipped generator section (one source of truth).
  gen = shipped.fmnist_var_generator().to_dict()
  c.model = ml_collections.ConfigDict(
      {k: v for k, v in gen.items() if k not in _NOT_MODEL})
  c.sampling = ml_collections.ConfigDict({k: gen[k] for k in _SAMPLING})
  c.vqvae_train = ml_collections.ConfigDict(dict(
      steps=5000, batch_size=64, lr=1e-3, warmup_steps=200, beta=0.25,
      restart_after=200))
  c.var_train = ml_collections.ConfigDict(dict(
      steps=8000, batch_size=128, lr=1e-3, warmup_steps=300,
      weight_decay=0.05, label_smoothing=0.1, p_uncond=0.1,
      ema_decay=0.999))
  # Final evaluation of the written asset; num=0 skips it.
  c.eval = ml_collections.ConfigDict(dict(seeds=(0, 1, 2), num=5000,
                                          batch=500))
  return c
