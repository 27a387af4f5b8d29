"""Terminal rewards behind one interface: adversarial, batch-FD and static.

Every reward model is a small object of pure functions over a `reward_state`
pytree (replicate it; shard the batch axis of the arrays you pass):

  state = model.init(rng, sample_images, sample_labels)
  r = model.reward(state, images, labels, rng)          # float32 [B]
  state, metrics = model.update(state, real_images, real_labels,
                                fake_images, fake_labels, rng)

Images are float32 [B, H, W, C] in [0, 1]; labels int32 [B]. `adversarial`
says whether `update` learns (the discriminator) or only refines statistics
(FD) / does nothing (static).

All three read a frozen `Backbone`, never the evaluation network: a policy
must not be trained against the features that judge it. Its variables ride
in the state (`state.frozen`) so jit sees them as arguments, not constants;
they need no checkpointing (reload them from the backbone loader).

- `AdversarialReward`: the AdaNAT / StyleGAN-T projected discriminator
  (rl/discriminator.py); reward = sigmoid(mean of all D logits).
- `FDReward` (ablation): per-sample leave-one-out improvement of the batch's
  Frechet distance to the real statistics on the backbone's pooled features.
- `StaticReward` (ablation; the fidelity reward of the lambda-blend): a
  frozen classifier's p(y = label | x) from the backbone's logits.
- `ConfidenceBonus`: another reward plus a weighted static reward, each
  standardised over the batch (`reward.static_weight`).
- `FDEnsemble`: the mean of several FD rewards on different backbones, each
  standardised over the batch (`reward.ensemble`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import flax
import jax
import jax.numpy as jnp
import optax

from adagen_jax import errors
from adagen_jax.rl import discriminator as disc_lib

REWARDS = ('adversarial', 'fd', 'static')
LOSSES = ('bce', 'hinge')


@dataclasses.dataclass(frozen=True, eq=False)
class Backbone:
  """A frozen feature network.

  Attributes:
    apply: apply(variables, images float32 [B, H, W, C] in [0, 1]) ->
      (features: list of float [B, L_i, C_i] token sets (shallow to deep),
      logits: float [B, K] or None). Exactly the contract of
      `adagen_jax.backbones.fmnist.load_disc_backbone()`'s module.apply.
      The backbone does its own resizing / normalisation.
    variables: its weights.
    readout: the token sets start with a cls token: add it to every other
      token and drop it (DPT's AddReadout, the ViT/DINO case).
    classifier: `apply` returns class logits (the static reward and the
      `static_weight` term need them); False for self-supervised networks.
  """
  apply: Callable[[Any, jax.Array], tuple[list[jax.Array], jax.Array | None]]
  variables: Any
  readout: bool = False
  classifier: bool = True

  def features(self, variables, images: jax.Array) -> list[jax.Array]:
    """-> list of float32 [B, L_i, C_i], gradient stopped."""
    feats, _ = self.apply(variables, images)
    feats = [jax.lax.stop_gradient(f).astype(jnp.float32) for f in feats]
    return [disc_lib.add_readout(f) for f in feats] if self.readout else feats

  def logits(self, variables, images: jax.Array) -> jax.Array:
    _, logits = self.apply(variables, images)
    if logits is None:
      raise ValueError('this backbone has no classifier logits.')
    return jax.lax.stop_gradient(logits).astype(jnp.float32)


def fmnist_backbone() -> Backbone:
  """The in-house Fashion-MNIST reward backbone (adagen_jax.backbones.fmnist).

  For ImageNet, wrap the DINO ViT-S/16 the same way with readout=True:
  `Backbone(apply=lambda v, x: (dino_features(v, x), None), variables=...,
  readout=True, classifier=False)` where dino_features returns the 5 token
  sets [B, 197, 384].
  """
  from adagen_jax.backbones import fmnist  # pylint: disable=g-import-not-at-top
  module, variables = fmnist.load_disc_backbone()
  return Backbone(apply=module.apply, variables=variables)


def fmnist_contrast_backbone() -> Backbone:
  """The self-supervised Fashion-MNIST reward backbone (ContrastNet).

  No classifier head: FD and adversarial rewards only.
  """
  from adagen_jax.backbones import fmnist  # pylint: disable=g-import-not-at-top
  module, variables = fmnist.load_contrast_backbone()
  return Backbone(apply=module.apply, variables=variables, classifier=False)


def fmnist_resnet_backbone() -> Backbone:
  """The supervised residual Fashion-MNIST reward backbone (ContrastNet's
  architecture with a classifier head, trained with labels)."""
  from adagen_jax.backbones import fmnist  # pylint: disable=g-import-not-at-top
  module, variables = fmnist.load_resnet_backbone()
  return Backbone(apply=module.apply, variables=variables)


# The evaluation network as a reward backbone: a diagnostic of the RL
# machinery's ceiling (with the FD reward and training-split reals it
# optimises what FD-FMNIST on the test split measures). Never a result.
DIAGNOSTIC_BACKBONE = 'featurenet_diagnostic'


def featurenet_diagnostic_backbone() -> Backbone:
  """FeatureNet's 128-d embedding as one token: [B, 1, 128], and its logits.

  The FD reward then pools exactly the embedding `adagen_jax.evaluate`
  compares, so its leave-one-out gain is each sample's share of FD-FMNIST
  against the training split's statistics.
  """
  from adagen_jax.backbones import fmnist  # pylint: disable=g-import-not-at-top
  module, variables = fmnist.load_feature_net()

  def apply(v, images):
    emb, logits = module.apply(v, images, train=False)
    return [emb[:, None, :]], logits

  return Backbone(apply=apply, variables=variables)


class RewardModel(Protocol):
  """The interface train.py uses; see the module docstring."""
  adversarial: bool

  def init(self, rng: jax.Array, sample_images: jax.Array,
           sample_labels: jax.Array) -> Any:
    ...

  def reward(self, state, images: jax.Array, labels: jax.Array,
             rng: jax.Array) -> jax.Array:
    ...

  def update(self, state, real_images: jax.Array, real_labels: jax.Array,
             fake_images: jax.Array, fake_labels: jax.Array,
             rng: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
    ...


# --- adversarial ------------------------------------------------------------


@flax.struct.dataclass
class DiscState:
  frozen: Any       # backbone variables (not trained, not checkpointed)
  params: Any       # discriminator parameters
  batch_stats: Any  # spectral-norm u and sigma
  opt_state: Any
  step: jax.Array   # int32 []: discriminator updates taken


def d_loss(real_logits: jax.Array, fake_logits: jax.Array,
           kind: str = 'bce') -> jax.Array:
  """Discriminator loss, means over all logits of each side."""
  if kind == 'bce':  # non-saturating logistic loss
    return (jnp.mean(jax.nn.softplus(-real_logits)) +
            jnp.mean(jax.nn.softplus(fake_logits)))
  if kind == 'hinge':
    return (jnp.mean(jax.nn.relu(1.0 - real_logits)) +
            jnp.mean(jax.nn.relu(1.0 + fake_logits)))
  raise ValueError(f'Unknown discriminator loss {kind!r}; use {LOSSES}.')


@dataclasses.dataclass(frozen=True, eq=False)
class AdversarialReward:
  """The AdaNAT reward: a projected discriminator trained alongside PPO.

  Attributes:
    backbone: the frozen feature network.
    disc: the ProjectedDiscriminator module.
    tx: its optimiser (reference: Adam(1e-4, b1=0.5, b2=0.999)).
    loss: 'bce' (reference default) or 'hinge'.
    p_crop: probability of the random crop per forward call (0.5).
    crop_size: backbone input side (224 for DINO on 256-pixel images);
      None keeps the image size (a translate-crop when crop_pad > 0).
    crop_pad: zero padding before cropping (0 for ImageNet; e.g. 2 for 28px).
    augment_reward: crop also when computing rewards (the reference does).
  """
  backbone: Backbone
  disc: disc_lib.ProjectedDiscriminator
  tx: optax.GradientTransformation
  loss: str = 'bce'
  p_crop: float = 0.5
  crop_size: int | None = None
  crop_pad: int = 0
  augment_reward: bool = True
  adversarial: bool = True

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise errors.UserError(f'config.reward.loss={self.loss!r}; use one of '
                             f'{", ".join(LOSSES)}.')

  def _features(self, frozen, images: jax.Array, rng: jax.Array,
                p: float) -> list[jax.Array]:
    size = self.crop_size or images.shape[1]
    x = disc_lib.random_crop(images, rng, p, size, self.crop_pad)
    return self.backbone.features(frozen, x)

  def init(self, rng: jax.Array, sample_images: jax.Array,
           sample_labels: jax.Array) -> DiscState:
    """sample_images: a few (e.g. 8) images fixing the feature shapes."""
    feats = self._features(self.backbone.variables, sample_images, rng, 0.0)
    variables = self.disc.init(rng, feats, sample_labels, update_stats=False)
    params = variables['params']
    return DiscState(frozen=self.backbone.variables, params=params,
                     batch_stats=variables['batch_stats'],
                     opt_state=self.tx.init(params),
                     step=jnp.zeros((), jnp.int32))

  def logits(self, state: DiscState, images: jax.Array, labels: jax.Array,
             rng: jax.Array, group_size: int | None = None) -> jax.Array:
    """float32 [B, sum L_i] logits in evaluation mode (stats not updated)."""
    p = self.p_crop if self.augment_reward else 0.0
    feats = self._features(state.frozen, images, rng, p)
    return self.logits_of_features(state, feats, labels, group_size)

  def features(self, state: DiscState, images: jax.Array
               ) -> list[jax.Array]:
    """The frozen backbone's features, without augmentation: per sample,
    so they can be computed once and regrouped (refine.score_samples)."""
    return self._features(state.frozen, images, jax.random.key(0), 0.0)

  def logits_of_features(self, state: DiscState, feats: list[jax.Array],
                         labels: jax.Array, group_size: int | None = None
                         ) -> jax.Array:
    """float32 [B, sum L_i]: the heads on backbone features (eval mode)."""
    return self.disc.apply(
        {'params': state.params, 'batch_stats': state.batch_stats}, feats,
        labels, update_stats=False, virtual_bs=group_size)

  def score(self, state: DiscState, images: jax.Array, labels: jax.Array,
            rng: jax.Array, group_size: int | None = None) -> jax.Array:
    """sigmoid(mean logits) float32 [B], with a chosen BatchNormLocal group.

    A sample's score depends on the other samples of its group of
    `group_size` contiguous batch-mates (default: the trained virtual_bs, 8).
    For best-of-N, score candidates in batches laid out like the training
    batches (groups of 8 mixed samples), or pass group_size to normalise over
    a different group; compare scores only within one layout.
    """
    p = self.p_crop if self.augment_reward else 0.0
    return self.score_features(state, self._features(state.frozen, images,
                                                     rng, p),
                               labels, group_size)

  def score_features(self, state: DiscState, feats: list[jax.Array],
                     labels: jax.Array, group_size: int | None = None
                     ) -> jax.Array:
    """`score` from backbone features (`features`), float32 [B]."""
    return jax.nn.sigmoid(jnp.mean(
        self.logits_of_features(state, feats, labels, group_size), axis=1))

  def reward(self, state: DiscState, images: jax.Array, labels: jax.Array,
             rng: jax.Array) -> jax.Array:
    """float32 [B] in (0, 1): sigmoid of the mean of all logits."""
    return self.score(state, images, labels, rng)

  def update(self, state: DiscState, real_images: jax.Array,
             real_labels: jax.Array, fake_images: jax.Array,
             fake_labels: jax.Array, rng: jax.Array
             ) -> tuple[DiscState, dict[str, jax.Array]]:
    """One discriminator step; reals and fakes go through D separately."""
    k_real, k_fake = jax.random.split(rng)
    real = self._features(state.frozen, real_images, k_real, self.p_crop)
    fake = self._features(state.frozen, fake_images, k_fake, self.p_crop)

    def loss_fn(params):
      # Two training-mode calls, each advancing the power iteration, as the
      # reference's two forwards do.
      stats = state.batch_stats
      real_logits, upd = self.disc.apply(
          {'params': params, 'batch_stats': stats}, real, real_labels,
          update_stats=True, mutable=['batch_stats'])
      fake_logits, upd = self.disc.apply(
          {'params': params, 'batch_stats': upd['batch_stats']}, fake,
          fake_labels, update_stats=True, mutable=['batch_stats'])
      loss = d_loss(real_logits, fake_logits, self.loss)
      return loss, (upd['batch_stats'], real_logits, fake_logits)

    (loss, (stats, real_logits, fake_logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    state = state.replace(params=optax.apply_updates(state.params, updates),
                          batch_stats=stats, opt_state=opt_state,
                          step=state.step + 1)
    metrics = {
        'd_loss': loss,
        'd_acc': 0.5 * (jnp.mean((real_logits > 0).astype(jnp.float32)) +
                        jnp.mean((fake_logits < 0).astype(jnp.float32))),
        'd_real_logit': jnp.mean(real_logits),
        'd_fake_logit': jnp.mean(fake_logits),
    }
    return state, metrics


# --- Frechet distance -------------------------------------------------------


@flax.struct.dataclass
class FDState:
  frozen: Any        # backbone variables
  shift: jax.Array   # float32 [D]: mean of the init features (for precision)
  count: jax.Array   # float32 []: real features accumulated
  sum_z: jax.Array   # float32 [D]: sum of z = f - shift
  outer_z: jax.Array  # float32 [D, D]: sum of z z^T


def _sqrtm_psd(s: jax.Array) -> jax.Array:
  w, v = jnp.linalg.eigh(s)
  return (v * jnp.sqrt(jnp.maximum(w, 0.0))) @ v.T


def _eigvalsh(m: jax.Array) -> jax.Array:
  """float32 [..., D] eigenvalues of the symmetric m [..., D, D].

  On a CPU with several JAX devices, the batch goes one matrix at a time:
  jaxlib's LAPACK batch map runs on the intra-op pool the devices share,
  and when every device's partition of a batched eigvalsh waits for pool
  threads that the others hold, none returns (a sharded FD reward hung on
  2 and 8 host devices). One device keeps the batched call, ~1.5x faster.
  """
  if jax.default_backend() != 'cpu' or jax.local_device_count() == 1:
    return jnp.linalg.eigvalsh(m)
  flat = m.reshape((-1,) + m.shape[-2:])
  return jax.lax.map(jnp.linalg.eigvalsh, flat).reshape(m.shape[:-1])


def frechet_distance_sym(mu: jax.Array, sigma: jax.Array, mu_r: jax.Array,
                         sigma_r: jax.Array, sqrt_sigma_r: jax.Array
                         ) -> jax.Array:
  """FD through the symmetric form tr sqrt(R S R), R = sigma_r^(1/2).

  mu [..., D] and sigma [..., D, D] may carry leading batch axes: one
  batched `eigvalsh` then serves them all. It equals metrics/fid.py's
  eigvals form (S S_r and R S R have the same eigenvalues) but needs only
  `eigvalsh`, which runs on every accelerator.
  """
  eig = _eigvalsh(sqrt_sigma_r @ sigma @ sqrt_sigma_r)
  diff = mu - mu_r
  return (jnp.sum(diff * diff, axis=-1)
          + jnp.trace(sigma, axis1=-2, axis2=-1) + jnp.trace(sigma_r)
          - 2.0 * jnp.sum(jnp.sqrt(jnp.maximum(eig, 0.0)), axis=-1))


def _add_one(mu: jax.Array, sigma: jax.Array, n: int, x: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
  """Mean [M, D] and unbiased covariance [M, D, D] of a set of n samples
  (mean mu [D], unbiased covariance sigma [D, D]) plus each row of x [M, D]
  in turn: exact rank-one updates."""
  d = x - mu
  return (mu + d / (n + 1),
          ((n - 1) * sigma + (n / (n + 1)) * d[:, :, None] * d[:, None, :])
          / n)


def fd_gain_over_reference(feats: jax.Array, ref_feats: jax.Array,
                           mu_r: jax.Array, sigma_r: jax.Array) -> jax.Array:
  """float32 [M]: FD(R) - FD(R + {i}) for each row i of feats [M, D].

  R (ref_feats [n, D], n >= 2) is held fixed, so the gain is a function of
  sample i alone: `leave_one_out_fd_gain`'s credit with the batch-mates
  frozen (best-of-N's score). One batched eigvalsh for the M + 1 distances.
  """
  n = ref_feats.shape[0]
  if n < 2:
    raise ValueError(f'the FD gain needs >= 2 reference samples, got {n}.')
  ref_feats = ref_feats.astype(jnp.float32)
  # Centred on the references (and mu_r with them), as leave_one_out_fd_gain.
  shift = jnp.mean(ref_feats, axis=0)
  ref, feats, mu_r = ref_feats - shift, feats - shift, mu_r - shift
  mu = jnp.zeros_like(shift)
  sigma = (ref.T @ ref) / (n - 1)
  mu_i, sigma_i = _add_one(mu, sigma, n, feats)
  fd = frechet_distance_sym(jnp.concatenate([mu[None], mu_i]),
                            jnp.concatenate([sigma[None], sigma_i]), mu_r,
                            sigma_r, _sqrtm_psd(sigma_r))
  return fd[0] - fd[1:]


def leave_one_out_fd_gain(feats: jax.Array, mu_r: jax.Array,
                          sigma_r: jax.Array, group_size: int = 1
                          ) -> jax.Array:
  """float32 [B]: FD(C_i) - FD(C_i + {i}), against (mu_r, sigma_r).

  C_i is the batch without the group of G = group_size consecutive samples
  that holds i; G = 1 is leave-one-out, FD(batch without i) - FD(batch).
  Positive when sample i pulls the batch's feature Gaussian towards the
  real one. With G > 1 (rollouts in groups from one noise, ppo.group_size)
  the members of a group are scored against the same other samples, so
  their rewards differ only through the samples themselves: leave-one-out
  would also credit a member for differing from its near-copies in the
  batch, a diversity bonus the group creates. Exact rank-one updates of
  the unbiased covariance; needs B - G >= 2.

  All B / G * (G + 1) distances go through ONE batched eigvalsh: on a
  2-thread CPU, two batched eigvalsh calls that XLA runs at once can each
  wait for the other's thread (jaxlib's LAPACK batch map on the shared
  intra-op pool) and never return (`_eigvalsh` for several devices).
  """
  b = feats.shape[0]
  n = b - group_size  # |C_i|
  if b % group_size or n < 2:
    raise ValueError(f'the group FD gain needs a batch of groups of '
                     f'{group_size} and >= 2 samples outside a group, got a '
                     f'batch of {b}.')
  feats = feats.astype(jnp.float32)
  # Centred (and mu_r with them), so the float32 sums below stay exact.
  shift = jnp.mean(feats, axis=0)
  feats, mu_r = feats - shift, mu_r - shift
  total, outer = jnp.sum(feats, axis=0), feats.T @ feats

  def moments(fg):  # [G, D] -> C's mu [D], sigma [D, D]; C + {i}'s [G, ...]
    mu = (total - jnp.sum(fg, axis=0)) / n
    sigma = (outer - fg.T @ fg - n * jnp.outer(mu, mu)) / (n - 1)
    return (mu, sigma) + _add_one(mu, sigma, n, fg)

  groups = b // group_size
  mu_c, sigma_c, mu_i, sigma_i = jax.vmap(moments)(
      feats.reshape(groups, group_size, -1))
  mu_i, sigma_i = mu_i.reshape(b, -1), sigma_i.reshape((b,) + sigma_c.shape[1:])
  if group_size == 1:  # every C_i + {i} is the whole batch: one distance
    mu_i, sigma_i = mu_i[:1], sigma_i[:1]
  fd = frechet_distance_sym(jnp.concatenate([mu_c, mu_i]),
                            jnp.concatenate([sigma_c, sigma_i]), mu_r,
                            sigma_r, _sqrtm_psd(sigma_r))
  fd_c, fd_i = fd[:groups], fd[groups:]
  return jnp.repeat(fd_c, group_size) - fd_i


@dataclasses.dataclass(frozen=True, eq=False)
class FDReward:
  """Ablation: a batch-level distribution reward made per-sample.

  FD is a property of a set, not of a sample; the principled per-sample
  credit is each sample's leave-one-out effect on the batch FD:
  r_i = FD(B \\ {i}) - FD(B) on the backbone's mean-pooled token features
  (feature set `feature_index`). The real statistics are running moments:
  `init` starts them from its sample and every `update` adds the real images
  it sees (fakes are ignored), so a large real set can be fed in chunks
  through `update`; use well over feature-width + 1 images in total.
  PPO normalises returns, so the 1/B scale of r_i does not matter. Like the
  discriminator's BatchNormLocal, a sample's reward depends on its
  batch-mates; batch sizes >= 3.

  label_scale > 0 compares the joint distribution of (features, label):
  each feature vector gets `label_scale` x its label's one-hot appended
  (the real images' labels, the fakes' conditioning labels). The
  features' covariance with the one-hot columns is then each class's mean
  feature, so a sample that drifts towards another class's features moves
  the batch away from the reals even when the marginal FD would not see
  it. The one-hot's length is in feature units: ~sqrt(trace) of the real
  features' covariance weighs the label block like the features.
  """
  backbone: Backbone
  feature_index: int = -1
  group_size: int = 1  # leave_one_out_fd_gain's G
  label_scale: float = 0.0
  num_classes: int = 0  # needed with label_scale > 0
  adversarial: bool = False

  def __post_init__(self):
    if self.label_scale < 0 or (self.label_scale and self.num_classes < 2):
      raise errors.UserError(
          f'config.reward.label_scale={self.label_scale} needs a value >= 0 '
          'and a class-conditional generator (0 = the marginal FD).')

  def pooled(self, frozen, images: jax.Array,
             labels: jax.Array | None = None) -> jax.Array:
    """float32 [B, D] mean-pooled tokens of the chosen feature set; with
    label_scale > 0, [B, D + num_classes] with the scaled one-hot labels."""
    f = jnp.mean(self.backbone.features(frozen, images)[self.feature_index],
                 axis=1)
    if not self.label_scale:
      return f
    return jnp.concatenate(
        [f, self.label_scale * jax.nn.one_hot(labels, self.num_classes,
                                              dtype=f.dtype)], axis=1)

  def init(self, rng: jax.Array, sample_images: jax.Array,
           sample_labels: jax.Array) -> FDState:
    del rng
    f = self.pooled(self.backbone.variables, sample_images, sample_labels)
    shift = jnp.mean(f, axis=0)
    z = f - shift
    return FDState(frozen=self.backbone.variables, shift=shift,
                   count=jnp.asarray(f.shape[0], jnp.float32),
                   sum_z=jnp.sum(z, axis=0), outer_z=z.T @ z)

  def real_stats(self, state: FDState) -> tuple[jax.Array, jax.Array]:
    """(mu float32 [D], unbiased sigma float32 [D, D]) of the real features."""
    m = state.sum_z / state.count
    sigma = ((state.outer_z - state.count * jnp.outer(m, m)) /
             (state.count - 1))
    return state.shift + m, sigma

  def reward(self, state: FDState, images: jax.Array, labels: jax.Array,
             rng: jax.Array) -> jax.Array:
    del rng
    mu_r, sigma_r = self.real_stats(state)
    return leave_one_out_fd_gain(self.pooled(state.frozen, images, labels),
                                 mu_r, sigma_r, self.group_size)

  def gain_over(self, state: FDState, images: jax.Array, labels: jax.Array,
                reference: tuple[jax.Array, jax.Array]) -> jax.Array:
    """float32 [M]: each image's FD gain over a fixed reference set
    (images, labels) (`fd_gain_over_reference`): the reward of training,
    as a function of the image alone."""
    mu_r, sigma_r = self.real_stats(state)
    return fd_gain_over_reference(
        self.pooled(state.frozen, images, labels),
        self.pooled(state.frozen, *reference), mu_r, sigma_r)

  def update(self, state: FDState, real_images, real_labels, fake_images,
             fake_labels, rng) -> tuple[FDState, dict[str, jax.Array]]:
    del fake_images, fake_labels, rng
    z = self.pooled(state.frozen, real_images, real_labels) - state.shift
    state = state.replace(count=state.count + z.shape[0],
                          sum_z=state.sum_z + jnp.sum(z, axis=0),
                          outer_z=state.outer_z + z.T @ z)
    return state, {'fd_real_count': state.count}


@flax.struct.dataclass
class EnsembleState:
  members: tuple  # one FDState per FDEnsemble member, in its order


@dataclasses.dataclass(frozen=True, eq=False)
class FDEnsemble:
  """The mean of several FD rewards, each standardised over the batch.

  Every frozen backbone is a proxy for the evaluation network, and PPO
  finds where a single proxy disagrees with it: on the Fashion-MNIST DiT
  each single-backbone FD lowers guidance along the run where the
  evaluation network wants it raised. Averaging proxies built and trained
  differently keeps what they agree on (the reward-ensemble remedy for
  over-optimising a learned reward). Standardising each member first
  weighs them equally whatever their FD units.
  """
  members: tuple  # FDReward, ...
  names: tuple    # str, ...: each member's log name
  adversarial: bool = False

  def init(self, rng, sample_images, sample_labels) -> EnsembleState:
    return EnsembleState(members=tuple(
        m.init(rng, sample_images, sample_labels) for m in self.members))

  def parts(self, state: EnsembleState, images: jax.Array, labels: jax.Array,
            rng: jax.Array) -> dict[str, jax.Array]:
    """Each member's FD gain before standardising, float32 [B] by name."""
    return {n: m.reward(s, images, labels, rng) for n, m, s in
            zip(self.names, self.members, state.members)}

  def combine(self, parts: dict[str, jax.Array]) -> jax.Array:
    """The reward float32 [B]: the mean of the standardised parts."""
    return sum(standardise(parts[n]) for n in self.names) / len(self.names)

  def reward(self, state: EnsembleState, images: jax.Array, labels: jax.Array,
             rng: jax.Array) -> jax.Array:
    return self.combine(self.parts(state, images, labels, rng))

  def update(self, state: EnsembleState, real_images, real_labels,
             fake_images, fake_labels, rng
             ) -> tuple[EnsembleState, dict[str, jax.Array]]:
    updated = [m.update(s, real_images, real_labels, fake_images,
                        fake_labels, rng)
               for m, s in zip(self.members, state.members)]
    # Every member counts the same reals: one member's metrics say it all.
    return (state.replace(members=tuple(s for s, _ in updated)),
            updated[0][1])


# --- static classifier --------------------------------------------------------


@flax.struct.dataclass
class StaticState:
  frozen: Any  # backbone variables


@dataclasses.dataclass(frozen=True, eq=False)
class StaticReward:
  """p(y = label | x) under the frozen backbone's classifier head."""
  backbone: Backbone
  adversarial: bool = False

  def init(self, rng, sample_images, sample_labels) -> StaticState:
    del rng, sample_images, sample_labels
    return StaticState(frozen=self.backbone.variables)

  def reward(self, state: StaticState, images: jax.Array, labels: jax.Array,
             rng: jax.Array) -> jax.Array:
    del rng
    logp = jax.nn.log_softmax(self.backbone.logits(state.frozen, images))
    return jnp.exp(jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0])

  def update(self, state, real_images, real_labels, fake_images, fake_labels,
             rng) -> tuple[StaticState, dict[str, jax.Array]]:
    del real_images, real_labels, fake_images, fake_labels, rng
    return state, {}


