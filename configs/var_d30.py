"""AdaGen on VAR-d30 (FoundationVision/VAR), ImageNet 256x256.

  python -m adagen_jax.generators.convert.var --var=var_d30.pth \
      --vae=vae_ch160v4096z32.pth --out=weights
  python -m adagen_jax.main --config=configs/var_d30.py --workdir=runs/var_d30

The checkpoints are https://huggingface.co/FoundationVision/var
var_d30.pth and vae_ch160v4096z32.pth. As configs/var_d16.py, with cfg 2.0
(adagen_reference.md §1.4; reported FID 1.92 -> 1.59 with AdaGen).
"""

import ml_collections

from adagen_jax.configs import experiment

DEPTH = 30


def generator(depth: int, cfg: float) -> ml_collections.ConfigDict:
  """The `generator` section of a published VAR-d{depth}."""
  return ml_collections.ConfigDict(dict(
      name='var',
      steps=10,  # = len(patch_nums): one step per scale
      depth=depth, width=64 * depth, num_heads=depth, mlp_ratio=4.0,
      shared_aln=False, attn_l2_norm=True, num_classes=1000,
      patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
      dtype='float32',  # transformer compute and KV cache
      vae=dict(vocab_size=4096, z_channels=32, ch=160,
               ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, using_sa=True,
               using_mid_sa=True, quant_resi=0.5, share_quant_resi=4,
               image_channels=3, norm_groups=32),
      # The hand-crafted schedule (VAR's published settings).
      cfg=cfg, top_k=900.0, top_p=0.96, samp_temp=1.0,
      smoothing=0.0,
      obs_side=16,  # observations: hidden states bicubic-resized to 16x16
      var_weights=f'weights/var_d{depth}.msgpack',
      vae_weights='weights/vae_ch160v4096z32.msgpack',
      random_init=False,  # True: untrained weights (speed tests only)
      seed=0,
  ))


def get_config(arg=None):
  return experiment.use_imagenet(
      experiment.adagen_config(generator(DEPTH, cfg=2.0), arg))
