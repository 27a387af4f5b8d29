"""The policy-timed solvers on closed-form models (no networks).

Data are Gaussian per coordinate, x_data ~ N(MU, S^2), so along the
probability-flow ODE the standardised variable (x_t - alpha_t MU) /
sqrt(alpha_t^2 S^2 + sigma_t^2) is constant, and the exact data prediction
and velocity at (x, t) are the Gaussian posterior means.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adagen_jax.generators import solver

MU, S = 0.3, 0.5
VP = solver.VPLinear()
FLOW = solver.FlowLinear()
DIT_RULE = solver.TimeRule(decreasing=True, end=0.01,
                           start_bounds=(0.01, 1.0))
SIT_RULE = solver.TimeRule(decreasing=False, end=0.99,
                           start_bounds=(0.01, 0.99))


def _b(v):
  return v[:, None, None, None]


def exact_flow(schedule, x, s, t, std=S):
  """The ODE solution from (x, s) to t for N(MU, std^2) data."""
  var = lambda u: schedule.alpha(u) ** 2 * std ** 2 + schedule.sigma(u) ** 2
  return (_b(schedule.alpha(t)) * MU + (x - _b(schedule.alpha(s)) * MU)
          * _b(jnp.sqrt(var(t) / var(s))))


def exact_x0(schedule, x, t, std=S):
  a, s = _b(schedule.alpha(t)), _b(schedule.sigma(t))
  return MU + a * std ** 2 * (x - a * MU) / (a ** 2 * std ** 2 + s ** 2)


def exact_velocity(x, t):
  """E[x_data - noise | x_t] for the linear interpolant."""
  a, s = _b(t), _b(1.0 - t)
  den = a ** 2 * S ** 2 + s ** 2
  return MU + (a * S ** 2 - s) * (x - a * MU) / den


_advance = jax.jit(solver.advance, static_argnums=(0, 1, 2))


def run(method, schedule, rule, picks, pred_fn, noise):
  """Drives `advance` through the decisions `picks` (float [K] or [K, B])."""
  state = solver.init_state(noise)
  b = noise.shape[0]
  for k, pick in enumerate(picks):
    pred = pred_fn(state.x, state.t) if k else jnp.zeros_like(noise)
    state = _advance(method, schedule, rule, state, pred,
                     jnp.broadcast_to(jnp.asarray(pick, jnp.float32), (b,)))
  return state


def _noise(b=8):
  return jax.random.normal(jax.random.key(0), (b, 2, 2, 1))


def test_schedules_closed_forms():
  t = jnp.linspace(0.02, 0.98, 25)
  np.testing.assert_allclose(VP.alpha(t) ** 2 + VP.sigma(t) ** 2, 1.0,
                             atol=1e-6)
  la = -0.25 * t ** 2 * 19.9 - 0.05 * t
  np.testing.assert_allclose(VP.alpha(t), np.exp(la), rtol=1e-6)
  np.testing.assert_allclose(VP.lam(t), np.log(VP.alpha(t) / VP.sigma(t)),
                             rtol=1e-5, atol=1e-5)
  for sched in (VP, FLOW):
    lam = np.linspace(-5.0, 5.0, 11)
    back = sched.lam(sched.inverse_lam(lam, np), np)
    np.testing.assert_allclose(back, lam, atol=1e-9)
  np.testing.assert_allclose(FLOW.lam(t), np.log(t / (1 - t)), atol=1e-5)


def test_guide_channel_rule():
  k = jax.random.split(jax.random.key(1), 2)
  cond = jax.random.normal(k[0], (3, 2, 2, 4))
  uncond = jax.random.normal(k[1], (3, 2, 2, 4))
  w = jnp.asarray([0.0, 1.0, 2.5])
  out = solver.guide(cond, uncond, w, 3)
  want = cond + _b(w) * (cond - uncond)
  np.testing.assert_allclose(out[..., :3], want[..., :3], atol=1e-6)
  np.testing.assert_array_equal(out[..., 3], cond[..., 3])
  np.testing.assert_array_equal(out[0], cond[0])  # w = 0: the cond model
  np.testing.assert_allclose(solver.guide(cond, uncond, w, 4), want,
                             atol=1e-6)
  np.testing.assert_array_equal(solver.guide(cond, uncond, w, 0), cond)


def test_time_clamps():
  cur = jnp.asarray([0.5, 0.5, 0.5, 0.015])
  pick = jnp.asarray([0.7, 0.2, 0.001, 0.3])
  np.testing.assert_allclose(DIT_RULE.clamp_next(pick, cur),
                             [0.49, 0.2, 0.01, 0.01], atol=1e-7)
  cur = jnp.asarray([0.5, 0.5, 0.5, 0.985])
  pick = jnp.asarray([0.2, 0.7, 0.999, 0.1])
  np.testing.assert_allclose(SIT_RULE.clamp_next(pick, cur),
                             [0.51, 0.7, 0.99, 0.99], atol=1e-7)
  np.testing.assert_allclose(
      SIT_RULE.clamp_start(jnp.asarray([1e-9, 0.3, 1.0])), [0.01, 0.3, 0.99])


@pytest.mark.parametrize('method,rule', [('dpm2s', DIT_RULE),
                                         ('dpm2s', SIT_RULE),
                                         ('heun', SIT_RULE),
                                         ('euler', SIT_RULE)])
def test_adversarial_picks_respect_the_clamps(method, rule):
  """Random per-sample picks: times move >= gap towards the end, stop there."""
  nfe, b = 20, 64
  picks = jax.random.uniform(jax.random.key(2), (nfe + 1, b))
  schedule = VP if rule.decreasing else FLOW
  pred = lambda x, t: jnp.zeros_like(x)
  state = solver.init_state(_noise(b))
  times = []
  for k in range(nfe + 1):
    state = _advance(method, schedule, rule, state,
                     pred(state.x, state.t), picks[k])
    times.append(np.asarray(state.t))
  times = np.stack(times)  # [K, B]: the evaluation point after decision k
  sign = -1.0 if rule.decreasing else 1.0
  lo, hi = ((rule.end, rule.start_bounds[1]) if rule.decreasing
            else (rule.start_bounds[0], rule.end))
  assert times.min() >= lo - 1e-6 and times.max() <= hi + 1e-6
  for k in range(1, nfe + 1):
    if method == 'heun' and k % 2 == 0:  # the step end, picked at k - 1
      np.testing.assert_array_equal(times[k], times[k - 1])
      continue
    moved = sign * (times[k] - times[k - 1])
    at_end = np.abs(times[k] - rule.end) < 1e-6
    assert np.all((moved >= rule.gap - 1e-6) | at_end), k
  assert np.all(np.isfinite(np.asarray(state.x)))


@pytest.mark.parametrize('nfe', [5, 6])
@pytest.mark.parametrize('schedule,rule', [(VP, DIT_RULE), (FLOW, SIT_RULE)])
def test_dpm_is_exact_for_a_constant_data_prediction(schedule, rule, nfe):
  """Point-mass data: x0 == MU everywhere and DPM-Solver++ is exact, for
  any policy times (2S correction vanishes; odd NFE ends first-order)."""
  rs = np.random.RandomState(nfe)
  picks = np.sort(rs.uniform(0.05, 0.95, nfe + 1))
  if rule.decreasing:
    picks = picks[::-1]
  noise = _noise()
  state = run('dpm2s', schedule, rule, picks,
              lambda x, t: jnp.full_like(x, MU), noise)
  t0 = jnp.full((8,), picks[0], jnp.float32)
  want = exact_flow(schedule, noise, t0, state.t, std=0.0)
  np.testing.assert_allclose(state.x, want, rtol=2e-5, atol=2e-5)


def test_decisions_map_onto_the_2s_points():
  """Decision 1 picks s1 (first-order move), decision 2 the step end t."""
  noise = _noise()
  s, s1, t = 0.8, 0.6, 0.3
  pred = lambda x, u: exact_x0(VP, x, u)
  state = run('dpm2s', VP, DIT_RULE, [s, s1], pred, noise)
  full = lambda v: jnp.full((8,), v, jnp.float32)
  x_s1 = solver.dpm_first_order(VP, noise, full(s), full(s1),
                                exact_x0(VP, noise, full(s)))
  np.testing.assert_allclose(state.x, x_s1, atol=1e-6)
  np.testing.assert_allclose(state.t, s1, atol=1e-7)
  state = run('dpm2s', VP, DIT_RULE, [s, s1, t], pred, noise)
  want = solver.dpm_second_order(
      VP, noise, full(s), full(s1), full(t), exact_x0(VP, noise, full(s)),
      exact_x0(VP, x_s1, full(s1)))
  np.testing.assert_allclose(state.x, want, atol=1e-6)
  np.testing.assert_allclose(state.t_start, t, atol=1e-7)


def test_min_stage_ratio_bounds_the_2s_correction():
  """min_ratio floors r1 h at min_ratio h: the correction's factor <= 0.5 /
  min_ratio where the stage point hugs the step start, and the reference
  update wherever r1 >= min_ratio (the hand-crafted grids: r1 ~ 0.5)."""
  noise = _noise()
  full = lambda v: jnp.full((8,), v, jnp.float32)
  x0_s, x0_s1 = jnp.zeros_like(noise), jnp.ones_like(noise)
  step = lambda s1, m: solver.dpm_second_order(
      VP, noise, full(0.55), full(s1), full(0.22), x0_s, x0_s1, m)
  # A stage point 0.01 after the start: r1 ~ 0.03 on this step.
  first = solver.dpm_first_order(VP, noise, full(0.55), full(0.22), x0_s)
  h = VP.lam(0.22) - VP.lam(0.55)
  phi = VP.alpha(0.22) * jnp.expm1(-h)
  for m in (0.1, 0.25):
    np.testing.assert_allclose(step(0.54, m) - first, -0.5 / m * phi,
                               rtol=1e-4)
  reference = step(0.54, 0.0) - first
  assert float(jnp.abs(reference).max()) > 2.5 * float(jnp.abs(
      step(0.54, 0.1) - first).max())
  # The midpoint in time (r1 ~ 0.45 here) is untouched.
  np.testing.assert_array_equal(step(0.385, 0.1), step(0.385, 0.0))


# (method, schedule, spacing, expected order). The log-SNR grid is DPM-
# Solver's natural uniform step; Heun and Euler step evenly in flow time.
_ORDER_CASES = [('dpm2s', 'vp', 'logsnr', 2.0),
                ('dpm2s', 'flow', 'logsnr', 2.0),
                ('heun', 'flow', 'reference', 2.0),
                ('euler', 'flow', 'reference', 1.0)]


@pytest.mark.parametrize('method,kind,spacing,order', _ORDER_CASES)
def test_convergence_order(method, kind, spacing, order):
  """Global error ~ NFE^-order on the Gaussian-data ODE."""
  schedule = VP if kind == 'vp' else FLOW
  t0, t1 = (0.9, 0.01) if kind == 'vp' else (0.01, 0.99)
  # A tiny gap so that the clamps never bind on fine grids.
  rule = solver.TimeRule(decreasing=kind == 'vp', end=t1,
                         start_bounds=(0.01, 1.0), gap=1e-9)
  if method == 'dpm2s':
    pred = lambda x, t: exact_x0(schedule, x, t)
  else:
    pred = exact_velocity
  noise = _noise()
  want = exact_flow(schedule, noise, jnp.full((8,), t0, jnp.float32),
                    jnp.full((8,), t1, jnp.float32))
  nfes = [32, 64, 128]
  errs = []
  for nfe in nfes:
    picks = solver.heuristic_times(method, nfe, t0, t1, spacing, schedule)
    state = run(method, schedule, rule, picks, pred, noise)
    errs.append(float(jnp.max(jnp.abs(state.x - want))))
  slope = np.polyfit(np.log(nfes), np.log(errs), 1)[0]
  assert abs(slope + order) < 0.15, (errs, slope)


def test_heuristic_times():
  np.testing.assert_allclose(
      solver.heuristic_times('dpm2s', 16, 0.9, 0.01, 'reference', VP),
      np.linspace(0.9, 0.01, 17))
  times = solver.heuristic_times('dpm2s', 8, 0.01, 0.99, 'logsnr', FLOW)
  lam = FLOW.lam(times, np)
  np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-9)
  np.testing.assert_allclose(times[[0, -1]], [0.01, 0.99])
  heun = solver.heuristic_times('heun', 5, 0.01, 0.99, 'reference', FLOW)
  grid = np.linspace(0.01, 0.99, 4)
  np.testing.assert_allclose(heun, grid[[0, 1, 1, 2, 2, 3]])