def standardise(r: jax.Array) -> jax.Array:
  return (r - jnp.mean(r)) / (jnp.std(r) + 1e-8)


@flax.struct.dataclass
class BonusState:
  base: Any    # the base reward's state
  frozen: Any  # the confidence backbone's variables


@dataclasses.dataclass(frozen=True, eq=False)
class ConfidenceBonus:
  """`base`'s reward plus `weight` x the static reward, both standardised.

  The paper trains its fidelity policy on the adversarial reward plus an
  image-quality model's score; here the second term is the reward
  backbone's confidence in the target class. A distribution reward (FD)
  credits samples that fill the real distribution; the confidence term
  credits recognisable ones. Standardising each over the batch makes
  `weight` the ratio of their spreads whatever their units (an FD gain is
  ~1/B, a probability ~0.1-1); PPO normalises the sum again. The
  confidence may come from another backbone than `base`'s (a
  self-supervised one has no classifier). Learns what `base` learns.
  """
  base: Any  # RewardModel
  static: StaticReward
  weight: float

  @property
  def adversarial(self) -> bool:
    return self.base.adversarial

  def init(self, rng, sample_images, sample_labels) -> BonusState:
    return BonusState(base=self.base.init(rng, sample_images, sample_labels),
                      frozen=self.static.backbone.variables)

  def parts(self, state: BonusState, images: jax.Array, labels: jax.Array,
            rng: jax.Array) -> dict[str, jax.Array]:
    """The two terms before standardising: 'base', 'confidence' float32 [B].

    The sum is standardised, so its batch mean says nothing; these do.
    """
    return {'base': self.base.reward(state.base, images, labels, rng),
            'confidence': self.static.reward(StaticState(frozen=state.frozen),
                                             images, labels, rng)}

  def combine(self, parts: dict[str, jax.Array]) -> jax.Array:
    """The reward float32 [B] of `parts`' two terms."""
    return (standardise(parts['base']) +
            self.weight * standardise(parts['confidence']))

  def reward(self, state: BonusState, images: jax.Array, labels: jax.Array,
             rng: jax.Array) -> jax.Array:
    return self.combine(self.parts(state, images, labels, rng))

  def update(self, state: BonusState, real_images, real_labels, fake_images,
             fake_labels, rng) -> tuple[BonusState, dict[str, jax.Array]]:
    base, metrics = self.base.update(state.base, real_images, real_labels,
                                     fake_images, fake_labels, rng)
    return state.replace(base=base), metrics


