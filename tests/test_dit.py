"""DiT / SiT generators on the protocol, with tiny random networks."""

import json

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax import generators
from adagen_jax.generators import dit
from adagen_jax.generators import solver
from adagen_jax.rl import rollout as rollout_lib

NFE, B = 6, 4


def tiny_config(name, **kw):
  c = dict(
      name=name, steps=NFE, smoothing=0.4 if name == 'dit' else 0.8,
      cfg_init=1.0 if name == 'dit' else 1.5, solver='dpm2s',
      schedule='reference', cfg_channels=3, random_init=True, seed=0,
      model=dict(input_size=4, in_channels=4, patch_size=2, hidden_size=16,
                 depth=1, num_heads=2, mlp_ratio=2.0, num_classes=10,
                 learn_sigma=True),
      vae=dict(z_channels=4, ch=8, ch_mult=(1,), num_res_blocks=0,
               out_channels=3, norm_groups=4),
      weights='', vae_weights='')
  c.update(kw)
  return ml_collections.ConfigDict(c)


def _perturbed(params):
  # DiT's adaLN-Zero init makes an untrained network output zeros; random
  # weights everywhere give a network whose guidance and features matter.
  # (NumPy noise: no compilation.)
  rs = np.random.RandomState(7)
  return jax.tree.map(
      lambda x: jnp.asarray(x + 0.05 * rs.randn(*x.shape), jnp.float32),
      params)


@pytest.fixture(scope='module', params=['dit', 'sit'])
def gen(request):
  g, params = generators.build(tiny_config(request.param))
  return g, _perturbed(params)


def _labels():
  return jnp.arange(B, dtype=jnp.int32) % 10


_step = jax.jit(lambda g, p, s, a: g.step(p, s, a, jax.random.key(0)),
                static_argnums=0)
_decode = jax.jit(lambda g, p, s: g.decode(p, s), static_argnums=0)
_apply = jax.jit(lambda g, p, x, t, y: g.net.apply(p, x, t, y),
                 static_argnums=0)


@jax.jit
def _close(a, b):
  """Max |a - b| relative to max |b|."""
  return jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-12)


def _rollout(g, params, raws):
  """rollout with raw actions raws[t] (zeros = the heuristic schedule)."""
  def act(obs, t, rng):
    del rng
    return raws[t], jnp.zeros(obs.shape[:1]), jnp.zeros(obs.shape[:1])
  return rollout_lib.rollout(g, params, _labels(), jax.random.key(5), act)


_run = jax.jit(_rollout, static_argnums=0)


def _loop(g, params, picks, cfgs, rng=jax.random.key(0)):
  """Python loop of step calls; returns states after each decision."""
  state, obs = g.init(params, _labels(), rng)
  states, all_obs = [], [obs]
  for k in range(g.num_steps):
    action = {'timesteps': jnp.broadcast_to(picks[k], (B,)),
              'manual_cfg': jnp.broadcast_to(cfgs[k], (B,))}
    state, obs = _step(g, params, state, action)
    states.append(state)
    all_obs.append(obs)
  return states, all_obs


def test_protocol(gen):
  g, params = gen
  assert g.num_steps == NFE + 1 and not g.stochastic
  assert g.obs_shape == (4, 16) and g.image_shape == (4, 4, 3)
  assert g.action_spec.names == ('timesteps', 'manual_cfg')
  hash(g)
  ident = json.loads(json.dumps(g.identity()))
  assert ident['name'] == g.name and ident['steps'] == NFE
  assert ident['model']['hidden_size'] == 16
  state, obs = g.init(params, _labels(), jax.random.key(0))
  assert obs.shape == (B, 4, 16) and not np.any(np.asarray(obs))
  assert state.solver.x.shape == (B, 4, 4, 4)


