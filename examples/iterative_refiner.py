"""A user-written iterative generator: coarse-to-fine exemplar denoising.

This is the worked example of docs/ADDING_A_GENERATOR.md: a generator that
is not part of adagen_jax, plugged in with

  config.generator.name = 'examples.iterative_refiner'

and trained and sampled with the package's unchanged CLIs. It needs no
trained network, so it runs anywhere in seconds, yet it is a real iterative
sampler whose per-step choices change the images.

The model. Each Fashion-MNIST class c is modelled by a kernel density
estimate over K exemplars e_ck (the first K training images of that class):
p(x0 | c) = 1/K sum_k N(x0; e_ck, b^2 I), bandwidth b. Noised with
variance-exploding Gaussian noise of level sigma, its denoiser is closed form:

  w_k(x, sigma) = softmax_k(-|x - e_ck|^2 / (2 (b^2 + sigma^2)))
  D(x, sigma)   = sum_k w_k (e_ck + g (x - e_ck)),  g = b^2 / (b^2 + sigma^2)

At a large sigma the weights are flat and D is the class average (a coarse
silhouette); as sigma shrinks the posterior commits to a few exemplars and D
gains their details, so sampling goes coarse to fine.

The sampler. x starts as sigma_max noise; each of the T steps is an
ancestral (Euler, eta = 1) step from sigma to sigma' = (1 - ratio) sigma:

  x' = D_temp + (1 - ratio)^2 (x - D_temp) + sigma' sqrt(1 - (1 - ratio)^2) eps

where D_temp is D with its softmax at temperature `temp`. The two actions:

  ratio (sigmoid, (0, 1)): how much of the current noise this step removes;
  temp (softplus, > 0): < 1 commits to the nearest exemplars early (sharp,
    less varied), > 1 keeps averaging (smooth, blurry).

The hand-crafted schedule is the Karras et al. (2022) rho = 7 noise ladder
from sigma_max to sigma_min (ratio rising 0.41 -> 0.67 at T = 8) at the
exact posterior (temp 1). AdaGen's policy learns a per-sample residual on
top of it from what it observes (`_obs`). `decode` returns D at the final
noise level, so images are clean whatever the schedule.

Config (`build(gen_config)`, see examples/iterative_refiner_config.py):
steps (T, 8), smoothing (0.5), exemplars (K per class, 64), bandwidth (b,
0.1), sigma_max (20), sigma_min (0.05), rho (7), data_path ('' = the
default Fashion-MNIST search of adagen_jax.data.fashion_mnist).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import errors
from adagen_jax.data import fashion_mnist
from adagen_jax.generators import base

NAME = 'examples.iterative_refiner'  # = config.generator.name = __name__
SIDE = 28          # Fashion-MNIST: what the default reward and data expect
NUM_CLASSES = 10
PATCH = 4          # observation tokens: a 7 x 7 map of 4 x 4 patches
ACTIONS = (base.ActionDim('ratio', 'sigmoid'),
           base.ActionDim('temp', 'softplus'))


def karras_sigmas(num_steps: int, sigma_max: float, sigma_min: float,
                  rho: float) -> np.ndarray:
  """float64 [T + 1]: the rho-spaced noise ladder sigma_max -> sigma_min."""
  i = np.arange(num_steps + 1) / max(num_steps, 1)
  hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
  return (hi + i * (lo - hi)) ** rho


@flax.struct.dataclass
class RefinerState:
  """What one rollout carries between steps (a pytree for jax.lax.scan)."""
  x: jax.Array       # float32 [B, 784]: the noisy image, flattened
  sigma: jax.Array   # float32 [B]: its noise level (per sample: so are actions)
  logits: jax.Array  # float32 [B, K]: log posterior over the exemplars of
                     #   the sample's class at temp 1 (reused by `step`)
  labels: jax.Array  # int32 [B]


def patchify(images: jax.Array) -> jax.Array:
  """float [B, 784] -> float [B, 49, 16] row-major 4 x 4 patches."""
  b, g = images.shape[0], SIDE // PATCH
  x = images.reshape(b, g, PATCH, g, PATCH)
  return x.transpose(0, 1, 3, 2, 4).reshape(b, g * g, PATCH * PATCH)


@dataclasses.dataclass(frozen=True)
class IterativeRefiner:
  """Implements `adagen_jax.generators.base.Generator`.

  A frozen (hence hashable) dataclass of Python scalars: the RL code passes
  the generator as a static jit argument, and every field that changes the
  images is part of `identity()`. Arrays live in `params`, never here.
  """
  num_steps: int = 8
  smoothing: float = 0.5
  exemplars: int = 64
  bandwidth: float = 0.1
  sigma_max: float = 20.0
  sigma_min: float = 0.05
  rho: float = 7.0
  weights: str = 'fashion_mnist_train_first64'
  weights_digest: str = ''
  name: str = NAME
  # obs: per 4 x 4 patch, the denoised estimate (16), the noisy image scaled
  # to unit variance (16), log sigma (1) and the posterior entropy (1).
  obs_shape: tuple[int, int] = ((SIDE // PATCH) ** 2, 2 * PATCH * PATCH + 2)
  image_shape: tuple[int, int, int] = (SIDE, SIDE, 1)
  num_classes: int = NUM_CLASSES
  stochastic: bool = True  # ancestral steps draw noise (lookahead needs it)

  # ------------------------------------------------------------- actions --
  def heuristic(self, num_steps: int) -> np.ndarray:
    """float64 [T, 2]: the Karras ladder's ratios, at the exact posterior."""
    s = karras_sigmas(num_steps, self.sigma_max, self.sigma_min, self.rho)
    ratio = 1.0 - s[1:] / s[:-1]
    return np.stack([ratio, np.ones_like(ratio)], axis=-1)

  @property
  def action_spec(self) -> base.ActionSpec:
    # A bound method (not a lambda) keeps equal generators' specs equal.
    return base.ActionSpec(ACTIONS, self.heuristic, self.smoothing)

  # ------------------------------------------------------------ denoiser --
  def _logits(self, params, x: jax.Array, sigma: jax.Array,
              labels: jax.Array) -> jax.Array:
    """float32 [B, K]: log w_k up to a constant, at temp 1."""
    e = params['exemplars'][labels]                          # [B, K, 784]
    d2 = (jnp.sum(jnp.square(x), -1, keepdims=True)
          - 2.0 * jnp.einsum('bd,bkd->bk', x, e)
          + params['sq_norms'][labels])                      # [B, K]
    return -d2 / (2.0 * (self.bandwidth ** 2 + jnp.square(sigma)))[:, None]

  def _denoise(self, params, state: RefinerState,
               temp: jax.Array | float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(D float32 [B, 784], weights float32 [B, K]) at temperature `temp`."""
    temp = jnp.broadcast_to(jnp.asarray(temp, jnp.float32), state.sigma.shape)
    w = jax.nn.softmax(state.logits / temp[:, None], axis=-1)
    mean = jnp.einsum('bk,bkd->bd', w, params['exemplars'][state.labels])
    g = (self.bandwidth ** 2 / (self.bandwidth ** 2 + jnp.square(state.sigma))
         )[:, None]
    return (1.0 - g) * mean + g * state.x, w

  def _obs(self, params, state: RefinerState) -> jax.Array:
    """float32 [B, 49, 34]: what the policy sees of each sample.

    The denoised estimate shows what the sample is becoming, the scaled
    noisy image what is left to resolve, and the posterior entropy how far
    it has committed to its exemplars: the per-sample signals a schedule
    cannot know in advance.
    """
    d, w = self._denoise(params, state)
    x_in = state.x / jnp.sqrt(jnp.square(state.sigma) + 0.25)[:, None]
    entropy = -jnp.sum(w * jnp.log(w + 1e-12), -1) / np.log(self.exemplars)
    n = self.obs_shape[0]
    scalars = jnp.stack([jnp.log(state.sigma), entropy], -1)  # [B, 2]
    return jnp.concatenate(
        [patchify(d), patchify(x_in),
         jnp.broadcast_to(scalars[:, None], (d.shape[0], n, 2))], -1)

  # ------------------------------------------------------------ protocol --
  def init(self, params, labels: jax.Array,
           rng: jax.Array) -> tuple[RefinerState, jax.Array]:
    """labels int32 [B] -> (state at sigma_max, obs float32 [B, 49, 34])."""
    b = labels.shape[0]
    sigma = jnp.full((b,), self.sigma_max, jnp.float32)
    x = self.sigma_max * jax.random.normal(rng, (b, SIDE * SIDE))
    state = RefinerState(x=x, sigma=sigma,
                         logits=self._logits(params, x, sigma, labels),
                         labels=labels)
    return state, self._obs(params, state)

  def step(self, params, state: RefinerState,
           action: Mapping[str, jax.Array],
           rng: jax.Array) -> tuple[RefinerState, jax.Array]:
    """One ancestral step sigma -> (1 - ratio) sigma at temperature temp."""
    ratio, temp = action['ratio'], action['temp']            # float32 [B]
    chex.assert_equal_shape((ratio, temp, state.sigma))
    d, _ = self._denoise(params, state, temp)
    keep = 1.0 - ratio                     # sigma' / sigma
    sigma = keep * state.sigma
    fresh = sigma * jnp.sqrt(1.0 - jnp.square(keep))   # ancestral noise
    x = (d + jnp.square(keep)[:, None] * (state.x - d)
         + fresh[:, None] * jax.random.normal(rng, state.x.shape))
    state = RefinerState(x=x, sigma=sigma,
                         logits=self._logits(params, x, sigma, state.labels),
                         labels=state.labels)
    return state, self._obs(params, state)

  def decode(self, params, state: RefinerState) -> jax.Array:
    """-> float32 [B, 28, 28, 1] in [0, 1]: the final denoised estimate."""
    d, _ = self._denoise(params, state)
    return jnp.clip(d, 0.0, 1.0).reshape((-1,) + self.image_shape)

  def identity(self) -> dict[str, Any]:
    """Everything that makes its images what they are; JSON-able.

    Exports and checkpoints store it, and a policy is refused on a generator
    whose identity differs: the fields, or only `weights_digest` (the same
    settings on other exemplars).
    """
    return {'name': self.name, 'steps': self.num_steps,
            'smoothing': self.smoothing, 'exemplars': self.exemplars,
            'bandwidth': self.bandwidth, 'sigma_max': self.sigma_max,
            'sigma_min': self.sigma_min, 'rho': self.rho,
            'weights': self.weights, 'weights_digest': self.weights_digest}


def load_exemplars(per_class: int, path: str | None = None) -> np.ndarray:
  """uint8 [10, K, 784]: the first `per_class` training images of each class.

  Taken in file order, so the same data files always give the same
  "weights" (and digest).
  """
  images, labels = fashion_mnist.load('train', path)
  out = []
  for c in range(NUM_CLASSES):
    rows = np.flatnonzero(labels == c)[:per_class]
    if rows.size < per_class:
      raise errors.UserError(
          f'config.generator.exemplars={per_class}, but class {c} has only '
          f'{rows.size} training images; use fewer.')
    out.append(images[rows].reshape(per_class, -1))
  return np.round(np.stack(out) * 255.0).astype(np.uint8)


def build(gen_config) -> tuple[IterativeRefiner, dict[str, jax.Array]]:
  """The registry hook: gen_config -> (generator, params).

  `adagen_jax.generators.build` calls this when config.generator.name is
  this module's import path.
  """
  get = gen_config.get
  steps, k = int(get('steps', 8)), int(get('exemplars', 64))
  if steps < 1 or k < 1:
    raise errors.UserError(f'config.generator.steps={steps} and exemplars='
                           f'{k} must be positive.')
  sigma_max, sigma_min = float(get('sigma_max', 20.0)), float(
      get('sigma_min', 0.05))
  if not 0.0 < sigma_min < sigma_max:
    raise errors.UserError(f'config.generator.sigma_min={sigma_min} and '
                           f'sigma_max={sigma_max}: need 0 < min < max.')
  exemplars = load_exemplars(k, get('data_path', '') or None)
  gen = IterativeRefiner(
      num_steps=steps, smoothing=float(get('smoothing', 0.5)), exemplars=k,
      bandwidth=float(get('bandwidth', 0.1)), sigma_max=sigma_max,
      sigma_min=sigma_min, rho=float(get('rho', 7.0)),
      weights=f'fashion_mnist_train_first{k}',
      weights_digest=hashlib.sha256(exemplars.tobytes()).hexdigest()[:16])
  flat = jnp.asarray(exemplars, jnp.float32) / 255.0      # [10, K, 784]
  return gen, {'exemplars': flat,
               'sq_norms': jnp.sum(jnp.square(flat), -1)}  # [10, K]
