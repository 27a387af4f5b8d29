"""Self-attention on this CPU: XLA's dot_product_attention against ours.

  python benchmarks/attention.py          # the shapes of the rollouts below

`attention.self_attention` is what the generators call; on CPU it is the
heads-first form that divides by the softmax sum after the value product
(adagen_jax/generators/attention.py). `jax.nn.dot_product_attention` is
what they called before. Both time the qkv projection's outputs through to
the attention output, float32, one jit each, best of --repeats after a
warm-up; run on huge pages, as every project command is (adagen_jax/cli.py).

Shapes [B, L, H, D], each a guided forward's batch (2B of the rollout's B):
- fmnist: the shipped Fashion-MNIST MaskGIT at rollout batch 256 (7x7
  cells of 2x2 ids + the class token, width 128, 4 heads); the SiT and
  DiT have one token fewer (7x7 patches);
- mid: issue 20's mid-size MaskGIT at rollout batch 8 (16x16 + 1, width
  256, 8 heads);
- mid32: the same at rollout batch 32.
"""

import argparse

import jax

from adagen_jax import cli
from adagen_jax.generators import attention
import timing

SHAPES = {
    'fmnist': (512, 50, 4, 32),
    'mid': (16, 257, 8, 32),
    'mid32': (64, 257, 8, 32),
}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--shapes', default=','.join(SHAPES))
  p.add_argument('--repeats', type=int, default=10)
  args = p.parse_args()
  print(f'{"shape":>8s} {"B, L, H, D":>20s} | {"XLA dpa ms":>10s} '
        f'{"ours ms":>8s} | speed-up')
  for name in args.shapes.split(','):
    shape = SHAPES[name]
    q, k, v = (jax.random.normal(key, shape) for key in
               jax.random.split(jax.random.key(0), 3))
    ms = []
    for fn in (jax.nn.dot_product_attention, attention.self_attention):
      ms.append(1e3 * timing.time_fn(jax.jit(fn), q, k, v,
                                     repeats=args.repeats))
    print(f'{name:>8s} {str(shape):>20s} | {ms[0]:10.2f} {ms[1]:8.2f} | '
          f'{ms[0] / ms[1]:.2f}x', flush=True)
    del q, k, v


if __name__ == '__main__':
  cli.reexec_with_huge_pages()
  main()
