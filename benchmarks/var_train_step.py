"""Per-step cost of the Fashion-MNIST VAR trainer's two stages.

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false \
      intra_op_parallelism_threads=1" \
      python benchmarks/var_train_step.py [--stage=vqvae|var|both] \
      [--set=model.width=192 --set=model.num_heads=6 ...]

Times adagen_jax/pretrain/var.py's jitted VQVAE and transformer steps at
configs/pretrain/fmnist_var.py's sizes (overridden by --set, dotted keys of
that config; values are Python literals) on random images and token maps:
wall time, and the process's user and system CPU time per step (medians
over --steps after a warm-up). With one XLA thread as above, user + system
is the step's cost on one idle core, even with other jobs on the machine.
Like every command, it runs on huge pages (adagen_jax/cli.py);
GLIBC_TUNABLES=glibc.malloc.hugetlb=0 measures glibc's default allocation
(much more system time).
"""

import argparse
import ast
import functools
import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adagen_jax import cli
from adagen_jax.generators import var
from adagen_jax.generators import var_nets
from adagen_jax.generators import var_vqvae
from adagen_jax.pretrain import common
from adagen_jax.pretrain import var as var_pretrain

_CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                       'pretrain', 'fmnist_var.py')


def _config(overrides):
  spec = importlib.util.spec_from_file_location('fmnist_var', _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in overrides:
    key, value = item.split('=', 1)
    *path, leaf = key.split('.')
    section = config
    for name in path:
      section = section[name]
    section[leaf] = ast.literal_eval(value)
  return config


def _time(name, step, state, args, steps, flops):
  """Prints wall and CPU time per step; `step` returns (state, *outputs)."""
  state, *out = step(state, *args)  # compiles
  jax.block_until_ready(out)
  wall, user, system = [], [], []
  for _ in range(steps):
    t0, c0 = time.perf_counter(), os.times()
    state, *out = step(state, *args)
    jax.block_until_ready(out)
    c1 = os.times()
    wall.append(time.perf_counter() - t0)
    user.append(c1.user - c0.user)
    system.append(c1.system - c0.system)
  cpu = np.median(np.add(user, system))
  print(f'{name}: wall {np.median(wall):.3f} s, CPU {cpu:.3f} s (user '
        f'{np.median(user):.3f}, system {np.median(system):.3f}) per step; '
        f'{flops / 1e9:.1f} GFLOP, {flops / 1e9 / cpu:.0f} GFLOP/s of CPU',
        flush=True)


def _flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)['flops']


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--stage', choices=('vqvae', 'var', 'both'),
                      default='both')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--set', action='append', default=[],
                      help='dotted config key=value, e.g. model.width=192')
  args = parser.parse_args()
  config = _config(args.set)
  net, vae = var.modules_from_config(var_pretrain.generator_config(config,
                                                                   ''))
  vae_vars = vae.init(jax.random.key(0), var_vqvae.init_inputs(vae))
  print(f'{jax.devices()[0].device_kind}; model {config.model.to_dict()}')

  if args.stage in ('vqvae', 'both'):
    cfg = config.vqvae_train
    tx = optax.adam(common.warmup_cosine(cfg, 0.1))
    params = vae_vars['params']
    state = var_pretrain.VQState(
        params=params, opt_state=tx.init(params),
        last_used=jnp.zeros((vae.vocab_size,), jnp.int32))
    vq_step = var_pretrain._vq_step  # pylint: disable=protected-access
    step = jax.jit(functools.partial(vq_step, vae, tx, cfg))
    images = jax.random.uniform(jax.random.key(1),
                                (cfg.batch_size, 28, 28, 1))
    step_args = (images, jax.random.key(2))
    _time(f'VQVAE, batch {cfg.batch_size}', step, state, step_args,
          args.steps, _flops(step, state, *step_args))

  if args.stage in ('var', 'both'):
    cfg = config.var_train
    params = net.init(jax.random.key(3),
                      *var_nets.init_inputs(net))['params']
    tx = optax.adamw(common.warmup_cosine(cfg, 0.05), b1=0.9, b2=0.95,
                     weight_decay=cfg.weight_decay,
                     mask=common.weight_decay_mask)
    state = common.create_ema_state(params, tx)
    var_step = var_pretrain._var_step  # pylint: disable=protected-access
    step = jax.jit(functools.partial(var_step, net, vae, tx, cfg),
                   donate_argnums=1)
    ids = jax.random.randint(jax.random.key(4),
                             (cfg.batch_size, net.seq_len), 0,
                             net.vocab_size)
    labels = jnp.arange(cfg.batch_size, dtype=jnp.int32) % net.num_classes
    step_args = (ids, labels, jax.random.key(5))
    flops = _flops(step, vae_vars, state, *step_args)
    _time(f'VAR transformer, batch {cfg.batch_size}, {net.seq_len} tokens',
          lambda s, *a: step(vae_vars, s, *a), state, step_args, args.steps,
          flops)


if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
