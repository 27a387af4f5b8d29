"""Discriminator pieces and the three reward models."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax.backbones import dino_vit
from adagen_jax.generators import toy
from adagen_jax.metrics import fid
from adagen_jax.rl import discriminator as disc_lib
from adagen_jax.rl import rewards


def _np_groupnorm(x, groups, eps=1e-5):
  b = x.shape[0]
  xg = x.reshape(groups, b // groups, *x.shape[1:]).astype(np.float64)
  mean = xg.mean(axis=(1, 2), keepdims=True)
  var = xg.var(axis=(1, 2), keepdims=True)  # biased, as unbiased=False
  return ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)


def test_batchnorm_local_groups_match_numpy():
  x = np.random.RandomState(0).randn(12, 5, 3).astype(np.float32) * 2 + 1
  bn = disc_lib.BatchNormLocal(virtual_bs=8)
  assert jax.tree.map(jnp.shape, bn.init(jax.random.key(0), x)) == {
      'params': {'scale': (3,), 'bias': (3,)}}
  v = {'params': {'scale': jnp.asarray([1.0, 2.0, 0.5]),
                  'bias': jnp.asarray([0.0, 1.0, -1.0])}}
  affine = lambda y: y * np.asarray([1.0, 2.0, 0.5]) + [0.0, 1.0, -1.0]
  # B = 12, virtual batch 8 -> ceil(12 / 8) = 2 groups of 6 samples.
  np.testing.assert_allclose(bn.apply(v, x), affine(_np_groupnorm(x, 2)),
                             rtol=1e-5, atol=1e-5)
  # Overriding the group size: ceil(12 / 4) = 3 groups of 4.
  np.testing.assert_allclose(bn.apply(v, x, virtual_bs=4),
                             affine(_np_groupnorm(x, 3)), rtol=1e-5,
                             atol=1e-5)
  # A sample's output depends on its group only.
  x2 = x.copy()
  x2[7] += 3.0
  y1, y2 = np.asarray(bn.apply(v, x)), np.asarray(bn.apply(v, x2))
  np.testing.assert_array_equal(y1[:6], y2[:6])
  assert np.abs(y1[6:] - y2[6:]).max() > 0.1
  with pytest.raises(ValueError, match='equal groups'):
    bn.apply(v, x[:9])  # 2 groups do not split 9 samples


def test_spectral_conv_is_circular():
  x = np.random.RandomState(1).randn(2, 12, 3).astype(np.float32)
  conv = disc_lib.SpectralConv1d(4, 9)
  v = conv.init(jax.random.key(0), x, update_stats=False)
  y, upd = conv.apply(v, x, update_stats=True, mutable=['batch_stats'])
  sigma = float(upd['batch_stats']['SpectralNorm_0']['conv/kernel/sigma'])
  w = np.asarray(v['params']['conv']['kernel'], np.float64) / sigma
  bias = np.asarray(v['params']['conv']['bias'])
  want = np.zeros((2, 12, 4)) + bias
  for l in range(12):
    for k in range(9):  # torch: padding 4 on each side, wrapping around
      want[:, l] += x[:, (l + k - 4) % 12] @ w[k]
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_spectral_norm_converges_to_the_top_singular_value():
  x = jnp.ones((2, 7, 6))
  conv = disc_lib.SpectralConv1d(5, 3)
  v = conv.init(jax.random.key(0), x, update_stats=False)
  step = jax.jit(lambda v: conv.apply(v, x, update_stats=True,
                                      mutable=['batch_stats'])[1])
  for _ in range(30):
    v = dict(v, **step(v))
  sigma = float(v['batch_stats']['SpectralNorm_0']['conv/kernel/sigma'])
  kernel = np.asarray(v['params']['conv']['kernel'])  # (k, I, O)
  # PyTorch's view of the same weight: (O, I, k) flattened to (O, I k).
  torch_matrix = kernel.transpose(2, 1, 0).reshape(5, -1)
  top = np.linalg.svd(torch_matrix, compute_uv=False)[0]
  assert sigma == pytest.approx(top, rel=1e-4)


def test_random_crop():
  x = jnp.asarray(np.random.RandomState(3).rand(3, 8, 8, 1), jnp.float32)
  crop = jax.jit(disc_lib.random_crop, static_argnums=(2, 3, 4))
  # p = 1, translate-crop: one zero-padded window, the same for the batch.
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = set()
  for seed in range(12):
    y = np.asarray(crop(x, jax.random.key(seed), 1.0, 8, 2))
    hits = [(i, j) for i in range(5) for j in range(5)
            if np.array_equal(y, padded[:, i:i + 8, j:j + 8])]
    assert hits, seed
    offsets.add(hits[0])
  assert len(offsets) > 3
  # p = 0: untouched. Larger images are cropped or area-resized to 6.
  np.testing.assert_array_equal(crop(x, jax.random.key(0), 0.0, 8, 0), x)
  outs = [np.asarray(crop(x, jax.random.key(s), 0.5, 6, 0)) for s in range(8)]
  resized = np.asarray(dino_vit.area_resize(x, (6, 6)))
  n_resized = sum(np.allclose(o, resized) for o in outs)
  assert 0 < n_resized < 8  # both branches taken


def test_equalized_dense_and_mapping_network():
  x = np.random.RandomState(4).randn(3, 5).astype(np.float32)
  layer = disc_lib.EqualizedDense(4, lr_mult=0.01, activation='lrelu')
  v = layer.init(jax.random.key(0), x)
  w = np.asarray(v['params']['kernel'])
  assert 50 < w.std() < 200  # stored as N(0, 1 / lr_mult^2)
  v['params']['bias'] = jnp.asarray([1.0, -2.0, 0.0, 3.0])
  pre = x @ (w * 0.01 / math.sqrt(5)) + np.asarray(v['params']['bias']) * 0.01
  want = np.where(pre > 0, pre, 0.2 * pre) * math.sqrt(2)
  np.testing.assert_allclose(layer.apply(v, x), want, rtol=1e-5, atol=1e-6)
  net = disc_lib.MappingNetwork(num_classes=10, dim=16, num_layers=3)
  labels = jnp.asarray([0, 3, 9])
  v = net.init(jax.random.key(1), labels)
  assert sorted(v['params']) == ['embed', 'fc0', 'fc1', 'fc2']
  assert net.apply(v, labels).shape == (3, 16)
  y = disc_lib.normalize_2nd_moment(jnp.asarray(x))
  np.testing.assert_allclose(jnp.mean(y ** 2, axis=-1), 1.0, rtol=1e-5)


def test_add_readout():
  tok = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
  np.testing.assert_array_equal(disc_lib.add_readout(tok),
                                tok[:, 1:] + tok[:, :1])


def test_d_losses_match_numpy():
  r = np.random.RandomState(5).randn(4, 6).astype(np.float32)
  f = np.random.RandomState(6).randn(4, 6).astype(np.float32)
  sp = lambda z: np.log1p(np.exp(z))
  np.testing.assert_allclose(rewards.d_loss(r, f, 'bce'),
                             sp(-r).mean() + sp(f).mean(), rtol=1e-5)
  np.testing.assert_allclose(
      rewards.d_loss(r, f, 'hinge'),
      np.maximum(1 - r, 0).mean() + np.maximum(1 + f, 0).mean(), rtol=1e-5)


@pytest.fixture(scope='module')
def toy_setup():
  _, params = toy.build(ml_collections.ConfigDict({'name': 'toy'}))
  apply, variables = toy.feature_backbone(params)
  return params, rewards.Backbone(apply=apply, variables=variables)


def _real(params, n, seed):
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, 10, n).astype(np.int32)
  images = np.asarray(params['templates'])[labels]
  images = np.clip(images + 0.03 * rs.randn(*images.shape), 0, 1)
  return jnp.asarray(images, jnp.float32), jnp.asarray(labels)


def test_discriminator_learns_real_vs_fake(toy_setup):
  params, backbone = toy_setup
  # No crop here (tested above): shifting 8-pixel images by a pixel is harsh.
  config = ml_collections.ConfigDict(dict(
      name='adversarial', lr=1e-2, mapping_dim=32, mapping_layers=2,
      cmap_dim=16, p_crop=0.0))
  model = rewards.make_reward(config, backbone, num_classes=10)
  assert model.adversarial
  real, labels = _real(params, 8, 0)
  state = model.init(jax.random.key(0), real, labels)
  update = jax.jit(model.update)
  losses = []
  for i in range(40):  # fresh reals (templates + noise) vs uniform noise
    real, labels = _real(params, 16, 10 + i)
    fake = jax.random.uniform(jax.random.key(1000 + i), real.shape)
    state, metrics = update(state, real, labels, fake, labels,
                            jax.random.key(i))
    losses.append(float(metrics['d_loss']))
  assert int(state.step) == 40
  # Measured: mean of the first 5 1.39 (2 log 2 = 1.386 is chance), of the
  # last 5 0.97.
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, losses
  real, labels = _real(params, 16, 1)
  fake = jax.random.uniform(jax.random.key(2), real.shape)
  reward = jax.jit(model.reward)
  r_real = reward(state, real, labels, jax.random.key(3))
  r_fake = reward(state, fake, labels, jax.random.key(3))
  assert r_real.shape == (16,) and r_real.dtype == jnp.float32
  assert float(r_real.min()) > 0.0 and float(r_fake.max()) < 1.0
  # Measured on held-out images: 0.70 vs 0.37.
  assert float(r_real.mean()) > float(r_fake.mean()) + 0.2
  logits = model.logits(state, real, labels, jax.random.key(3))
  assert logits.shape == (16, 2 * 16)  # two feature sets of 16 tokens
  # Scores with another BatchNormLocal group size are another function.
  other = model.score(state, real, labels, jax.random.key(3), group_size=4)
  assert float(jnp.abs(other - r_real).max()) > 0.0


def test_fd_reward_is_leave_one_out_fd_gain(toy_setup):
  params, backbone = toy_setup
  model = rewards.make_reward(ml_collections.ConfigDict({'name': 'fd'}),
                              backbone, 10)
  assert not model.adversarial
  real, labels = _real(params, 64, 2)
  state = model.init(jax.random.key(0), real, labels)
  more, more_labels = _real(params, 32, 3)
  state, _ = jax.jit(model.update)(state, more, more_labels, more,
                                   more_labels, jax.random.key(0))
  pooled = lambda im: np.asarray(model.pooled(backbone.variables, im))
  mu_r, sigma_r = fid.feature_stats(np.concatenate([pooled(real),
                                                    pooled(more)]))
  got_mu, got_sigma = model.real_stats(state)
  np.testing.assert_allclose(got_mu, mu_r, atol=1e-5)
  np.testing.assert_allclose(got_sigma, sigma_r, atol=1e-5)

  fake = 0.5 * _real(params, 10, 4)[0] + 0.5 * jax.random.uniform(
      jax.random.key(5), (10, 8, 8, 1))
  got = np.asarray(jax.jit(model.reward)(state, fake, labels[:10],
                                         jax.random.key(0)))
  f = pooled(fake)
  full = fid.frechet_distance(*fid.feature_stats(f), mu_r, sigma_r)
  want = [fid.frechet_distance(*fid.feature_stats(np.delete(f, i, 0)), mu_r,
                               sigma_r) - full for i in range(10)]
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * abs(full))
  assert np.std(want) > 1e-3 * abs(full)  # a non-trivial comparison

  # Groups of 2 (ppo.group_size): each member is scored by adding it to the
  # batch without its group.
  grouped = rewards.make_reward(ml_collections.ConfigDict({'name': 'fd'}),
                                backbone, 10, group_size=2)
  got = np.asarray(jax.jit(grouped.reward)(state, fake, labels[:10],
                                           jax.random.key(0)))
  want = []
  for i in range(10):
    rest = np.delete(f, [i - i % 2, i - i % 2 + 1], 0)
    added = np.concatenate([rest, f[i:i + 1]])
    want.append(
        fid.frechet_distance(*fid.feature_stats(rest), mu_r, sigma_r) -
        fid.frechet_distance(*fid.feature_stats(added), mu_r, sigma_r))
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * abs(full))
  with pytest.raises(ValueError, match='groups of 3'):
    rewards.leave_one_out_fd_gain(jnp.asarray(f), mu_r, sigma_r, 3)

  # Best-of-N's score: the gain of adding each image to a fixed reference
  # set, whatever the other images scored with it.
  ref = fake[:6]
  got = np.asarray(jax.jit(model.gain_over)(state, fake[6:], labels[6:10],
                                            (ref, labels[:6])))
  fr = f[:6]
  want = [fid.frechet_distance(*fid.feature_stats(fr), mu_r, sigma_r) -
          fid.frechet_distance(*fid.feature_stats(
              np.concatenate([fr, f[i:i + 1]])), mu_r, sigma_r)
          for i in range(6, 10)]
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * abs(full))
  alone = np.asarray(jax.jit(model.gain_over)(state, fake[8:9], labels[8:9],
                                              (ref, labels[:6])))
  np.testing.assert_allclose(alone, got[2:3], rtol=1e-5)


def test_fd_reward_with_labels_compares_the_joint_distribution(toy_setup):
  params, backbone = toy_setup
  model = rewards.make_reward(ml_collections.ConfigDict(
      {'name': 'fd', 'label_scale': 2.0}), backbone, 10)
  real, labels = _real(params, 64, 2)
  state = model.init(jax.random.key(0), real, labels)
  joint = lambda im, y: np.concatenate(
      [np.asarray(backbone.features(backbone.variables, im)[-1]).mean(1),
       2.0 * np.eye(10)[np.asarray(y)]], axis=1)
  mu_r, sigma_r = fid.feature_stats(joint(real, labels))
  got_mu, got_sigma = model.real_stats(state)
  np.testing.assert_allclose(got_mu, mu_r, atol=1e-5)
  np.testing.assert_allclose(got_sigma, sigma_r, atol=1e-5)

  fake, fake_labels = _real(params, 10, 4)
  got = np.asarray(jax.jit(model.reward)(state, fake, fake_labels,
                                         jax.random.key(0)))
  f = joint(fake, fake_labels)
  full = fid.frechet_distance(*fid.feature_stats(f), mu_r, sigma_r)
  want = [fid.frechet_distance(*fid.feature_stats(np.delete(f, i, 0)), mu_r,
                               sigma_r) - full for i in range(10)]
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * abs(full))
  # The label is part of the sample: the same images under other labels
  # score otherwise, where the marginal FD ignores labels.
  other = np.asarray(model.reward(state, fake, (fake_labels + 3) % 10,
                                  jax.random.key(0)))
  assert np.abs(other - got).max() > 1e-3 * np.abs(got).max()
  with pytest.raises(errors.UserError, match='label_scale'):
    rewards.make_reward(ml_collections.ConfigDict(
        {'name': 'fd', 'label_scale': -1.0}), backbone, 10)


def test_static_reward_is_classifier_confidence(toy_setup):
  params, backbone = toy_setup
  model = rewards.make_reward(ml_collections.ConfigDict({'name': 'static'}),
                              backbone, 10)
  real, labels = _real(params, 8, 6)
  state = model.init(jax.random.key(0), real, labels)
  got = jax.jit(model.reward)(state, real, labels, jax.random.key(0))
  _, logits = backbone.apply(backbone.variables, real)
  p = jax.nn.softmax(logits)
  np.testing.assert_allclose(got, p[jnp.arange(8), labels], rtol=1e-5)
  assert float(got.min()) > 0.5  # templates are recognised
  wrong = model.reward(state, real, (labels + 1) % 10, jax.random.key(0))
  assert float(wrong.max()) < 0.5
  assert model.update(state, real, labels, real, labels,
                      jax.random.key(0)) == (state, {})


def test_confidence_bonus_adds_standardised_confidence(toy_setup):
  params, backbone = toy_setup
  fd_config = {'name': 'fd'}
  plain = rewards.make_reward(ml_collections.ConfigDict(fd_config), backbone,
                              10)
  model = rewards.make_reward(ml_collections.ConfigDict(
      {**fd_config, 'static_weight': 0.5}), backbone, 10)
  assert isinstance(model, rewards.ConfidenceBonus)
  assert not model.adversarial
  real, labels = _real(params, 64, 7)
  state = model.init(jax.random.key(0), real, labels)
  fakes, fake_labels = _real(params, 16, 8)
  # Half the batch with wrong labels: low confidence for those.
  fake_labels = fake_labels.at[:8].set((fake_labels[:8] + 1) % 10)
  rng = jax.random.key(1)
  got = jax.jit(model.reward)(state, fakes, fake_labels, rng)
  base = jax.jit(plain.reward)(state.base, fakes, fake_labels, rng)
  conf = rewards.StaticReward(backbone).reward(state, fakes, fake_labels, rng)
  z = lambda r: (r - r.mean()) / r.std()
  np.testing.assert_allclose(got, z(base) + 0.5 * z(conf), rtol=1e-4,
                             atol=1e-4)
  # The confidence term ranks correctly labelled samples first, all else
  # equal: with a large weight, every right label beats every wrong one.
  heavy = rewards.make_reward(ml_collections.ConfigDict(
      {**fd_config, 'static_weight': 100.0}), backbone, 10)
  r = heavy.reward(state, fakes, fake_labels, rng)
  assert float(r[8:].min()) > float(r[:8].max())
  # The base's statistics are what update learns.
  new_state, _ = model.update(state, real, labels, fakes, fake_labels, rng)
  assert float(new_state.base.count) == float(state.base.count) + 64
  assert rewards.make_reward(ml_collections.ConfigDict(
      {**fd_config, 'static_weight': 0.0}), backbone, 10).__class__ is (
          rewards.FDReward)
  # A backbone without a classifier takes its confidence from another one,
  # and without one the config is refused in one line.
  headless = rewards.Backbone(
      apply=lambda v, x: (backbone.apply(v, x)[0], None),
      variables=backbone.variables, classifier=False)
  with pytest.raises(errors.UserError, match='static_backbone=fmnist'):
    rewards.make_reward(ml_collections.ConfigDict(
        {**fd_config, 'static_weight': 0.5}), headless, 10)
  with pytest.raises(errors.UserError, match='reward.backbone=fmnist'):
    rewards.make_reward(ml_collections.ConfigDict({'name': 'static'}),
                        headless, 10)
  mixed = rewards.make_reward(ml_collections.ConfigDict(
      {**fd_config, 'static_weight': 0.5}), headless, 10,
                              confidence_backbone=backbone)
  mixed_state = mixed.init(jax.random.key(0), real, labels)
  np.testing.assert_allclose(
      jax.jit(mixed.reward)(mixed_state, fakes, fake_labels, rng), got,
      rtol=1e-4, atol=1e-4)


def test_fd_ensemble_averages_standardised_fd_gains(toy_setup):
  params, backbone = toy_setup
  config = ml_collections.ConfigDict({'name': 'fd'})
  model = rewards.make_reward(config, backbone, 10,
                              ensemble=((backbone, 0),))
  assert isinstance(model, rewards.FDEnsemble) and not model.adversarial
  real, labels = _real(params, 64, 9)
  state = model.init(jax.random.key(0), real, labels)
  more, more_labels = _real(params, 32, 10)
  state, _ = jax.jit(model.update)(state, more, more_labels, more,
                                   more_labels, jax.random.key(0))
  fakes = 0.5 * _real(params, 12, 11)[0] + 0.5 * jax.random.uniform(
      jax.random.key(3), (12, 8, 8, 1))
  rng = jax.random.key(1)
  got = np.asarray(jax.jit(model.reward)(state, fakes, labels[:12], rng))
  # Each member is the FD reward on its own feature set, fed the same reals.
  want = []
  for index in (-1, 0):
    member = rewards.make_reward(ml_collections.ConfigDict(
        {'name': 'fd', 'feature_index': index}), backbone, 10)
    s = member.init(jax.random.key(0), real, labels)
    s, _ = jax.jit(member.update)(s, more, more_labels, more, more_labels,
                                  rng)
    r = np.asarray(jax.jit(member.reward)(s, fakes, labels[:12], rng))
    assert r.std() > 0
    want.append((r - r.mean()) / r.std())
  # FD gains are small differences of large FDs: float32 noise ~1e-3.
  np.testing.assert_allclose(got, (want[0] + want[1]) / 2, rtol=5e-3,
                             atol=5e-3)
  assert not np.allclose(want[0], want[1], atol=0.1)  # two real members
  assert set(model.parts(state, fakes, labels[:12], rng)) == {'fd0', 'fd1'}
  with pytest.raises(errors.UserError, match='reward.name=fd'):
    rewards.make_reward(ml_collections.ConfigDict({'name': 'adversarial'}),
                        backbone, 10, ensemble=((backbone, 0),))


def test_make_reward_rejects_bad_configs(toy_setup):
  _, backbone = toy_setup
  with pytest.raises(errors.UserError, match='reward.name'):
    rewards.make_reward(ml_collections.ConfigDict({'name': 'clip'}),
                        backbone, 10)
  with pytest.raises(errors.UserError, match='static_weight'):
    rewards.make_reward(ml_collections.ConfigDict(
        {'name': 'fd', 'static_weight': -1.0}), backbone, 10)
  with pytest.raises(errors.UserError, match='reward.loss'):
    rewards.make_reward(ml_collections.ConfigDict(
        {'name': 'adversarial', 'loss': 'wgan'}), backbone, 10)


def test_adversarial_crop_path_and_sharded_batch(toy_setup):
  """Crop-or-resize keeps one feature shape; a sharded batch changes nothing."""
  params, backbone = toy_setup
  config = ml_collections.ConfigDict(dict(
      name='adversarial', mapping_dim=16, mapping_layers=1, cmap_dim=8,
      p_crop=0.5, crop_size=6))  # 8 -> 6: crop, or area-resize
  model = rewards.make_reward(config, backbone, num_classes=10)
  real, labels = _real(params, 16, 7)
  fake = jax.random.uniform(jax.random.key(1), real.shape)
  state = model.init(jax.random.key(0), real[:8], labels[:8])
  state, metrics = jax.jit(model.update)(state, real, labels, fake, labels,
                                         jax.random.key(4))
  assert np.isfinite(float(metrics['d_loss']))
  reward = jax.jit(model.reward)
  mesh = jax.make_mesh((8,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  shard = jax.sharding.NamedSharding(mesh, jax.P('data'))
  for seed in range(4):  # both crop branches
    want = reward(state, real, labels, jax.random.key(seed))
    got = reward(state, jax.device_put(real, shard),
                 jax.device_put(labels, shard), jax.random.key(seed))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_backbone_readout_drops_cls():
  tokens = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)
  bb = rewards.Backbone(apply=lambda v, x: ([tokens, 2 * tokens], None),
                        variables={}, readout=True)
  feats = bb.features({}, jnp.zeros((2, 4, 4, 3)))
  assert [f.shape for f in feats] == [(2, 4, 3)] * 2
  np.testing.assert_array_equal(feats[1], 2 * (tokens[:, 1:] + tokens[:, :1]))
  with pytest.raises(ValueError, match='no classifier'):
    bb.logits({}, jnp.zeros((2, 4, 4, 3)))


def test_featurenet_diagnostic_backbone_is_the_evaluation_embedding():
  """The diagnostic FD reward pools exactly what FD-FMNIST compares."""
  from adagen_jax import evaluate  # pylint: disable=g-import-not-at-top
  from adagen_jax.backbones import fmnist  # pylint: disable=g-import-not-at-top
  backbone = rewards.featurenet_diagnostic_backbone()
  model = rewards.make_reward(ml_collections.ConfigDict({'name': 'fd'}),
                              backbone, 10)
  images = jax.random.uniform(jax.random.key(0), (6, 28, 28, 1))
  module, variables = fmnist.load_feature_net()
  # pylint: disable-next=protected-access
  want, _ = evaluate._embed(module, variables, images)
  got = model.pooled(backbone.variables, images)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(want).max()) > 0  # a non-trivial embedding
