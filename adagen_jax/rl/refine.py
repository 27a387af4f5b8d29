"""Inference-time refinement and the fidelity-diversity blend (AdaGen §III-F).

Additions on top of a trained policy, generic over the generator
protocol (adagen_reference.md §8 items 11-12: none of them is in released
code, so every choice below is ours and says why):

- Best-of-N (`best_of_n`): N rollouts per label in one batch of B * N, each
  final image scored by the policy's own reward (the trained discriminator,
  or the FD gain over fixed reference samples), the best kept.
- Best-of-N by outlier rejection (`typical_of_n`): keep a sample's first
  candidate unless its reward-backbone features are atypical of real
  images (log-density below a percentile of held-out reals'), then the
  next. Needs no reward state, so it serves every policy.
- Best-of-N by a discriminator fitted after training (`discriminator_of_n`):
  a logistic regression of real images against the policy's own samples
  on every feature set of the reward backbones; each sample keeps one of
  its N candidates drawn in proportion to the estimated density ratio
  p_real / p_policy (sampling-importance-resampling). Needs no reward
  state, so it serves every policy.
- Best-of-N for a set (`select_for_set`): the candidates of every sample
  chosen together, by descent on the FD of the chosen set (for metrics of
  a set, which no per-sample score can follow).
- Value lookahead (`lookahead_transition`): at chosen steps, K candidate next
  states from K sampling keys; the critic's V(obs_{t+1}, t + 1) picks one per
  sample (`critic_judge`), or a draw by the fitted discriminator's density
  ratio on the image each candidate would decode to now
  (`discriminator_judge`). Only stochastic transitions (MaskGIT, VAR) have
  candidates.
- The lambda-blend (`blend_act_fn`, `FidelityTraining`): a second,
  fidelity-oriented policy trained on (1 - lam) r_adv + lam r_fid with the
  main policy frozen, executed as (1 - lam) a_main + lam a_fid.

`Refinement` and `load_refinement` bundle them for `adagen_jax.sample`
(--best_of, --lookahead, --lookahead_steps, --lam, --fidelity_policy);
`refinement_cost` counts what each costs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import errors
from adagen_jax.generators import base
from adagen_jax.metrics import fid
from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import ppo as ppo_lib
from adagen_jax.rl import rewards as rewards_lib
from adagen_jax.rl import rollout as rollout_lib

# Key of the fixed reference samples that share a discriminator group with
# every best-of-N candidate (see `score_samples`).
REFERENCE_SEED = 7
# The FD reward's reference set: a training batch of the CPU recipe
# (ppo.rollout_batch 256) less the candidate, so a candidate's FD gain is
# measured against as many batch-mates as in training.
FD_REFERENCE_SIZE = 255
# Smallest training lam: the fidelity samples are recovered from the blended
# action by dividing by lam (`fidelity_trajectory`).
LAM_MIN = 1e-3
# Outlier rejection: real images whose features fit the Gaussian (half) and
# set the threshold (the other half), and the ridge on that Gaussian's
# covariance as a fraction of its mean eigenvalue, so near-empty feature
# directions do not dominate the density. Chosen on the T=4 policy (seed 0,
# held on seeds 1-2); it makes the T=8 policy worse (docs/RESULTS.md,
# "Refinement"), so it is an option, not the default.
TYPICAL_REALS = 20000
TYPICAL_RIDGE = 1e-3
# The discriminator rule: policy samples it is fitted on (sampling seed
# DISCRIMINATOR_SEED, never an evaluation seed), against TYPICAL_REALS real
# images; L2 weight on standardised features and full-batch Adam. A pilot of
# 2000 samples gave gains up to N = 4 only, a cross-fitted 8000 up to N = 8
# (docs/RESULTS.md, "Refinement").
DISCRIMINATOR_PILOT = 8000
DISCRIMINATOR_SEED = 99
DISCRIMINATOR_L2 = 1e-3
DISCRIMINATOR_STEPS = 300
DISCRIMINATOR_LR = 0.05
# 'auto' (the CLI's default): the reward's own score where the reward is a
# discriminator of single samples (adversarial, the paper's best-of-N), the
# fitted discriminator otherwise: an FD reward's per-sample gain makes FD
# worse with N, the fitted discriminator lowers it on every policy measured
# (docs/RESULTS.md, "Refinement").
BEST_OF_RULES = ('auto', 'score', 'typical', 'discriminator')
LOOKAHEAD_RULES = ('critic', 'discriminator')
_TRAIN_HINT = ('train one with python -m adagen_jax.main --config=... '
               '--workdir=WORKDIR and pass --policy=WORKDIR/policy')


# --- best-of-N ----------------------------------------------------------------


def reference_size(reward_model) -> int:
  """How many fixed reference images share a candidate's score group."""
  if isinstance(reward_model, rewards_lib.AdversarialReward):
    return reward_model.disc.virtual_bs - 1
  if isinstance(reward_model, rewards_lib.FDReward):
    return FD_REFERENCE_SIZE
  return 0


def reference_samples(generator: base.Generator, gen_params,
                      act_fn: rollout_lib.ActFn | None, count: int
                      ) -> tuple[jax.Array, jax.Array]:
  """`count` samples of the policy itself from a fixed key.

  Returns:
    images float32 [count, H, W, C]; labels int32 [count] (distinct classes
    first: arange(count) % num_classes).
  """
  labels = jnp.arange(count, dtype=jnp.int32) % generator.num_classes
  traj = rollout_lib.rollout(generator, gen_params, labels,
                             jax.random.key(REFERENCE_SEED), act_fn,
                             keep_obs=False)
  return traj.images, labels


def check_scorer(reward_model):
  """Best-of-N needs a score of each sample on its own."""
  if not isinstance(reward_model, (rewards_lib.AdversarialReward,
                                   rewards_lib.FDReward,
                                   rewards_lib.StaticReward)):
    raise errors.UserError(
        'best-of-N scores every sample on its own, and the '
        f'{type(reward_model).__name__} depends on the whole batch; pass '
        '--best_of_rule=typical (outlier rejection, any policy) or use a '
        'policy trained with config.reward.name=adversarial, fd or static, '
        'reward.static_weight=0 and reward.ensemble=\'\'.')


