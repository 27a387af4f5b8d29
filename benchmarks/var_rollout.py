"""Compile time and step cost of the VAR generator (random weights).

  python benchmarks/var_rollout.py --size=tiny --batch=8          # CPU
  python benchmarks/var_rollout.py --size=fmnist --batch=256 \
      --rollout_only    # the shipped Fashion-MNIST VAR (issue 18: <= 8 s)
  python benchmarks/var_rollout.py --size=smoke --batch=8 --rollout_only
  python benchmarks/var_rollout.py --size=d16 --batch=32 --dtype=bfloat16
  python benchmarks/var_rollout.py --size=d16 --batch=256 \
      --dtype=bfloat16 --rollout_only     # img/s only (gpu_suite.sh)

Measures:
  scan         rollout.rollout with the heuristic schedule: lax.scan over
               the scales, `step` dispatching with lax.switch (what
               sampling runs);
  scan+policy  the same scan with the policy as training runs it
               (exploring actor, critic values, observations kept;
               timing.policy_rollout), hidden --hidden;
  unrolled     init + a Python loop of `step_static` + decode in one jit
               (static shapes per scale, no switch);
  per scale    `step_static(si)` alone, which shows where the time goes. A
               padded design (every step at the largest scale's token
               count) would cost about T times the largest of these.
`fmnist` is the shipped Fashion-MNIST VAR's sizes (adagen_jax/configs/
shipped.py) with its policy width of the CPU RL settings (64).
--rollout_only stops after the two scan rows (the others compile one
program per scale). Times are the best of --repeats runs after a warm-up;
compile is lower + compile of the jitted function. --json=PATH also writes
the rows (benchmarks/gpu_suite.sh collects them).
"""

import argparse
import functools
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax.configs import shipped
from adagen_jax.generators import var
from adagen_jax.generators import var_nets
from adagen_jax.generators import var_vqvae
from adagen_jax.generators.convert import var as convert_var
from adagen_jax.rl import policy as policy_lib
import timing

# size -> (VAR kwargs, VQVAE kwargs); patch_nums default to the published
# var_vqvae.PATCH_NUMS.
SIZES = {
    # Published schedule and vocabulary, a small transformer and VQVAE.
    'tiny': (dict(num_classes=10, vocab_size=4096, cvae=8, depth=2,
                  width=64, num_heads=2),
             dict(vocab_size=4096, z_channels=8, ch=32, ch_mult=(1, 2),
                  num_res_blocks=1, norm_groups=8)),
    # Three scales, a 32-word vocabulary, no VQVAE attention: the smallest
    # program that runs every part, for gpu_suite.sh's CPU smoke run.
    'smoke': (dict(num_classes=10, vocab_size=32, cvae=4, depth=2, width=32,
                   num_heads=2, patch_nums=(1, 2, 3)),
              dict(vocab_size=32, z_channels=4, ch=32, ch_mult=(1,),
                   num_res_blocks=1, using_sa=False, using_mid_sa=False,
                   patch_nums=(1, 2, 3))),
    'd16': (convert_var.published_var(16), convert_var.VAE_CH160V4096Z32),
    'd30': (convert_var.published_var(30), convert_var.VAE_CH160V4096Z32),
}


