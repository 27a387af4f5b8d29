"""adagen_jax.ops on this CPU, against the jax.nn forms the networks used before.

  python benchmarks/ops.py

- attention: `jax.nn.dot_product_attention` against `ops.self_attention`
  (heads first, the softmax sum applied after the value product), from the
  qkv projection's outputs to the attention output;
- gelu: `jax.nn.gelu(approximate=False)` (erfc) against `ops.gelu` (erf,
  PyTorch's form), on the hidden activations of one MLP.

float32, one jit each, best of --repeats after a warm-up, on huge pages as
every project command runs (adagen_jax/cli.py). Shapes are one guided
forward's (the rollout's batch B doubled by guidance):
- fmnist: the shipped Fashion-MNIST MaskGIT at B=256 (7x7 cells of 2x2 ids
  + the class token, width 128, 4 heads); the SiT and DiT have one token
  fewer (7x7 patches);
- mid, mid32: issue 20's mid-size MaskGIT at B=8 and 32 (16x16 + 1 tokens,
  width 256, 8 heads).
"""

import argparse

import jax

from adagen_jax import cli
from adagen_jax import ops
import timing

SHAPES = {  # [2B, L, heads, head dim]
    'fmnist': (512, 50, 4, 32),
    'mid': (16, 257, 8, 32),
    'mid32': (64, 257, 8, 32),
}
MLP_RATIO = 4


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--shapes', default=','.join(SHAPES))
  p.add_argument('--repeats', type=int, default=10)
  args = p.parse_args()
  gelu_exact = lambda x: jax.nn.gelu(x, approximate=False)
  print(f'{"op":>9s} {"shape":>7s} {"input":>22s} | {"jax.nn ms":>9s} '
        f'{"ops ms":>8s} | speed-up')
  for name in args.shapes.split(','):
    b, l, h, d = SHAPES[name]
    keys = jax.random.split(jax.random.key(0), 4)
    qkv = [jax.random.normal(k, (b, l, h, d)) for k in keys[:3]]
    hidden = jax.random.normal(keys[3], (b * l, MLP_RATIO * h * d))
    for op, old, new, inputs in (
        ('attention', jax.nn.dot_product_attention, ops.self_attention, qkv),
        ('gelu', gelu_exact, ops.gelu, [hidden])):
      ms = [1e3 * timing.time_fn(jax.jit(fn), *inputs, repeats=args.repeats)
            for fn in (old, new)]
      shape = str(tuple(inputs[0].shape))
      print(f'{op:>9s} {name:>7s} {shape:>22s} | {ms[0]:9.2f} {ms[1]:8.2f} '
            f'| {ms[0] / ms[1]:.2f}x', flush=True)


if __name__ == '__main__':
  cli.reexec_with_huge_pages()
  main()