def score_samples(reward_model, reward_state, images: jax.Array,
                  labels: jax.Array, rng: jax.Array,
                  reference: tuple[jax.Array, jax.Array] | None = None
                  ) -> jax.Array:
  """float32 [M]: per-sample scores that do not depend on batch-mates.

  The discriminator's BatchNormLocal normalises every group of `virtual_bs`
  (g) contiguous samples with the group's own statistics, so its raw score
  of an image moves when its neighbours change. We score each candidate in
  a group of its own: the candidate followed by the same g - 1 reference
  images (`reference_samples`: the policy's own samples from a fixed key).
  Why this and not statistics frozen from a reference batch: it is exactly
  the condition the reward was computed under in training (a group of g
  samples of the policy, the sample contributing 1/g of the statistics), it
  needs no change to the discriminator, and the score is a function of the
  candidate alone. The frozen backbone is per sample, so it runs once per
  image (the references' features once per call) and only the light heads
  see the g-fold batch; before this regrouping, g backbone forwards per
  candidate made scoring cost more than generating on the Fashion-MNIST
  MaskGIT. Random-crop augmentation is switched off: at inference we want
  the discriminator's verdict, not a coin flip.

  Per-sample rewards (`StaticReward`) are used as they are. The FD reward
  is a property of a set: a candidate scores its FD gain over the fixed
  reference set (`FDReward.gain_over`), the training reward with the
  batch-mates held fixed. A confidence bonus (standardised over the batch)
  is refused.

  Args:
    reward_model: an AdversarialReward, FDReward or StaticReward.
    reward_state: its state.
    images: float32 [M, H, W, C] in [0, 1]; labels int32 [M].
    rng: key (unused by the deterministic scores, kept for the interface).
    reference: (images [reference_size, H, W, C], labels) for the
      adversarial and FD rewards.
  """
  check_scorer(reward_model)
  if isinstance(reward_model, rewards_lib.StaticReward):
    return reward_model.reward(reward_state, images, labels, rng)
  if isinstance(reward_model, rewards_lib.FDReward):
    if reference is None:
      raise ValueError('the FD score needs reference images '
                       '(reference_samples).')
    return reward_model.gain_over(reward_state, images, labels, reference)
  g = reward_model.disc.virtual_bs
  if reference is None or reference[0].shape[0] != g - 1:
    raise ValueError(f'the adversarial score needs {g - 1} reference images '
                     '(reference_samples).')
  m = images.shape[0]
  ref_images, ref_labels = reference

  def grouped(x, ref):  # [M, ...] -> [M * g, ...]: x_i, then the references
    ref = jnp.broadcast_to(ref[None].astype(x.dtype), (m,) + ref.shape)
    return jnp.concatenate([x[:, None], ref], axis=1).reshape(
        (m * g,) + x.shape[1:])

  # The frozen backbone is per sample: run it once per image and regroup its
  # features, so only the light heads see the g-fold batch.
  feats = reward_model.features(reward_state, images)
  ref_feats = reward_model.features(reward_state, ref_images)
  scores = reward_model.score_features(
      reward_state, [grouped(f, r) for f, r in zip(feats, ref_feats)],
      grouped(labels, ref_labels), group_size=g)
  return scores.reshape(m, g)[:, 0]


def candidate_images(generator: base.Generator, gen_params,
                     labels: jax.Array, rng: jax.Array,
                     act_fn: rollout_lib.ActFn | None, n: int,
                     transition: rollout_lib.Transition | None = None
                     ) -> jax.Array:
  """float32 [B, N, H, W, C]: N candidate generations per label, from one
  rollout of B * N samples (see `candidates`)."""
  if n < 1:
    raise errors.UserError(f'best-of-N needs N >= 1, got {n}; pass '
                           '--best_of=4 for example.')
  traj = rollout_lib.rollout(generator, gen_params, jnp.repeat(labels, n),
                             rng, act_fn, keep_obs=False,
                             transition=transition)
  return traj.images.reshape((labels.shape[0], n) + traj.images.shape[1:])


def candidates(generator: base.Generator, gen_params, labels: jax.Array,
               rng: jax.Array, act_fn: rollout_lib.ActFn | None,
               reward_model, reward_state, n: int, *,
               transition: rollout_lib.Transition | None = None,
               reference: tuple[jax.Array, jax.Array] | None = None
               ) -> tuple[jax.Array, jax.Array]:
  """N scored candidate generations per label.

  One rollout of B * N samples, sample-major (row b * N + j is candidate j
  of sample b), so with the batch axis sharded over a ('data',) mesh the N
  candidates of a sample sit on one device and a choice among them moves
  nothing. Candidates are scored slot by slot (a `lax.map` over the N slots
  of B images), which bounds the scoring memory at B * g images. The N
  candidates of a sample are i.i.d., so the first M of them are M
  candidates too: one call serves best-of-M for every M <= N.

  Args:
    generator, gen_params: the frozen generator.
    labels: int32 [B].
    rng: key of the rollout (and of the scores).
    act_fn: the policy (None: the hand-crafted schedule).
    reward_model, reward_state: the trained discriminator (or a per-sample
      reward), see `score_samples`.
    n: candidates per sample.
    transition: e.g. a `lookahead_transition`, applied to every candidate.
    reference: the discriminator's reference group; default
      `reference_samples(generator, gen_params, act_fn, g - 1)`.

  Returns:
    images float32 [B, N, H, W, C]; scores float32 [B, N].
  """
  images = candidate_images(generator, gen_params, labels, rng, act_fn, n,
                            transition)
  count = reference_size(reward_model)
  if count and reference is None:
    reference = reference_samples(generator, gen_params, act_fn, count)
  k_score = jax.random.fold_in(rng, n)

  def score_slot(x):  # images of candidate slot j, [B, H, W, C] -> [B]
    return score_samples(reward_model, reward_state, x, labels, k_score,
                         reference)

  return images, jax.lax.map(score_slot, jnp.swapaxes(images, 0, 1)).T


