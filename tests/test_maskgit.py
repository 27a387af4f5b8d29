"""MaskGIT generator: the reference transition, schedules, nets, loading."""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax.generators import base
from adagen_jax.generators import maskgit
from adagen_jax.generators import maskgit_nets
from adagen_jax.parallel import mesh as mesh_lib
from adagen_jax.rl import rollout as rollout_lib

N = 16  # 4x4 tokens
K = 8   # codes
NUM_CLASSES = 3
B = 4  # one batch size everywhere: each jitted function compiles once
LABELS = jnp.array([0, 1, 2, 1], jnp.int32)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name='maskgit', weights='', steps=4, schedule='cosine', smoothing=0.8,
      temp_init=1.0, samp_temp_init=1.0, cfg_init=1.0,
      image_size=8, image_channels=1, num_classes=NUM_CLASSES,
      tokens=4, codebook_size=K, width=16, depth=2, heads=2, mlp_ratio=2.0,
      tokenizer=dict(filters=4, channel_mult=(1, 2), num_res_blocks=1,
                     embedding_dim=4, norm_groups=32)))
  c.update(overrides)
  return c


def random_params(config, seed=0):
  tokenizer, transformer = maskgit.make_nets(config)
  k1, k2 = jax.random.split(jax.random.key(seed))
  tok = jax.jit(tokenizer.init)(k1, jnp.zeros((1, 8, 8, 1)))['params']
  tr = jax.jit(transformer.init)(k2, jnp.zeros((1, N), jnp.int32),
                                 jnp.zeros((1,), jnp.int32))['params']
  # Random init gives near-uniform logits; a random output bias makes them
  # peaked, so samples, the confidence order and guidance matter.
  tr['mlm_layer']['bias'] = 3.0 * jax.random.normal(jax.random.key(9), (K + 1,))
  return {'tokenizer': tok, 'transformer': tr}


def make_generator(config=None):
  config = config or tiny_config()
  tokenizer, transformer = maskgit.make_nets(config)
  return maskgit.MaskGITGenerator(
      tokenizer=tokenizer, transformer=transformer,
      action_spec=maskgit.make_action_spec(config),
      num_steps=config.steps, image_shape=(8, 8, 1),
      weights=config.weights, schedule=config.schedule)


class Jitted:
  """The generator with jitted init/step (eager flax is slow on CPU)."""

  def __init__(self, generator):
    self.g = generator
    self.init = jax.jit(generator.init)
    self.step = jax.jit(generator.step)
    self.decode = jax.jit(generator.decode)

  def __getattr__(self, name):
    return getattr(self.g, name)


@pytest.fixture(scope='module')
def gen():
  return Jitted(make_generator())


@pytest.fixture(scope='module')
def params():
  return random_params(tiny_config())


def action(b, ratio, temp=1.0, samp_temp=1.0, cfg=0.0):
  full = lambda v: jnp.full((b,), v, jnp.float32)
  return {'manual_gen_ratios': full(ratio), 'manual_temp': full(temp),
          'manual_samp_temp': full(samp_temp), 'manual_cfg': full(cfg)}


@functools.partial(jax.jit, static_argnums=0)
def _forward(transformer, params, ids, labels):
  return transformer.apply({'params': params['transformer']}, ids, labels)


def reference_step(state, ratio, cfg, mask_id):
  """NumPy reference transition for argmax sampling and no Gumbel noise."""
  cond = np.asarray(state.cond_logits, np.float64)
  uncond = np.asarray(state.uncond_logits, np.float64)
  logits = cond + cfg * (cond - uncond)
  sampled = logits.argmax(-1)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  conf = np.take_along_axis(logp, sampled[..., None], -1)[..., 0]
  ids = np.asarray(state.ids)
  masked = ids == mask_id
  sampled = np.where(masked, sampled, ids)
  conf = np.where(masked, conf, np.inf)
  n = ids.shape[1]
  mask_len = min(int(np.floor(n * ratio)), n - 1)
  cut = np.sort(conf, -1)[:, mask_len:mask_len + 1]
  return np.where(conf < cut, mask_id, sampled), sampled


