"""Timing helpers shared by the benchmark scripts (import as `timing`).

The scripts run as `python benchmarks/NAME.py`, which puts this directory on
sys.path, so `import timing` finds this module.
"""

import time

import jax
import jax.numpy as jnp

from adagen_jax.rl import rollout as rollout_lib


def time_fn(fn, *args, repeats=3):
  """Best wall time in seconds of `fn(*args)` over `repeats` timed runs.

  One untimed call first compiles and warms up; every call is waited for
  with `jax.block_until_ready`.
  """
  jax.block_until_ready(fn(*args))  # compile + warm up
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def matmul_tflops(dtype, n=None):
  """Measured dense [n, n] x [n, n] matmul rate in TFLOP/s (2 per MAC).

  n defaults to 8192 on accelerators and 1024 on the CPU.
  """
  if n is None:
    n = 8192 if jax.default_backend() != 'cpu' else 1024
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  return 2 * n**3 / time_fn(f, a) / 1e12


def peak_memory_gib(device=None):
  """Peak bytes in use on `device` so far in this process, in GiB.

  0.0 where the backend keeps no memory statistics (e.g. the CPU).
  """
  device = device or jax.devices()[0]
  stats = device.memory_stats() or {}
  return stats.get('peak_bytes_in_use', 0) / 2**30


def jitted_rollout(generator, agent):
  """jit of `run(params, agent_params, labels, rng, use_policy)` -> images.

  The parameters are arguments, not closed-over constants XLA would fold;
  use_policy=False runs the generator's hand-crafted schedule.
  """
  def run(params, agent_params, labels, rng, use_policy):
    act = (agent.make_act_fn(agent_params, jnp.float32(0.0), False)
           if use_policy else None)
    return rollout_lib.rollout(generator, params, labels, rng, act,
                               keep_obs=False).images
  return jax.jit(run, static_argnums=4)


def print_rollout_rows(run, params, agent_params, batches, num_classes,
                       flops_per_image, peak_tflops):
  """The rollout table of a `jitted_rollout`, one row per batch size.

  One row per batch size: images/s with the policy and with the
  hand-crafted schedule (the policy's share is the difference), model FLOPs
  utilisation against `peak_tflops`, and peak device memory so far.
  """
  print('batch  img/s(policy)  img/s(heuristic)  policy share  MFU   peak GiB')
  for b in batches:
    labels = jnp.arange(b, dtype=jnp.int32) % num_classes
    rng = jax.random.key(3)
    t_pol = time_fn(run, params, agent_params, labels, rng, True)
    t_heu = time_fn(run, params, agent_params, labels, rng, False)
    mfu = flops_per_image * b / t_pol / 1e12 / peak_tflops
    print(f'{b:5d}  {b / t_pol:13.1f}  {b / t_heu:16.1f}  '
          f'{max(0.0, 1 - t_heu / t_pol):11.1%}  {mfu:5.1%}  '
          f'{peak_memory_gib():8.2f}')
