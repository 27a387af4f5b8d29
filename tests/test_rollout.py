"""Rollout scan contract, checked on the toy generator."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import assets
from adagen_jax import generators
from adagen_jax.generators import base
from adagen_jax.generators import toy
from adagen_jax.rl import rollout as rollout_lib

T, B = 5, 8


@pytest.fixture(scope='module')
def gen():
  return generators.build(ml_collections.ConfigDict(
      {'name': 'toy', 'steps': T, 'smoothing': 0.8}))


def _labels():
  return jnp.arange(B, dtype=jnp.int32) % toy.NUM_CLASSES


def test_toy_protocol_shapes(gen):
  g, params = gen
  assert g.name == 'toy' and g.num_steps == T and g.stochastic
  state, obs = g.init(params, _labels(), jax.random.key(0))
  assert obs.shape == (B,) + g.obs_shape == (B, 16, 8)
  action = {'blend': jnp.full((B,), 0.5), 'temp': jnp.full((B,), 1.0)}
  state, obs = g.step(params, state, action, jax.random.key(1))
  assert obs.shape == (B, 16, 8) and int(state.step) == 1
  images = g.decode(params, state)
  assert images.shape == (B,) + g.image_shape
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  hash(g)  # static jit argument


def test_toy_obs_are_image_and_template_patches(gen):
  g, params = gen
  state, obs = g.init(params, _labels(), jax.random.key(0))
  x = np.asarray(state.x)[..., 0]
  tmpl = np.asarray(params['templates'])[np.asarray(_labels()), ..., 0]
  # token (i, j) of the 4x4 map holds pixels [2i:2i+2, 2j:2j+2] row-major.
  np.testing.assert_array_equal(np.asarray(obs)[:, 1 * 4 + 2, :4],
                                x[:, 2:4, 4:6].reshape(B, 4))
  np.testing.assert_array_equal(np.asarray(obs)[:, 3 * 4 + 0, 4:],
                                tmpl[:, 6:8, 0:2].reshape(B, 4))


def test_toy_step_closed_form(gen):
  g, params = gen
  state, _ = g.init(params, _labels(), jax.random.key(0))
  # Without noise, blend b gives x + b (template - x).
  action = {'blend': jnp.linspace(0.1, 0.9, B), 'temp': jnp.zeros((B,))}
  new, _ = g.step(params, state, action, jax.random.key(1))
  tmpl = params['templates'][_labels()]
  want = state.x + action['blend'][:, None, None, None] * (tmpl - state.x)
  np.testing.assert_allclose(new.x, want, atol=1e-6)


def test_heuristic_rollout_executes_the_schedule(gen):
  g, params = gen
  traj = jax.jit(lambda r: rollout_lib.rollout(g, params, _labels(), r))(
      jax.random.key(0))
  assert traj.obs.shape == (T, B, 16, 8)
  assert traj.raw.shape == (T, B, 2) and traj.actions.shape == (T, B, 2)
  assert traj.logp.shape == traj.value.shape == (T, B)
  want = g.action_spec.heuristic(T)
  np.testing.assert_allclose(traj.actions, np.broadcast_to(
      want[:, None], (T, B, 2)), rtol=1e-5, atol=1e-6)


def test_rollout_smooths_raw_actions_in_pre_activation_space(gen):
  g, params = gen
  spec = g.action_spec
  raws = jax.random.normal(jax.random.key(3), (T, B, 2))

  def act(obs, t, rng):
    del rng
    return raws[t], jnp.zeros(obs.shape[:1]), jnp.zeros(obs.shape[:1])

  traj = rollout_lib.rollout(g, params, _labels(), jax.random.key(0), act)
  residual = spec.residual(T).astype(np.float64)
  pre = np.zeros((B, 2))
  want = []
  for t in range(T):
    x = np.asarray(raws[t], np.float64) + residual[t]
    pre = x if t == 0 else 0.8 * pre + 0.2 * x
    want.append(np.stack([1 / (1 + np.exp(-pre[:, 0])),
                          np.log1p(np.exp(pre[:, 1]))], -1))
  np.testing.assert_allclose(traj.actions, np.stack(want), rtol=1e-5,
                             atol=1e-6)


def test_rollout_randomness(gen):
  g, params = gen
  run = jax.jit(lambda r: rollout_lib.rollout(g, params, _labels(), r,
                                              keep_obs=False))
  a, b, c = (run(jax.random.key(s)) for s in (0, 0, 1))
  assert a.obs is None
  np.testing.assert_array_equal(a.images, b.images)
  assert float(jnp.abs(a.images - c.images).max()) > 0.1


def test_better_actions_give_better_toy_reward(gen):
  """The toy's reward depends on the actions: colder, bolder is better."""
  g, params = gen
  big = jnp.asarray([[2.0, -2.0]] * B, jnp.float32)

  def act(obs, t, rng):
    del t, rng
    return big, jnp.zeros(obs.shape[:1]), jnp.zeros(obs.shape[:1])

  rng = jax.random.key(0)
  base_traj = rollout_lib.rollout(g, params, _labels(), rng)
  good_traj = rollout_lib.rollout(g, params, _labels(), rng, act)
  r0 = toy.template_reward(params, base_traj.images, _labels()).mean()
  r1 = toy.template_reward(params, good_traj.images, _labels()).mean()
  assert float(r1) > float(r0) + 0.01, (r0, r1)


def test_inverse_smoothing_round_trip():
  seq = np.random.RandomState(0).randn(6, 2)
  inv = base.inverse_smooth(seq, 0.8)
  out, prev = [], None
  for t in range(6):
    prev = inv[t] if t == 0 else 0.8 * prev + 0.2 * inv[t]
    out.append(prev)
  np.testing.assert_allclose(np.stack(out), seq, atol=1e-12)


@pytest.mark.parametrize('name', ['maskgit', 'sit', 'var'])
def test_build_abstract_reads_no_weights_and_compiles(name, tmp_path,
                                                      monkeypatch):
  """Shapes of the shipped generators without their files; a compiled step."""
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  section = shipped.fmnist_generator(name, 2)
  # VAR's Fashion-MNIST weights are not shipped yet: shapes only.
  real = None if name == 'var' else generators.build(section)[1]
  # No weight file may be touched: point every asset lookup at nothing.
  monkeypatch.setattr(assets, 'asset_path',
                      lambda *a, **k: str(tmp_path / 'missing'))
  gen, params = generators.build_abstract(section)
  assert all(isinstance(x, jax.ShapeDtypeStruct)
             for x in jax.tree.leaves(params))
  if real is not None:
    chex.assert_trees_all_equal_shapes_and_dtypes(params, real)
  labels = jax.ShapeDtypeStruct((4,), jnp.int32)
  key = jax.eval_shape(lambda: jax.random.key(0))
  compiled = jax.jit(lambda p, l, k: rollout_lib.rollout(
      gen, p, l, k, keep_obs=False).images).lower(params, labels, key).compile()
  assert compiled.cost_analysis()['flops'] > 0
  assert compiled.memory_analysis().argument_size_in_bytes > 0
