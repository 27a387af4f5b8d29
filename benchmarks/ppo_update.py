"""Time of one PPO update (K epochs over all (trajectory, step) samples).

  python benchmarks/ppo_update.py --size=fmnist --trajectories=256 --steps=8
  python benchmarks/ppo_update.py --size=maskgit_l --trajectories=4096 \
      --steps=8 --obs_dtype=bfloat16            # on a GPU (H100 figures)

Random observations of the generator's feature shape and random returns; the
policy and critic at the config's size. Prints the best of --repeats (3)
timed updates after a warm-up (compile), and the same update with the
depthwise conv as a grouped `nn.Conv` (`--grouped_conv`, the form XLA:CPU
is slow at inside the epoch scan). --json=PATH also writes the rows
(benchmarks/gpu_suite.sh collects them).
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from adagen_jax import cli
from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import ppo as ppo_lib
import timing

# (tokens N, feature width C, policy hidden, action dims A)
SIZES = {
    'fmnist': (49, 64, 64, 4),         # the shipped MaskGIT, default config
    'maskgit_l': (256, 768, 512, 4),   # AdaGen's MaskGIT-L, reference policy
}


class _GroupedConv(nn.Module):
  """The depthwise conv as XLA's grouped convolution (for comparison)."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    return nn.Conv(c, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                   feature_group_count=c, name='grouped')(x)


def time_update(size: str, trajectories: int, steps: int, epochs: int,
                obs_dtype: str, repeats: int = 3, stats=None) -> float:
  """Best seconds of one jitted PPO update; see timing.time_fn for stats."""
  n, c, hidden, actions = SIZES[size]
  agent = policy_lib.make_agent(actions, steps, hidden_size=hidden)
  params = timing.init_agent(agent, (n, c), seed=0)
  m = trajectories * steps
  k1, k2 = jax.random.split(jax.random.key(1))
  batch = ppo_lib.PPOBatch(
      obs=jax.random.normal(k1, (m, n, c), obs_dtype),  # no f32 copy
      t=jnp.tile(jnp.arange(steps, dtype=jnp.int32), trajectories),
      raw=jnp.zeros((m, actions)), logp_old=jnp.zeros((m,)),
      baseline=jnp.zeros((m,)), returns=jax.random.normal(k2, (m,)))
  state = ppo_lib.create_train_state(params, 1e-5)
  update = timing.compile_reporting_memory(
      lambda s, b: ppo_lib.ppo_update(s, agent, b, jnp.float32(0.6),
                                      ppo_lib.PPOConfig(epochs=epochs)),
      state, batch)
  return timing.time_fn(update, state, batch, repeats=repeats, stats=stats)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', choices=sorted(SIZES), default='fmnist')
  p.add_argument('--trajectories', type=int, default=256)
  p.add_argument('--steps', type=int, default=8)
  p.add_argument('--epochs', type=int, default=5)
  p.add_argument('--obs_dtype', default='float32')
  p.add_argument('--grouped_conv', action='store_true',
                 help='also time the grouped-convolution form')
  p.add_argument('--repeats', type=int, default=3)
  timing.add_json_flag(p)
  args = p.parse_args()
  rows = timing.JsonRows(args.json, 'ppo_update', args)
  print(f'{jax.default_backend()} x{jax.device_count()}, size={args.size}, '
        f'{args.trajectories} trajectories x {args.steps} steps, '
        f'{args.epochs} epochs, obs {args.obs_dtype}')
  forms = [('strided slices', policy_lib.DepthwiseConv3x3S2)]
  if args.grouped_conv:
    forms.append(('grouped nn.Conv', _GroupedConv))
  original = policy_lib.DepthwiseConv3x3S2
  for name, cls in forms:
    policy_lib.DepthwiseConv3x3S2 = cls  # PolicyNet looks it up at call time
    stats = {}
    try:
      secs = time_update(args.size, args.trajectories, args.steps,
                         args.epochs, args.obs_dtype, args.repeats, stats)
    finally:
      policy_lib.DepthwiseConv3x3S2 = original
    print(f'  depthwise conv as {name:16s} {secs:8.3f} s per update')
    rows.add(form=name, seconds=secs, first_call_s=stats['first_call_s'],
             peak_gib=timing.peak_memory_gib() or None)


if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