def test_rollout_scan_equals_python_loop(gen):
  """A random policy through rollout's scan = the same actions stepped in a
  Python loop."""
  g, params = gen
  spec = g.action_spec
  raws = 0.5 * jax.random.normal(jax.random.key(3), (g.num_steps, B, 2))
  traj = _run(g, params, raws)
  rng_init, _ = jax.random.split(jax.random.key(5))
  state, obs = g.init(params, _labels(), rng_init)
  residual = jnp.asarray(spec.residual(g.num_steps))
  prev = jnp.zeros((B, 2))
  for t in range(g.num_steps):
    assert float(_close(traj.obs[t], obs)) < 1e-5, t
    prev, action = rollout_lib.actions_from_raw(spec, residual, prev,
                                                raws[t], jnp.asarray(t))
    np.testing.assert_allclose(traj.actions[t], jnp.stack(
        [action['timesteps'], action['manual_cfg']], -1), atol=1e-6)
    state, obs = _step(g, params, state, action)
  assert float(_close(traj.images, _decode(g, params, state))) < 1e-5
  assert float(jnp.std(traj.images)) > 1e-3


def test_zero_policy_runs_the_heuristic_grid(gen):
  """Zero raw actions through rollout's residual + smoothing path."""
  g, params = gen
  traj = _run(g, params, jnp.zeros((g.num_steps, B, 2)))
  want = g.heuristic(g.num_steps)
  np.testing.assert_allclose(
      traj.actions, np.broadcast_to(want[:, None], (g.num_steps, B, 2)),
      rtol=1e-5, atol=1e-6)
  start, end = (0.9, 0.01) if g.name == 'dit' else (0.01, 0.99)
  np.testing.assert_allclose(want[:, 0], np.linspace(start, end, NFE + 1))
  # The solver evaluates at exactly those times (the clamps do not bind).
  states, _ = _loop(g, params, jnp.asarray(traj.actions[:, 0, 0]),
                    jnp.asarray(traj.actions[:, 0, 1]))
  times = np.stack([np.asarray(s.solver.t) for s in states])
  np.testing.assert_allclose(times, np.broadcast_to(want[:, :1], times.shape),
                             atol=1e-5)


def test_adversarial_times_are_clamped(gen):
  g, params = gen
  picks = jnp.asarray([0.5, 0.6, 0.995, 1e-4, 0.5, 0.7, 0.2])
  states, _ = _loop(g, params, picks, jnp.ones((g.num_steps,)))
  times = np.asarray([float(s.solver.t[0]) for s in states])
  if g.name == 'dit':
    np.testing.assert_allclose(times, [0.5, 0.49, 0.48, 0.01, 0.01, 0.01,
                                       0.01], atol=1e-6)
  else:
    np.testing.assert_allclose(times, [0.5, 0.6, 0.99, 0.99, 0.99, 0.99,
                                       0.99], atol=1e-6)
  assert np.all(np.isfinite(np.asarray(states[-1].solver.x)))


@pytest.mark.parametrize('w', [0.0, 2.0])
def test_guidance_of_one_evaluation(gen, w):
  """Decision 1's cfg guides evaluation 1 (channels 0-2; w=0: cond model),
  and the batched 2B forward equals separate cond / uncond forwards."""
  g, params = gen
  t0 = g.heuristic(g.num_steps)[0, 0]
  states, obs = _loop(g, params, jnp.asarray([t0, t0 + 0.05 * (
      -1 if g.name == 'dit' else 1)] + [0.5] * NFE), jnp.full((NFE + 1,), w))
  s0 = states[0]
  x, t = s0.solver.x, s0.solver.t
  scale = g.paradigm.time_scale
  cond, feat = _apply(g, params['dit'], x, scale * t, _labels())
  uncond, _ = _apply(g, params['dit'], x, scale * t,
                     jnp.full((B,), g.num_classes))
  np.testing.assert_allclose(s0.cond, cond[..., :4], atol=1e-5)
  np.testing.assert_allclose(s0.uncond, uncond[..., :4], atol=1e-5)
  out = cond[..., :4] + w * (cond[..., :4] - uncond[..., :4])
  out = out.at[..., 3].set(cond[..., 3])
  if w == 0.0:
    np.testing.assert_array_equal(solver.guide(s0.cond, s0.uncond,
                                               jnp.zeros((B,)), 3), s0.cond)
  pred = g.prediction(out, x, t)
  want = solver.advance('dpm2s', g.paradigm.schedule, g.paradigm.rule,
                        s0.solver, pred, states[1].solver.t)
  np.testing.assert_allclose(states[1].solver.x, want.x, atol=1e-5)
  np.testing.assert_allclose(obs[1], feat, atol=1e-5)  # evaluation 1's


