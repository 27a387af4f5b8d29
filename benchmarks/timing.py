"""Timing helpers shared by the benchmark scripts (import as `timing`).

The scripts run as `python benchmarks/NAME.py`, which puts this directory on
sys.path, so `import timing` finds this module. Run as a script it has two
commands of its own, used by benchmarks/gpu_suite.sh:

  python benchmarks/timing.py matmul --dtype=bfloat16 [--n=8192] [--json=P]
  python benchmarks/timing.py report --parts=DIR --out=FILE [--goal_batch=256]

`matmul` prints (and writes) the measured dense matmul rate; `report` merges
the suite's per-benchmark JSON files into one and prints the results table
beside the issue's goals and the PyTorch reference figures.
"""

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp

from adagen_jax import cli
from adagen_jax.parallel import mesh as mesh_lib
from adagen_jax.rl import rollout as rollout_lib

# What train.py's exploring rollout runs with by default: the exploration std
# at the start of training (config.policy.std_init) and the dtype the kept
# observations are stored in (config.ppo.obs_dtype).
EXPLORE_STD = 0.6
OBS_DTYPE = jnp.bfloat16


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name: str):
  """configs/NAME.py of this repository, imported by path."""
  path = os.path.join(_REPO, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def time_fn(fn, *args, repeats=3, stats=None):
  """Best wall time in seconds of `fn(*args)` over `repeats` timed runs.

  One untimed call first compiles and warms up; every call is waited for
  with `jax.block_until_ready`. If `stats` is a dict, stats['first_call_s']
  gets that first call's time (compile + one run): what a time budget for
  a cold machine has to allow for.
  """
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))  # compile + warm up
  first = time.perf_counter() - t0
  # Printed at once: a run cut by its time limit still says where it was.
  print(f'  (first call, compile + run: {first:.1f} s)', flush=True)
  if stats is not None:
    stats['first_call_s'] = first
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
  # Random data: constant inputs can run faster than real ones. Ten
  # repeats, as the first ones may run before the clocks have ramped up.
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  return 2 * n**3 / time_fn(f, a, repeats=10) / 1e12


def compile_reporting_memory(fn, *args):
  """jit(fn) compiled for `args`; prints XLA's planned memory at once.

  The temporary bytes are known before anything runs, so a program too big
  for the device is reported even if its run never finishes.
  """
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  mem = compiled.memory_analysis()
  temp = getattr(mem, 'temp_size_in_bytes', None)
  arg = getattr(mem, 'argument_size_in_bytes', None)
  planned = ('' if temp is None else
             f', planned temp {temp / 2**30:.2f} GiB + arguments '
             f'{arg / 2**30:.2f} GiB')
  print(f'  compiled in {time.perf_counter() - t0:.1f} s{planned}',
        flush=True)
  return compiled


def peak_memory_gib(device=None):
  """Peak bytes in use on `device` so far in this process, in GiB.

  0.0 where the backend keeps no memory statistics (e.g. the CPU).
  """
  device = device or jax.devices()[0]
  stats = device.memory_stats() or {}
  return stats.get('peak_bytes_in_use', 0) / 2**30


def init_agent(agent, obs_shape, seed=2):
  """agent.init under jit: one compiled program, not hundreds of eager ops
  (which take a minute on a busy CPU, longer than the smoke run's rollout).
  """
  return jax.jit(agent.init, static_argnums=1)(jax.random.key(seed),
                                                tuple(obs_shape))


def policy_rollout(generator, agent, params, agent_params, labels, rng):
  """The rollout train.py collects PPO data with: what to time for training.

  The exploring policy (std EXPLORE_STD), the critic's values and the
  observations kept in OBS_DTYPE. The whole Trajectory is returned so that
  XLA keeps every output training reads: returning only the images would
  let it drop the critic (and the stored observations) as dead code.
  """
  act = agent.make_act_fn(agent_params, jnp.float32(EXPLORE_STD),
                          explore=True)
  return rollout_lib.rollout(generator, params, labels, rng, act,
                             obs_dtype=OBS_DTYPE)


