"""Time of one discriminator update of the adversarial reward.

  python benchmarks/discriminator_step.py --size=imagenet --batch=256 \
      --dtype=bfloat16                              # on a GPU (H100 figures)
  python benchmarks/discriminator_step.py --size=imagenet --batch=256
  python benchmarks/discriminator_step.py --size=fmnist --batch=256  # CPU

One step is `AdversarialReward.update` (rl/rewards.py), as train.py's d_step
runs it on given fakes: `batch` real and `batch` generated images through the
frozen backbone (random crop with p_crop), the projected discriminator heads
on both (two training-mode forwards), the BCE loss, its gradient and the
Adam update. The rollout that makes fresh fakes is not included. Images and
labels are random.

  imagenet  the reward section of configs/maskgit_l.py: DINO ViT-S/16
            (random weights) on 256 x 256 RGB, cropped or area-resized to
            224, 5 feature sets of 196 tokens x 384, 1000 classes, mapping
            network of 8 layers.
  fmnist    the reward section of configs/fmnist_maskgit.py (as adversarial;
            the config trains with FD on the same backbone): the shipped
            Fashion-MNIST backbone (adagen_jax/assets) on 28 x 28 x 1,
            translate-crop (pad 2), 10 classes, mapping network of 2 layers.

--dtype is the DINO backbone's compute dtype (its parameters stay float32);
the discriminator heads, the mapping network and the Fashion-MNIST backbone
have no dtype knob and always run in float32.

Prints the best of --repeats (3) timed steps after a warm-up (compile) step,
images/s (2 x batch images per step) and peak device memory so far where
the backend reports it. With the same rng every timed step takes the same
branch of the random crop (crop or area-resize). --json=PATH also writes
the row (benchmarks/gpu_suite.sh collects it). Results go into
docs/RESULTS.md by hand, with the command and machine.
"""

import argparse

import jax
import jax.numpy as jnp

from adagen_jax import cli
from adagen_jax.backbones import dino_vit
from adagen_jax.rl import rewards as rewards_lib
import timing


# size -> (config file, image shape, number of classes)
SIZES = {
    'imagenet': ('maskgit_l', (256, 256, 3), 1000),
    'fmnist': ('fmnist_maskgit', (28, 28, 1), 10),
}


def make_backbone(reward_config, dtype) -> rewards_lib.Backbone:
  """train.make_backbone, with random DINO weights instead of the .pth."""
  if reward_config.backbone == 'fmnist':
    return rewards_lib.fmnist_backbone()
  if reward_config.backbone != 'dino_vits16':
    raise SystemExit(f'unknown backbone {reward_config.backbone!r}')
  model = dino_vit.DinoViT(dtype=dtype)
  variables = jax.jit(model.init)(
      jax.random.key(0), jnp.zeros((1, model.image_size, model.image_size, 3)))
  return rewards_lib.Backbone(apply=lambda v, x: (model.apply(v, x), None),
                              variables=variables, readout=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', default='fmnist', choices=sorted(SIZES))
  p.add_argument('--batch', type=int, default=256,
                 help='real images per step (and as many generated ones)')
  p.add_argument('--dtype', default='float32',
                 help="the DINO backbone's compute dtype")
  p.add_argument('--repeats', type=int, default=3)
  timing.add_json_flag(p)
  args = p.parse_args()
  rows = timing.JsonRows(args.json, 'discriminator_step', args)
  if args.batch % 8:
    raise SystemExit(f'--batch={args.batch}: use a multiple of 8 (the '
                     "discriminator's BatchNormLocal groups).")
  config_name, image_shape, num_classes = SIZES[args.size]
  reward_config = timing.config_module(config_name).get_config().reward
  # The config's sizes and settings; the adversarial reward whatever the
  # config trains with (the Fashion-MNIST MaskGIT's recipe uses FD).
  reward_config.name = 'adversarial'
  backbone = make_backbone(reward_config, jnp.dtype(args.dtype))
  model = rewards_lib.make_reward(reward_config, backbone, num_classes)

  b = args.batch
  keys = jax.random.split(jax.random.key(1), 6)
  real = jax.random.uniform(keys[0], (b,) + image_shape, jnp.float32)
  fake = jax.random.uniform(keys[1], (b,) + image_shape, jnp.float32)
  real_labels = jax.random.randint(keys[2], (b,), 0, num_classes, jnp.int32)
  fake_labels = jax.random.randint(keys[3], (b,), 0, num_classes, jnp.int32)
  state = jax.jit(model.init)(keys[4], real[:8], real_labels[:8])

  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  n_frozen = sum(x.size for x in jax.tree.leaves(state.frozen))
  dtype = args.dtype if args.size == 'imagenet' else 'float32'
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'{args.size}: backbone {reward_config.backbone} '
        f'({n_frozen / 1e6:.1f}M frozen, {dtype}) at crop '
        f'{reward_config.crop_size}, heads {n_params / 1e6:.2f}M (float32), '
        f'{b} real + {b} generated {"x".join(map(str, image_shape))} '
        f'images per step, loss {reward_config.loss}, p_crop '
        f'{reward_config.p_crop}')
  stats = {}
  update = timing.compile_reporting_memory(
      model.update, state, real, real_labels, fake, fake_labels, keys[5])
  secs = timing.time_fn(update, state, real, real_labels, fake, fake_labels,
                        keys[5], repeats=args.repeats, stats=stats)
  peak = timing.peak_memory_gib()
  print('batch  s/step   img/s  peak GiB')
  print(f'{b:5d}  {secs:6.3f}  {2 * b / secs:6.0f}  {peak:8.2f}')
  rows.add(batch=b, seconds=secs, img_per_s=2 * b / secs, peak_gib=peak or None,
           first_call_s=stats['first_call_s'])


if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
