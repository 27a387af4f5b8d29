"""Refinement on the toy generator: best-of-N, lookahead, the lambda-blend."""

import dataclasses
import os
import shutil
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from adagen_jax import errors
from adagen_jax import generators
from adagen_jax import samples_io
from adagen_jax.generators import toy
from adagen_jax.generators import var
from adagen_jax.rl import export
from adagen_jax.rl import policy
from adagen_jax.rl import ppo
from adagen_jax.rl import refine
from adagen_jax.rl import rewards
from adagen_jax.rl import rollout as rollout_lib

T, B = 4, 8
_REWARD = dict(name='adversarial', cmap_dim=8, mapping_dim=16,
               mapping_layers=2, virtual_bs=8, crop_pad=1)


@pytest.fixture(scope='module')
def gen():
  return generators.build(ml_collections.ConfigDict(
      {'name': 'toy', 'steps': T, 'smoothing': 0.8}))


@pytest.fixture(scope='module')
def backbone(gen):
  apply, variables = toy.feature_backbone(gen[1])
  return rewards.Backbone(apply=apply, variables=variables)


def _random_like(abstract, seed: int, zero_head: bool = False):
  """NumPy-random variables of an abstract layout: no init to compile.

  zero_head zeroes the policy's last layer, so it acts like the heuristic.
  """
  rs = np.random.RandomState(seed)

  def fill(path, leaf):
    names = [getattr(k, 'key', getattr(k, 'name', '')) for k in path]
    if zero_head and 'linear3' in names:
      return jnp.zeros(leaf.shape, leaf.dtype)
    if names[-1] == 'sigma':  # spectral norm estimate
      return jnp.ones(leaf.shape, leaf.dtype)
    x = rs.randn(*leaf.shape)
    if names[-1] == 'kernel':
      x /= np.sqrt(np.prod(leaf.shape[:-1]))
    elif names[-1] == 'scale':
      x = 1.0 + 0.1 * x
    elif names[-1] == 'u':
      x /= np.linalg.norm(x)
    else:
      x *= 0.1
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope='module')
def adv(gen, backbone):
  """A randomly initialised toy discriminator reward."""
  model = rewards.make_reward(ml_collections.ConfigDict(_REWARD), backbone,
                              toy.NUM_CLASSES)
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(1), jnp.zeros((8, 8, 8, 1)), _labels()))
  state = rewards.DiscState(
      frozen=backbone.variables,
      params=_random_like(abstract.params, 1),
      batch_stats=_random_like(abstract.batch_stats, 2),
      opt_state=jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                             abstract.opt_state),
      step=jnp.zeros((), jnp.int32))
  return model, state


_AGENT = policy.make_agent(2, T, hidden_size=16)
_AGENT_SHAPES = jax.eval_shape(lambda: _AGENT.init(jax.random.key(0),
                                                   (16, 8)))


def _agent(seed, zero_head=False):
  """A toy-sized agent with random weights (a policy that differs from the
  heuristic); zero_head: the last actor layer zero (the heuristic)."""
  return _AGENT, _random_like(_AGENT_SHAPES, seed, zero_head)


def _labels(b=B):
  return jnp.arange(b, dtype=jnp.int32) % toy.NUM_CLASSES


# --- best-of-N ----------------------------------------------------------------


_N = 3
_M = B * _N  # candidates of one best-of-3 batch


@pytest.fixture(scope='module')
def best_of_3(gen, adv):
  """best_of_n jitted over its labels, and its unsharded result."""
  g, gp = gen
  fn = jax.jit(lambda l: refine.best_of_n(g, gp, l, jax.random.key(5), None,
                                          *adv, _N))
  return fn, fn(_labels())


@pytest.fixture(scope='module')
def scorer(gen, adv):
  """score_samples over [M] images in the default reference groups."""
  g, gp = gen
  ref = jax.jit(lambda: refine.reference_samples(g, gp, None, 7))()
  assert ref[0].shape == (7, 8, 8, 1)
  assert ref[1].tolist() == list(range(7))
  return jax.jit(lambda x, l: refine.score_samples(*adv, x, l,
                                                   jax.random.key(0), ref))


def test_best_of_n_keeps_the_argmax_candidate(gen, best_of_3, scorer):
  g, gp = gen
  images, scores, chosen = best_of_3[1]
  # The same candidates (sample-major), scored one by one.
  labels = jnp.repeat(_labels(), _N)
  cand = jax.jit(lambda: rollout_lib.rollout(g, gp, labels, jax.random.key(
      5), keep_obs=False).images)()
  all_scores = np.asarray(scorer(cand, labels)).reshape(B, _N)
  cand = np.asarray(cand).reshape(B, _N, 8, 8, 1)
  np.testing.assert_array_equal(chosen, all_scores.argmax(1))
  assert len(set(np.asarray(chosen).tolist())) > 1  # not always one slot
  np.testing.assert_allclose(scores, all_scores.max(1), rtol=1e-5)
  np.testing.assert_array_equal(images, cand[np.arange(B), chosen])