def heuristic_rollout(generator, params, labels, rng):
  """The hand-crafted schedule as sampling runs it: images only."""
  return rollout_lib.rollout(generator, params, labels, rng,
                             keep_obs=False).images


def replicated(tree):
  """`tree` on every device, as train.py places the networks."""
  return mesh_lib.replicate(tree, mesh_lib.make_mesh())


def jitted_rollout(generator, agent):
  """jit of `run(params, agent_params, labels, rng, use_policy)`.

  use_policy=True is `policy_rollout` (returns the Trajectory), False is
  `heuristic_rollout` (returns the images), so 1 - t_heuristic / t_policy
  is what the policy adds to a training rollout. The parameters are
  arguments, not closed-over constants XLA would fold; pass them
  `replicated`. The batch is split over the devices as train.py splits it
  (one CPU device unless JAX_NUM_CPU_DEVICES says otherwise).
  """
  def run(params, agent_params, labels, rng, use_policy):
    if use_policy:
      return policy_rollout(generator, agent, params, agent_params, labels,
                            rng)
    return heuristic_rollout(generator, params, labels, rng)
  jitted = jax.jit(run, static_argnums=4)
  data = mesh_lib.batch_sharded(mesh_lib.make_mesh())
  return lambda params, agent_params, labels, rng, use_policy: jitted(
      params, agent_params, jax.device_put(labels, data), rng, use_policy)


def print_rollout_rows(run, params, agent_params, batches, num_classes,
                       flops_per_image, peak_tflops, repeats=3, rows=None):
  """The rollout table of a `jitted_rollout`, one row per batch size.

  One row per batch size: images/s with the policy and with the
  hand-crafted schedule (the policy's share is the difference), model FLOPs
  utilisation against `peak_tflops`, and peak device memory so far. Each
  row also goes to `rows` (a `JsonRows`) when given, as soon as it is
  measured.
  """
  print('batch  img/s(policy)  img/s(heuristic)  policy share  MFU   peak GiB')
  params, agent_params = replicated((params, agent_params))
  for b in batches:
    labels = jnp.arange(b, dtype=jnp.int32) % num_classes
    rng = jax.random.key(3)
    pol, heu = {}, {}
    t_pol = time_fn(run, params, agent_params, labels, rng, True,
                    repeats=repeats, stats=pol)
    t_heu = time_fn(run, params, agent_params, labels, rng, False,
                    repeats=repeats, stats=heu)
    mfu = flops_per_image * b / t_pol / 1e12 / peak_tflops
    share = 1 - t_heu / t_pol
    peak = peak_memory_gib()
    print(f'{b:5d}  {b / t_pol:13.1f}  {b / t_heu:16.1f}  '
          f'{max(0.0, share):11.1%}  {mfu:5.1%}  {peak:8.2f}')
    if rows is not None:
      rows.add(batch=b, policy_img_per_s=b / t_pol,
               heuristic_img_per_s=b / t_heu, policy_share=share, mfu=mfu,
               peak_gib=peak or None, policy_first_call_s=pol['first_call_s'],
               heuristic_first_call_s=heu['first_call_s'])


def add_json_flag(parser):
  """The --json=PATH option every benchmark script takes."""
  parser.add_argument(
      '--json', default=None, metavar='PATH',
      help='also write the rows as JSON to PATH, rewritten after every row '
      'so that a run cut short (timeout) keeps the rows it finished')


class JsonRows:
  """One benchmark run as JSON: machine, arguments and its table's rows.

  The file is rewritten (atomically) after every row rather than at the
  end, so benchmarks/gpu_suite.sh still has the finished rows of a run its
  timeout killed. With path None nothing is written.
  """

  def __init__(self, path, benchmark, args):
    self.path = path
    self.record = dict(
        benchmark=benchmark, backend=jax.default_backend(),
        device_kind=jax.devices()[0].device_kind,
        device_count=jax.device_count(), args=vars(args), rows=[])
    self._write()

  def note(self, **info):
    """Run-wide facts (measured peak, FLOPs per image) beside the rows."""
    self.record.update(info)
    self._write()

  def add(self, **row):
    self.record['rows'].append(row)
    self._write()

  def _write(self):
    if self.path is None:
      return
    tmp = f'{self.path}.tmp'
    with open(tmp, 'w') as f:
      json.dump(self.record, f, indent=1, default=float)  # numpy scalars
    os.replace(tmp, self.path)


