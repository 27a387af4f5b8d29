"""Policy network, Gaussian agent, sigma schedule and the policy converter."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax import generators
from adagen_jax.rl import convert_policy
from adagen_jax.rl import policy
from adagen_jax.rl import ppo
from adagen_jax.rl import rollout as rollout_lib

T, B = 6, 8


@pytest.fixture(scope='module')
def gen():
  return generators.build(ml_collections.ConfigDict(
      {'name': 'toy', 'steps': T, 'smoothing': 0.8}))


def _labels():
  return jnp.arange(B, dtype=jnp.int32) % 10


def test_reference_size_param_count():
  net = policy.PolicyNet(out_size=4, hidden_size=512)
  shapes = jax.eval_shape(net.init, jax.random.key(0),
                          jnp.zeros((1, 256, 768)), jnp.zeros((), jnp.int32))
  p = shapes['params']
  assert sum(x.size for x in jax.tree.leaves(shapes)) == 11_876_484
  assert p['linear1']['kernel'].shape == (8192, 1024)
  assert p['dw_conv']['kernel'].shape == (3, 3, 1, 512)


def test_untrained_policy_outputs_zero_and_no_embedder_at_hidden_width():
  net = policy.PolicyNet(out_size=3, hidden_size=16)
  x = jax.random.normal(jax.random.key(1), (4, 9, 16))
  v = jax.jit(net.init)(jax.random.key(0), x, jnp.zeros((), jnp.int32))
  assert 'x_embedder' not in v['params']  # C == hidden, as the reference
  out = jax.jit(net.apply)(v, x, jnp.arange(4))
  assert out.shape == (4, 3) and not np.any(np.asarray(out))


@pytest.mark.parametrize('adaptive,step_bias',
                         [(True, False), (False, False), (True, True)])
def test_untrained_agent_reproduces_heuristic_exactly(gen, adaptive,
                                                      step_bias):
  g, gparams = gen
  agent = policy.make_agent(g.action_spec.size, T, adaptive=adaptive,
                            hidden_size=32, step_bias=step_bias)
  params = agent.init(jax.random.key(0), g.obs_shape)

  @jax.jit
  def both(params, rng):
    base = rollout_lib.rollout(g, gparams, _labels(), rng)
    mean_act = agent.make_act_fn(params, jnp.float32(0.6), explore=False)
    return base, rollout_lib.rollout(g, gparams, _labels(), rng, mean_act)

  base, traj = both(params, jax.random.key(7))
  # Zero policy output + inverse-smoothed residual == the heuristic, bit for
  # bit against the no-policy rollout, smoothing (0.8) included.
  np.testing.assert_array_equal(traj.actions, base.actions)
  np.testing.assert_array_equal(traj.images, base.images)
  np.testing.assert_allclose(
      traj.actions, np.broadcast_to(g.action_spec.heuristic(T)[:, None],
                                    (T, B, 2)), rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(traj.raw))
  np.testing.assert_allclose(traj.logp, -2 * (math.log(0.6) +
                                              0.5 * math.log(2 * math.pi)),
                             rtol=1e-6)


def test_explore_logp_matches_numpy_gaussian(gen):
  g, _ = gen
  agent = policy.make_agent(2, T, hidden_size=16)
  params = jax.jit(agent.init, static_argnums=1)(jax.random.key(0),
                                                  g.obs_shape)
  # A random last layer (on a copy of the tree), so the mean is not zero.
  params = jax.tree.map(lambda x: x, params)
  k = params['actor']['params']['linear3']
  k['kernel'] = jax.random.normal(jax.random.key(3), k['kernel'].shape)
  k['bias'] = jnp.asarray([0.3, -0.2])
  sigma = jnp.asarray([0.3, 0.5], jnp.float32)
  act = jax.jit(agent.make_act_fn(params, sigma, explore=True))
  obs = jax.random.normal(jax.random.key(1), (B,) + g.obs_shape)
  raw, logp, value = act(obs, jnp.int32(2), jax.random.key(2))
  mean = np.asarray(jax.jit(agent.mean)(params, obs, jnp.int32(2)),
                    np.float64)
  assert np.abs(mean).max() > 0.1
  s = np.asarray(sigma, np.float64)
  want = np.sum(-0.5 * ((np.asarray(raw) - mean) / s) ** 2 - np.log(s)
                - 0.5 * np.log(2 * np.pi), axis=-1)
  np.testing.assert_allclose(logp, want, rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(agent.log_prob)(params, obs, jnp.int32(2), raw, sigma), want,
      rtol=1e-5)
  assert raw.dtype == logp.dtype == value.dtype == jnp.float32
  assert value.shape == logp.shape == (B,)
  # The deterministic policy is the mean; sigma = 0 gives no NaN.
  det = jax.jit(agent.make_act_fn(params, jnp.float32(0.0), explore=False))
  raw0, logp0, _ = det(obs, jnp.int32(2), jax.random.key(2))
  np.testing.assert_allclose(raw0, mean, rtol=1e-5, atol=1e-6)
  assert np.all(np.isposinf(logp0))
  # The samples really are N(mean, sigma^2).
  raws = jax.jit(jax.vmap(lambda r: act(obs, jnp.int32(2), r)[0]))(
      jax.random.split(jax.random.key(5), 400))
  z = (np.asarray(raws) - mean) / s
  assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.05


@pytest.mark.parametrize('side', [7, 8, 16])
def test_depthwise_conv_equals_grouped_conv(side):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (3, side, side, 12))
  mine = policy.DepthwiseConv3x3S2()
  variables = mine.init(jax.random.key(1), x)
  variables = jax.tree.map(
      lambda v: jax.random.normal(jax.random.key(2), v.shape), variables)
  ref = nn.Conv(12, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                feature_group_count=12)
  with jax.default_matmul_precision('highest'):
    np.testing.assert_allclose(mine.apply(variables, x),
                               ref.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_action_std_schedule():
  vals = [float(policy.action_std(i)) for i in (0, 499, 500, 501, 10_000)]
  np.testing.assert_allclose(vals, [0.6, 0.6, 0.3, 0.3, 0.3], rtol=1e-6)
  sched = lambda i: float(policy.action_std(i, decay_steps=(100, 200)))
  np.testing.assert_allclose([sched(99), sched(100), sched(250)],
                             [0.6, 0.3, 0.1], rtol=1e-6)  # floor 0.1
  assert float(policy.action_std(3, decay_steps=())) == pytest.approx(0.6)
  traced = jax.jit(policy.action_std)(jnp.int32(600))
  assert float(traced) == pytest.approx(0.3)


def test_timestep_embedding_is_cos_first():
  emb = policy.TimestepEmbedder(hidden_size=8)
  v = emb.init(jax.random.key(0), jnp.zeros((1,), jnp.int32))
  t = jnp.asarray([3], jnp.int32)  # biases are zero-initialised
  w0 = v['params']['mlp_0']['kernel']
  half = 128
  freqs = np.exp(-np.log(10000) * np.arange(half) / half)
  sinus = np.concatenate([np.cos(3 * freqs), np.sin(3 * freqs)])
  h = sinus @ np.asarray(w0)
  h = h / (1 + np.exp(-h))
  want = h @ np.asarray(v['params']['mlp_2']['kernel'])
  np.testing.assert_allclose(emb.apply(v, t)[0], want, rtol=1e-4, atol=1e-6)


# --- PyTorch parity of the converter ---------------------------------------


def _torch_actor(c_feat, hidden, out, map_side):
  """A compact PyTorch forward of the reference actor (real key names)."""
  torch = pytest.importorskip('torch')
  nn, F = torch.nn, torch.nn.functional

  class AdaLN(nn.Module):

    def __init__(self, dim, c_dim):
      super().__init__()
      self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c_dim,
                                                                 2 * dim))
      self.dim = dim

    def forward(self, x, c):
      shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
      x = F.layer_norm(x, (self.dim,), eps=1e-6)
      if x.ndim == 3:
        shift, scale = shift[:, None], scale[:, None]
      return x * (1 + scale) + shift

  class Actor(nn.Module):

    def __init__(self):
      super().__init__()
      self.x_embedder = nn.Linear(c_feat, hidden)
      self.t_embedder = nn.Module()
      self.t_embedder.mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(),
                                          nn.Linear(hidden, hidden))
      self.adaLN1 = AdaLN(hidden, hidden)
      self.dw_conv = nn.Conv2d(hidden, hidden, 3, 2, 1, groups=hidden)
      self.pw_conv = nn.Conv2d(hidden, hidden // 4, 1)
      side = (map_side + 1) // 2
      self.linear1 = nn.Linear(hidden // 4 * side * side, 2 * hidden)
      self.adaLN2 = AdaLN(2 * hidden, hidden)
      self.linear2 = nn.Linear(2 * hidden, hidden)
      self.adaLN3 = AdaLN(hidden, hidden)
      self.linear3 = nn.Linear(hidden, out)

    def forward(self, x, t):
      freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
      args = t[:, None].float() * freqs[None]
      c = self.t_embedder.mlp(torch.cat([torch.cos(args), torch.sin(args)],
                                        -1))
      x = self.adaLN1(self.x_embedder(x), c)
      x = x.permute(0, 2, 1).reshape(x.shape[0], -1, map_side, map_side)
      x = F.gelu(self.pw_conv(F.gelu(self.dw_conv(x))))
      x = x.reshape(x.shape[0], -1)
      x = F.gelu(self.adaLN2(self.linear1(x), c))
      x = F.gelu(self.adaLN3(self.linear2(x), c))
      return self.linear3(x)

  torch.manual_seed(0)
  actor = Actor()
  with torch.no_grad():  # non-trivial everything (zero-inits would hide bugs)
    for p in actor.parameters():
      p.copy_(torch.randn_like(p) * 0.2)
  return torch, actor


@pytest.mark.parametrize('map_side', [16, 5])
def test_converted_policy_matches_torch(map_side):
  c_feat, hidden, out = 24, 32, 4
  torch, actor = _torch_actor(c_feat, hidden, out, map_side)
  sd = {k: v.detach().numpy() for k, v in actor.state_dict().items()}
  assert set(sd) == set(convert_policy.policy_manifest(
      c_feat, out, hidden, map_side))
  net, variables = convert_policy.convert_policy_state_dict(sd)
  assert (net.out_size, net.hidden_size) == (out, hidden)
  x = np.random.RandomState(0).randn(3, map_side ** 2, c_feat).astype(
      np.float32)
  t = np.asarray([0, 5, 15])
  with torch.no_grad():
    want = actor(torch.from_numpy(x), torch.from_numpy(t)).numpy()
  with jax.default_matmul_precision('highest'):
    got = np.asarray(net.apply(variables, jnp.asarray(x), jnp.asarray(t)))
  rel = np.abs(got - want).max() / np.abs(want).max()
  assert rel < 1e-4, rel


def test_manifest_at_reference_size():
  man = convert_policy.policy_manifest(768, 4)
  assert man['x_embedder.weight'] == (512, 768)
  assert man['linear1.weight'] == (1024, 8192)
  assert man['adaLN2.adaLN_modulation.1.weight'] == (2048, 512)
  assert man['dw_conv.weight'] == (512, 1, 3, 3)
  assert man['pw_conv.weight'] == (128, 512, 1, 1)
  assert len(man) == 22
  assert sum(math.prod(s) for s in man.values()) == 11_876_484
  sd = {k: np.zeros(s, np.float32) for k, s in man.items()}
  net, variables = convert_policy.convert_policy_state_dict(sd)
  shapes = jax.eval_shape(net.init, jax.random.key(0),
                          jnp.zeros((1, 256, 768)), jnp.zeros((), jnp.int32))
  assert (jax.tree.map(lambda x: x.shape, shapes) ==
          jax.tree.map(np.shape, variables))


def test_converter_rejects_bad_state_dicts():
  man = convert_policy.policy_manifest(48, 2, 32)
  sd = {k: np.zeros(s, np.float32) for k, s in man.items()}
  with pytest.raises(errors.UserError, match='missing.*dw_conv.bias'):
    convert_policy.convert_policy_state_dict(
        {k: v for k, v in sd.items() if k != 'dw_conv.bias'})
  with pytest.raises(errors.UserError, match='unexpected.*extra'):
    convert_policy.convert_policy_state_dict(dict(sd, extra=np.zeros(1)))
  with pytest.raises(errors.UserError, match='wrong shapes.*pw_conv.bias'):
    convert_policy.convert_policy_state_dict(dict(sd, **{
        'pw_conv.bias': np.zeros(7, np.float32)}))
  with pytest.raises(errors.UserError, match='linear3.weight'):
    convert_policy.convert_policy_state_dict(
        {'policy.actor.' + k: v for k, v in sd.items()})


def test_load_adagen_policy_round_trip(tmp_path):
  c_feat, hidden, out = 24, 32, 4
  torch, actor = _torch_actor(c_feat, hidden, out, 16)
  path = str(tmp_path / 'policy.pth')
  torch.save(actor.state_dict(), path)
  net, variables = convert_policy.load_adagen_policy(path)
  assert net.out_size == 4
  np.testing.assert_array_equal(
      variables['params']['linear3']['kernel'],
      actor.linear3.weight.detach().numpy().T)
  with pytest.raises(errors.UserError, match='not found'):
    convert_policy.load_adagen_policy(str(tmp_path / 'missing.pth'))


def test_step_bias_policy_is_table_plus_network_with_its_own_rate(gen):
  """mean = table[t] + net(x, t); Adam moves the table at its own rate."""
  g, _ = gen
  agent = policy.make_agent(g.action_spec.size, T, hidden_size=16,
                            step_bias=True)
  params = agent.init(jax.random.key(0), g.obs_shape)
  actor = params['actor']['params']
  assert set(actor) == {'step', 'net'}
  table = jnp.arange(T * 2, dtype=jnp.float32).reshape(T, 2)
  actor['step']['table'] = table
  # A non-zero network too (its last layer starts at zero).
  actor['net']['linear3']['bias'] = jnp.array([0.5, -0.25])
  x = jax.random.normal(jax.random.key(1), (3,) + tuple(g.obs_shape))
  t = jnp.array([0, 1, T - 1], jnp.int32)
  net_only = policy.PolicyNet(out_size=2, hidden_size=16).apply(
      {'params': actor['net']}, x, t)
  np.testing.assert_allclose(agent.mean(params, x, t), table[t] + net_only,
                             rtol=1e-6)

  # One Adam step: the table moves by its rate, the network by ppo's.
  state = ppo.create_train_state(params, 1e-4, table_learning_rate=1e-2)
  grads = jax.tree.map(jnp.ones_like, params)
  new = state.apply_gradients(grads).params
  step = lambda a, b: float(jnp.abs(a - b).max())
  assert step(new['actor']['params']['step']['table'], table) == (
      pytest.approx(1e-2, rel=1e-3))
  assert step(new['actor']['params']['net']['linear3']['bias'],
              actor['net']['linear3']['bias']) == pytest.approx(1e-4, rel=1e-3)
  assert step(new['critic']['params']['linear3']['bias'],
              params['critic']['params']['linear3']['bias']) == (
                  pytest.approx(1e-4, rel=1e-3))