def test_candidate_score_does_not_depend_on_batch_mates(gen, adv, scorer):
  model, state = adv
  x = jax.random.uniform(jax.random.key(2), (_M, 8, 8, 1))
  labels = _labels(_M)
  # Sample 3 among other batch-mates, and moved to row 10.
  other = jax.random.uniform(jax.random.key(3), (_M, 8, 8, 1))
  x2 = other.at[3].set(x[3])
  x3, l3 = other.at[10].set(x[3]), labels.at[10].set(labels[3])
  s1, s2, s3 = scorer(x, labels), scorer(x2, labels), scorer(x3, l3)
  np.testing.assert_allclose(s2[3], s1[3], rtol=1e-6)
  np.testing.assert_allclose(s3[10], s1[3], rtol=1e-6)
  # It is the discriminator's score of the explicit group [x_3, the 7
  # references] (score_samples regroups backbone features instead).
  g, gp = gen
  ref_x, ref_l = refine.reference_samples(g, gp, None, 7)
  group = jnp.concatenate([x[3:4], ref_x])
  group_labels = jnp.concatenate([labels[3:4], ref_l])
  plain = dataclasses.replace(model, augment_reward=False)
  direct = plain.score(state, group, group_labels, jax.random.key(0),
                       group_size=8)
  np.testing.assert_allclose(s1[3], direct[0], rtol=1e-5)
  # The discriminator's own grouping (8 contiguous samples) is not.
  raw = jax.jit(lambda x: model.score(state, x, labels, jax.random.key(0)))
  assert abs(float(raw(x)[3]) - float(raw(x2)[3])) > 1e-4


def test_best_of_one_is_plain_sampling(gen, adv, run_lookahead):
  g, gp = gen
  rng = jax.random.key(11)
  images, _, chosen = jax.jit(lambda r: refine.best_of_n(
      g, gp, _labels(), r, None, *adv, 1))(rng)
  np.testing.assert_array_equal(images, run_lookahead(0, None, rng))
  np.testing.assert_array_equal(chosen, np.zeros(B))


