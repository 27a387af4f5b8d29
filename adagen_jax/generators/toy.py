"""A tiny analytic generator for fast tests of the whole RL stack.

Ten classes, each with a fixed 8x8x1 template image (in `params`). A rollout
starts from uniform noise and, for T steps, moves the image towards the class
template while injecting fresh noise:

  x_{t+1} = x_t + blend_t (template - x_t) + noise temp_t eps,  eps ~ N(0, 1)

Two actions steer it: `blend` (sigmoid, in (0, 1)) and `temp` (softplus,
> 0). The hand-crafted schedule blends slowly with decaying noise, so the
final image keeps visible noise; larger blends and colder noise give images
closer to the template, which `template_reward` measures. A policy can
therefore improve the reward measurably in a few PPO iterations, in seconds
on a CPU.

The observation is 16 tokens of width 8 (a 4x4 map of 2x2 patches): the 4
pixels of the current image's patch next to the 4 pixels of the template's.
`feature_backbone` is a matching stand-in for a frozen reward backbone, so
the reward models (rl/rewards.py) run on toy images too.

Config (`build(gen_config)`): num_steps (8), smoothing (0.8), noise (0.3),
seed (0) of the templates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax.generators import base

NUM_CLASSES = 10
SIDE = 8          # image side
PATCH = 2         # patch side; 16 tokens of 2 x 2 pixels x (image, template)
ACTIONS = (base.ActionDim('blend', 'sigmoid'),
           base.ActionDim('temp', 'softplus'))


def heuristic(num_steps: int) -> np.ndarray:
  """float64 [T, 2]: blend ramps 0.15 -> 0.4, temp decays 1.0 -> 0.4."""
  r = np.linspace(0.0, 1.0, num_steps) if num_steps > 1 else np.zeros(1)
  return np.stack([0.15 + 0.25 * r, 1.0 - 0.6 * r], axis=-1)


@flax.struct.dataclass
class ToyState:
  x: jax.Array       # float32 [B, 8, 8, 1]: the current image
  labels: jax.Array  # int32 [B]
  step: jax.Array    # int32 []: steps taken so far


def make_templates(seed: int) -> np.ndarray:
  """float32 [10, 8, 8, 1] smooth class patterns in [0.1, 0.9]."""
  rs = np.random.RandomState(seed)
  z = rs.randn(NUM_CLASSES, SIDE + 2, SIDE + 2)
  # A 3x3 box blur gives blobs rather than salt-and-pepper templates.
  z = sum(z[:, i:i + SIDE, j:j + SIDE] for i in range(3) for j in range(3))
  z = (z - z.mean(axis=(1, 2), keepdims=True)) / z.std(
      axis=(1, 2), keepdims=True)
  return (0.1 + 0.8 / (1.0 + np.exp(-2.0 * z)))[..., None].astype(np.float32)


def patchify(images: jax.Array) -> jax.Array:
  """float [B, 8, 8, 1] -> float [B, 16, 4] row-major 2x2 patches."""
  b = images.shape[0]
  g = SIDE // PATCH
  x = images.reshape(b, g, PATCH, g, PATCH)
  return x.transpose(0, 1, 3, 2, 4).reshape(b, g * g, PATCH * PATCH)


def template_reward(params, images: jax.Array,
                    labels: jax.Array) -> jax.Array:
  """float32 [B]: minus the mean squared error to the class template."""
  target = params['templates'][labels]
  return -jnp.mean(jnp.square(images - target), axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class ToyGenerator:
  """Implements `base.Generator`; hashable, so it can be a static jit arg."""
  num_steps: int = 8
  smoothing: float = 0.8
  noise: float = 0.3
  seed: int = 0
  name: str = 'toy'
  obs_shape: tuple[int, int] = ((SIDE // PATCH) ** 2, 2 * PATCH * PATCH)
  image_shape: tuple[int, int, int] = (SIDE, SIDE, 1)
  num_classes: int = NUM_CLASSES
  stochastic: bool = True

  @property
  def action_spec(self) -> base.ActionSpec:
    return base.ActionSpec(ACTIONS, heuristic, self.smoothing)

  def _obs(self, params, x: jax.Array, labels: jax.Array) -> jax.Array:
    target = params['templates'][labels]
    return jnp.concatenate([patchify(x), patchify(target)], axis=-1)

  def init(self, params, labels: jax.Array,
           rng: jax.Array) -> tuple[ToyState, jax.Array]:
    x = jax.random.uniform(rng, (labels.shape[0],) + self.image_shape)
    state = ToyState(x=x, labels=labels, step=jnp.zeros((), jnp.int32))
    return state, self._obs(params, x, labels)

  def step(self, params, state: ToyState, action: Mapping[str, jax.Array],
           rng: jax.Array) -> tuple[ToyState, jax.Array]:
    target = params['templates'][state.labels]
    blend = action['blend'][:, None, None, None]
    temp = action['temp'][:, None, None, None]
    eps = jax.random.normal(rng, state.x.shape)
    x = state.x + blend * (target - state.x) + self.noise * temp * eps
    state = ToyState(x=x, labels=state.labels, step=state.step + 1)
    return state, self._obs(params, x, state.labels)

  def decode(self, params, state: ToyState) -> jax.Array:
    del params
    return jnp.clip(state.x, 0.0, 1.0)

  def identity(self) -> dict[str, Any]:
    return {'name': self.name, 'num_steps': self.num_steps,
            'smoothing': self.smoothing, 'noise': self.noise,
            'seed': self.seed}


def build(gen_config) -> tuple[ToyGenerator, dict[str, jax.Array]]:
  """gen_config: name='toy', optional steps (T), smoothing, noise, seed."""
  gen = ToyGenerator(num_steps=int(gen_config.get('steps', 8)),
                     smoothing=float(gen_config.get('smoothing', 0.8)),
                     noise=float(gen_config.get('noise', 0.3)),
                     seed=int(gen_config.get('seed', 0)))
  return gen, {'templates': jnp.asarray(make_templates(gen.seed))}


def feature_backbone(params, seed: int = 0, width: int = 16):
  """A frozen stand-in for a reward backbone on toy images.

  Same contract as `adagen_jax.backbones.fmnist.load_disc_backbone()`'s
  `module.apply(variables, x)`: images [B, H, W, 1] in [0, 1] (resized to
  8 x 8) -> (features, logits) with features two token sets [B, 16, width]
  (random projections of the patches at two depths) and logits float32
  [B, 10] of a template-matching classifier.

  Args:
    params: the toy generator's params (for the templates).
    seed: seed of the random projections.
    width: token width.

  Returns:
    (apply, variables).
  """
  rs = np.random.RandomState(seed)
  variables = {
      'templates': params['templates'],
      'w1': jnp.asarray(rs.randn(PATCH * PATCH, width) / PATCH, jnp.float32),
      'w2': jnp.asarray(rs.randn(width, width) / np.sqrt(width), jnp.float32),
  }

  def apply(variables, images):
    # Like a ViT backbone, it resizes whatever it gets to its input size.
    b, h, w, c = images.shape
    if (h, w) != (SIDE, SIDE):
      images = jax.image.resize(images, (b, SIDE, SIDE, c), 'linear')
    f1 = jnp.tanh(patchify(images - 0.5) @ variables['w1'])
    f2 = jnp.tanh(f1 @ variables['w2'])
    # Classes by distance to the templates: sharp enough to be confident.
    dist = jnp.mean(jnp.square(images[:, None] - variables['templates'][None]),
                    axis=(2, 3, 4))
    return [f1, f2], -50.0 * dist

  return apply, variables