def best_of_n(generator: base.Generator, gen_params, labels: jax.Array,
              rng: jax.Array, act_fn: rollout_lib.ActFn | None,
              reward_model, reward_state, n: int, *,
              transition: rollout_lib.Transition | None = None,
              reference: tuple[jax.Array, jax.Array] | None = None
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """N candidate generations per label, the best-scored one kept.

  With n = 1 the images are exactly `rollout(generator, gen_params, labels,
  rng, act_fn)`'s. Arguments as for `candidates`.

  Returns:
    images float32 [B, H, W, C]; scores float32 [B] of the kept candidates;
    chosen_index int32 [B] in [0, N).
  """
  images, scores = candidates(generator, gen_params, labels, rng, act_fn,
                              reward_model, reward_state, n,
                              transition=transition, reference=reference)
  chosen = jnp.argmax(scores, axis=1).astype(jnp.int32)
  rows = jnp.arange(labels.shape[0])
  return images[rows, chosen], scores[rows, chosen], chosen


# --- best-of-N by outlier rejection -------------------------------------------


def gaussian(mu: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean [D], precision [D, D]) of features, the covariance ridged by
  TYPICAL_RIDGE of its mean eigenvalue."""
  d = mu.shape[0]
  ridge = TYPICAL_RIDGE * jnp.trace(sigma) / d
  return mu, jnp.linalg.inv(sigma + ridge * jnp.eye(d))


def typicality(feats: jax.Array, mu: jax.Array, prec: jax.Array) -> jax.Array:
  """float32 [M]: Gaussian log-density (up to a constant) of feats [M, D]
  under (mu, prec) of `gaussian`."""
  z = feats - mu
  return -0.5 * jnp.einsum('bi,ij,bj->b', z, prec, z)


def pooled_features(backbone: rewards_lib.Backbone, feature_index: int,
                    images: jax.Array) -> jax.Array:
  """float32 [M, D]: mean-pooled tokens of one of the backbone's sets."""
  return jnp.mean(backbone.features(backbone.variables, images)[feature_index],
                  axis=1)


def fit_typicality(backbone: rewards_lib.Backbone, feature_index: int,
                   reals: np.ndarray, percentile: float, chunk: int = 1000
                   ) -> dict[str, jax.Array]:
  """The outlier-rejection rule's real statistics.

  The Gaussian is fitted on the first half of `reals` and the threshold is
  the `percentile` of the second half's log-densities, so the threshold is
  not measured on the images the Gaussian was fitted to.

  Args:
    backbone, feature_index: the feature space (the policy's reward
      backbone; never the evaluation network).
    reals: float32 [R, H, W, C] real images in [0, 1], R >= 2.
    percentile: in (0, 100); a sample whose log-density is below this
      percentile of real images' is an outlier.

  Returns:
    {'mu' [D], 'prec' [D, D], 'tau' []} (`typical_of_n`'s `stats`).
  """
  if not 0.0 < percentile < 100.0:
    raise errors.UserError(f'--typical_percentile={percentile} must lie in '
                           '(0, 100), e.g. 25.')
  feats_fn = jax.jit(lambda x: pooled_features(backbone, feature_index, x))
  feats = np.concatenate([np.asarray(feats_fn(reals[i:i + chunk]))
                          for i in range(0, reals.shape[0], chunk)])
  half = feats.shape[0] // 2
  mu, prec = gaussian(*fid.feature_stats(feats[:half]))
  tau = jnp.percentile(typicality(jnp.asarray(feats[half:]), mu, prec),
                       percentile)
  return {'mu': mu, 'prec': prec, 'tau': tau}


def first_typical(density: jax.Array, tau: jax.Array) -> jax.Array:
  """int32 [B]: per sample, the first candidate with density [B, N] >= tau,
  or the densest where none is."""
  ok = density >= tau
  return jnp.where(ok.any(axis=1), jnp.argmax(ok, axis=1),
                   jnp.argmax(density, axis=1)).astype(jnp.int32)


def typical_of_n(generator: base.Generator, gen_params, labels: jax.Array,
                 rng: jax.Array, act_fn: rollout_lib.ActFn | None,
                 backbone: rewards_lib.Backbone, feature_index: int,
                 stats: dict[str, jax.Array], n: int, *,
                 transition: rollout_lib.Transition | None = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """N candidates per label; the first one that is not an outlier is kept.

  Best-of-N by the largest per-sample score makes FD-reward policies worse
  (every chosen candidate moves the statistics the same way); rejecting
  only outliers leaves typical samples, and so the set's diversity, alone.

  Args:
    generator, gen_params, labels, rng, act_fn, n, transition: as for
      `candidates`.
    backbone, feature_index: the feature space of `fit_typicality`.
    stats: `fit_typicality`'s output.

  Returns:
    images float32 [B, H, W, C]; log-densities float32 [B] of the kept
    candidates; chosen_index int32 [B] in [0, N).
  """
  images = candidate_images(generator, gen_params, labels, rng, act_fn, n,
                            transition)
  b = labels.shape[0]

  def density(x):  # candidate slot j, [B, H, W, C] -> [B]
    return typicality(pooled_features(backbone, feature_index, x),
                      stats['mu'], stats['prec'])

  dens = jax.lax.map(density, jnp.swapaxes(images, 0, 1)).T  # [B, N]
  chosen = first_typical(dens, stats['tau'])
  rows = jnp.arange(b)
  return images[rows, chosen], dens[rows, chosen], chosen


# --- best-of-N by a fitted discriminator --------------------------------------


def feature_vector(backbones: Sequence[rewards_lib.Backbone],
                   images: jax.Array) -> jax.Array:
  """float32 [M, D]: the token means of every feature set of every backbone,
  concatenated (shallow sets see texture, deep ones shape)."""
  return jnp.concatenate(
      [jnp.mean(f, axis=1) for b in backbones
       for f in b.features(b.variables, images)], axis=-1)


def fit_discriminator(real_feats: np.ndarray, fake_feats: np.ndarray, *,
                      l2: float = DISCRIMINATOR_L2,
                      steps: int = DISCRIMINATOR_STEPS,
                      learning_rate: float = DISCRIMINATOR_LR
                      ) -> dict[str, jax.Array]:
  """A logistic regression, real (1) against generated (0) features.

  Each class weighs half the loss, so its logit estimates
  log p_real(x) / p_gen(x) up to a constant, whatever the two set sizes.
  Linear on purpose: on the MaskGIT T=4 policy a Gaussian density ratio
  (quadratic) made every N worse, pulling in the generator's tails.

  Args:
    real_feats: float [R, D] (`feature_vector` of real images).
    fake_feats: float [F, D] (of the policy's samples).

  Returns:
    {'mu' [D], 'scale' [D], 'w' [D], 'b' []} for `discriminator_logits`.
  """
  # Imported here: only this rule trains anything at sampling time.
  import optax  # pylint: disable=g-import-not-at-top
  x = jnp.concatenate([jnp.asarray(real_feats, jnp.float32),
                       jnp.asarray(fake_feats, jnp.float32)])
  y = jnp.concatenate([jnp.ones(real_feats.shape[0]),
                       jnp.zeros(fake_feats.shape[0])])
  weight = jnp.where(y > 0, 0.5 / real_feats.shape[0],
                     0.5 / fake_feats.shape[0])
  mu, scale = jnp.mean(x, axis=0), jnp.std(x, axis=0) + 1e-6
  xs = (x - mu) / scale

  def loss(p):
    z = xs @ p['w'] + p['b']
    return (jnp.sum(weight * (jax.nn.softplus(z) - y * z))
            + l2 * jnp.sum(p['w'] ** 2))

  tx = optax.adam(learning_rate)

  def step(carry, _):
    p, state = carry
    updates, state = tx.update(jax.grad(loss)(p), state)
    return (optax.apply_updates(p, updates), state), None

  p = {'w': jnp.zeros(x.shape[1]), 'b': jnp.zeros(())}
  (p, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))(
      (p, tx.init(p)))
  return {'mu': mu, 'scale': scale, **p}


def discriminator_logits(disc: dict[str, jax.Array], feats: jax.Array
                         ) -> jax.Array:
  """float32 [M]: `fit_discriminator`'s logit of feats [M, D]."""
  return ((feats - disc['mu']) / disc['scale']) @ disc['w'] + disc['b']


def image_logits(backbones: Sequence[rewards_lib.Backbone],
                 disc: dict[str, jax.Array], images: jax.Array) -> jax.Array:
  """float32 [B]: the logit of images [B, H, W, C] on `feature_vector`."""
  return discriminator_logits(disc, feature_vector(backbones, images))


def discriminator_candidates(generator: base.Generator, gen_params,
                             labels: jax.Array, rng: jax.Array,
                             act_fn: rollout_lib.ActFn | None,
                             backbones: Sequence[rewards_lib.Backbone],
                             disc: dict[str, jax.Array], n: int, *,
                             transition: rollout_lib.Transition | None = None
                             ) -> tuple[jax.Array, jax.Array]:
  """N candidates per label and their `fit_discriminator` logits.

  The candidates use `rng` itself, so N = 1 is plain sampling.

  Returns:
    images float32 [B, N, H, W, C]; logits float32 [B, N].
  """
  images = candidate_images(generator, gen_params, labels, rng, act_fn, n,
                            transition)
  logit = lambda x: image_logits(backbones, disc, x)
  return images, jax.lax.map(logit, jnp.swapaxes(images, 0, 1)).T


def discriminator_of_n(generator: base.Generator, gen_params,
                       labels: jax.Array, rng: jax.Array,
                       act_fn: rollout_lib.ActFn | None,
                       backbones: Sequence[rewards_lib.Backbone],
                       disc: dict[str, jax.Array], n: int, *,
                       transition: rollout_lib.Transition | None = None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """N candidates per label; one drawn with probability ~ p_real / p_policy.

  Sampling-importance-resampling: with the exact density ratio, the kept
  samples tend to the real distribution as N grows, where keeping the
  largest score tends to its mode (the per-sample argmax made FD-reward
  policies worse with every N). The ratio is exp(logit) of
  `fit_discriminator`.

  Args:
    generator, gen_params, labels, rng, act_fn, n, transition: as for
      `candidates`.
    backbones: `feature_vector`'s networks, as fitted.
    disc: `fit_discriminator`'s output.

  Returns:
    images float32 [B, H, W, C]; logits float32 [B] of the kept
    candidates; chosen_index int32 [B] in [0, N).
  """
  images, logits = discriminator_candidates(
      generator, gen_params, labels, rng, act_fn, backbones, disc, n,
      transition=transition)
  chosen = jax.random.categorical(jax.random.fold_in(rng, 1), logits,
                                  axis=1).astype(jnp.int32)
  rows = jnp.arange(labels.shape[0])
  return images[rows, chosen], logits[rows, chosen], chosen


# --- best-of-N for a set --------------------------------------------------------


def _psd_power(a: np.ndarray, power: float, floor: float = 0.0
               ) -> np.ndarray:
  """A^power of a symmetric PSD matrix, its eigenvalues floored at `floor`
  times their mean (for a negative power: a direction the set does not span
  must not blow up)."""
  w, v = np.linalg.eigh(a)
  return (v * np.maximum(w, floor * max(np.mean(w), 1e-30)) ** power) @ v.T


class _SetFD:
  """The FD of a chosen set in one feature space, and its first-order swap
  cost (see `select_for_set`)."""

  def __init__(self, feats: np.ndarray, mu_r: np.ndarray, sigma_r: np.ndarray):
    self.feats = np.asarray(feats, np.float64)  # [M, N, D]
    self.mu_r = np.asarray(mu_r, np.float64)
    self.sigma_r = np.asarray(sigma_r, np.float64)
    self.root_r = _psd_power(self.sigma_r, 0.5)

  def fd(self, chosen: np.ndarray) -> tuple[float, tuple]:
    stats = fid.feature_stats(self.feats[np.arange(chosen.size), chosen])
    return fid.frechet_distance(*stats, self.mu_r, self.sigma_r), stats

  def cost(self, stats) -> np.ndarray:
    """float64 [M, N]: q of every candidate; swapping y for x changes the
    FD by (q(x) - q(y)) / M to first order."""
    mu, sigma = stats
    w = np.eye(mu.size) - self.root_r @ _psd_power(
        self.root_r @ sigma @ self.root_r, -0.5, 1e-9) @ self.root_r
    b = (mu - self.mu_r) - w @ mu
    return (np.einsum('mnd,mnd->mn', self.feats @ w, self.feats)
            + 2.0 * self.feats @ b)


def select_for_set(spaces: Sequence[tuple[np.ndarray, np.ndarray,
                                          np.ndarray]],
                   *, fraction: float = 0.05, max_rounds: int = 400
                   ) -> tuple[np.ndarray, list[float]]:
  """One candidate per sample, chosen so that the SET's FD falls.

  A per-sample score cannot do this for the FD: every candidate that lowers
  the FD alone moves the set's statistics the same way, and keeping all of
  them overshoots (docs/RESULTS.md, "Refinement": best-of-N by FD gain gets
  worse with N). Here the choice is a descent on the FD of the chosen set.
  To first order, swapping sample i's feature y for x changes the FD by
  (q(x) - q(y)) / M with q(z) = z^T W z + 2 b^T z, where
    W = I - R (R S R)^(-1/2) R,  R = sigma_r^(1/2),  S the set's covariance,
    b = (mu - mu_r) - W mu,
  the gradient of FD(mu, S) in mu and S. Each round swaps the `fraction` of
  samples with the largest first-order gains, recomputes the exact FD, and
  halves the fraction when it did not fall (the linearisation holds for
  small moves only). Candidate 0 (plain sampling) is the start, so the
  result is never worse than N = 1 in the features it sees.

  With several feature spaces the objective is the sum of their FDs, each
  divided by its value at the start: a set that fits one network's
  features closely can still drift in what other networks see.

  Host NumPy in float64: [D, D] algebra a few hundred times, like
  metrics/fid.py.

  Args:
    spaces: per feature space, (feats float [M, N, D] of N candidates per
      sample, mu_r [D], sigma_r [D, D] of the real features); a reward
      backbone's features, never the evaluation network's.
    fraction: the share of samples that may switch in the first round.
    max_rounds: a bound on the rounds (each costs one O(M N D^2) product
      per space).

  Returns:
    chosen int32 [M] in [0, N); the objective after each accepted round
    (first entry: candidate 0's; with one space, its FD).
  """
  sets = [_SetFD(*space) for space in spaces]
  m, n = sets[0].feats.shape[:2]
  if any(s.feats.shape[:2] != (m, n) for s in sets):
    raise ValueError('every feature space needs the same [M, N] candidates.')
  chosen = np.zeros(m, np.int32)
  start = [s.fd(chosen) for s in sets]
  scale = [1.0 / fd if len(sets) > 1 else 1.0 for fd, _ in start]
  objective = sum(c * fd for c, (fd, _) in zip(scale, start))
  stats = [st for _, st in start]
  history = [objective]
  rows = np.arange(m)
  for _ in range(max_rounds):
    if n == 1 or fraction * m < 1:
      break
    q = sum(c * s.cost(st) for c, s, st in zip(scale, sets, stats))
    best = np.argmin(q, axis=1)
    gain = q[rows, chosen] - q[rows, best]
    movers = np.argsort(-gain)[:int(fraction * m)]
    movers = movers[gain[movers] > 0]
    if movers.size == 0:
      break
    trial = chosen.copy()
    trial[movers] = best[movers]
    trial_fds = [s.fd(trial) for s in sets]
    trial_objective = sum(c * fd for c, (fd, _) in zip(scale, trial_fds))
    if trial_objective < objective:
      chosen, objective = trial, trial_objective
      stats = [st for _, st in trial_fds]
      history.append(objective)
    else:
      fraction /= 2
  return chosen, history


# --- value lookahead ----------------------------------------------------------


def resolve_steps(num_steps: int,
                  steps: Sequence[int] | None = None) -> tuple[int, ...]:
  """The validated steps t where lookahead applies; default 0 .. T - 2.

  The last step is excluded: V(s_T) does not exist (the critic learns values
  of the states the policy acts in, t < T; the terminal value is the reward
  itself). Choosing among final images is best-of-N's job.
  """
  if steps is None:
    return tuple(range(num_steps - 1))
  steps = tuple(sorted({int(s) for s in steps}))
  bad = [s for s in steps if not 0 <= s < num_steps - 1]
  if bad:
    raise errors.UserError(
        f'lookahead steps {bad} are outside 0..{num_steps - 2} (the last '
        f'step {num_steps - 1} has no next-state value; use --best_of there);'
        f' pass e.g. --lookahead_steps=0,1,2.')
  return steps


def candidate_keys(rng: jax.Array, k: int) -> jax.Array:
  """K keys [K]; the first is `rng` itself, so candidate 0 is the plain
  step and K = 1 reproduces an ordinary rollout exactly."""
  return jnp.stack([rng] + [jax.random.fold_in(rng, i) for i in range(1, k)])


def batch_layout(small, big, batch: int) -> list[tuple[int, int] | None]:
  """Where each state leaf keeps its samples, from its shapes at B and 2B.

  Args:
    small, big: the same state pytree (arrays or ShapeDtypeStructs) at batch
      sizes `batch` and 2 * batch.
    batch: B.

  Returns:
    Per flattened leaf: None (no batch axis: the same in every candidate,
    e.g. a step counter) or (axis, rows): the axis holding B * rows rows,
    each sample's `rows` rows contiguous (VAR's interleaved cond / uncond
    rows; the layout that keeps a sharded batch's samples on one device).
  """
  small_leaves, treedef = jax.tree.flatten(small)
  layout = []
  for s, g in zip(small_leaves, treedef.flatten_up_to(big)):
    axes = [i for i, (x, y) in enumerate(zip(s.shape, g.shape)) if x != y]
    if not axes:
      layout.append(None)
      continue
    a = axes[0]
    if len(axes) > 1 or s.shape[a] % batch or g.shape[a] != 2 * s.shape[a]:
      raise ValueError(f'state leaf {s.shape} (at B={batch}) vs {g.shape} '
                       f'(at 2B): lookahead needs one batch axis per leaf.')
    layout.append((a, s.shape[a] // batch))
  return layout


def select_candidates(stacked, index: jax.Array,
                      layout: list[tuple[int, int] | None]):
  """Per sample b, candidate index[b] of a pytree stacked over K.

  Args:
    stacked: pytree whose leaves are [K, ...] (vmap over K of a state).
    index: int32 [B] in [0, K).
    layout: `batch_layout` of one (unstacked) state.
  """
  leaves, treedef = jax.tree.flatten(stacked)
  b = index.shape[0]
  out = []
  for x, lay in zip(leaves, layout):
    if lay is None:
      out.append(x[0])
      continue
    axis, rows = lay
    shape = x.shape
    x = x.reshape(shape[:axis + 1] + (b, rows) + shape[axis + 2:])
    x = jnp.moveaxis(x, axis + 1, 1)[index, jnp.arange(b)]  # [B, ..]
    out.append(jnp.moveaxis(x, 0, axis).reshape(shape[1:]))
  return treedef.unflatten(out)


def check_stochastic(generator: base.Generator):
  """Lookahead needs candidates that differ: a stochastic `step`."""
  if not generator.stochastic:
    raise errors.UserError(
        f'lookahead needs stochastic transitions and {generator.name} steps '
        'are deterministic (all K candidates would be equal); drop '
        '--lookahead, or use --best_of for this generator.')


def critic_judge(agent: policy_lib.Agent, agent_params):
  """The paper's lookahead judge: the candidate with the highest critic
  value V(obs_{t+1}, t + 1) (ties: the lowest index)."""
  def judge(params, states, obs, t, rng):
    del params, states, rng
    k, b = obs.shape[:2]
    values = agent.value(agent_params,
                         obs.reshape((k * b,) + obs.shape[2:]), t + 1)
    return jnp.argmax(values.reshape(k, b), axis=0)
  return judge


def discriminator_judge(generator: base.Generator,
                        backbones: Sequence[rewards_lib.Backbone],
                        disc: dict[str, jax.Array]):
  """A candidate drawn with probability ~ exp(logit) of the image it would
  decode to now (`generator.decode`; MaskGIT: the tokens just sampled for
  every position), by `fit_discriminator`'s logit: the discriminator rule
  of best-of-N (sampling-importance-resampling) one step ahead instead of
  at the end. The critic judge keeps the largest value, which moves FD-
  reward policies' samples towards one mode (docs/RESULTS.md). It needs
  states that decode to images like the final ones: MaskGIT's do, a VAR
  state's coarse scales do not (measured: it helps the one, not the
  other)."""
  def judge(params, states, obs, t, rng):
    del obs, t
    logits = jax.lax.map(lambda state: image_logits(
        backbones, disc, generator.decode(params, state)), states)  # [K, B]
    # fold_in(rng, K): no candidate's key (`candidate_keys`).
    return jax.random.categorical(
        jax.random.fold_in(rng, logits.shape[0]), logits, axis=0)
  return judge


def lookahead_transition(generator: base.Generator, judge, k: int,
                         steps: Sequence[int] | None = None
                         ) -> rollout_lib.Transition:
  """A rollout `transition` that keeps one of K candidate next states.

  At the steps in `steps` (default: all but the last, see
  `resolve_steps`), the executed action is applied K times with K keys
  (`candidate_keys`; a vmap over K, so one batched K x B generator call) and
  `judge` picks each sample's candidate. Elsewhere it is the plain
  `generator.step` (a `lax.cond`: no K-fold work at other steps).

  Args:
    generator: a stochastic generator (`generator.stochastic`).
    judge: (gen_params, states stacked [K, ...], obs [K, B, N, C], t, rng)
      -> int32 [B] candidate indices: `critic_judge` or
      `discriminator_judge`.
    k: K >= 1 candidates.
    steps: the steps t in [0, T - 2] where lookahead applies.

  Raises:
    UserError: a deterministic generator (DiT, SiT: every candidate would be
      the same state), K < 1 or a step out of range.
  """
  check_stochastic(generator)
  if k < 1:
    raise errors.UserError(f'lookahead needs K >= 1, got {k}; pass e.g. '
                           '--lookahead=4.')
  active = np.zeros(generator.num_steps, bool)
  active[list(resolve_steps(generator.num_steps, steps))] = True

  def transition(params, state, action, rng, t):
    def plain():
      return generator.step(params, state, action, rng)

    def look():
      states, obs = jax.vmap(lambda key: generator.step(
          params, state, action, key))(candidate_keys(rng, k))
      b = obs.shape[1]
      best = judge(params, states, obs, t, rng)
      # Which axis of each state leaf is the batch: compare with the
      # (abstract) initial state at 2B.
      big = jax.eval_shape(
          generator.init,
          jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       params),
          jax.ShapeDtypeStruct((2 * b,), jnp.int32), jax.random.key(0))
      layout = batch_layout(state, big[0], b)
      return select_candidates(states, best, layout), obs[best, jnp.arange(b)]

    return jax.lax.cond(jnp.asarray(active)[t], look, plain)

  return transition


# --- the lambda-blend -----------------------------------------------------------


def blend_act_fn(main_agent: policy_lib.Agent, main_params,
                 fid_agent: policy_lib.Agent, fid_params, lam: jax.Array,
                 sigma: jax.Array, explore: bool, *,
                 with_value: bool = True) -> rollout_lib.ActFn:
  """raw = (1 - lam) mean_main + lam raw_fid, as a rollout ActFn.

  The blend is on the raw pre-activation outputs, before the heuristic
  residual and the EMA smoothing: both are affine and shared by the two
  policies, so this equals blending the two policies' smoothed
  pre-activations (the paper's "linear on the policy outputs"), and the
  activation is applied once, to the blend. lam = 0 returns the main
  policy's mean exactly, lam = 1 the fidelity policy's raw action exactly.

  Only the fidelity policy is stochastic: raw_fid ~ N(mean_fid, sigma^2)
  when exploring (its mean otherwise); the main policy contributes its mean
  and is never trained through this function.

  Args:
    main_agent, main_params: the frozen main (diversity) policy.
    fid_agent, fid_params: the fidelity policy.
    lam: float32 [] in [0, 1], a traced array (no recompiles across lam).
    sigma: the fidelity policy's exploration std.
    explore: sample raw_fid (training) or take its mean (evaluation).
    with_value: compute the fidelity critic's value.

  Returns:
    act(obs, t, rng) -> (raw float32 [B, A] executed, logp float32 [B] of
    the fidelity sample under the fidelity policy, value float32 [B] of the
    fidelity critic).
  """
  fid_act = fid_agent.make_act_fn(fid_params, sigma, explore,
                                  with_value=with_value)

  def act(obs, t, rng):
    main_mean = main_agent.mean(main_params, obs, t)
    fid_raw, logp, value = fid_act(obs, t, rng)
    return (1.0 - lam) * main_mean + lam * fid_raw, logp, value

  return act


def blend_reward(r_adv: jax.Array, r_fid: jax.Array,
                 lam: jax.Array, standardise: bool = False) -> jax.Array:
  """float32 [B]: (1 - lam) r_adv + lam r_fid.

  With `standardise`, each term is first standardised over the batch: an
  FD gain (~1e-2) and a class confidence (in [0, 1]) share no scale, and
  unscaled the confidence would win at every lam.
  """
  if standardise:
    r_adv, r_fid = rewards_lib.standardise(r_adv), rewards_lib.standardise(r_fid)
  return (1.0 - lam) * r_adv + lam * r_fid


def fidelity_trajectory(main_agent: policy_lib.Agent, main_params,
                        traj: rollout_lib.Trajectory,
                        lam: jax.Array) -> rollout_lib.Trajectory:
  """The trajectory with `raw` = the fidelity policy's own samples.

  A blended rollout stores the executed raw (1 - lam) m_main + lam r_fid;
  PPO on the fidelity policy needs r_fid = (raw - (1 - lam) m_main) / lam,
  with m_main recomputed from the stored observations (keep them float32:
  rounded observations move m_main, and the error is divided by lam).
  logp and value already belong to the fidelity agent.

  Args:
    lam: float32 [] >= LAM_MIN.
  """
  num_steps, b = traj.raw.shape[:2]
  obs = traj.obs.reshape((num_steps * b,) + traj.obs.shape[2:])
  t = jnp.repeat(jnp.arange(num_steps, dtype=jnp.int32), b)
  main_mean = main_agent.mean(main_params, obs, t).reshape(traj.raw.shape)
  return traj.replace(raw=(traj.raw - (1.0 - lam) * main_mean) / lam)


@dataclasses.dataclass(frozen=True, eq=False)
class FidelityTraining:
  """PPO for the fidelity policy of the lambda-blend; jit `iteration`.

  The main policy and both rewards are frozen here. Keeping the
  discriminator current on the blended samples is the caller's choice:
  `iteration` returns the fakes for `adv_reward.update` (train.py's d_step).

  Attributes:
    generator: the frozen generator.
    main_agent: the trained main policy (its params are an argument).
    fid_agent: the fidelity agent being trained (actor and its own critic).
    adv_reward: the main policy's RewardModel (adversarial, or the FD
      reward's leave-one-out gain).
    fid_reward: the fidelity RewardModel, e.g. `rewards.StaticReward` on
      the reward backbone's classifier (never the evaluation network).
    ppo_config: static PPO settings.
    standardise: standardise both rewards over the batch before blending
      (`blend_reward`; for the FD reward, whose scale is not the
      confidence's).
  """
  generator: Any
  main_agent: policy_lib.Agent
  fid_agent: policy_lib.Agent
  adv_reward: Any
  fid_reward: Any
  ppo_config: ppo_lib.PPOConfig = ppo_lib.PPOConfig()
  standardise: bool = False

  def iteration(self, ppo_state: ppo_lib.TrainState, gen_params, main_params,
                adv_state, fid_state, labels: jax.Array, rng: jax.Array,
                sigma: jax.Array, lam: jax.Array | None = None):
    """One rollout batch with the blend, both rewards, one PPO update.

    Args:
      ppo_state: TrainState of the fidelity agent's {'actor', 'critic'}.
      gen_params, main_params, adv_state, fid_state: frozen inputs.
      labels: int32 [B].
      rng: key.
      sigma: float32 [] exploration std of the fidelity policy.
      lam: float32 []; None draws lam ~ U[0, 1] for this batch. Floored at
        LAM_MIN.

    Returns:
      (ppo_state, metrics, (images [B, H, W, C], labels [B])): PPO metrics
      plus lam, reward, reward_adv and reward_fid (batch means).
    """
    k_lam, k_roll, k_adv, k_fid, k_ppo = jax.random.split(rng, 5)
    if lam is None:
      lam = jax.random.uniform(k_lam)
    lam = jnp.maximum(jnp.asarray(lam, jnp.float32), LAM_MIN)
    act = blend_act_fn(self.main_agent, main_params, self.fid_agent,
                       ppo_state.params, lam, sigma, explore=True)
    traj = rollout_lib.rollout(self.generator, gen_params, labels, k_roll,
                               act)
    r_adv = self.adv_reward.reward(adv_state, traj.images, labels, k_adv)
    r_fid = self.fid_reward.reward(fid_state, traj.images, labels, k_fid)
    reward = blend_reward(r_adv, r_fid, lam, self.standardise)
    batch = ppo_lib.make_batch(
        fidelity_trajectory(self.main_agent, main_params, traj, lam), reward)
    ppo_state, metrics = ppo_lib.ppo_update(ppo_state, self.fid_agent, batch,
                                            sigma, self.ppo_config, k_ppo)
    metrics = dict(metrics, lam=lam, reward=jnp.mean(reward),
                   reward_adv=jnp.mean(r_adv), reward_fid=jnp.mean(r_fid))
    return ppo_state, metrics, (traj.images, labels)


# --- sampling with refinements --------------------------------------------------


def refinement_cost(num_steps: int, *, best_of: int = 1, lookahead: int = 1,
                    lookahead_steps: Sequence[int] | None = None,
                    blend: bool = False, group_size: int = 8
                    ) -> dict[str, float]:
  """What one final sample costs, against plain sampling's T transitions.

  Returns:
    generator_ratio: generator transitions relative to plain sampling,
      N (T + (K - 1) |S|) / T (a MaskGIT / VAR init forward is multiplied
      by N as well);
    generator_transitions: N (T + (K - 1) |S|);
    policy_forwards: N T, twice that with the blend (both actors);
    critic_forwards: N K |S| (0 without lookahead): the lookahead judge's
      evaluations (critic forwards, or decodes and backbone forwards for
      the discriminator judge);
    discriminator_forwards: N g head forwards (the candidate's group), 0
      for N = 1; the frozen backbone runs N times (once per candidate,
      `score_samples`), plus the reference images once per batch. g = 1
      for the FD and static scores (one score per candidate).
  """
  s = len(resolve_steps(num_steps, lookahead_steps)) if lookahead > 1 else 0
  transitions = best_of * (num_steps + (lookahead - 1) * s)
  return {
      'generator_ratio': transitions / num_steps,
      'generator_transitions': float(transitions),
      'policy_forwards': float(best_of * num_steps * (2 if blend else 1)),
      'critic_forwards': float(best_of * lookahead * s),
      'discriminator_forwards': float(best_of * group_size
                                      if best_of > 1 else 0),
  }


@dataclasses.dataclass(frozen=True, eq=False)
class Refinement:
  """How to sample: policy, optional blend, lookahead and best-of-N.

  Static (hashable by identity, a jit static argument); the arrays live in
  a separate `variables` dict {'policy', 'fidelity', 'lam', 'reward',
  'typical', 'discriminator'} (keys present as used), so a lam sweep or new
  weights do not recompile. Best-of-N keeps the largest reward score
  (`best_of_rule` 'score', `best_of_n`), the first non-outlier ('typical',
  `typical_of_n`) or a draw by the fitted density ratio ('discriminator',
  `discriminator_of_n`); the lookahead's judge is the critic
  (`lookahead_rule` 'critic') or that density ratio ('discriminator').
  """
  generator: Any
  agent: policy_lib.Agent | None = None        # None: hand-crafted schedule
  fid_agent: policy_lib.Agent | None = None    # set: the lambda-blend
  lookahead: int = 1
  steps: tuple[int, ...] = ()
  best_of: int = 1
  reward_model: Any = None   # the 'score' rule's scorer
  best_of_rule: str = 'score'
  backbone: rewards_lib.Backbone | None = None  # the 'typical' rule's space
  feature_index: int = -1
  backbones: tuple[rewards_lib.Backbone, ...] = ()  # 'discriminator''s
  lookahead_rule: str = 'critic'

  def act_fn(self, variables) -> rollout_lib.ActFn | None:
    if self.agent is None:
      return None
    zero = jnp.float32(0.0)
    if self.fid_agent is None:
      return self.agent.make_act_fn(variables['policy'], zero, explore=False,
                                    with_value=False)
    return blend_act_fn(self.agent, variables['policy'], self.fid_agent,
                        variables['fidelity'], variables['lam'], zero,
                        explore=False, with_value=False)

  def transition(self, variables) -> rollout_lib.Transition | None:
    """The lookahead transition, or None (plain steps)."""
    if self.lookahead == 1:
      return None
    if self.lookahead_rule == 'discriminator':
      judge = discriminator_judge(self.generator, self.backbones,
                                  variables['discriminator'])
    else:
      # The main policy's critic judges the candidates, also under a blend.
      judge = critic_judge(self.agent, variables['policy'])
    return lookahead_transition(self.generator, judge, self.lookahead,
                                self.steps)

  def sample(self, variables, gen_params, labels: jax.Array, rng: jax.Array
             ) -> tuple[jax.Array, jax.Array | None]:
    """(images float32 [B, H, W, C], best-of-N scores [B] or None)."""
    act = self.act_fn(variables)
    transition = self.transition(variables)
    if self.best_of > 1 and self.best_of_rule == 'typical':
      images, scores, _ = typical_of_n(
          self.generator, gen_params, labels, rng, act, self.backbone,
          self.feature_index, variables['typical'], self.best_of,
          transition=transition)
      return images, scores
    if self.best_of > 1 and self.best_of_rule == 'discriminator':
      images, logits, _ = discriminator_of_n(
          self.generator, gen_params, labels, rng, act, self.backbones,
          variables['discriminator'], self.best_of, transition=transition)
      return images, logits
    if self.best_of > 1:
      images, scores, _ = best_of_n(
          self.generator, gen_params, labels, rng, act, self.reward_model,
          variables['reward'], self.best_of, transition=transition)
      return images, scores
    traj = rollout_lib.rollout(self.generator, gen_params, labels, rng, act,
                               keep_obs=False, transition=transition)
    return traj.images, None

  def cost(self) -> dict[str, float]:
    return refinement_cost(
        self.generator.num_steps, best_of=self.best_of,
        lookahead=self.lookahead, lookahead_steps=self.steps,
        blend=self.fid_agent is not None,
        # The discriminator's heads see a candidate's whole group; the FD,
        # static and typicality scores one feature vector per candidate.
        group_size=(reference_size(self.reward_model) + 1 if isinstance(
            self.reward_model, rewards_lib.AdversarialReward) else 1))

  def describe(self) -> str:
    """One line: the refinements and their cost per final sample."""
    c = self.cost()
    parts = [f'{c["generator_ratio"]:.2f}x generator transitions']
    if self.lookahead > 1 and self.lookahead_rule == 'discriminator':
      parts.append(f'{c["critic_forwards"]:.0f} decodes and '
                   f'{c["critic_forwards"] * len(self.backbones):.0f} '
                   'reward-backbone forwards (lookahead)')
    elif self.lookahead > 1:
      parts.append(f'{c["critic_forwards"]:.0f} critic forwards')
    if self.best_of > 1:
      # The discriminator rule runs every backbone on every candidate.
      count = c['discriminator_forwards'] * max(len(self.backbones), 1)
      what = 'discriminator' if self.best_of_rule == 'score' else (
          'reward-backbone')
      parts.append(f'{count:.0f} {what} forwards')
    if self.fid_agent is not None:
      parts.append('2 policy forwards per step')
    rule = f' ({self.best_of_rule})' if self.best_of > 1 else ''
    judge = f' ({self.lookahead_rule})' if self.lookahead > 1 else ''
    return (f'refinement best_of={self.best_of}{rule} '
            f'lookahead={self.lookahead}{judge}'
            f' steps={list(self.steps) if self.lookahead > 1 else []}'
            f' blend={self.fid_agent is not None}: ' + ', '.join(parts) +
            ' per sample')


def auto_best_of_rule(card: dict) -> str:
  """best_of_rule 'auto' for a policy export's card (BEST_OF_RULES): score
  only where the score is per-sample, an adversarial reward without the
  batch-standardised confidence bonus (which 'score' refuses)."""
  reward = card['reward']
  return ('score' if reward.get('name') == 'adversarial' and
          not reward.get('static_weight') else 'discriminator')


def load_refinement(policy: str, generator, *, best_of: int = 1,
                    lookahead: int = 1,
                    lookahead_steps: Sequence[int] | None = None,
                    lam: float | None = None,
                    fidelity_policy: str | None = None,
                    backbone: rewards_lib.Backbone | None = None,
                    best_of_rule: str = 'score',
                    typical_percentile: float = 25.0,
                    reals: np.ndarray | None = None,
                    gen_params=None,
                    pilot: int = DISCRIMINATOR_PILOT,
                    lookahead_rule: str = 'critic'
                    ) -> tuple[Refinement, dict]:
  """The library form of sample.py's refinement flags.

  Args:
    policy: 'heuristic', a shipped policy name or a policy export folder
      (`export.resolve`); refinements need an export.
    generator: the built generator.
    best_of: N (needs the export's reward/ discriminator state).
    lookahead: K (needs the export's critic and a stochastic generator).
    lookahead_steps: steps for the lookahead (default all but the last).
    lam: blend weight in [0, 1] of `fidelity_policy` (an export trained with
      FidelityTraining against `policy`).
    fidelity_policy: the fidelity policy export; default: the `fidelity/`
      folder of the `policy` export (shipped policies have one).
    backbone: the reward backbone (default: the export's reward config via
      train.make_reward_model); tests pass a small one.
    best_of_rule: 'score' (the largest reward score; needs a per-sample
      reward), 'typical' (outlier rejection in the reward backbone's last
      feature set; any policy), 'discriminator' (a draw by a density
      ratio fitted on the policy's samples; any policy) or 'auto' (score
      for an adversarial reward, else discriminator).
    typical_percentile: the 'typical' rule's threshold percentile.
    reals: the 'typical' and 'discriminator' rules' real images, float32
      [R, H, W, C] (default: TYPICAL_REALS Fashion-MNIST training images for
      a 28x28x1 generator).
    gen_params: the generator's parameters; the 'discriminator' rules
      sample their pilot set with them.
    pilot: how many policy samples the 'discriminator' rules are fitted on.
    lookahead_rule: the lookahead's judge: 'critic' (the largest value of
      the export's critic) or 'discriminator' (a draw by the density ratio
      of best_of_rule 'discriminator', fitted on the policy's samples
      without lookahead, on the image each candidate decodes to).

  Returns:
    (Refinement, variables) for `Refinement.sample`.

  Raises:
    UserError: a refinement asked without what it needs, or a bad value.
  """
  # Imported here: orbax and the training stack are only needed to load.
  from adagen_jax.rl import export  # pylint: disable=g-import-not-at-top
  if best_of < 1 or lookahead < 1:
    raise errors.UserError(f'--best_of={best_of} and --lookahead={lookahead} '
                           'must be >= 1 (1 disables them).')
  if lookahead_steps is not None and lookahead == 1:
    raise errors.UserError('--lookahead_steps needs --lookahead=K with K > 1.')
  if fidelity_policy is not None and lam is None:
    raise errors.UserError('--fidelity_policy needs --lam=L, the blend '
                           'weight in [0, 1].')
  if lam is not None and not 0.0 <= lam <= 1.0:
    raise errors.UserError(f'--lam={lam} must lie in [0, 1] (0: the main '
                           'policy, 1: the fidelity policy).')
  wanted = [name for name, on in (('--best_of', best_of > 1),
                                  ('--lookahead', lookahead > 1),
                                  ('--lam', lam is not None)) if on]
  if policy == 'heuristic':
    if wanted:
      raise errors.UserError(
          f'{" and ".join(wanted)} need an exported policy (its '
          'discriminator, critic or main policy), not --policy=heuristic; '
          + _TRAIN_HINT + '.')
    return Refinement(generator), {}
  if lookahead > 1:
    check_stochastic(generator)
  steps = (resolve_steps(generator.num_steps, lookahead_steps)
           if lookahead > 1 else ())
  if lam is not None and fidelity_policy is None:
    fidelity_policy = os.path.join(export.resolve(policy, generator),
                                   'fidelity')
    if not os.path.isdir(fidelity_policy):
      raise errors.UserError(
          f'--lam needs a fidelity policy and {policy} has no fidelity/ '
          'folder: pass --fidelity_policy=PATH (train one with python -m '
          'adagen_jax.train_fidelity --policy=...).')
  agent, params, card = export.load(policy, generator)
  variables = {'policy': params}
  fid_agent = reward_model = None
  if lam is not None:
    fid_agent, variables['fidelity'], _ = export.load(fidelity_policy,
                                                      generator)
    variables['lam'] = jnp.float32(lam)
  if best_of_rule not in BEST_OF_RULES:
    raise errors.UserError(f'--best_of_rule={best_of_rule!r}: use one of '
                           f'{", ".join(BEST_OF_RULES)}.')
  if lookahead_rule not in LOOKAHEAD_RULES:
    raise errors.UserError(f'--lookahead_rule={lookahead_rule!r}: use one of '
                           f'{", ".join(LOOKAHEAD_RULES)}.')
  if best_of_rule == 'auto':
    best_of_rule = auto_best_of_rule(card)
  if lookahead == 1:
    lookahead_rule = 'critic'  # no lookahead: nothing to judge
  if best_of > 1 and best_of_rule == 'typical' and (
      lookahead_rule == 'discriminator'):
    raise errors.UserError('--lookahead_rule=discriminator goes with '
                           '--best_of_rule=discriminator or score, not '
                           'typical.')
  if best_of > 1 and best_of_rule == 'typical':
    import ml_collections  # pylint: disable=g-import-not-at-top
    if backbone is None:
      from adagen_jax import train  # pylint: disable=g-import-not-at-top
      backbone = train.make_backbone(ml_collections.ConfigDict(
          card['reward']))
    variables['typical'] = fit_typicality(
        backbone, -1,
        _typical_reals(generator, '--best_of_rule=typical') if reals is None
        else reals, typical_percentile)
    return Refinement(generator, agent=agent, fid_agent=fid_agent,
                      lookahead=lookahead, steps=steps, best_of=best_of,
                      best_of_rule='typical', backbone=backbone,
                      feature_index=-1), variables
  backbones = ()
  if (best_of > 1 and best_of_rule == 'discriminator' or
      lookahead_rule == 'discriminator'):
    if gen_params is None:
      raise ValueError("the 'discriminator' rules need gen_params.")
    backbones = _discriminator_backbones(generator, card, backbone)
    # The pilot samples what is refined: the policy, with the critic's
    # lookahead if asked (a discriminator judge cannot judge its own pilot).
    plain = (Refinement(generator, agent=agent, fid_agent=fid_agent)
             if lookahead_rule == 'discriminator' else
             Refinement(generator, agent=agent, fid_agent=fid_agent,
                        lookahead=lookahead, steps=steps))
    variables['discriminator'] = pilot_discriminator(
        plain, variables, gen_params, backbones,
        _typical_reals(generator, '--lookahead_rule=discriminator'
                       if lookahead_rule == 'discriminator' else
                       '--best_of_rule=discriminator')
        if reals is None else reals, pilot)
  if best_of > 1 and best_of_rule == 'discriminator':
    return Refinement(generator, agent=agent, fid_agent=fid_agent,
                      lookahead=lookahead, steps=steps, best_of=best_of,
                      best_of_rule='discriminator', backbones=backbones,
                      lookahead_rule=lookahead_rule), variables
  if best_of > 1:
    import ml_collections  # pylint: disable=g-import-not-at-top
    reward_config = ml_collections.ConfigDict(card['reward'])
    if backbone is None:
      from adagen_jax import train  # pylint: disable=g-import-not-at-top
      reward_model = train.make_reward_model(reward_config,
                                             generator.num_classes)
    else:
      reward_model = rewards_lib.make_reward(reward_config, backbone,
                                             generator.num_classes)
    check_scorer(reward_model)
    variables['reward'] = export.load_reward_state(policy, generator,
                                                   reward_model)
  return Refinement(generator, agent=agent, fid_agent=fid_agent,
                    lookahead=lookahead, steps=steps, best_of=best_of,
                    reward_model=reward_model, backbones=backbones,
                    lookahead_rule=lookahead_rule), variables


def pilot_discriminator(plain: Refinement, variables: dict, gen_params,
                        backbones: Sequence[rewards_lib.Backbone],
                        reals: np.ndarray, pilot: int, chunk: int = 500
                        ) -> dict[str, jax.Array]:
  """`fit_discriminator` on `pilot` samples of `plain` (the refinement
  without best-of-N) against `reals`."""
  # Imported here: sample.py imports this module.
  from adagen_jax import sample  # pylint: disable=g-import-not-at-top
  fakes, _ = sample.generate_with(plain.generator, gen_params, pilot,
                                  DISCRIMINATOR_SEED, refinement=(plain,
                                                                  variables))
  feats_fn = jax.jit(lambda x: feature_vector(backbones, x))
  feats = lambda x: np.concatenate([np.asarray(feats_fn(x[i:i + chunk]))
                                    for i in range(0, x.shape[0], chunk)])
  return fit_discriminator(feats(reals), feats(fakes))


def _discriminator_backbones(generator, card, backbone
                             ) -> tuple[rewards_lib.Backbone, ...]:
  """The discriminator rule's networks: `backbone` when given; for the
  Fashion-MNIST generators both shipped reward backbones (DiscBackbone and
  the self-supervised ContrastNet: on the T=4 policy either one alone gains
  little); else the export's reward backbone."""
  if backbone is not None:
    return (backbone,)
  if tuple(generator.image_shape) == (28, 28, 1):
    return (rewards_lib.fmnist_backbone(),
            rewards_lib.fmnist_contrast_backbone())
  import ml_collections  # pylint: disable=g-import-not-at-top
  from adagen_jax import train  # pylint: disable=g-import-not-at-top
  return (train.make_backbone(ml_collections.ConfigDict(card['reward'])),)


def _typical_reals(generator, flag: str) -> np.ndarray:
  """The outlier and discriminator rules' default real images:
  Fashion-MNIST training images for the project's 28x28x1 generators;
  `flag` names the rule in the error."""
  if tuple(generator.image_shape) != (28, 28, 1):
    raise errors.UserError(
        f'{flag} needs real images of the generator\'s '
        'domain; only Fashion-MNIST (28x28x1) ships here. From Python, pass '
        'reals=[R, H, W, C] images to refine.load_refinement.')
  from adagen_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
  return fashion_mnist.load('train')[0][:TYPICAL_REALS]