def test_init_is_all_masked_with_cond_and_null_passes(gen, params):
  labels = LABELS
  state, obs = gen.init(params, labels, jax.random.key(0))
  assert (np.asarray(state.ids) == K).all()
  assert obs.shape == (B, N, 16) and obs.dtype == jnp.float32
  cond, feats = _forward(gen.transformer, params, state.ids, labels)
  uncond, _ = _forward(gen.transformer, params, state.ids,
                       jnp.full((B,), NUM_CLASSES, jnp.int32))
  np.testing.assert_allclose(state.cond_logits, cond, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state.uncond_logits, uncond, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(obs, feats, rtol=1e-5, atol=1e-5)
  assert not np.allclose(cond, uncond)  # the class token matters


@pytest.mark.parametrize('cfg', [0.0, 2.0])
def test_step_matches_numpy_reference(gen, params, cfg):
  """Argmax sampling (tau1 -> 0), no Gumbel noise: a deterministic step.

  The confidence must use the guided logits without tau1: with tau1 = 1e-4
  inside, all confidences would be ~0 and the order would change.
  """
  labels = LABELS
  state, _ = gen.init(params, labels, jax.random.key(0))
  for ratio in (0.7, 0.4, 0.1):
    want_ids, want_sampled = reference_step(state, ratio, cfg, K)
    state, obs = gen.step(params, state,
                          action(B, ratio, temp=0.0, samp_temp=1e-4, cfg=cfg),
                          jax.random.key(1))
    np.testing.assert_array_equal(state.ids, want_ids)
    np.testing.assert_array_equal(state.sampled, want_sampled)
    cond, feats = _forward(gen.transformer, params, state.ids, labels)
    np.testing.assert_allclose(state.cond_logits, cond, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obs, feats, rtol=1e-5, atol=1e-5)


def test_last_step_skips_the_forward_nobody_reads(gen, params):
  """Steps 1..T-1 end with a forward on the new ids; step T keeps the old
  logits and features (decode reads only `sampled`)."""
  state, _ = gen.init(params, LABELS, jax.random.key(0))
  for t in range(gen.num_steps):
    prev = state
    ratio = 0.5 * (1 - t / gen.num_steps)
    state, obs = gen.step(params, prev, action(B, ratio), jax.random.key(t))
    assert int(state.step) == t + 1
    if t + 1 < gen.num_steps:
      cond, feats = _forward(gen.transformer, params, state.ids, LABELS)
      np.testing.assert_allclose(state.cond_logits, cond, rtol=1e-5,
                                 atol=1e-5)
    else:
      np.testing.assert_array_equal(state.cond_logits, prev.cond_logits)
      np.testing.assert_array_equal(obs, prev.features)
      assert np.any(np.asarray(state.ids) != np.asarray(prev.ids))


def test_guidance_zero_ignores_the_unconditional_pass(gen, params):
  state, _ = gen.init(params, LABELS, jax.random.key(0))
  garbage = state.replace(uncond_logits=state.uncond_logits + 5.0 *
                          jax.random.normal(jax.random.key(3),
                                            state.uncond_logits.shape))
  a = action(B, 0.5, cfg=0.0)
  rng = jax.random.key(4)
  s1, _ = gen.step(params, state, a, rng)
  s2, _ = gen.step(params, garbage, a, rng)
  np.testing.assert_array_equal(s1.ids, s2.ids)
  np.testing.assert_array_equal(s1.sampled, s2.sampled)
  s3, _ = gen.step(params, garbage, action(B, 0.5, cfg=1.0), rng)
  assert not np.array_equal(s1.sampled, s3.sampled)


def test_mask_count_and_revealed_tokens_are_kept(gen, params):
  state, _ = gen.init(params, LABELS, jax.random.key(0))
  count = np.full((B,), N)
  # Decreasing ratios, then an increase (mask_len >= #masked: no progress),
  # and ratio ~1 (capped at N - 1).
  for t, ratio in enumerate((0.999999, 0.8, 0.55, 0.7, 0.3, 0.05, 0.0)):
    prev = np.asarray(state.ids)
    state, _ = gen.step(params, state, action(B, ratio, temp=3.0),
                        jax.random.key(10 + t))
    ids = np.asarray(state.ids)
    mask_len = min(int(np.floor(N * np.float32(ratio))), N - 1)
    count = np.minimum(mask_len, count)
    np.testing.assert_array_equal((ids == K).sum(1), count)
    revealed = prev != K
    np.testing.assert_array_equal(ids[revealed], prev[revealed])
    np.testing.assert_array_equal(np.asarray(state.sampled)[revealed],
                                  prev[revealed])
    assert (np.asarray(state.sampled) < K).all()
  assert count[0] == 0


_jit_rollout = jax.jit(rollout_lib.rollout, static_argnums=(0, 4))


def _rollout(gen, params, labels, rng, act_fn=None):
  return _jit_rollout(getattr(gen, 'g', gen), params, labels, rng, act_fn)


def test_rollout_determinism_and_rng_dependence(gen, params):
  a = _rollout(gen, params, LABELS, jax.random.key(0))
  b = _rollout(gen, params, LABELS, jax.random.key(0))
  c = _rollout(gen, params, LABELS, jax.random.key(1))
  np.testing.assert_array_equal(a.images, b.images)
  assert not np.allclose(a.images, c.images)
  assert a.images.shape == (B, 8, 8, 1)
  assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
  assert a.obs.shape == (4, B, N, 16)


def test_rollout_scan_equals_python_loop(gen, params):
  rng = jax.random.key(7)
  traj = _rollout(gen, params, LABELS, rng)
  spec = gen.action_spec
  residual = jnp.asarray(spec.residual(gen.num_steps))
  rng_init, rng_steps = jax.random.split(rng)
  state, _ = gen.init(params, LABELS, rng_init)
  prev = jnp.zeros((B, spec.size))
  for t, key in enumerate(jax.random.split(rng_steps, gen.num_steps)):
    _, k_step = jax.random.split(key)
    prev, act = rollout_lib.actions_from_raw(
        spec, residual, prev, jnp.zeros((B, spec.size)), jnp.int32(t))
    state, _ = gen.step(params, state, act, k_step)
  np.testing.assert_allclose(traj.images, gen.decode(params, state),
                             rtol=1e-5, atol=1e-5)
  assert (np.asarray(state.ids) == K).sum() == 0  # cosine ends unmasked


def test_cosine_schedule_closed_form():
  t = np.arange(16)
  r = (t + 1 - 1e-3) / 16
  table = maskgit.heuristic_schedule('cosine', 16, 0.5, 1.3, 2.0)
  np.testing.assert_allclose(table[:, 0], np.cos(np.pi / 2 * r))
  np.testing.assert_allclose(table[:, 1], (1 - r) * 0.5)
  np.testing.assert_allclose(table[:, 2], 1.3)
  np.testing.assert_allclose(table[:, 3], (t + 1e-3) / 16 * 2.0)
  linear = maskgit.heuristic_schedule('linear', 16, 0.5, 1.3, 2.0)
  np.testing.assert_allclose(linear[:, 0], 1 - r)
  np.testing.assert_allclose(linear[:, 1:], table[:, 1:])
  muse = maskgit.heuristic_schedule('muse', 16, 0.5, 1.3, 3.0)
  np.testing.assert_allclose(muse[:, 0], table[:, 0])
  np.testing.assert_allclose(muse[:, 1], 4.5 * (1 - r))
  np.testing.assert_allclose(muse[:, 2], 1.0)
  np.testing.assert_allclose(muse[1:, 3], t[1:] / 16 * 3.0)


def test_autonat_schedule():
  table = maskgit.heuristic_schedule('autonat', 8, 1.0, 1.0, 1.0)
  np.testing.assert_allclose(table[:7, 0], [0.953, 0.880, 0.794, 0.746,
                                            0.625, 0.407, 0.261])
  np.testing.assert_allclose(table[:, 2], [2.90, 1.87, 1.14, 1.38, 1.47,
                                           1.38, 1.71, 0.71])
  assert table[7, 0] < 1e-5 and table[7, 1] < 1e-5
  with pytest.raises(errors.UserError, match='T=8'):
    maskgit.heuristic_schedule('autonat', 16, 1.0, 1.0, 1.0)
  with pytest.raises(errors.UserError, match='schedule'):
    maskgit.heuristic_schedule('nope', 8, 1.0, 1.0, 1.0)


@pytest.mark.parametrize('schedule,steps', [('cosine', 4), ('linear', 5),
                                            ('muse', 4), ('autonat', 8)])
def test_zero_policy_reproduces_schedule(schedule, steps):
  """The residual + EMA smoothing path of the rollout, with a zero policy."""
  spec = maskgit.make_action_spec(tiny_config(schedule=schedule))
  assert spec.smoothing == 0.8
  residual = jnp.asarray(spec.residual(steps))
  prev, got = jnp.zeros((2, spec.size)), []
  for t in range(steps):
    prev, act = rollout_lib.actions_from_raw(
        spec, residual, prev, jnp.zeros((2, spec.size)), jnp.int32(t))
    got.append(np.stack([act[n] for n in spec.names], -1))
  want = spec.heuristic(steps)
  for b in range(2):
    np.testing.assert_allclose(np.stack(got)[:, b], want, rtol=2e-4,
                               atol=1e-6)


def test_rollout_executes_the_schedule(gen, params):
  traj = _rollout(gen, params, LABELS, jax.random.key(0))
  want = gen.action_spec.heuristic(gen.num_steps)
  for b in range(B):
    np.testing.assert_allclose(traj.actions[:, b], want, rtol=2e-4,
                               atol=1e-6)
  assert gen.action_spec.names == ('manual_gen_ratios', 'manual_temp',
                                   'manual_samp_temp', 'manual_cfg')


def test_tokenizer_shapes_and_range():
  vq = maskgit_nets.VQGAN(filters=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                          embedding_dim=4, codebook_size=16, out_channels=1)
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  v = jax.jit(vq.init)(jax.random.key(1), x)

  @jax.jit
  def run(v, x):
    ids = vq.apply(v, x, method=vq.encode)
    return ids, vq.apply(v, ids, method=vq.decode_ids), vq.apply(v, x)

  ids, out, (recon, z, z_q, ids2) = run(v, x)
  assert ids.shape == (2, 7, 7) and ids.dtype == jnp.int32
  assert out.shape == (2, 28, 28, 1)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert recon.shape == x.shape and z.shape == z_q.shape == (2, 7, 7, 4)
  np.testing.assert_array_equal(ids, ids2)
  # ids are the nearest codes.
  codebook = v['params']['quantize']['embedding']
  d = ((z[..., None, :] - codebook) ** 2).sum(-1)
  np.testing.assert_array_equal(ids, d.argmin(-1))


def test_avg_pool_is_tf_style_on_odd_sizes():
  x = jnp.arange(9.0).reshape(1, 3, 3, 1)
  out = maskgit_nets._avg_pool_2x2(x)  # pylint: disable=protected-access
  # SAME pads bottom/right; padded cells are not counted.
  np.testing.assert_allclose(out[0, ..., 0], [[2.0, 3.5], [6.5, 8.0]])


def test_resblock_shortcut_is_applied_to_the_output():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 8))
  block = maskgit_nets.ResBlock(features=4, norm_groups=32)
  p = block.init(jax.random.key(1), x)['params']
  assert set(p) == {'norm1', 'conv1', 'norm2', 'conv2', 'nin_shortcut'}

  def body(x):
    h = nn.GroupNorm(8, epsilon=1e-6).apply({'params': p['norm1']}, x)
    h = nn.Conv(4, (3, 3), use_bias=False).apply({'params': p['conv1']},
                                                 nn.swish(h))
    h = nn.GroupNorm(4, epsilon=1e-6).apply({'params': p['norm2']}, h)
    return nn.Conv(4, (3, 3), use_bias=False).apply({'params': p['conv2']},
                                                    nn.swish(h))
  h = body(x)
  w = p['nin_shortcut']['kernel'][0, 0]  # 1x1 conv 4 -> 4: it reads h
  assert w.shape == (4, 4)
  np.testing.assert_allclose(block.apply({'params': p}, x), h + h @ w,
                             rtol=1e-5, atol=1e-5)
  # Same width: the identity shortcut on the input, no extra parameters.
  same = maskgit_nets.ResBlock(features=8)
  q = same.init(jax.random.key(2), x)['params']
  assert 'nin_shortcut' not in q