# --- benchmarks/gpu_suite.sh: the merged report -----------------------------

# The suite's benchmarks, in the order it runs them.
SUITE = ('matmul', 'maskgit_rollout', 'ppo_update', 'dit_rollout',
         'var_rollout', 'discriminator_step')


def suite_metrics(parts, goal_batch):
  """{metric name: value} of the suite's parsed JSON files, and its goals.

  Args:
    parts: {benchmark: the record its JsonRows wrote} of those that wrote
      one.
    goal_batch: the MaskGIT batch the issue's goals are stated at (256 on
      the GPU; the smoke run's middle batch).

  Returns:
    (metrics, goals): metrics maps 'benchmark/what' to a float; goals is a
    list of dicts (metric, measured, goal, reference, met) for the table.
  """
  def rows(name):
    return parts.get(name, {}).get('rows', [])

  m = {}
  for r in rows('matmul'):
    m['matmul/tflops'] = r['tflops']
  for name in ('maskgit_rollout', 'dit_rollout'):
    for r in rows(name):
      for k in ('policy_img_per_s', 'heuristic_img_per_s', 'policy_share',
                'mfu'):
        m[f'{name}/b{r["batch"]}/{k}'] = r[k]
  for r in rows('ppo_update'):
    if r['form'] == 'strided slices':
      m['ppo_update/seconds'] = r['seconds']
  for r in rows('var_rollout'):
    if r['name'] in ('scan', 'scan+policy'):
      key = 'policy' if r['name'] == 'scan+policy' else 'heuristic'
      m[f'var_rollout/b{r["batch"]}/{key}_img_per_s'] = r['img_per_s']
  for r in rows('discriminator_step'):
    m['discriminator_step/seconds'] = r['seconds']
    m['discriminator_step/img_per_s'] = r['img_per_s']

  g = f'maskgit_rollout/b{goal_batch}'
  goals = [
      # metric, op, bound, the goal as the issue states it, reference
      (f'{g}/policy_img_per_s', '>=', 310.0, '>= 310 img/s',
       '154 img/s (PyTorch, H100)'),
      (f'{g}/policy_share', '<=', 0.005, '<= 0.5%', None),
      ('ppo_update/seconds', '<=', 2.0, '<= 2 s',
       '0.515 s per GPU on 8 GPUs; out of memory on one'),
      ('discriminator_step/seconds', None, None, None, '0.127 s'),
  ]
  out = []
  for metric, op, bound, goal, reference in goals:
    value = m.get(metric)
    met = None
    if op is not None and value is not None:
      met = value >= bound if op == '>=' else value <= bound
    out.append(dict(metric=metric, measured=value, goal=goal,
                    reference=reference, met=met))
  return m, out


