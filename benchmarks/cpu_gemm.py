"""The mid-size MaskGIT's MLP GEMMs on this CPU: XLA's flags against PyTorch.

  python benchmarks/cpu_gemm.py [--rows=4112] [--width=256] [--threads=2]

Times relu(x @ w1) @ w2 with x [rows, width], w1 [width, 4 width], w2 back
(the transformer's MLP at one guided forward of batch 8: 16 x 257 tokens)
in float32 and bfloat16, once per XLA flag set below and once in PyTorch,
each in its own process with --threads threads. Prints GFLOP/s (2 per
multiply-add, best of --repeats): whether a flag or a number format would
let XLA's rollout run faster than it does (docs/RESULTS.md "Speed").
"""

import argparse
import os
import subprocess
import sys
import time

# XLA:CPU's dot emitters: the default, and the library fusions of jaxlib
# 0.10's XLA (experimental flags: the set of libraries and names changes).
FLAG_SETS = {
    'xla default': '',
    'xla onednn fusion': '--xla_cpu_experimental_onednn_fusion_type=dot',
    'xla xnnpack fusion': '--xla_cpu_experimental_xnn_fusion_type=dot',
    'xla ynnpack fusion': '--xla_cpu_experimental_ynn_fusion_type=dot',
}


def mlp_gflop_s(rows: int, width: int, secs: float) -> float:
  """GFLOP/s of relu(x W1) W2, x [rows, width], W1 [width, 4 width]."""
  return 2 * 2 * rows * width * 4 * width / secs / 1e9


def jax_mlp_gflop_s(rows: int, width: int, dtype: str = 'float32',
                    repeats: int = 20, place=lambda x, w1, w2: (x, w1, w2)
                    ) -> float:
  """XLA's rate on the MLP pair (best of `repeats` after a warm-up).

  `place(x, w1, w2)` puts the operands on devices (e.g. x split over a mesh).
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  # pylint: enable=g-import-not-at-top
  dtype = jnp.dtype(dtype)
  ops = place(jnp.ones((rows, width), dtype),
              jnp.full((width, 4 * width), 0.01, dtype),
              jnp.full((4 * width, width), 0.01, dtype))
  mlp = jax.jit(lambda x, a, b: jax.nn.relu(x @ a) @ b)
  jax.block_until_ready(mlp(*ops))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(mlp(*ops))
    times.append(time.perf_counter() - t0)
  return mlp_gflop_s(rows, width, min(times))


def torch_mlp_gflop_s(rows: int, width: int, dtype: str = 'float32',
                      repeats: int = 20) -> float:
  """PyTorch's rate on the same pair, with its current thread count."""
  import torch  # pylint: disable=g-import-not-at-top
  dtype = getattr(torch, dtype)
  x = torch.ones(rows, width, dtype=dtype)
  w1 = torch.full((width, 4 * width), 0.01, dtype=dtype)
  w2 = torch.full((4 * width, width), 0.01, dtype=dtype)
  with torch.inference_mode():
    torch.relu(x @ w1) @ w2
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      torch.relu(x @ w1) @ w2
      times.append(time.perf_counter() - t0)
  return mlp_gflop_s(rows, width, min(times))


def _child(args):
  if args.framework == 'torch':
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.threads)
    rate = torch_mlp_gflop_s(args.rows, args.width, args.dtype, args.repeats)
  else:
    rate = jax_mlp_gflop_s(args.rows, args.width, args.dtype, args.repeats)
  print(f'GFLOPS {rate:.1f}')


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--rows', type=int, default=16 * 257)
  p.add_argument('--width', type=int, default=256)
  p.add_argument('--threads', type=int, default=os.cpu_count())
  p.add_argument('--repeats', type=int, default=20)
  p.add_argument('--framework', default='', help='(set for child processes)')
  p.add_argument('--dtype', default='float32')
  args = p.parse_args()
  if args.framework:
    return _child(args)
  print(f'relu([{args.rows}, {args.width}] x [{args.width}, '
        f'{4 * args.width}]) x [{4 * args.width}, {args.width}], '
        f'{args.threads} threads: GFLOP/s')
  print(f'{"":20s} {"float32":>9s} {"bfloat16":>9s}')
  runs = [(name, 'jax', flags) for name, flags in FLAG_SETS.items()]
  runs.append(('pytorch', 'torch', ''))
  for name, framework, flags in runs:
    rates = []
    for dtype in ('float32', 'bfloat16'):
      env = dict(os.environ, XLA_FLAGS=flags,
                 OMP_NUM_THREADS=str(args.threads))
      out = subprocess.run(
          [sys.executable, __file__, f'--framework={framework}',
           f'--dtype={dtype}'] + [f'--{k}={getattr(args, k)}' for k in
                                  ('rows', 'width', 'threads', 'repeats')],
          env=env, capture_output=True, text=True, check=True)
      rates.append(float(out.stdout.split('GFLOPS')[-1]))
    print(f'{name:20s} {rates[0]:9.1f} {rates[1]:9.1f}', flush=True)


if __name__ == '__main__':
  from adagen_jax import cli  # pylint: disable=g-import-not-at-top
  cli.reexec_with_huge_pages()
  main()
