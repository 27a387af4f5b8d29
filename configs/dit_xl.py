"""AdaGen on DiT-XL/2, ImageNet 256 x 256 (adagen_reference.md §6).

  python -m adagen_jax.generators.convert.dit \\
      --dit=DiT-XL-2-256x256.pt --vae=autoencoder_kl_ema.pth --out=weights
  python -m adagen_jax.main --config=configs/dit_xl.py --workdir=runs/dit_xl

DiT-XL/2 (VP diffusion, 32 x 32 x 4 SD latents, 1000 classes + null) with the
policy-timed DPM-Solver++ 2S: 16 model evaluations, 17 policy decisions
(start time + one per evaluation), heuristic times linspace(0.9, 0.01, 17),
guidance cond + w (cond - uncond) with w = 1.0 on latent channels 0-2,
action smoothing 0.4. The reference's paper figure: FID-50K 3.31 -> 2.19 at
16 NFE. Without the converted weights the run stops with the command above.
"""

import ml_collections

from adagen_jax.configs import experiment


def generator() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='dit',
      steps=16,                 # NFE; the policy makes steps + 1 decisions
      smoothing=0.4,
      cfg_init=1.0,             # heuristic w, standard CFG scale 1 + w
      solver='dpm2s',
      schedule='reference',     # heuristic grid: 'reference' | 'logsnr'
      t_start=0.9,              # VP time the heuristic starts from
      cfg_channels=3,           # latent channels that get guidance
      model=dict(input_size=32, in_channels=4, patch_size=2,
                 hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0,
                 num_classes=1000, learn_sigma=True),
      vae=dict(z_channels=4, scale_factor=0.18215, ch=128,
               ch_mult=(1, 2, 4, 4), num_res_blocks=2, out_channels=3,
               norm_groups=32),
      weights='weights/dit.msgpack',
      vae_weights='weights/sd_vae.msgpack',
      random_init=False,        # True: untrained weights (speed tests only)
      seed=0,
      dtype='float32',          # computation dtype ('bfloat16' on GPU/TPU)
      forward_rows=0,           # rows per device per forward; 0: all
  ))


def get_config(arg=None):
  return experiment.use_imagenet(
      experiment.adagen_config(generator(), arg))