def make_reward(reward_config, backbone: Backbone, num_classes: int,
                group_size: int = 1,
                confidence_backbone: Backbone | None = None,
                ensemble: tuple = ()) -> RewardModel:
  """Builds `reward_config.name` in ('adversarial', 'fd', 'static').

  group_size: the rollouts' groups (ppo.group_size), which the FD reward
  scores against the same context (leave_one_out_fd_gain).
  confidence_backbone: the classifier of the static_weight term (default:
  `backbone`).
  ensemble: (Backbone, feature_index) of further FD members: with any, an
    'fd' reward is the FDEnsemble of `backbone`'s FD ('fd0') and theirs
    ('fd1', ...).

  Keys read (with the reference's defaults): adversarial: loss 'bce',
  lr 1e-4, b1 0.5, b2 0.999, p_crop 0.5, crop_size None, crop_pad 0,
  augment_reward True, cmap_dim 64, mapping_dim 512, mapping_layers 8,
  mapping_lr_mult 0.01, virtual_bs 8, conditional True; fd: feature_index -1;
  adversarial and fd: static_weight 0 (> 0 wraps them in ConfidenceBonus).
  """
  get = reward_config.get
  name = get('name', 'adversarial')
  weight = float(get('static_weight', 0.0))
  if weight < 0:
    raise errors.UserError(f'config.reward.static_weight={weight} must be >= '
                           '0 (0 = no confidence term); pass e.g. 0.5')
  if name == 'static':
    if not backbone.classifier:
      raise errors.UserError(
          'config.reward.name=static reads class logits and the reward '
          'backbone has none; pass --config.reward.backbone=fmnist.')
    return StaticReward(backbone)
  base = _base_reward(name, reward_config, backbone, num_classes, group_size)
  if ensemble:
    if name != 'fd':
      raise errors.UserError(
          f'config.reward.ensemble averages FD rewards and the reward is '
          f'{name!r}; set config.reward.name=fd or ensemble=\'\'.')
    base = FDEnsemble(
        members=(base,) + tuple(
            dataclasses.replace(base, backbone=b, feature_index=i)
            for b, i in ensemble),
        names=tuple(f'fd{k}' for k in range(len(ensemble) + 1)))
  if weight == 0:
    return base
  confidence = confidence_backbone or backbone
  if not confidence.classifier:
    raise errors.UserError(
        f'config.reward.static_weight={weight} needs a classifier, and the '
        'reward backbone has none; pass --config.reward.static_backbone=fmnist '
        '(DiscBackbone) or static_weight=0.')
  return ConfidenceBonus(base, StaticReward(confidence), weight)