def test_best_of_n_sharded_over_the_data_mesh(best_of_3):
  fn, want = best_of_3
  mesh = jax.make_mesh((8,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  got = fn(jax.device_put(_labels(), jax.sharding.NamedSharding(
      mesh, jax.P('data'))))
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_per_sample_and_batch_rewards(backbone):
  images = jax.random.uniform(jax.random.key(0), (B, 8, 8, 1))
  static = rewards.StaticReward(backbone)
  state = static.init(None, None, None)
  np.testing.assert_array_equal(
      refine.score_samples(static, state, images, _labels(), None),
      static.reward(state, images, _labels(), None))
  # The FD reward scores each image's gain over the fixed references.
  fd = rewards.FDReward(backbone)
  fd_state = fd.init(None, jax.random.uniform(jax.random.key(1),
                                              (4 * B, 8, 8, 1)), None)
  ref = (jax.random.uniform(jax.random.key(2), (B, 8, 8, 1)), _labels())
  np.testing.assert_array_equal(
      refine.score_samples(fd, fd_state, images, _labels(), None, ref),
      fd.gain_over(fd_state, images, _labels(), ref))
  assert refine.reference_size(fd) == refine.FD_REFERENCE_SIZE
  # The confidence bonus (standardised over the batch) depends on
  # batch-mates.
  with pytest.raises(errors.UserError, match='whole batch'):
    refine.score_samples(rewards.ConfidenceBonus(fd, static, 1.0), None,
                         images, _labels(), None)


# --- lookahead ----------------------------------------------------------------


class _TemplateCloseness(nn.Module):
  """A hand-made critic: minus the squared gap between the image and the
  template halves of the toy observation tokens."""

  @nn.compact
  def __call__(self, x, t):
    del t
    return -jnp.mean(jnp.square(x[..., :4] - x[..., 4:]), axis=(1, 2))[:, None]


@pytest.fixture(scope='module')
def closeness_agent():
  agent = policy.Agent(actor=_AGENT.actor, critic=_TemplateCloseness())
  return agent, {'actor': _agent(0)[1]['actor'], 'critic': {}}


@pytest.fixture(scope='module')
def run_lookahead(gen, closeness_agent):
  """Images of a jitted heuristic rollout with lookahead (k, steps); k = 0:
  no transition hook at all."""
  g, gp = gen

  @jax.jit(static_argnums=(0, 1))
  def run(k, steps, rng):
    trans = (refine.lookahead_transition(
        g, refine.critic_judge(*closeness_agent), k, steps)
             if k else None)
    return rollout_lib.rollout(g, gp, _labels(), rng, transition=trans).images

  return run


def test_first_typical():
  density = jnp.array([[0.0, 5.0, 6.0],    # first above tau: candidate 1
                       [3.0, 9.0, 1.0],    # the first is typical: kept
                       [-4.0, -1.0, -2.0]])  # none: the densest
  np.testing.assert_array_equal(refine.first_typical(density, 2.0),
                                [1, 0, 1])


def test_typical_of_n_keeps_the_first_non_outlier(gen, backbone,
                                                  run_lookahead):
  g, gp = gen
  reals = jax.jit(lambda: rollout_lib.rollout(
      g, gp, _labels(64), jax.random.key(2)).images)()
  stats = refine.fit_typicality(backbone, -1, np.asarray(reals), 50.0,
                                chunk=16)
  # The threshold is the median of the held-out half's densities.
  feats = refine.pooled_features(backbone, -1, reals[32:])
  held_out = refine.typicality(feats, stats['mu'], stats['prec'])
  np.testing.assert_allclose(stats['tau'], np.percentile(held_out, 50),
                             rtol=1e-5)
  rng = jax.random.key(11)
  run = jax.jit(lambda n: refine.typical_of_n(g, gp, _labels(), rng, None,
                                              backbone, -1, stats, n),
                static_argnums=0)
  images, dens, chosen = run(3)
  cands = refine.candidate_images(g, gp, _labels(), rng, None, 3)
  want_dens = jax.vmap(lambda x: refine.typicality(
      refine.pooled_features(backbone, -1, x), stats['mu'], stats['prec']),
                       in_axes=1, out_axes=1)(cands)
  want = refine.first_typical(want_dens, stats['tau'])
  np.testing.assert_array_equal(chosen, want)
  np.testing.assert_allclose(images, cands[jnp.arange(B), want], atol=1e-6)
  # The quadratic form through a near-singular precision: float32 round-off
  # of ~1e-4 between the jitted and eager programs.
  np.testing.assert_allclose(dens, want_dens[jnp.arange(B), want],
                             rtol=1e-4, atol=1e-3)
  # N = 1 is plain sampling.
  np.testing.assert_array_equal(run(1)[0], run_lookahead(0, None, rng))
  with pytest.raises(errors.UserError, match='percentile=100'):
    refine.fit_typicality(backbone, -1, np.asarray(reals), 100.0)


def test_fit_discriminator_estimates_the_log_density_ratio():
  """Two Gaussians of one covariance: log p_real / p_fake is linear, and the
  fitted logit follows it (up to the constant the rule never uses)."""
  rng = np.random.default_rng(0)
  d, shift = 5, np.array([0.8, -0.5, 0.0, 0.0, 0.3])
  real = rng.normal(size=(4000, d)) + shift
  fake = rng.normal(size=(1000, d))  # fewer: the class weights balance them
  disc = refine.fit_discriminator(real, fake)
  test = rng.normal(size=(500, d)) * 2.0
  true = test @ shift  # the log ratio less its constant
  got = np.asarray(refine.discriminator_logits(disc, jnp.asarray(test)))
  assert np.corrcoef(got, true)[0, 1] > 0.99
  np.testing.assert_allclose(np.polyfit(true, got, 1)[0], 1.0, atol=0.1)


def test_discriminator_of_n_draws_by_the_logits(gen, backbone,
                                                run_lookahead):
  g, gp = gen
  reals = jax.jit(lambda: rollout_lib.rollout(
      g, gp, _labels(64), jax.random.key(2)).images)()
  fakes = jax.jit(lambda: rollout_lib.rollout(
      g, gp, _labels(64), jax.random.key(3)).images)()
  feats = lambda x: np.asarray(refine.feature_vector((backbone,), x))
  disc = refine.fit_discriminator(feats(reals), feats(fakes), steps=20)
  rng = jax.random.key(11)
  run = jax.jit(lambda n: refine.discriminator_of_n(
      g, gp, _labels(), rng, None, (backbone,), disc, n), static_argnums=0)
  images, logits, chosen = run(3)
  cands = refine.candidate_images(g, gp, _labels(), rng, None, 3)
  want_logits = jax.vmap(lambda x: refine.discriminator_logits(
      disc, refine.feature_vector((backbone,), x)), in_axes=1,
                         out_axes=1)(cands)
  want = jax.random.categorical(jax.random.fold_in(rng, 1), want_logits,
                                axis=1)
  np.testing.assert_array_equal(chosen, want)
  np.testing.assert_allclose(images, cands[jnp.arange(B), want], atol=1e-6)
  np.testing.assert_allclose(logits, want_logits[jnp.arange(B), want],
                             rtol=1e-4, atol=1e-4)
  # N = 1 is plain sampling.
  np.testing.assert_array_equal(run(1)[0], run_lookahead(0, None, rng))


def test_discriminator_judge_draws_by_the_decoded_logits(gen, backbone):
  """The lookahead's discriminator judge: candidate k drawn with the Gumbel
  key fold_in(rng, K) by the logits of the K candidates' decoded images."""
  g, gp = gen
  fakes = jax.jit(lambda: rollout_lib.rollout(
      g, gp, _labels(64), jax.random.key(3)).images)()
  feats = lambda x: np.asarray(refine.feature_vector((backbone,), x))
  disc = refine.fit_discriminator(feats(fakes[:32]), feats(fakes[32:]),
                                  steps=20)
  k, t, rng = 4, 1, jax.random.key(8)
  action = {'blend': jnp.full((B,), 0.3), 'temp': jnp.full((B,), 2.0)}
  trans = refine.lookahead_transition(
      g, refine.discriminator_judge(g, (backbone,), disc), k)

  @jax.jit
  def by_hand_and_transition():
    state, _ = g.init(gp, _labels(), jax.random.key(0))
    cands = [g.step(gp, state, action, key)[0]
             for key in refine.candidate_keys(rng, k)]
    logits = jnp.stack([refine.discriminator_logits(
        disc, refine.feature_vector((backbone,), g.decode(gp, c)))
                        for c in cands])
    xs = jnp.stack([c.x for c in cands])
    return trans(gp, state, action, rng, jnp.int32(t))[0].x, logits, xs

  got, logits, xs = by_hand_and_transition()
  want = jax.random.categorical(jax.random.fold_in(rng, k), logits, axis=0)
  assert len(set(np.asarray(want).tolist())) > 1
  np.testing.assert_array_equal(got, np.asarray(xs)[want, np.arange(B)])


def test_set_selection_lowers_the_sets_fd():
  from adagen_jax.metrics import fid
  rng = np.random.default_rng(0)
  d, m = 6, 600
  mu_r, sigma_r = fid.feature_stats(rng.normal(size=(5000, d)))
  # Candidate 0 is shifted and too narrow; candidate 1 is real-like: a
  # per-sample score would take candidate 1 everywhere, the set's optimum
  # mixes them.
  feats = np.stack([0.5 + 0.5 * rng.normal(size=(m, d)),
                    rng.normal(size=(m, d)),
                    -0.5 + 0.5 * rng.normal(size=(m, d))], axis=1)
  one, history = refine.select_for_set([(feats[:, :1], mu_r, sigma_r)])
  np.testing.assert_array_equal(one, 0)
  assert len(history) == 1
  chosen, history = refine.select_for_set([(feats, mu_r, sigma_r)])
  assert chosen.shape == (m,) and chosen.dtype == np.int32
  assert set(np.unique(chosen)) <= {0, 1, 2}
  assert np.all(np.diff(history) < 0), history  # every accepted round helps
  fd = lambda c: fid.frechet_distance(
      *fid.feature_stats(feats[np.arange(m), c]), mu_r, sigma_r)
  assert history[-1] == pytest.approx(fd(chosen))
  assert history[0] == pytest.approx(fd(np.zeros(m, int)))
  assert history[-1] < 0.2 * history[0]
  # Two spaces: the sum of FDs relative to their start values.
  rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
  both, joint = refine.select_for_set(
      [(feats, mu_r, sigma_r), (feats @ rot, mu_r @ rot, rot.T @ sigma_r @ rot)])
  assert joint[0] == pytest.approx(2.0)
  assert np.all(np.diff(joint) < 0) and joint[-1] < 0.4


def test_lookahead_with_one_candidate_is_the_plain_rollout(run_lookahead):
  np.testing.assert_array_equal(run_lookahead(1, None, jax.random.key(2)),
                                run_lookahead(0, None, jax.random.key(2)))


def test_lookahead_keeps_the_max_value_candidate(gen, closeness_agent,
                                                 run_lookahead):
  g, gp = gen
  agent, params = closeness_agent
  k, t, rng = 4, 1, jax.random.key(8)
  action = {'blend': jnp.full((B,), 0.3), 'temp': jnp.full((B,), 2.0)}
  judge = refine.critic_judge(agent, params)
  trans = refine.lookahead_transition(g, judge, k)
  only_1 = refine.lookahead_transition(g, judge, k, steps=(1,))

  @jax.jit
  def by_hand_and_transitions():
    state, _ = g.init(gp, _labels(), jax.random.key(0))
    # The K candidates by hand, and their values V(obs, t + 1).
    cands = [g.step(gp, state, action, key)
             for key in refine.candidate_keys(rng, k)]
    values = jnp.stack([agent.value(params, o, t + 1) for _, o in cands])
    xs = jnp.stack([c.x for c, _ in cands])
    obs = jnp.stack([o for _, o in cands])
    return (trans(gp, state, action, rng, jnp.int32(t)), values, xs, obs,
            only_1(gp, state, action, rng, jnp.int32(0))[0].x,
            only_1(gp, state, action, rng, jnp.int32(1))[0].x)

  (got, got_obs), values, xs, obs, at_0, at_1 = by_hand_and_transitions()
  best = np.asarray(values).argmax(0)
  assert len(set(best.tolist())) > 1
  np.testing.assert_array_equal(got.x, np.asarray(xs)[best, np.arange(B)])
  np.testing.assert_array_equal(got_obs, np.asarray(obs)[best, np.arange(B)])
  assert int(got.step) == 1
  # Steps outside `steps` are the plain step (candidate 0's key is rng).
  np.testing.assert_array_equal(at_0, xs[0])
  np.testing.assert_array_equal(at_1, got.x)
  # Over a whole rollout, the critic's choice moves images to the templates.
  reward = lambda k: float(toy.template_reward(
      gp, run_lookahead(k, None, jax.random.key(1)), _labels()).mean())
  assert reward(4) > reward(0) + 0.005, (reward(4), reward(0))


def test_lookahead_steps_and_refusals(gen, closeness_agent):
  g, _ = gen
  assert refine.resolve_steps(T) == (0, 1, 2)
  assert refine.resolve_steps(T, [2, 0, 2]) == (0, 2)
  with pytest.raises(errors.UserError, match='last step 3'):
    refine.resolve_steps(T, [3])
  with pytest.raises(errors.UserError, match='K >= 1'):
    refine.lookahead_transition(g, refine.critic_judge(*closeness_agent),
                                k=0)
  deterministic = dataclasses.replace(g, stochastic=False)
  with pytest.raises(errors.UserError, match='deterministic'):
    refine.lookahead_transition(
        deterministic, refine.critic_judge(*closeness_agent), k=2)


def test_batch_layout_and_selection_of_interleaved_rows():
  k, b = 3, 2
  # VAR-like leaves: [2B] interleaved rows, [depth, 2B], [B], a counter.
  small = {'hidden': jnp.zeros((2 * b, 5)), 'cache': jnp.zeros((4, 2 * b)),
           'f': jnp.zeros((b, 3)), 'step': jnp.zeros((), jnp.int32)}
  big = {'hidden': jnp.zeros((4 * b, 5)), 'cache': jnp.zeros((4, 4 * b)),
         'f': jnp.zeros((2 * b, 3)), 'step': jnp.zeros((), jnp.int32)}
  layout = refine.batch_layout(small, big, b)
  flat = dict(zip(sorted(small), layout))  # dict leaves flatten sorted
  assert flat == {'cache': (1, 2), 'f': (0, 1), 'hidden': (0, 2),
                  'step': None}
  stacked = {
      'hidden': jnp.arange(k * 2 * b * 5).reshape(k, 2 * b, 5),
      'cache': jnp.arange(k * 4 * 2 * b).reshape(k, 4, 2 * b),
      'f': jnp.arange(k * b * 3).reshape(k, b, 3),
      'step': jnp.full((k,), 7)}
  index = jnp.asarray([2, 0])
  got = refine.select_candidates(stacked, index, layout)
  h = np.asarray(stacked['hidden'])
  np.testing.assert_array_equal(got['hidden'][0:2], h[2, 0:2])  # sample 0
  np.testing.assert_array_equal(got['hidden'][2:4], h[0, 2:4])  # sample 1
  c = np.asarray(stacked['cache'])
  np.testing.assert_array_equal(got['cache'][:, 0:2], c[2, :, 0:2])
  np.testing.assert_array_equal(got['cache'][:, 2:4], c[0, :, 2:4])
  np.testing.assert_array_equal(got['f'][1], stacked['f'][0, 1])
  assert int(got['step']) == 7


def test_batch_layout_of_the_var_state():
  """VAR keeps cond / uncond rows interleaved: found from shapes alone."""
  c = ml_collections.ConfigDict(dict(
      name='var', depth=1, width=16, num_heads=2, mlp_ratio=2.0,
      shared_aln=False, attn_l2_norm=True, num_classes=10, patch_nums=(1, 2),
      dtype='float32', vae=dict(vocab_size=8, z_channels=4, ch=32,
                                ch_mult=(1,), num_res_blocks=1,
                                using_sa=False, using_mid_sa=False,
                                quant_resi=0.5, share_quant_resi=4,
                                image_channels=3, norm_groups=32),
      cfg=1.5, top_k=900.0, top_p=0.96, samp_temp=1.0, smoothing=0.0,
      obs_side=2))
  g = var.VARGenerator(*var.modules_from_config(c))
  params = jax.eval_shape(lambda k: var.random_params(g, k), jax.random.key(0))
  shape = lambda b: jax.eval_shape(g.init, params, jax.ShapeDtypeStruct(
      (b,), jnp.int32), jax.random.key(0))[0]
  layout = refine.batch_layout(shape(3), shape(6), 3)
  names = [f.name for f in dataclasses.fields(var.VARState)]
  assert dict(zip(names, layout)) == {
      'labels': (0, 1), 'hidden': (0, 2), 'cache_k': (1, 2),
      'cache_v': (1, 2), 'f_hat': (0, 1), 'tokens': (0, 1), 'step': None}


# --- the lambda-blend -----------------------------------------------------------


@pytest.fixture(scope='module')
def agents():
  return _agent(3), _agent(20)


@jax.jit(static_argnums=0)
def _blend_run(g, gp, main_params, fid_params, lam, sigma):
  act = refine.blend_act_fn(_AGENT, main_params, _AGENT, fid_params, lam,
                            sigma, explore=True)
  return rollout_lib.rollout(g, gp, _labels(), jax.random.key(6), act)


def _blend_rollout(gen, agents, lam, sigma=0.0):
  """An exploring blend rollout; sigma = 0 is the mean (evaluation)."""
  (_, mp), (_, fp) = agents
  return _blend_run(gen[0], gen[1], mp, fp, jnp.float32(lam),
                    jnp.float32(sigma))


@jax.jit(static_argnums=0)
def _policy_run(g, gp, params):
  act = _AGENT.make_act_fn(params, jnp.float32(0.3), explore=False)
  return rollout_lib.rollout(g, gp, _labels(), jax.random.key(6), act)


@jax.jit
def _per_step(main_params, fid_params, traj, lam):
  """Along a trajectory [T, B]: both actors' means, and the fidelity
  agent's log-prob of the recovered fidelity samples and its values."""
  steps = jnp.arange(T)
  mean = jax.vmap(_AGENT.mean, in_axes=(None, 0, 0))
  fid = refine.fidelity_trajectory(_AGENT, main_params, traj, lam)
  logp = jax.vmap(_AGENT.log_prob, in_axes=(None, 0, 0, 0, None))(
      fid_params, traj.obs, steps, fid.raw, 0.3)
  value = jax.vmap(_AGENT.value, in_axes=(None, 0, 0))(fid_params, traj.obs,
                                                        steps)
  return (mean(main_params, traj.obs, steps), mean(fid_params, traj.obs, steps),
          logp, value)


def _policy_rollout(gen, agent, params):
  assert agent is _AGENT
  return _policy_run(gen[0], gen[1], params)


def test_blend_endpoints_are_the_two_policies_exactly(gen, agents):
  (ma, mp), (fa, fp) = agents
  main, fid = _policy_rollout(gen, ma, mp), _policy_rollout(gen, fa, fp)
  assert np.abs(np.asarray(main.actions) - fid.actions).max() > 1e-2
  for lam, want in ((0.0, main), (1.0, fid)):
    got = _blend_rollout(gen, agents, lam)
    np.testing.assert_array_equal(got.actions, want.actions)
    np.testing.assert_array_equal(got.images, want.images)
  # In between: the raw outputs blend linearly, state by state.
  mid = _blend_rollout(gen, agents, 0.3)
  main_mean, fid_mean, _, _ = _per_step(mp, fp, mid, jnp.float32(0.3))
  np.testing.assert_allclose(mid.raw, 0.7 * main_mean + 0.3 * fid_mean,
                             rtol=1e-5, atol=1e-6)


def test_fidelity_samples_are_recovered_for_ppo(gen, agents):
  (ma, mp), (fa, fp) = agents
  traj = _blend_rollout(gen, agents, 0.3, sigma=0.3)
  _, _, logp, value = _per_step(mp, fp, traj, jnp.float32(0.3))
  np.testing.assert_allclose(logp, traj.logp, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(traj.value, value, rtol=1e-4, atol=1e-5)


def test_blend_reward():
  r_adv, r_fid = jnp.asarray([0.2, 0.9]), jnp.asarray([0.6, 0.1])
  np.testing.assert_allclose(refine.blend_reward(r_adv, r_fid, 0.25),
                             [0.3, 0.7], rtol=1e-6)
  np.testing.assert_array_equal(refine.blend_reward(r_adv, r_fid, 0.0), r_adv)
  np.testing.assert_array_equal(refine.blend_reward(r_adv, r_fid, 1.0), r_fid)
  # Standardised: an FD gain's scale no longer decides the blend.
  small = jnp.asarray([0.01, 0.03])
  np.testing.assert_allclose(
      refine.blend_reward(small, r_fid, 0.5, standardise=True),
      [0.0, 0.0], atol=1e-5)


def test_fidelity_training_raises_the_fidelity_reward(gen, backbone, agents):
  g, gp = gen
  (ma, mp), _ = agents
  fa, fp = _agent(30, zero_head=True)  # starts at the heuristic
  static = rewards.StaticReward(backbone)
  fid_state = static.init(None, None, None)
  # Any RewardModel plugs in; at lam = 1 the adversarial part has weight 0,
  # so a static stand-in keeps this test's compile small.
  trainer = refine.FidelityTraining(g, ma, fa, static, static)
  step = jax.jit(trainer.iteration)
  labels = _labels(64)
  state = ppo.create_train_state(fp, learning_rate=1e-3)
  r_fid = []
  for i in range(15):
    state, metrics, (images, _) = step(
        state, gp, mp, fid_state, fid_state, labels, jax.random.key(i),
        jnp.float32(0.3), jnp.float32(1.0))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics['lam']) == 1.0
    assert float(metrics['reward']) == float(metrics['reward_fid'])
    r_fid.append(float(metrics['reward_fid']))
  assert images.shape == (64, 8, 8, 1)
  # The exploring policy's fidelity reward, first vs last iterations.
  # Measured: about 0.71 -> 0.81.
  before, after = np.mean(r_fid[:3]), np.mean(r_fid[-3:])
  assert after > before + 0.04, r_fid
  # lam = 0 is still the main policy.
  trained = (agents[0], (fa, state.params))
  np.testing.assert_array_equal(_blend_rollout(gen, trained, 0.0).images,
                                _policy_rollout(gen, ma, mp).images)


# --- costs, loading, the CLI ------------------------------------------------------


def test_refinement_cost():
  c = refine.refinement_cost(16, best_of=4, lookahead=3, blend=True)
  assert c == {'generator_ratio': 4 * (16 + 2 * 15) / 16,
               'generator_transitions': 184.0, 'policy_forwards': 128.0,
               'critic_forwards': 180.0, 'discriminator_forwards': 32.0}
  plain = refine.refinement_cost(16)
  assert plain['generator_ratio'] == 1.0
  assert plain['critic_forwards'] == plain['discriminator_forwards'] == 0.0
  c = refine.refinement_cost(16, lookahead=2, lookahead_steps=(0, 1))
  assert c['generator_ratio'] == 18 / 16 and c['critic_forwards'] == 4.0


@pytest.fixture(scope='module')
def exported(gen, adv, tmp_path_factory):
  g, _ = gen
  agent, params = _agent(3)
  config = ml_collections.ConfigDict({
      'policy': {'kind': 'adaptive', 'hidden': 16},
      'reward': dict(_REWARD, backbone='toy')})
  path = str(tmp_path_factory.mktemp('refine') / 'policy')
  export.export_policy(path, params, config, g, reward_state=adv[1])
  return path


def test_load_refinement_errors(gen, exported):
  g, _ = gen
  with pytest.raises(errors.UserError, match='--lookahead need an exported'):
    refine.load_refinement('heuristic', g, lookahead=2)
  with pytest.raises(errors.UserError, match='--best_of and --lam'):
    refine.load_refinement('heuristic', g, best_of=2, lam=0.5,
                           fidelity_policy=exported)
  with pytest.raises(errors.UserError, match='has no fidelity/ folder'):
    refine.load_refinement(exported, g, lam=0.5)
  with pytest.raises(errors.UserError, match='needs --lam'):
    refine.load_refinement(exported, g, fidelity_policy=exported)
  with pytest.raises(errors.UserError, match=r'\[0, 1\]'):
    refine.load_refinement(exported, g, lam=1.5, fidelity_policy=exported)
  with pytest.raises(errors.UserError, match='deterministic'):
    refine.load_refinement(exported, dataclasses.replace(g, stochastic=False),
                           lookahead=2)


def test_load_refinement(gen, backbone, exported, adv, tmp_path):
  g, gp = gen
  refinement, variables = refine.load_refinement(
      exported, g, best_of=2, lookahead=3, lookahead_steps=[0, 1], lam=0.5,
      fidelity_policy=exported, backbone=backbone)
  assert sorted(variables) == ['fidelity', 'lam', 'policy', 'reward']
  assert refinement.steps == (0, 1) and refinement.fid_agent is not None
  assert refinement.describe().startswith(
      'refinement best_of=2 (score) lookahead=3 (critic) steps=[0, 1] '
      'blend=True: 4.00x '
      'generator transitions, 12 critic forwards, 16 discriminator forwards')
  chex.assert_trees_all_equal(variables['reward'].params, adv[1].params)
  # The export keeps what scoring needs, not the Adam moments.
  chex.assert_trees_all_equal(variables['reward'].batch_stats,
                              adv[1].batch_stats)
  # A fidelity/ folder inside the export is the default fidelity policy.
  main = tmp_path / 'with_fidelity'
  shutil.copytree(exported, main)
  shutil.copytree(exported, main / 'fidelity')
  _, variables = refine.load_refinement(str(main), g, lam=0.5)
  assert sorted(variables) == ['fidelity', 'lam', 'policy']
  # Best-of-N from the export's discriminator (lookahead and the blend run
  # in test_cli_flags), also the CLI's default rule for an adversarial
  # reward.
  refinement, variables = refine.load_refinement(exported, g, best_of=2,
                                                 backbone=backbone,
                                                 best_of_rule='auto')
  assert refinement.best_of_rule == 'score'
  images, scores = jax.jit(refinement.sample)(variables, gp, _labels(),
                                              jax.random.key(0))
  assert images.shape == (B, 8, 8, 1) and scores.shape == (B,)


@pytest.mark.parametrize('rule,option', [
    ('typical', dict(typical_percentile=25.0)),
    ('discriminator', dict(pilot=32))])
def test_load_refinement_rules_without_reward_state(gen, backbone, exported,
                                                    rule, option):
  """Outlier rejection and the fitted discriminator need no reward state:
  real images and the reward backbone (the discriminator also a pilot set
  of the policy itself); a generator off Fashion-MNIST must bring its own
  reals."""
  g, gp = gen
  reals = jax.jit(lambda: rollout_lib.rollout(
      g, gp, _labels(64), jax.random.key(2)).images)()
  refinement, variables = refine.load_refinement(
      exported, g, best_of=3, backbone=backbone, best_of_rule=rule,
      reals=np.asarray(reals), gen_params=gp, **option)
  assert sorted(variables) == sorted(['policy', rule])
  assert refinement.describe().startswith(
      f'refinement best_of=3 ({rule}) lookahead=1 steps=[] blend=False: '
      '3.00x generator transitions, 3 reward-backbone forwards')
  images, scores = jax.jit(refinement.sample)(variables, gp, _labels(),
                                              jax.random.key(0))
  assert images.shape == (B, 8, 8, 1) and scores.shape == (B,)
  if rule == 'discriminator':
    assert variables[rule]['w'].shape == refine.feature_vector(
        (backbone,), reals[:1]).shape[1:]
  with pytest.raises(errors.UserError, match='only Fashion-MNIST'):
    refine.load_refinement(exported, g, best_of=2, backbone=backbone,
                           best_of_rule=rule, gen_params=gp)
  with pytest.raises(errors.UserError, match="best_of_rule='best'"):
    refine.load_refinement(exported, g, best_of=2, best_of_rule='best')


def test_load_refinement_discriminator_lookahead(gen, backbone, exported):
  """--lookahead_rule=discriminator: fitted on the policy without
  lookahead, no reward state or critic read; a bad rule is one line."""
  g, gp = gen
  reals = jax.jit(lambda: rollout_lib.rollout(
      g, gp, _labels(64), jax.random.key(2)).images)()
  refinement, variables = refine.load_refinement(
      exported, g, lookahead=3, lookahead_steps=[0, 1], backbone=backbone,
      reals=np.asarray(reals), gen_params=gp, pilot=32,
      lookahead_rule='discriminator')
  assert sorted(variables) == ['discriminator', 'policy']
  assert refinement.describe() == (
      'refinement best_of=1 lookahead=3 (discriminator) steps=[0, 1] '
      'blend=False: 2.00x generator transitions, 6 decodes and 6 '
      'reward-backbone forwards (lookahead) per sample')
  images, _ = jax.jit(refinement.sample)(variables, gp, _labels(),
                                         jax.random.key(0))
  assert images.shape == (B, 8, 8, 1)
  with pytest.raises(errors.UserError, match="lookahead_rule='best'"):
    refine.load_refinement(exported, g, lookahead=2, lookahead_rule='best')


def test_exports_with_the_whole_reward_state_still_load(gen, backbone,
                                                        exported, adv,
                                                        tmp_path):
  """Exports from before the inference part was split off (Adam moments
  and the frozen backbone included) load the same discriminator."""
  old = tmp_path / 'old'
  shutil.copytree(exported, old)
  shutil.rmtree(old / 'reward')
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(str(old / 'reward'), adv[1])
  ckptr.wait_until_finished()
  _, variables = refine.load_refinement(str(old), gen[0], best_of=2,
                                        backbone=backbone)
  chex.assert_trees_all_equal(variables['reward'].params, adv[1].params)


_TOY_CONFIG = '''
import ml_collections

def get_config():
  return ml_collections.ConfigDict(
      {'generator': {'name': 'toy', 'steps': %d, 'smoothing': 0.8}})
''' % T


def test_cli_flags(exported, tmp_path):
  """Lookahead and the blend through sample.py's flags (the refusals are
  load_refinement's, tested above)."""
  cfg = tmp_path / 'toy_cfg.py'
  cfg.write_text(_TOY_CONFIG)
  res = subprocess.run(
      [sys.executable, '-m', 'adagen_jax.sample', f'--config={cfg}',
       '--num=12', '--batch=8', f'--out={tmp_path / "s.npz"}',
       f'--policy={exported}', '--lookahead=2', '--lookahead_steps=0,2',
       '--lam=0.25', f'--fidelity_policy={exported}'],
      capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert res.returncode == 0, res.stderr[-2000:]
  assert ('lookahead=2 (critic) steps=[0, 2] blend=True: 1.50x generator'
          in res.stdout)
  assert samples_io.load_samples(str(tmp_path / 's.npz'))[0].shape == (
      12, 8, 8, 1)