def _read_json(path):
  """The parsed file, or None if it is missing or cut off mid-write."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _log_tail(path, lines=15):
  """The last lines of a benchmark's log: why it failed, in the JSON."""
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def suite_report(parts_dir, out_path, goal_batch, smoke):
  """Merges the suite's files into `out_path` and prints the table.

  parts_dir holds NAME.json (the benchmark's JsonRows), NAME.log (its
  output) and status.tsv (NAME, exit status, wall seconds, command; one
  line per benchmark run, written by gpu_suite.sh). A benchmark's status
  is 'ok', 'timeout' (exit 124 or 137 from `timeout`) or 'failed (rc N)';
  one that exited 0 without rows counts as failed. Failures keep their
  finished rows and the tail of their log.

  Returns:
    The number of benchmarks that did not finish ok.
  """
  parts, benchmarks = {}, {}
  with open(os.path.join(parts_dir, 'status.tsv')) as f:
    for line in f:
      name, rc, wall_s, command = line.rstrip('\n').split('\t', 3)
      rc = int(rc)
      part = _read_json(os.path.join(parts_dir, f'{name}.json')) or {}
      if rc in (124, 137):
        status = 'timeout'
      elif rc != 0 or not part.get('rows'):
        status = f'failed (rc {rc})'
      else:
        status = 'ok'
      entry = dict(status=status, rc=rc, wall_s=float(wall_s),
                   command=command, **part)
      if status != 'ok':
        entry['log_tail'] = _log_tail(os.path.join(parts_dir, f'{name}.log'))
      benchmarks[name] = entry
      if part:
        parts[name] = part
  benchmarks = {**{n: benchmarks.get(n, dict(status='not run', rows=[]))
                  for n in SUITE}, **benchmarks}  # in the suite's order
  metrics, goals = suite_metrics(parts, goal_batch)
  device = next((p['device_kind'] for p in parts.values()), None)
  backend = next((p['backend'] for p in parts.values()), None)
  failed = [n for n, b in benchmarks.items() if b['status'] != 'ok']
  result = dict(
      suite=dict(smoke=smoke, backend=backend, device_kind=device,
                 goal_batch=goal_batch,
                 wall_s=sum(b.get('wall_s', 0.0) for b in benchmarks.values()),
                 failed=failed),
      metrics=metrics, goals=goals, benchmarks=benchmarks)
  tmp = f'{out_path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(result, f, indent=1, default=float)
  os.replace(tmp, out_path)

  print(f'\n== gpu_suite: {backend} ({device}){" SMOKE" if smoke else ""}, '
        f'{result["suite"]["wall_s"]:.0f} s of benchmarks ==')
  print(f'{"benchmark":20s} {"status":16s} {"wall s":>7s}')
  for name, b in benchmarks.items():
    print(f'{name:20s} {b["status"]:16s} {b.get("wall_s", 0.0):7.1f}')
  print(f'\n{"metric":44s} {"value":>10s}')
  for k, v in metrics.items():
    pct = k.endswith(('/policy_share', '/mfu'))
    print(f'{k:44s} {v:10.1%}' if pct else f'{k:44s} {v:10.3f}')
  print(f'\n{"goal (issue)":44s} {"measured":>10s}  {"goal":13s} {"met":4s} '
        'reference')
  for g in goals:
    v = g['measured']
    pct = g['metric'].endswith('/policy_share')
    shown = ('-' if v is None else f'{v:.1%}' if pct else f'{v:.3f}')
    met = '-' if g['met'] is None else ('yes' if g['met'] else 'NO')
    print(f'{g["metric"]:44s} {shown:>10s}  {g["goal"] or "-":13s} {met:4s} '
          f'{g["reference"] or ""}')
  print(f'\nwrote {out_path}')
  return len(failed)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest='command', required=True)
  mm = sub.add_parser('matmul', help='measured dense matmul rate')
  mm.add_argument('--dtype', default='bfloat16')
  mm.add_argument('--n', type=int, default=None,
                  help='matrix side (default 8192; 1024 on the CPU)')
  add_json_flag(mm)
  rp = sub.add_parser('report', help="merge gpu_suite.sh's files")
  rp.add_argument('--parts', required=True)
  rp.add_argument('--out', required=True)
  rp.add_argument('--goal_batch', type=int, default=256)
  rp.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  if args.command == 'matmul':
    rows = JsonRows(args.json, 'matmul', args)
    n = args.n or (8192 if jax.default_backend() != 'cpu' else 1024)
    tflops = matmul_tflops(jnp.dtype(args.dtype), n)
    print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind})'
          f', {args.dtype} matmul {n} x {n}: {tflops:.1f} TFLOP/s')
    rows.add(dtype=args.dtype, n=n, tflops=tflops)
  else:
    raise SystemExit(1 if suite_report(args.parts, args.out, args.goal_batch,
                                       args.smoke) else 0)


if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