def test_last_decision_runs_no_evaluation(gen):
  g, params = gen
  want = g.heuristic(g.num_steps)
  states, obs = _loop(g, params, jnp.asarray(want[:, 0]),
                      jnp.asarray(want[:, 1]))
  assert int(states[-1].solver.count) == NFE + 1
  assert not np.any(np.asarray(obs[-1])) and np.any(np.asarray(obs[-2]))
  assert not np.any(np.asarray(states[-1].cond))


@pytest.mark.parametrize('method', ['euler', 'heun'])
def test_sit_velocity_solvers(method):
  g, params = generators.build(tiny_config('sit', solver=method))
  params = _perturbed(params)
  traj = _run(g, params, jnp.zeros((g.num_steps, B, 2)))
  assert traj.images.shape == (B, 4, 4, 3)
  assert np.all(np.isfinite(np.asarray(traj.images)))
  want = solver.heuristic_times(method, NFE, 0.01, 0.99, 'reference',
                                solver.FlowLinear())
  np.testing.assert_allclose(traj.actions[:, 0, 0], want, atol=1e-5)


def test_build_errors(tmp_path):
  with pytest.raises(errors.UserError, match='solver'):
    generators.build(tiny_config('dit', solver='heun'))
  with pytest.raises(errors.UserError, match='schedule'):
    generators.build(tiny_config('sit', schedule='cosine'))
  missing = tiny_config('dit', random_init=False,
                        weights=str(tmp_path / 'w' / 'dit.msgpack'),
                        vae_weights=str(tmp_path / 'w' / 'sd_vae.msgpack'))
  with pytest.raises(errors.UserError,
                     match=r'dit\.msgpack.*convert\.dit --dit=DiT-XL-2'):
    generators.build(missing)


def test_weights_files_round_trip(tmp_path):
  g, params = generators.build(tiny_config('sit'))
  paths = dict(weights=str(tmp_path / 'sit.msgpack'),
               vae_weights=str(tmp_path / 'sd_vae.msgpack'))
  assets.save_variables(paths['weights'], params['dit'])
  assets.save_variables(paths['vae_weights'], params['vae'])
  g2, loaded = generators.build(tiny_config('sit', random_init=False,
                                            **paths))
  assert g2.weights == 'sit.msgpack'
  chex.assert_trees_all_equal(loaded, params)
  bigger = tiny_config('sit', random_init=False, **paths)
  bigger.model.hidden_size = 32
  with pytest.raises(errors.UserError, match='do not fit'):
    generators.build(bigger)
  assert isinstance(g, dit.LatentGenerator)


def test_x0_clip_bounds_the_data_prediction_and_is_off_by_default():
  g, _ = generators.build(tiny_config('dit'))
  clipped, _ = generators.build(tiny_config('dit', x0_clip=1.0))
  # Off: the identity (what exported policies are tied to) is unchanged.
  assert 'x0_clip' not in g.identity()
  assert clipped.identity()['x0_clip'] == 1.0
  k1, k2 = jax.random.split(jax.random.key(4))
  x = jax.random.normal(k1, (B, 4, 4, 4))
  eps = 3.0 * jax.random.normal(k2, (B, 4, 4, 4))
  t = jnp.full((B,), 0.9)  # alpha ~ 0.017: x0 is far outside [-1, 1]
  free = g.prediction(eps, x, t)
  bounded = clipped.prediction(eps, x, t)
  assert float(jnp.max(jnp.abs(free))) > 10.0
  np.testing.assert_array_equal(bounded, jnp.clip(free, -1.0, 1.0))
  with pytest.raises(errors.UserError, match='x0_clip'):
    generators.build(tiny_config('dit', x0_clip=-1.0))