def _base_reward(name: str, reward_config, backbone: Backbone,
                 num_classes: int, group_size: int) -> RewardModel:
  """make_reward's adversarial or FD model, without the confidence term."""
  get = reward_config.get
  if name == 'fd':
    return FDReward(backbone, feature_index=int(get('feature_index', -1)),
                    group_size=group_size,
                    label_scale=float(get('label_scale', 0.0)),
                    num_classes=num_classes)
  if name != 'adversarial':
    raise errors.UserError(f'config.reward.name={name!r}; use one of '
                           f'{", ".join(REWARDS)}.')
  disc = disc_lib.ProjectedDiscriminator(
      num_classes=num_classes if get('conditional', True) else 0,
      cmap_dim=int(get('cmap_dim', 64)),
      mapping_dim=int(get('mapping_dim', 512)),
      mapping_layers=int(get('mapping_layers', 8)),
      mapping_lr_mult=float(get('mapping_lr_mult', 0.01)),
      virtual_bs=int(get('virtual_bs', 8)))
  tx = optax.adam(float(get('lr', 1e-4)), b1=float(get('b1', 0.5)),
                  b2=float(get('b2', 0.999)))
  crop_size = get('crop_size', None)
  return AdversarialReward(
      backbone=backbone, disc=disc, tx=tx, loss=get('loss', 'bce'),
      p_crop=float(get('p_crop', 0.5)),
      crop_size=None if crop_size is None else int(crop_size),
      crop_pad=int(get('crop_pad', 0)),
      augment_reward=bool(get('augment_reward', True)))
