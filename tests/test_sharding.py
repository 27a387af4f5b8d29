"""Sharded PPO (8 forced CPU devices, batch over 'data') == one device.

Parameters are replicated and the batch is split over the mesh; XLA inserts
the cross-device reductions, so the update must equal the single-device one
up to float32 reduction-order round-off.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from adagen_jax import generators
from adagen_jax.parallel import mesh as mesh_lib
from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import ppo as ppo_lib
from adagen_jax.rl import rollout as rollout_lib

# Sharded vs single-device parameters after K SGD steps: float32 sums in a
# different order differ by ~1e-7 relative, so 1e-5 relative (1e-7 absolute
# for parameters near 0) is round-off, while any real difference (a lost
# shard, a per-device mean) is orders of magnitude larger. SGD rather than
# Adam, whose m / sqrt(v) turns round-off in near-zero gradients into +-lr.
RTOL, ATOL = 1e-5, 1e-7


def _run(sharded: bool):
  gen, gen_params = generators.build(ml_collections.ConfigDict(
      dict(name='toy', steps=4)))
  agent = policy_lib.make_agent(gen.action_spec.size, gen.num_steps,
                                hidden_size=16)
  params = agent.init(jax.random.key(0), gen.obs_shape)
  state = ppo_lib.create_train_state(params, tx=optax.sgd(0.05))
  labels = jnp.arange(32, dtype=jnp.int32) % gen.num_classes
  if sharded:
    mesh = mesh_lib.make_mesh()
    assert mesh.size == 8
    state = mesh_lib.replicate(state, mesh)
    gen_params = mesh_lib.replicate(gen_params, mesh)
    labels = jax.device_put(labels, mesh_lib.batch_sharded(mesh))
  else:
    dev = jax.devices()[0]
    state, gen_params, labels = jax.device_put((state, gen_params, labels),
                                               dev)
  sigma = jnp.float32(0.5)

  @jax.jit
  def iteration(state, gen_params, labels):
    act = agent.make_act_fn(state.params, sigma, explore=True)
    traj = rollout_lib.rollout(gen, gen_params, labels, jax.random.key(1),
                               act)
    reward = -jnp.mean(jnp.square(traj.images - 0.5), axis=(1, 2, 3))
    batch = ppo_lib.make_batch(traj, reward)
    return ppo_lib.ppo_update(state, agent, batch, sigma,
                              ppo_lib.PPOConfig(epochs=3))

  state, metrics = iteration(state, gen_params, labels)
  return jax.device_get(state.params), jax.device_get(metrics)


def test_sharded_ppo_update_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip('needs 8 forced host devices (tests/conftest.py)')
  p1, m1 = _run(False)
  p8, m8 = _run(True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
               p1, p8)
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-5)
  # The update did something (so equality is not vacuous).
  p0 = policy_lib.make_agent(2, 4, hidden_size=16).init(
      jax.random.key(0), (16, 8))
  diff = jax.tree.map(lambda a, b: np.abs(a - b).max(), p0, p1)
  assert max(jax.tree.leaves(diff)) > 1e-4


def test_replicated_state_does_not_retrace_a_one_device_step():
  """On a 1-device mesh, replicate() places single-device arrays on the mesh:
  a jitted step fed its own outputs must hit its trace cache (jit keys on the
  mesh, so an unmeshed first input retraced and recompiled every program)."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',),
                           axis_types=(jax.sharding.AxisType.Auto,))
  state = mesh_lib.replicate({'w': jnp.ones(3), 'n': jnp.int32(0)}, mesh)
  assert all(x.sharding == mesh_lib.replicated(mesh)
             for x in jax.tree.leaves(state))
  assert mesh_lib.replicate(state, mesh)['w'] is state['w']  # passes through
  step = jax.jit(lambda s: {'w': s['w'] * 2, 'n': s['n'] + 1},
                 out_shardings=mesh_lib.replicated(mesh))
  for _ in range(3):
    state = step(state)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  np.testing.assert_array_equal(state['w'], 8.0)