def test_min_stage_ratio_is_recorded_only_when_on_and_checked():
  g, _ = generators.build(tiny_config('dit'))
  guarded, _ = generators.build(tiny_config('dit', min_stage_ratio=0.1))
  assert g.min_stage_ratio == 0.0 and 'min_stage_ratio' not in g.identity()
  assert guarded.identity()['min_stage_ratio'] == 0.1
  for bad in (-0.1, 1.0):
    with pytest.raises(errors.UserError, match='min_stage_ratio'):
      generators.build(tiny_config('dit', min_stage_ratio=bad))


@pytest.mark.parametrize('name,t_end', [('dit', 0.002), ('sit', 0.998)])
def test_t_end_moves_the_grid_and_clamp_end(name, t_end):
  g, params = generators.build(tiny_config(name, t_end=t_end))
  default, _ = generators.build(tiny_config(name))
  assert 't_end' not in default.identity()
  assert g.identity()['t_end'] == t_end
  np.testing.assert_allclose(g.heuristic(g.num_steps)[-1, 0], t_end)
  # Times pushed past the data end stop at t_end, not at the reference's.
  picks = jnp.asarray([0.5] + [1e-4 if name == 'dit' else 0.9999] * NFE)
  states, _ = _loop(g, params, picks, jnp.ones((g.num_steps,)))
  np.testing.assert_allclose(float(states[-1].solver.t[0]), t_end, atol=1e-6)
  for bad in (1.2, -0.1, 0.9 if name == 'dit' else 0.01):
    with pytest.raises(errors.UserError, match='t_end'):
      generators.build(tiny_config(name, t_end=bad))


def test_output_v_prediction_is_recorded_and_checked():
  g, _ = generators.build(tiny_config('dit', output='v'))
  assert g.prediction_type == 'v' and g.identity()['output'] == 'v'
  # The published output, spelled out or not, is one identity.
  spelled, _ = generators.build(tiny_config('dit', output='noise'))
  default, _ = generators.build(tiny_config('dit'))
  assert spelled.identity() == default.identity()
  assert default.prediction_type == 'noise'
  k1, k2 = jax.random.split(jax.random.key(6))
  x = jax.random.normal(k1, (B, 4, 4, 4))
  v = jax.random.normal(k2, (B, 4, 4, 4))
  t = jnp.full((B,), 0.5)
  sched = g.paradigm.schedule
  np.testing.assert_allclose(
      g.prediction(v, x, t),
      sched.alpha(0.5) * x - sched.sigma(0.5) * v, rtol=1e-5, atol=1e-6)
  with pytest.raises(errors.UserError, match='output'):
    generators.build(tiny_config('sit', output='v'))


def test_grouped_rollout_shares_the_initial_noise(gen):
  """group_size G: each run of G samples starts from one noise, so the
  deterministic sampler gives G equal images; the groups differ."""
  g, params = gen
  labels = jnp.repeat(jnp.arange(2, dtype=jnp.int32), 2)
  run = jax.jit(lambda: rollout_lib.rollout(
      g, params, labels, jax.random.key(3), keep_obs=False, group_size=2))
  images = np.asarray(run().images)
  # Equal up to float32 round-off: XLA:CPU's code for a row can depend on
  # its place in the batch (on an AMD EPYC rows 2 and 3 differ by 1 ulp).
  np.testing.assert_allclose(images[0], images[1], rtol=0, atol=1e-6)
  np.testing.assert_allclose(images[2], images[3], rtol=0, atol=1e-6)
  assert np.abs(images[0] - images[2]).max() > 1e-3
  with pytest.raises(ValueError, match='groups of 3'):
    rollout_lib.rollout(g, params, labels, jax.random.key(3),
                        keep_obs=False, group_size=3)
