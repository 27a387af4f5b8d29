"""Rollout speed of a MaskGIT generator with the AdaGen policy (random weights).

  python benchmarks/maskgit_rollout.py --size=maskgit_l --batches=64,256,1024 \
      --steps=8 --dtype=bfloat16            # on a GPU (H100 figures)
  python benchmarks/maskgit_rollout.py --size=tiny --batches=8,32   # CPU check
  python benchmarks/maskgit_rollout.py --size=fmnist --batches=256  # issue 18

`fmnist` is the shipped Fashion-MNIST MaskGIT's sizes (adagen_jax/configs/
shipped.py; random weights), `tiny` the 7x7 one it replaced.

Prints one row per batch size: images/s of the guided rollout with the
policy as training runs it (exploring actor, critic values, observations
kept; timing.policy_rollout), the same rollout with the hand-crafted
schedule as sampling runs it (the policy's share is the difference), model
FLOPs utilisation against a measured dense matmul rate in the same dtype,
and peak device memory where the backend reports it. Times are the best of
--repeats after a warm-up (compile) run; --json=PATH also writes the rows
(benchmarks/gpu_suite.sh collects them). Results go into docs/RESULTS.md by
hand, with the command and machine.
"""

import argparse

import jax
import jax.numpy as jnp
import ml_collections

from adagen_jax import cli
from adagen_jax.configs import shipped
from adagen_jax.generators import maskgit
from adagen_jax.rl import policy as policy_lib
import timing

_TOKENIZER = dict(filters=32, channel_mult=(1, 1, 2), num_res_blocks=1,
                  embedding_dim=32, norm_groups=8)
SIZES = {
    # AdaGen's MaskGIT-L (ImprovedNAT / AutoNAT-L): 25 blocks of width 768.
    'maskgit_l': dict(width=768, depth=24, heads=8, tokens=16,
                      codebook_size=1024, num_classes=1000, hidden=512),
    'tiny': dict(width=64, depth=4, heads=4, tokens=7, codebook_size=128,
                 num_classes=10, hidden=64),
}


def get_size(name: str) -> dict:
  """Sizes of --size; 'fmnist' reads the shipped generator's section."""
  if name != 'fmnist':
    size = SIZES[name]
    return dict(size, token_group=1, image_size=size['tokens'] * 4,
                image_channels=3, tokenizer=_TOKENIZER)
  g = shipped.fmnist_maskgit_generator()
  return dict(width=g.width, depth=g.depth, heads=g.heads, tokens=g.tokens,
              codebook_size=g.codebook_size, num_classes=g.num_classes,
              hidden=64, token_group=g.get('token_group', 1),
              image_size=g.image_size, image_channels=g.image_channels,
              tokenizer=g.tokenizer.to_dict())


def forward_flops(size, tokens):
  """Matmul FLOPs of one transformer forward per image (2 per MAC)."""
  w, blocks = size['width'], size['depth'] + 1
  g2 = size.get('token_group', 1) ** 2
  n = tokens // g2 + 1  # positions (g x g cells of ids) + class token
  per_block = 2 * n * (4 * w * w + 2 * 4 * w * w) + 2 * 2 * n * n * w
  skips = size['depth'] // 2 * 2 * n * 2 * w * w
  # Dense per position, then logits per id against w / g^2-d embeddings.
  head = 2 * (n - 1) * w * w + 2 * tokens * w // g2 * (size['codebook_size']
                                                      + 1)
  return blocks * per_block + skips + head


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--size', default='tiny', choices=sorted(SIZES) + ['fmnist'])
  p.add_argument('--batches', default='8,32')
  p.add_argument('--steps', type=int, default=8)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--forward_rows', type=int, default=0,
                 help="generator.forward_rows: the guided forward's rows per "
                 'device at once (0: the whole batch)')
  timing.add_json_flag(p)
  args = p.parse_args()
  rows = timing.JsonRows(args.json, 'maskgit_rollout', args)
  size = get_size(args.size)
  dtype = jnp.dtype(args.dtype)
  tokens = size['tokens'] ** 2
  cfg = ml_collections.ConfigDict(dict(
      image_size=size['image_size'], image_channels=size['image_channels'],
      tokens=size['tokens'], codebook_size=size['codebook_size'],
      num_classes=size['num_classes'], width=size['width'],
      depth=size['depth'], heads=size['heads'], mlp_ratio=4.0,
      token_group=size['token_group'], steps=args.steps, schedule='cosine',
      smoothing=0.0, temp_init=1.0, samp_temp_init=1.0, cfg_init=1.0,
      tokenizer=size['tokenizer']))
  tokenizer, transformer = maskgit.make_nets(cfg)
  pixels = size['image_size']
  image = (pixels, pixels, size['image_channels'])

  @jax.jit
  def init():  # jitted: eager inits take a minute on a busy CPU
    params = {
        'tokenizer': tokenizer.init(jax.random.key(0), jnp.zeros(
            (1,) + image))['params'],
        'transformer': transformer.init(
            jax.random.key(1), jnp.zeros((1, tokens), jnp.int32),
            jnp.zeros((1,), jnp.int32))['params'],
    }
    return jax.tree.map(lambda x: x.astype(dtype), params)

  params = init()
  gen = maskgit.MaskGITGenerator(
      tokenizer=tokenizer, transformer=transformer,
      action_spec=maskgit.make_action_spec(cfg), num_steps=args.steps,
      image_shape=image, weights='random',
      schedule='cosine', forward_rows=args.forward_rows)
  agent = policy_lib.make_agent(4, args.steps, hidden_size=size['hidden'])
  agent_params = timing.init_agent(agent, gen.obs_shape)

  run = timing.jitted_rollout(gen, agent)
  peak = timing.matmul_tflops(dtype)
  flops_per_image = 2 * forward_flops(size, tokens) * (args.steps + 1)
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'{args.size}, T={args.steps}, {args.dtype}, measured matmul '
        f'{peak:.1f} TFLOP/s, {flops_per_image / 1e9:.1f} GFLOP/image')
  batches = [int(x) for x in args.batches.split(',')]
  rows.note(matmul_tflops=peak, flops_per_image=flops_per_image)
  timing.print_rollout_rows(run, params, agent_params, batches,
                            size['num_classes'], flops_per_image, peak,
                            repeats=args.repeats, rows=rows)

if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
