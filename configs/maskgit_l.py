"""AdaGen on MaskGIT-L (ImageNet 256x256), the released AdaGen setting.

  python -m adagen_jax.main --config=configs/maskgit_l.py --workdir=runs/l

The published weights cannot be downloaded by this package; convert them once
(PyTorch needed only for this), and prepare ImageNet and the DINO weights of
the discriminator backbone:

  python -m adagen_jax.generators.convert.maskgit --uvit=MaskGIT-L.pth \
      --vqgan=vqgan_jax_strongaug.ckpt --out=weights
  bash launch/prepare_imagenet.sh /path/to/ILSVRC2012_tars
  cp dino_deitsmall16_pretrain.pth weights/

Reference training setting (adagen_reference.md §2-3): 4096 trajectories per
iteration in rollouts of 512 over a ('data',) mesh of all devices, 5 PPO
epochs at lr 1e-5, 5 discriminator steps of 512 fresh samples, sigma 0.6 ->
0.3 after 500 of 1000 iterations. The expected FID is the paper's 3.79 ->
2.41 at T=16 (not reproduced here: no weights or ImageNet on these machines).

(MaskGIT-L.pth: huggingface.co/nzl-thu/MaskGIT-L; vqgan_jax_strongaug.ckpt:
the MAGE tokenizer, adagen_reference.md §4.4.) Then e.g.

  python -m adagen_jax.sample --config=configs/maskgit_l.py --num=50000 \
      --policy=heuristic --out=maskgit_l_T16.npz
"""

import ml_collections

from adagen_jax.configs import experiment


def generator_config(arg=None) -> ml_collections.ConfigDict:
  del arg  # Handled by experiment.adagen_config.
  return ml_collections.ConfigDict(dict(
      name='maskgit',
      weights=('weights/maskgit_l_uvit.msgpack,'
               'weights/maskgit_l_vqgan.msgpack'),
      steps=16,
      schedule='cosine',
      smoothing=0.8,
      temp_init=1.0,
      samp_temp_init=1.0,
      cfg_init=1.0,
      image_size=256, image_channels=3, num_classes=1000,
      tokens=16, codebook_size=1024,
      # UViT: depth 24 -> 12 in_blocks + mid_block + 12 out_blocks.
      width=768, depth=24, heads=8, mlp_ratio=4.0,
      tokenizer=dict(filters=128, channel_mult=(1, 1, 2, 2, 4),
                     num_res_blocks=2, embedding_dim=256, norm_groups=32),
      forward_rows=0,  # rows per device per forward; 0: all (CPU: try 4-16)
  ))


def get_config(arg=None) -> ml_collections.ConfigDict:
  return experiment.use_imagenet(
      experiment.adagen_config(generator_config(arg), arg))
