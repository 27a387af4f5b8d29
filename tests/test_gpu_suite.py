"""benchmarks/gpu_suite.sh end to end at toy sizes (SMOKE=1, CPU).

A GPU session gets one 8-minute call for the suite and no time to debug
it there, so every benchmark, the JSON each writes and the merged report
run here first, on the same code paths at toy sizes. The report's handling
of timeouts and failures is checked on hand-made files (no JAX compiles).
"""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

SUITE = os.path.join(ROOT, 'benchmarks', 'gpu_suite.sh')


def _positive_finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_smoke_suite_reports_every_benchmark(tmp_path):
  # Two CPU devices (JAX_NUM_CPU_DEVICES): the rollouts split their batches
  # (2, 4, 8) over them.
  env = dict(os.environ, SMOKE='1', PYTHON=sys.executable, XLA_FLAGS='',
             JAX_NUM_CPU_DEVICES='2')
  res = subprocess.run(['bash', SUITE, str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=1800, check=False)
  assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
  with open(tmp_path / 'gpu_suite.json') as f:
    report = json.load(f)

  assert report['suite']['smoke'] is True
  assert report['suite']['backend'] == 'cpu'
  assert report['suite']['failed'] == []
  benchmarks = report['benchmarks']
  assert list(benchmarks) == list(timing.SUITE)
  for name, b in benchmarks.items():
    assert b['status'] == 'ok' and b['rc'] == 0, (name, b)
    assert b['rows'], name
    assert b['command'].endswith(f'--json={tmp_path}/parts/{name}.json')

  # Three MaskGIT batch sizes, as on the GPU (64/256/1024 there).
  batches = [int(x) for x in
             benchmarks['maskgit_rollout']['args']['batches'].split(',')]
  assert len(batches) == 3
  dit_batch = benchmarks['dit_rollout']['rows'][0]['batch']
  var_batch = benchmarks['var_rollout']['rows'][0]['batch']
  rollout = ('policy_img_per_s', 'heuristic_img_per_s', 'policy_share',
             'mfu')
  expected = {'matmul/tflops', 'ppo_update/seconds',
              'discriminator_step/seconds', 'discriminator_step/img_per_s',
              f'var_rollout/b{var_batch}/heuristic_img_per_s',
              f'var_rollout/b{var_batch}/policy_img_per_s'}
  expected |= {f'maskgit_rollout/b{b}/{k}' for b in batches for k in rollout}
  expected |= {f'dit_rollout/b{dit_batch}/{k}' for k in rollout}
  metrics = report['metrics']
  assert set(metrics) == expected
  for key, value in metrics.items():
    if key.endswith('/policy_share'):  # 1 - t_heuristic / t_policy
      assert math.isfinite(value) and value < 1, (key, value)
    else:
      assert _positive_finite(value), (key, value)
  for name in ('maskgit_rollout', 'dit_rollout'):
    for row in benchmarks[name]['rows']:
      assert _positive_finite(row['policy_first_call_s'])
      assert _positive_finite(row['heuristic_first_call_s'])
  assert _positive_finite(benchmarks['maskgit_rollout']['matmul_tflops'])
  assert [r['name'] for r in benchmarks['var_rollout']['rows']] == [
      'scan', 'scan+policy']

  goals = {g['metric']: g for g in report['goals']}
  goal_batch = report['suite']['goal_batch']
  assert goal_batch in batches
  assert set(goals) == {
      f'maskgit_rollout/b{goal_batch}/policy_img_per_s',
      f'maskgit_rollout/b{goal_batch}/policy_share',
      'ppo_update/seconds', 'discriminator_step/seconds'}
  for metric, g in goals.items():
    assert g['measured'] == metrics[metric]
    assert isinstance(g['met'], bool) == (g['goal'] is not None), g
  assert goals['ppo_update/seconds']['goal'] == '<= 2 s'
  assert goals['discriminator_step/seconds']['reference'] == '0.127 s'

  # The printed table: every benchmark's status, the goals beside them.
  for name in timing.SUITE:
    assert f'{name} ' in res.stdout
  assert '>= 310 img/s' in res.stdout and '154 img/s' in res.stdout
  assert f'wrote {tmp_path}/gpu_suite.json' in res.stdout


def test_report_records_timeouts_and_failures(tmp_path, capsys):
  parts = tmp_path / 'parts'
  parts.mkdir()

  def part(name, rows):
    (parts / f'{name}.json').write_text(json.dumps(dict(
        benchmark=name, backend='gpu', device_kind='H200', rows=rows)))

  part('matmul', [dict(dtype='bfloat16', n=8192, tflops=700.0)])
  # Cut off by its timeout after two of three batch sizes.
  row = dict(policy_img_per_s=400.0, heuristic_img_per_s=402.0,
             policy_share=0.004, mfu=0.5)
  part('maskgit_rollout', [dict(row, batch=64), dict(row, batch=256)])
  (parts / 'maskgit_rollout.log').write_text('compiling\nKilled\n')
  (parts / 'ppo_update.log').write_text('RESOURCE_EXHAUSTED: out of memory\n')
  part('discriminator_step', [])  # exited 0 but wrote no row
  (parts / 'status.tsv').write_text(
      'matmul\t0\t9\tpython benchmarks/timing.py matmul\n'
      'maskgit_rollout\t124\t160\tpython benchmarks/maskgit_rollout.py\n'
      'ppo_update\t1\t30\tpython benchmarks/ppo_update.py\n'
      'discriminator_step\t0\t20\tpython benchmarks/discriminator_step.py\n')
  out = tmp_path / 'gpu_suite.json'

  failed = timing.suite_report(str(parts), str(out), 256, smoke=False)

  report = json.loads(out.read_text())
  status = {n: b['status'] for n, b in report['benchmarks'].items()}
  assert status == {
      'matmul': 'ok', 'maskgit_rollout': 'timeout',
      'ppo_update': 'failed (rc 1)', 'discriminator_step': 'failed (rc 0)',
      'dit_rollout': 'not run', 'var_rollout': 'not run'}
  assert failed == 5 and len(report['suite']['failed']) == 5
  assert report['suite']['wall_s'] == 219
  assert 'out of memory' in report['benchmarks']['ppo_update']['log_tail']
  assert 'Killed' in report['benchmarks']['maskgit_rollout']['log_tail']
  assert 'log_tail' not in report['benchmarks']['matmul']
  # The rows a timed-out benchmark finished still count.
  assert report['metrics'] == {
      'matmul/tflops': 700.0,
      **{f'maskgit_rollout/b{b}/{k}': v for b in (64, 256)
         for k, v in row.items()}}
  goals = {g['metric']: g for g in report['goals']}
  assert goals['maskgit_rollout/b256/policy_img_per_s']['met'] is True
  assert goals['maskgit_rollout/b256/policy_share']['met'] is True
  assert goals['ppo_update/seconds']['measured'] is None
  assert goals['ppo_update/seconds']['met'] is None
  printed = capsys.readouterr().out
  assert 'timeout' in printed and 'failed (rc 1)' in printed