def _timed(fn, args, repeats):
  """(compile s, best run s, compiled HLO text) of jax.jit(fn)(*args)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  print(f'  (compiled in {compile_s:.1f} s)', flush=True)
  jax.block_until_ready(compiled(*args))
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    runs.append(time.perf_counter() - t0)
  return compile_s, min(runs), compiled.as_text()


def _cache_copies(hlo: str, state) -> int:
  """Copy instructions of KV-cache-sized arrays in compiled HLO text."""
  dims = ','.join(map(str, state.cache_k.shape))
  return len(re.findall(rf'= \w+\[{dims}\]\{{[\d,]*\}} copy\(', hlo))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', choices=sorted(SIZES) + ['fmnist'],
                      default='tiny')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--hidden', type=int, default=None,
                      help='policy width (default 512; 64 for tiny and smoke)')
  parser.add_argument('--rollout_only', action='store_true',
                      help='only the scan rollouts (heuristic and policy)')
  timing.add_json_flag(parser)
  args = parser.parse_args()
  rows = timing.JsonRows(args.json, 'var_rollout', args)

  if args.size == 'fmnist':
    section = shipped.fmnist_var_generator()
    section.dtype = args.dtype
    var_net, vae = var.modules_from_config(section)
    gen = var.VARGenerator(var_net, vae, cfg=section.cfg,
                           top_k=section.top_k, top_p=section.top_p,
                           samp_temp=section.samp_temp,
                           obs_side=section.obs_side)
  else:
    var_kwargs, vae_kwargs = SIZES[args.size]
    var_kwargs = dict(dict(patch_nums=var_vqvae.PATCH_NUMS), **var_kwargs,
                      dtype=jnp.dtype(args.dtype))
    vae_kwargs = dict(dict(patch_nums=var_vqvae.PATCH_NUMS), **vae_kwargs)
    gen = var.VARGenerator(var_nets.VAR(**var_kwargs),
                           var_vqvae.VQVAE(**vae_kwargs),
                           obs_side=max(var_kwargs['patch_nums']))
  params = jax.jit(functools.partial(var.random_params, gen))(
      jax.random.key(0))
  labels = jnp.arange(args.batch, dtype=jnp.int32) % gen.num_classes
  rng = jax.random.key(1)
  num = gen.num_steps
  heur = gen.action_spec.heuristic(num)[0]
  action = {n: jnp.full((args.batch,), heur[i], jnp.float32)
            for i, n in enumerate(gen.action_spec.names)}
  print(f'{jax.devices()[0].device_kind}, size={args.size}, '
        f'batch={args.batch}, dtype={args.dtype}, T={num}')

  hidden = args.hidden or (64 if args.size in ('tiny', 'smoke', 'fmnist')
                           else 512)
  agent = policy_lib.make_agent(gen.action_spec.size, num,
                                hidden_size=hidden)
  agent_params = timing.init_agent(agent, gen.obs_shape)

  # Parameters are arguments, not closed-over constants XLA would fold.
  def scan(params, rng):
    return timing.heuristic_rollout(gen, params, labels, rng)

  def scan_policy(params, agent_params, rng):
    return timing.policy_rollout(gen, agent, params, agent_params, labels,
                                 rng)

  def unrolled(params, rng):
    keys = jax.random.split(rng, num + 1)
    state, _ = gen.init(params, labels, keys[0])
    for si in range(num):
      state, _ = gen.step_static(si, params, state, action, keys[si + 1])
    return gen.decode(params, state)

  state, _ = jax.jit(gen.init)(params, labels, rng)
  rollouts = [('scan', scan, (params, rng)),
              ('scan+policy', scan_policy, (params, agent_params, rng))]
  if not args.rollout_only:
    rollouts.append(('unrolled', unrolled, (params, rng)))
  for name, fn, fn_args in rollouts:
    compile_s, run_s, hlo = _timed(fn, fn_args, args.repeats)
    copies = _cache_copies(hlo, state)
    print(f'{name:11s} compile {compile_s:7.2f} s  rollout '
          f'{run_s * 1e3:9.1f} ms  ({run_s * 1e3 / num:8.1f} ms per step, '
          f'init + decode incl.)  {args.batch / run_s:8.1f} img/s  '
          f'cache-sized copies {copies}')
    rows.add(name=name, batch=args.batch, compile_s=compile_s,
             seconds=run_s, img_per_s=args.batch / run_s,
             cache_copies=copies, peak_gib=timing.peak_memory_gib() or None)
  if args.rollout_only:
    return

  init_c, init_s, _ = _timed(gen.init, (params, labels, rng), args.repeats)
  dec_c, dec_s, _ = _timed(gen.decode, (params, state), args.repeats)
  print(f'init      compile {init_c:7.2f} s  run {init_s * 1e3:9.1f} ms')
  print(f'decode    compile {dec_c:7.2f} s  run {dec_s * 1e3:9.1f} ms')
  rows.add(name='init', batch=args.batch, compile_s=init_c, seconds=init_s)
  rows.add(name='decode', batch=args.batch, compile_s=dec_c, seconds=dec_s)
  per_scale = []
  for si in range(num):
    fn = functools.partial(gen.step_static, si)
    compile_s, run_s, _ = _timed(fn, (params, state, action, rng),
                                 args.repeats)
    per_scale.append(run_s)
    rows.add(name=f'scale {si}', batch=args.batch, compile_s=compile_s,
             seconds=run_s)
    print(f'scale {si} (pn {gen.patch_nums[si]:2d}) compile {compile_s:6.2f} s'
          f'  step {run_s * 1e3:9.1f} ms')
    state, _ = jax.jit(fn)(params, state, action, rng)
  print(f'sum of scale steps {np.sum(per_scale) * 1e3:.1f} ms; a padded '
        f'design ~ T x max = {num * np.max(per_scale) * 1e3:.1f} ms')


if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
