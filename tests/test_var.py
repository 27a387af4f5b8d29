"""VAR generator: sampling filters, KV cache, resizing, protocol, configs."""

import functools
import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax import generators
from adagen_jax.generators import var
from adagen_jax.generators import var_nets
from adagen_jax.generators import var_vqvae
from adagen_jax.rl import rollout as rollout_lib

PNS = (1, 2, 3)
B = 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='var', steps=len(PNS), depth=2, width=32, num_heads=2,
      mlp_ratio=4.0, shared_aln=False, attn_l2_norm=True, num_classes=10,
      patch_nums=PNS, dtype='float32',
      # Attention and resampling of the VQVAE are covered by the converter
      # tests; a plain one keeps compile times down here.
      vae=dict(vocab_size=32, z_channels=4, ch=32, ch_mult=(1,),
               num_res_blocks=1, using_sa=False, using_mid_sa=False,
               quant_resi=0.5, share_quant_resi=4, image_channels=3,
               norm_groups=32),
      cfg=1.5, top_k=900.0, top_p=0.96, samp_temp=1.0, smoothing=0.0,
      obs_side=4, var_weights='', vae_weights=''))


def _random_like(shapes, seed: int):
  """NumPy-random variables with a module's layout (no init compile)."""
  rs = np.random.RandomState(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      std = float(np.prod(leaf.shape[:-1])) ** -0.5
    elif name == 'scale':
      return jnp.asarray(1.0 + 0.1 * rs.randn(*leaf.shape), jnp.float32)
    else:
      std = 0.5 if name in ('embedding', 'pos_1LC', 'pos_start') else 0.1
    return jnp.asarray(std * rs.randn(*leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='module')
def gen():
  net, vae = var.modules_from_config(_tiny_section())
  g = var.VARGenerator(net, vae, obs_side=4)
  shapes = jax.eval_shape(functools.partial(var.random_params, g),
                          jax.random.key(0))
  return g, _random_like(shapes, 0)


def _labels():
  return jnp.arange(B, dtype=jnp.int32) % 10


# --- Sampling filters against a NumPy transcription of the reference. ---


def _numpy_filter(logits, top_k, top_p, temp):
  """Per sample: top-k, top-p (sort ascending, scatter back), temperature."""
  out = np.array(logits, np.float64)
  v = out.shape[-1]
  for b in range(out.shape[0]):
    x = out[b]
    k = int(top_k[b])
    if 0 < k < v:
      kth = np.sort(x, axis=-1)[:, v - k][:, None]
      x[x < kth] = -np.inf
    order = np.argsort(x, axis=-1, kind='stable')
    srt = np.take_along_axis(x, order, axis=-1)
    e = np.exp(srt - srt.max(-1, keepdims=True))
    remove = np.cumsum(e / e.sum(-1, keepdims=True), axis=-1) <= 1 - top_p[b]
    remove[:, -1] = False
    mask = np.zeros_like(remove)
    np.put_along_axis(mask, order, remove, axis=-1)
    x[mask] = -np.inf
    out[b] = x / temp[b]
  return out


def test_filter_logits_matches_numpy_reference():
  rs = np.random.RandomState(0)
  logits = (3.0 * rs.randn(6, 5, 40)).astype(np.float32)
  # k: skip (0, negative), ordinary, 1 (argmax only), >= V (no-op).
  top_k = np.array([0, 5, 1, 17, 40, -3], np.int32)
  top_p = np.array([0.9, 0.5, 0.96, 0.2, 0.999, 0.7], np.float32)
  temp = np.array([1.0, 0.5, 2.0, 1.3, 0.7, 1.0], np.float32)
  got = np.asarray(jax.jit(var.filter_logits)(
      jnp.asarray(logits), jnp.asarray(top_k), jnp.asarray(top_p),
      jnp.asarray(temp)))
  want = _numpy_filter(logits, top_k, top_p, temp)
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
  fin = np.isfinite(want)
  np.testing.assert_allclose(got[fin], want[fin], rtol=1e-6)
  kept = fin.sum(-1)
  assert (kept[2] == 1).all() and (kept[1] <= 5).all()
  # top-p really cut something for most rows, and never everything.
  assert (kept >= 1).all() and (kept < 40).mean() > 0.8


def test_sampling_draws_only_kept_tokens():
  rs = np.random.RandomState(1)
  logits = jnp.asarray(rs.randn(4, 64, 30), jnp.float32)

  @jax.jit
  def sample(logits):
    filtered = var.filter_logits(logits, jnp.array([1, 3, 0, 8]),
                                 jnp.array([0.9, 0.99, 0.3, 0.8]),
                                 jnp.ones(4))
    return filtered, jax.random.categorical(jax.random.key(0), filtered)

  filtered, ids = sample(logits)
  picked = np.take_along_axis(np.asarray(filtered), np.asarray(ids)[..., None],
                              axis=-1)
  assert np.isfinite(picked).all()
  np.testing.assert_array_equal(ids[0], jnp.argmax(logits[0], -1))


# --- Network: KV-cache scale-by-scale == masked full sequence. ---


def test_kv_cache_equals_block_causal_forward(gen):
  g, params = gen
  net = g.var
  rs = np.random.RandomState(2)
  labels = jnp.asarray([1, 10, 4], jnp.int32)  # incl. the null class
  x_in = jnp.asarray(rs.randn(3, net.seq_len - 1, net.cvae), jnp.float32)
  with jax.default_matmul_precision('highest'):
    full, cached = jax.jit(functools.partial(_full_and_cached, net))(
        params['var'], labels, x_in)
  for got, want in zip(cached, full):  # (logits, hidden)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Block-causal by scale: 1 | 4 | 9 tokens.
  mask = var_nets.block_causal_mask(PNS)
  assert mask[0].sum() == 1 and mask[-1].all() and not mask[:5, 5:].any()


# --- PyTorch-exact resizing. ---


@pytest.mark.parametrize('src,dst', [
    ((1, 1), (16, 16)), ((3, 3), (16, 16)), ((13, 13), (16, 16)),
    ((16, 16), (13, 13)), ((16, 16), (10, 10)), ((16, 16), (5, 5)),
    ((16, 16), (3, 3)), ((5, 7), (16, 9)), ((6, 6), (4, 4))])
def test_resize_matches_torch(src, dst):
  x = np.random.RandomState(3).randn(2, *src, 3).astype(np.float32)
  tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  for mode, fn in (('bicubic', var_vqvae.resize_bicubic),
                   ('area', var_vqvae.resize_area)):
    kw = dict(align_corners=False) if mode == 'bicubic' else {}
    want = F.interpolate(tx, size=dst, mode=mode, **kw).numpy()
    got = np.asarray(fn(jnp.asarray(x), dst)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                               err_msg=mode)


def test_phi_indices_published_table():
  assert var_vqvae.phi_indices(10, 4) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)


# --- The generator protocol. ---


def _full_and_cached(net, p, labels, x_in):
  """The masked full-sequence pass, and the scale-by-scale cached one."""
  full = net.apply(p, labels, x_in, return_hidden=True)
  cond = net.apply(p, labels, method=net.embed_class)
  ck = cv = jnp.zeros((net.depth, 3, net.seq_len, net.num_heads,
                       net.head_dim))
  offsets = var_nets.scale_offsets(PNS)
  logits, hiddens = [], []
  for si in range(len(PNS)):
    start, end = offsets[si:si + 2]
    if si == 0:
      x = net.apply(p, cond, method=net.first_tokens)
    else:
      x = net.apply(p, x_in[:, start - 1:end - 1], si,
                    method=net.scale_tokens)
    hidden, k, v = net.apply(p, x, cond, ck, cv, start,
                             method=net.blocks_cached)
    ck = ck.at[:, :, start:end].set(k)
    cv = cv.at[:, :, start:end].set(v)
    logits.append(net.apply(p, hidden, cond, method=net.logits))
    hiddens.append(hidden)
  return full, (jnp.concatenate(logits, 1), jnp.concatenate(hiddens, 1))


def test_init_observes_the_upsampled_sos_state(gen):
  g, params = gen
  state, obs = jax.jit(g.init)(params, _labels(), jax.random.key(0))
  assert obs.shape == (B,) + g.obs_shape == (B, 16, 32)
  assert g.num_steps == 3 and g.image_shape == (3, 3, 3)
  # A 1x1 map upsamples to a constant map: the conditional row's state.
  np.testing.assert_allclose(obs, jnp.broadcast_to(
      state.hidden[0::2, :1], obs.shape), rtol=1e-6, atol=1e-6)
  assert not np.allclose(state.hidden[0::2, 0], state.hidden[1::2, 0])


def test_rollout_scan_equals_step_loop_and_heuristic(gen):
  """rollout's lax.scan (zero policy) == a Python loop of step calls fed
  VAR's published settings; the state is consistent with the network."""
  g, params = gen
  labels, rng = _labels(), jax.random.key(7)
  run = jax.jit(lambda p, r: rollout_lib.rollout(g, p, labels, r))
  traj = run(params, rng)
  heur = g.action_spec.heuristic(g.num_steps)
  np.testing.assert_allclose(traj.actions, np.broadcast_to(
      heur[:, None], traj.actions.shape), rtol=1e-6)
  action = {n: jnp.full((B,), heur[0, i], jnp.float32)
            for i, n in enumerate(g.action_spec.names)}
  assert int(np.floor(traj.actions[0, 0, 1])) == 900

  rng_init, rng_steps = jax.random.split(rng)
  state, obs = jax.jit(g.init)(params, labels, rng_init)
  step = jax.jit(g.step)
  all_obs = []
  for t, key in enumerate(jax.random.split(rng_steps, g.num_steps)):
    all_obs.append(obs)
    if t == 0:  # The unrolled-loop variant agrees.
      static = jax.jit(functools.partial(g.step_static, 0))(
          params, state, action, jax.random.split(key)[1])
    state, obs = step(params, state, action, jax.random.split(key)[1])
    assert int(state.step) == t + 1
    if t == 0:
      chex.assert_trees_all_close(static, (state, obs), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(traj.obs, np.stack(all_obs), rtol=1e-5,
                             atol=1e-5)
  images = g.decode(params, state)
  np.testing.assert_allclose(traj.images, images, rtol=1e-5, atol=1e-5)
  assert images.shape == (B, 3, 3, 3)
  assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0

  # The token buffer holds the sampled codes: they rebuild f_hat, and the
  # teacher-forced network on them reproduces every observation.
  f_hat, want_obs = jax.jit(functools.partial(_replay, g))(params,
                                                           state.tokens)
  np.testing.assert_allclose(f_hat, state.f_hat, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.stack(all_obs), want_obs, rtol=1e-4,
                             atol=1e-4)
  # Sampling is stochastic: another key, other codes.
  other = run(params, jax.random.key(8))
  assert float(jnp.abs(other.images - traj.images).max()) > 1e-3


def _replay(g, params, tokens):
  """f_hat and per-scale observations rebuilt from sampled tokens [B, L]."""
  offsets = var_nets.scale_offsets(PNS)
  ids = [tokens[:, offsets[i]:offsets[i + 1]] for i in range(len(PNS))]
  f_hat = jnp.zeros((B, PNS[-1], PNS[-1], g.vae.z_channels))
  for si, pn in enumerate(PNS):
    h = g.vae.apply(params['vae'], ids[si].reshape(B, pn, pn),
                    method=var_vqvae.VQVAE.lookup)
    f_hat = g.vae.apply(params['vae'], f_hat, h, si,
                        method=var_vqvae.VQVAE.add_scale)
  x_in = g.vae.apply(params['vae'], ids, method=var_vqvae.VQVAE.teacher_inputs)
  _, hidden = g.var.apply(params['var'], _labels(), x_in, return_hidden=True)
  obs = []
  for si, pn in enumerate(PNS):
    h = hidden[:, offsets[si]:offsets[si + 1]].reshape(B, pn, pn, -1)
    obs.append(var_vqvae.resize_bicubic(h, (4, 4)).reshape(B, 16, -1))
  return f_hat, jnp.stack(obs)


# --- build() and the configs. ---


def test_build_loads_converted_weights(gen, tmp_path):
  g, params = gen
  section = _tiny_section()
  section.var_weights = str(tmp_path / 'w' / 'var_tiny.msgpack')
  section.vae_weights = str(tmp_path / 'vae.msgpack')
  with pytest.raises(errors.UserError) as e:
    generators.build(section)
  msg = str(e.value)
  assert '\n' not in msg and 'var_tiny.msgpack' in msg
  assert 'python -m adagen_jax.generators.convert.var' in msg
  assert 'var_d2.pth' in msg and 'vae_ch160v4096z32.pth' in msg
  os.makedirs(tmp_path / 'w')
  assets.save_variables(section.var_weights, params['var'])
  with pytest.raises(errors.UserError, match='vae.msgpack'):
    generators.build(section)
  assets.save_variables(section.vae_weights, params['vae'])
  built, loaded = generators.build(section)
  digest = assets.weights_digest(section.var_weights, section.vae_weights)
  assert built == g.__class__(g.var, g.vae, obs_side=4,
                              weights_id='var_tiny.msgpack',
                              weights_digest=digest)
  chex.assert_trees_all_equal(loaded, params)
  section.width = 64  # weights of another size
  with pytest.raises(errors.UserError, match='do not fit'):
    generators.build(section)
  section.width, section.steps = 32, 8
  with pytest.raises(errors.UserError, match='one step per scale'):
    generators.build(section)


def _config(name, arg=None):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize('name,depth,cfg', [('var_d16', 16, 1.5),
                                            ('var_d30', 30, 2.0)])
def test_configs_are_the_published_models(name, depth, cfg):
  c = _config(name)
  gc = c.generator
  assert c.data.name == 'imagenet2012'
  assert (gc.name, gc.depth, gc.width, gc.num_heads) == (
      'var', depth, 64 * depth, depth)
  assert tuple(gc.patch_nums) == var_vqvae.PATCH_NUMS and gc.steps == 10
  assert (gc.cfg, gc.top_k, gc.top_p, gc.samp_temp, gc.smoothing) == (
      cfg, 900.0, 0.96, 1.0, 0.0)
  net, vae = var.modules_from_config(gc)
  g = var.VARGenerator(net, vae, cfg=gc.cfg)
  assert g.obs_shape == (256, 64 * depth) and g.image_shape == (256, 256, 3)
  assert _config(name, 'runlocal').generator.depth == depth
  with pytest.raises(errors.UserError, match=f'var_d{depth}.pth'):
    generators.build(gc)


def test_grouped_rollout_starts_each_group_from_its_label_state(gen):
  """ppo.group_size with VAR: its init is deterministic in the labels, so
  the grouped init (init on every G-th label, repeated) must equal init on
  the full labels, whose groups repeat one label; the cache's batch is on
  axis 1 and its c/u rows interleave."""
  g, params = gen
  group = 2
  labels = jnp.repeat(_labels()[:B // group], group)
  want = jax.jit(g.init)(params, labels, jax.random.key(0))
  got = rollout_lib._grouped_init(g, params, labels, jax.random.key(0),
                                  group)
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
  traj = jax.jit(lambda p: rollout_lib.rollout(
      g, p, labels, jax.random.key(1), group_size=group))(params)
  assert traj.images.shape == (B, 3, 3, 3)