def test_uvit_structure_and_tied_head():
  uvit = maskgit_nets.UViT(codebook_size=K, num_tokens=N, num_classes=5,
                           width=16, depth=4, num_heads=2, mlp_ratio=2.0)
  ids = jnp.full((2, N), K, jnp.int32)
  p = uvit.init(jax.random.key(0), ids, jnp.zeros((2,), jnp.int32))['params']
  assert {'in_blocks_0', 'in_blocks_1', 'mid_block', 'out_blocks_0',
          'out_blocks_1', 'token_emb', 'context_embed', 'norm',
          'mlm_layer'} == set(p)
  assert p['token_emb']['word_embeddings']['embedding'].shape == (K + 1, 16)
  assert p['context_embed']['word_embeddings']['embedding'].shape == (6, 16)
  assert p['context_embed']['position_embeddings']['embedding'].shape == (1,
                                                                         16)
  assert p['in_blocks_0']['attn']['qkv'].keys() == {'kernel'}
  assert p['out_blocks_0']['skip_linear']['kernel'].shape == (32, 16)
  assert 'skip_linear' not in p['in_blocks_0']
  assert p['mlm_layer']['bias'].shape == (K + 1,)
  logits, feats = uvit.apply({'params': p}, ids, jnp.array([0, 5]))
  assert logits.shape == (2, N, K) and feats.shape == (2, N, 16)
  # The head is tied to the word embeddings: row 0 is not an input here
  # (all ids are [MASK]), so changing it changes logit 0 and nothing else.
  emb = p['token_emb']['word_embeddings']['embedding']
  p3 = jax.tree.map(lambda x: x, p)
  p3['token_emb']['word_embeddings']['embedding'] = emb.at[0].add(1.0)
  l3, _ = uvit.apply({'params': p3}, ids, jnp.array([0, 5]))
  np.testing.assert_allclose(l3[..., 1:], logits[..., 1:], rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(l3[..., 0], logits[..., 0])


def test_sample_categorical_draws_the_softmax_distribution():
  logits = jnp.log(jnp.array([0.5, 0.0, 0.3, 0.15, 0.05]))
  ids = jax.jit(maskgit.sample_categorical)(
      jax.random.key(0), jnp.broadcast_to(logits, (20000, 5)))
  freq = np.bincount(np.asarray(ids), minlength=5) / 20000
  assert freq[1] == 0.0  # a zero-probability code is never drawn
  # 4 standard errors of a 20k-sample frequency.
  np.testing.assert_allclose(freq, [0.5, 0.0, 0.3, 0.15, 0.05], atol=0.015)
  # A peaked distribution (temperature -> 0) is its argmax.
  sharp = jax.random.normal(jax.random.key(1), (64, 9)) / 1e-4
  np.testing.assert_array_equal(
      maskgit.sample_categorical(jax.random.key(2), sharp),
      np.argmax(np.asarray(sharp), -1))


def test_token_groups_are_grid_cells_and_round_trip():
  # 4 x 4 grid of ids 0..15, cells of 2 x 2: cell 0 holds ids 0, 1, 4, 5.
  x = jnp.arange(16.0).reshape(1, 16, 1)
  cells = maskgit_nets.group_tokens(x, 2)
  np.testing.assert_array_equal(cells[0, 0], [0, 1, 4, 5])
  np.testing.assert_array_equal(cells[0, 3], [10, 11, 14, 15])
  np.testing.assert_array_equal(maskgit_nets.ungroup_tokens(cells, 2), x)


def test_grouped_uvit_sees_cells_and_predicts_every_id():
  config = tiny_config(token_group=2)
  g = make_generator(config)
  assert g.obs_shape == (N // 4, 16)
  assert g.identity()['token_group'] == 2
  assert 'token_group' not in make_generator().identity()
  uvit = g.transformer
  ids = jnp.full((B, N), K, jnp.int32)
  p = uvit.init(jax.random.key(0), ids, LABELS)['params']
  assert p['token_emb']['word_embeddings']['embedding'].shape == (K + 1, 4)
  assert p['token_emb']['position_embeddings']['embedding'].shape == (4, 16)
  logits, feats = uvit.apply({'params': p}, ids, LABELS)
  assert logits.shape == (B, N, K) and feats.shape == (B, N // 4, 16)
  # An id enters the network at its own cell's position only.
  def embed(module, i):
    return module.token_emb(i)
  e1 = uvit.apply({'params': p}, ids, method=embed)
  e2 = uvit.apply({'params': p}, ids.at[:, 5].set(1), method=embed)
  changed = np.any(np.asarray(e1 != e2), axis=(0, 2))
  np.testing.assert_array_equal(changed, [True, False, False, False])
  # A grouped generator rolls out: per-id sampling, per-cell observations.
  params = {'tokenizer': random_params(config)['tokenizer'],
            'transformer': p}
  traj = _rollout(g, params, LABELS, jax.random.key(1))
  assert traj.obs.shape[-2:] == (N // 4, 16)
  assert traj.images.shape == (B, 8, 8, 1)
  with pytest.raises(errors.UserError, match='token_group'):
    maskgit.make_nets(tiny_config(token_group=3))


def test_build_loads_checks_and_explains(tmp_path, params):
  config = tiny_config()
  with pytest.raises(errors.UserError, match='convert.maskgit'):
    maskgit.build(config)
  config.weights = str(tmp_path / 'missing.msgpack')
  with pytest.raises(errors.UserError, match='not found.*convert.maskgit'):
    maskgit.build(config)
  # Split files (one per converted checkpoint) are merged.
  tok, tr = str(tmp_path / 'tok.msgpack'), str(tmp_path / 'tr.msgpack')
  assets.save_variables(tok, {'tokenizer': params['tokenizer']})
  assets.save_variables(tr, {'transformer': params['transformer']})
  config.weights = f'{tr},{tok}'
  gen, loaded = maskgit.build(config)
  chex.assert_trees_all_equal(loaded, params)
  assert gen.obs_shape == (N, 16) and gen.num_classes == NUM_CLASSES
  # The identity records what the weights are: a digest of the two files.
  assert gen.weights_digest == assets.weights_digest(tr, tok)
  assert gen == dataclasses.replace(
      make_generator(tiny_config(weights=config.weights)),
      weights_digest=gen.weights_digest)
  config.weights = tr
  with pytest.raises(errors.UserError, match='lack the tokenizer'):
    maskgit.build(config)
  config.weights = f'{tr},{tok}'
  config.width = 32
  with pytest.raises(errors.UserError, match='does not match'):
    maskgit.build(config)


def test_registry_builds_maskgit(tmp_path, params):
  from adagen_jax import generators  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'w.msgpack')
  assets.save_variables(path, params)
  gen, _ = generators.build(tiny_config(weights=path))
  assert isinstance(gen.action_spec, base.ActionSpec)
  assert gen.name == 'maskgit' and gen.stochastic
  assert gen.identity()['weights'] == path


@pytest.mark.parametrize('sharded', [False, True])
def test_forward_in_chunks_equals_one_forward(params, sharded):
  """forward_rows splits the guided forward into sequential chunks (the CPU
  keeps their activations in cache): same rollout, sharded or not."""
  whole = make_generator()
  chunked = dataclasses.replace(whole, forward_rows=1)
  # 2 rows (cond, null) per device for 8 samples on 8 devices: 2 chunks.
  labels = jnp.arange(8, dtype=jnp.int32) % 4
  assert base.chunk_count(16, 1, jax.device_count()) > 1
  gen_params = params
  if sharded:
    mesh = mesh_lib.make_mesh()
    gen_params = mesh_lib.replicate(params, mesh)
    labels = jax.device_put(labels, mesh_lib.batch_sharded(mesh))
  rng = jax.random.key(3)
  a = _rollout(whole, gen_params, labels, rng)
  b = _rollout(chunked, gen_params, labels, rng)
  np.testing.assert_allclose(a.obs, b.obs, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(a.images, b.images)


def test_chunk_count_divides_each_devices_rows():
  assert base.chunk_count(64, 4, 2) == 8      # 32 rows per device
  assert base.chunk_count(64, 0, 2) == 1      # 0: one forward
  assert base.chunk_count(60, 8, 2) == 5      # 30 rows: 5 chunks of 6
  assert base.chunk_count(14, 4, 4) == 7      # uneven over 4: all 14 rows
  assert base.chunk_count(8, 64, 1) == 1


def test_in_chunks_equals_the_whole_batch_and_keeps_row_order():
  x = jnp.arange(24.0).reshape(12, 2)
  y = jnp.arange(12)
  fn = lambda a, b: (a * 2.0 + b[:, None], a.sum(-1))
  want = fn(x, y)
  got = base.in_chunks(fn, x, y, max_rows=1)
  jax.tree.map(np.testing.assert_array_equal, got, want)
