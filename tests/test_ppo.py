"""PPO: return normalisation, batch layout, loss pieces, updates, learning."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from adagen_jax import generators
from adagen_jax.generators import toy
from adagen_jax.rl import policy
from adagen_jax.rl import ppo
from adagen_jax.rl import rollout as rollout_lib


def _toy(num_steps):
  return generators.build(ml_collections.ConfigDict(
      {'name': 'toy', 'steps': num_steps, 'smoothing': 0.8}))


def test_normalize_returns_matches_torch_convention():
  r = np.random.RandomState(0).randn(37).astype(np.float32) * 3 + 1
  want = (r - r.mean()) / (r.std(ddof=1) + 1e-7)  # torch .std() is unbiased
  np.testing.assert_allclose(ppo.normalize_returns(jnp.asarray(r)), want,
                             rtol=1e-5, atol=1e-6)


def test_make_batch_is_sample_major_and_normalises_all_steps():
  t_, b_, a_ = 3, 4, 2
  rs = np.random.RandomState(1)
  traj = rollout_lib.Trajectory(
      obs=jnp.asarray(rs.randn(t_, b_, 4, 5), jnp.float32),
      raw=jnp.asarray(rs.randn(t_, b_, a_), jnp.float32),
      logp=jnp.asarray(rs.randn(t_, b_), jnp.float32),
      value=jnp.asarray(rs.randn(t_, b_), jnp.float32),
      actions=jnp.zeros((t_, b_, a_)), images=jnp.zeros((b_, 2, 2, 1)),
      labels=jnp.arange(b_))
  rewards = np.asarray([0.1, 0.9, 0.4, 0.3], np.float32)
  batch = ppo.make_batch(traj, jnp.asarray(rewards))
  assert batch.obs.shape == (b_ * t_, 4, 5)
  for b in range(b_):
    for t in range(t_):
      i = b * t_ + t
      assert int(batch.t[i]) == t
      np.testing.assert_array_equal(batch.obs[i], traj.obs[t, b])
      np.testing.assert_array_equal(batch.raw[i], traj.raw[t, b])
      assert float(batch.logp_old[i]) == float(traj.logp[t, b])
      assert float(batch.baseline[i]) == float(traj.value[t, b])
  per_step = np.repeat(rewards, t_)
  want = (per_step - per_step.mean()) / (per_step.std(ddof=1) + 1e-7)
  np.testing.assert_allclose(batch.returns, want, rtol=1e-5)


@jax.jit(static_argnums=0)
def _logp_value(agent, params, obs, t, raw):
  return (agent.log_prob(params, obs, t, raw, 0.3),
          agent.value(params, obs, t))


def _random_batch(agent, params, m, obs_shape, rs, log_ratio):
  obs = jnp.asarray(rs.randn(m, *obs_shape), jnp.float32)
  t = jnp.asarray(rs.randint(0, 4, m), jnp.int32)
  raw = jnp.asarray(rs.randn(m, 2), jnp.float32)
  logp_new, _ = _logp_value(agent, params, obs, t, raw)
  return ppo.PPOBatch(
      obs=obs, t=t, raw=raw, logp_old=logp_new - jnp.asarray(log_ratio),
      baseline=jnp.asarray(rs.randn(m) * 0.3, jnp.float32),
      returns=jnp.asarray(rs.randn(m), jnp.float32))


@pytest.fixture(scope='module')
def init_agent():
  """The toy-sized agent and its initial (zero-head) parameters, once."""
  agent = policy.make_agent(2, 4, hidden_size=16)
  return agent, jax.jit(agent.init, static_argnums=1)(jax.random.key(0),
                                                      (16, 8))


@pytest.fixture(scope='module')
def small_agent(init_agent):
  agent, params = init_agent
  # Non-zero heads, so means and values are not trivially zero.
  params = jax.jit(lambda p: jax.tree.map(
      lambda x: x + 0.1 * jax.random.normal(jax.random.key(9), x.shape),
      p))(params)
  return agent, params


# One compiled update shared by the tests below (same shapes and config).
_update = jax.jit(ppo.ppo_update, static_argnums=(1, 4))


def test_ppo_loss_matches_numpy(small_agent):
  agent, params = small_agent
  rs = np.random.RandomState(2)
  m = 64
  # Log-ratios spread over [-0.5, 0.5]: some inside, some outside the clip.
  batch = _random_batch(agent, params, m, (16, 8), rs,
                        rs.uniform(-0.5, 0.5, m).astype(np.float32))
  loss, metrics = jax.jit(ppo.ppo_loss, static_argnums=1)(
      params, agent, batch, jnp.float32(0.3))
  logp, value = (np.asarray(x, np.float64) for x in _logp_value(
      agent, params, batch.obs, batch.t, batch.raw))
  ratio = np.exp(logp - np.asarray(batch.logp_old, np.float64))
  adv = np.asarray(batch.returns, np.float64) - np.asarray(batch.baseline)
  pol = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv))
  val = np.mean((value - np.asarray(batch.returns)) ** 2)
  ent = 2 * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(0.3))
  clipped = np.abs(ratio - 1) > 0.2
  assert 0.2 < clipped.mean() < 0.8  # both regimes present
  np.testing.assert_allclose(metrics['policy_loss'], pol, rtol=1e-4)
  np.testing.assert_allclose(metrics['value_loss'], val, rtol=1e-4)
  np.testing.assert_allclose(metrics['entropy'], ent, rtol=1e-5)
  np.testing.assert_allclose(metrics['clip_frac'], clipped.mean(), rtol=1e-6)
  np.testing.assert_allclose(loss, pol + 0.5 * val - 0.01 * ent, rtol=1e-4)


def test_clipping_stops_the_actor_gradient(small_agent):
  agent, params = small_agent
  m = 32
  grad = jax.jit(jax.grad(lambda p, b: ppo.ppo_loss(p, agent, b, 0.3)[0]))

  def actor_grad_norm(log_ratio, sign):
    rs = np.random.RandomState(3)
    batch = _random_batch(agent, params, m, (16, 8), rs,
                          np.full(m, log_ratio, np.float32))
    batch = batch.replace(returns=batch.baseline + sign)  # A = +-1
    g = grad(params, batch)['actor']
    return float(optax.tree.norm(g))

  # ratio = e > 1.2 with A > 0: min() takes the clipped, constant branch.
  assert actor_grad_norm(1.0, +1.0) == 0.0
  # Same ratio with A < 0: the unclipped branch is the min, gradient flows.
  assert actor_grad_norm(1.0, -1.0) > 1e-4
  # Inside the trust region the gradient flows for either sign.
  assert actor_grad_norm(0.0, +1.0) > 1e-4


def test_kl_to_the_reference_policy(small_agent):
  agent, params = small_agent
  rs = np.random.RandomState(4)
  m, sigma = 48, 0.3
  batch = _random_batch(agent, params, m, (16, 8), rs, np.zeros(m))
  loss_fn = jax.jit(ppo.ppo_loss, static_argnums=(1, 7))
  with pytest.raises(ValueError, match='with_reference_mean'):
    loss_fn(params, agent, batch, sigma, 0.2, 0.5, 0.01, 0.1)
  # At the reference itself the KL is 0 and the loss unchanged.
  at_ref = ppo.with_reference_mean(batch, agent, params)
  plain, _ = loss_fn(params, agent, batch, sigma, 0.2, 0.5, 0.01, 0.0)
  loss, metrics = loss_fn(params, agent, at_ref, sigma, 0.2, 0.5, 0.01, 0.1)
  assert float(metrics['kl_ref']) < 1e-10
  np.testing.assert_allclose(loss, plain, rtol=1e-6)
  # Away from it: sum_a d_a^2 / (2 sigma^2) of the two Gaussians' means.
  shift = jnp.asarray(rs.randn(m, 2), jnp.float32)
  away = at_ref.replace(mean_ref=at_ref.mean_ref + shift)
  loss, metrics = loss_fn(params, agent, away, sigma, 0.2, 0.5, 0.01, 0.1)
  want = np.mean(np.sum(np.square(shift), -1)) / (2 * sigma ** 2)
  np.testing.assert_allclose(metrics['kl_ref'], want, rtol=1e-5)
  np.testing.assert_allclose(loss, plain + 0.1 * want, rtol=1e-5)
  # With no advantage, the updates walk the policy's means to the reference.
  zero_adv = away.replace(returns=away.baseline)
  config = ppo.PPOConfig(epochs=20, kl_coef=1.0)
  state = ppo.create_train_state(params, 1e-2)
  state, _ = _update(state, agent, zero_adv, jnp.float32(sigma), config)
  before = np.abs(np.asarray(shift)).mean()
  after = np.abs(np.asarray(agent.mean(state.params, away.obs, away.t)
                            - away.mean_ref)).mean()
  assert after < 0.7 * before, (before, after)


def test_ppo_update_equals_manual_adam_steps(small_agent):
  agent, params = small_agent
  rs = np.random.RandomState(4)
  batch = _random_batch(agent, params, 32, (16, 8), rs,
                        rs.uniform(-0.3, 0.3, 32).astype(np.float32))
  state = ppo.create_train_state(params, learning_rate=1e-3)
  new, metrics = _update(state, agent, batch, jnp.float32(0.3),
                         ppo.PPOConfig(epochs=2))
  tx = optax.adam(1e-3)

  @jax.jit
  def manual_step(p, opt):
    (loss, _), g = jax.value_and_grad(ppo.ppo_loss, has_aux=True)(
        p, agent, batch, 0.3)
    upd, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, upd), opt, loss

  p, opt = params, tx.init(params)
  losses = []
  for _ in range(2):
    p, opt, loss = manual_step(p, opt)
    losses.append(float(loss))
  assert int(new.step) == 2
  chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6)
  jax.tree.map(chex_close, new.params, p)
  chex_close(metrics['loss_first'], losses[0])
  chex_close(metrics['loss'], np.mean(losses))


def test_ppo_update_minibatches(small_agent):
  agent, params = small_agent
  rs = np.random.RandomState(5)
  batch = _random_batch(agent, params, 32, (16, 8), rs, np.zeros(32))
  config = ppo.PPOConfig(epochs=3, num_minibatches=4)
  state = ppo.create_train_state(params, learning_rate=1e-3)
  new, metrics = _update(state, agent, batch, jnp.float32(0.3), config,
                         jax.random.key(0))
  assert int(new.step) == 12
  assert all(np.isfinite(float(v)) for v in metrics.values())
  # Validation happens before any computation.
  with pytest.raises(ValueError, match='rng'):
    ppo.ppo_update(state, agent, batch, 0.3, config)
  with pytest.raises(ValueError, match='minibatches'):
    ppo.ppo_update(state, agent, batch, 0.3,
                   ppo.PPOConfig(num_minibatches=5), jax.random.key(0))


def test_micro_batches_give_the_unsplit_update(small_agent):
  """Gradient accumulation over 4 chunks == one full-batch gradient."""
  agent, params = small_agent
  rs = np.random.RandomState(6)
  batch = _random_batch(agent, params, 32, (16, 8), rs,
                        rs.uniform(-0.3, 0.3, 32).astype(np.float32))
  state = ppo.create_train_state(params, learning_rate=1e-3)
  updates = [_update(state, agent, batch, jnp.float32(0.3),
                     ppo.PPOConfig(epochs=2, micro_batches=k))
             for k in (1, 4)]
  (whole, m_whole), (split, m_split) = updates
  chex.assert_trees_all_close(split.params, whole.params, rtol=1e-5,
                              atol=1e-7)
  chex.assert_trees_all_close(m_split, m_whole, rtol=1e-5, atol=1e-7)
  # A real update, not two untouched copies.
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       whole.params, params)
  assert max(jax.tree.leaves(moved)) > 1e-4
  with pytest.raises(ValueError, match='micro-batches'):
    ppo.ppo_update(state, agent, batch, 0.3, ppo.PPOConfig(micro_batches=5))


def _train(agent, params, lr, iters, num_steps=4, batch=64):
  """PPO on the toy against -MSE to the class templates.

  Returns:
    The deterministic policy's mean reward before and after training.
  """
  g, gp = _toy(num_steps)
  state = ppo.create_train_state(params, learning_rate=lr)
  sigma = jnp.float32(0.3)
  labels = jnp.arange(batch, dtype=jnp.int32) % toy.NUM_CLASSES

  @jax.jit
  def iterate(state, rng):
    k_roll, k_ppo = jax.random.split(rng)
    act = agent.make_act_fn(state.params, sigma, explore=True)
    traj = rollout_lib.rollout(g, gp, labels, k_roll, act)
    rewards = toy.template_reward(gp, traj.images, labels)
    return ppo.ppo_update(state, agent, ppo.make_batch(traj, rewards), sigma,
                          rng=k_ppo)

  @jax.jit
  def evaluate(params):  # the deterministic (mean) policy, fixed noise
    act = agent.make_act_fn(params, sigma, explore=False, with_value=False)
    traj = rollout_lib.rollout(g, gp, labels, jax.random.key(123), act,
                               keep_obs=False)
    return toy.template_reward(gp, traj.images, labels).mean()

  before = float(evaluate(state.params))
  for key in jax.random.split(jax.random.key(1), iters):
    state, metrics = iterate(state, key)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  return before, float(evaluate(state.params))


def test_ppo_learns_on_toy(init_agent):
  before, after = _train(*init_agent, lr=1e-3, iters=20)
  # Measured: about -0.049 -> -0.0006 (the optimum is 0).
  assert before < -0.03
  assert after > before + 0.02, (before, after)


def test_non_adaptive_policy_trains_through_ppo_update(init_agent):
  agent, params = init_agent
  table_agent = policy.make_agent(2, 4, adaptive=False, hidden_size=16)
  assert table_agent.critic == agent.critic
  # The table's init is zeros: build it directly and reuse the critic.
  params = {'actor': {'params': {'table': jnp.zeros((4, 2))}},
            'critic': params['critic']}
  before, after = _train(table_agent, params, lr=1e-2, iters=20)
  # Measured: about -0.049 -> -0.008.
  assert after > before + 0.02, (before, after)


def test_ppo_update_on_a_sharded_batch(small_agent):
  """The batch axis sharded over 8 devices gives the unsharded update."""
  agent, params = small_agent
  rs = np.random.RandomState(6)
  batch = _random_batch(agent, params, 32, (16, 8), rs,
                        rs.uniform(-0.3, 0.3, 32).astype(np.float32))
  mesh = jax.make_mesh((8,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(batch, jax.sharding.NamedSharding(
      mesh, jax.P('data')))
  state = ppo.create_train_state(params, learning_rate=1e-3)
  config = ppo.PPOConfig(epochs=2)
  want, _ = _update(state, agent, batch, jnp.float32(0.3), config)
  got, _ = _update(state, agent, sharded, jnp.float32(0.3), config)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               got.params, want.params)


def test_group_baseline_is_the_groups_mean_return():
  """group_size G: the advantage of each sample is its normalised return
  minus its group's mean; advantages sum to zero within every group."""
  t_, b_, g_ = 3, 6, 3
  rs = np.random.RandomState(2)
  traj = rollout_lib.Trajectory(
      obs=jnp.zeros((t_, b_, 1, 1)), raw=jnp.zeros((t_, b_, 1)),
      logp=jnp.zeros((t_, b_)),
      value=jnp.asarray(rs.randn(t_, b_), jnp.float32),
      actions=jnp.zeros((t_, b_, 1)), images=jnp.zeros((b_, 2, 2, 1)),
      labels=jnp.zeros((b_,), jnp.int32))
  rewards = jnp.asarray(rs.rand(b_), jnp.float32)
  plain = ppo.make_batch(traj, rewards)
  grouped = ppo.make_batch(traj, rewards, group_size=g_)
  np.testing.assert_array_equal(grouped.returns, plain.returns)
  r = np.asarray(plain.returns).reshape(b_, t_)[:, 0]
  want = np.repeat(r.reshape(-1, g_).mean(1), g_ * t_)
  np.testing.assert_allclose(grouped.baseline, want, rtol=1e-6, atol=1e-7)
  adv = np.asarray(grouped.returns - grouped.baseline).reshape(-1, g_ * t_)
  np.testing.assert_allclose(adv.sum(1), 0.0, atol=1e-5)
  with pytest.raises(ValueError, match='groups of 4'):
    ppo.make_batch(traj, rewards, group_size=4)
