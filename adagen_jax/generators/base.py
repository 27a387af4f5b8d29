"""The generator protocol every paradigm implements, and its ActionSpec.

An iterative generator is a small object of pure functions; the RL code never
looks inside. A rollout is

  state, obs = gen.init(params, labels, rng)
  for t in range(gen.num_steps):              # one jax.lax.scan
    action = schedule_or_policy(obs, t)       # dict name -> float32 [B]
    state, obs = gen.step(params, state, action, rng_t)
  images = gen.decode(params, state)          # float32 [B, H, W, C] in [0, 1]

Actions travel in *activated* space (a mask ratio in (0, 1), a temperature
> 0, ...). The policy works in *pre-activation* space; `ActionSpec` holds the
maps between the two and the hand-crafted schedule each paradigm ships.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np

# Clamp used by the reference's inverse sigmoid (adagen_reference.md §1.4).
_SIGMOID_EPS = 1e-6
# Below this, inverse softplus log(expm1(x)) loses all precision.
_SOFTPLUS_MIN = 1e-6

ACTIVATIONS = ('sigmoid', 'softplus', 'scaled_sigmoid')


@dataclasses.dataclass(frozen=True)
class ActionDim:
  """One action dimension.

  Attributes:
    name: the reference's key (e.g. 'manual_gen_ratios').
    activation: 'sigmoid' -> (0, 1); 'softplus' -> (0, inf);
      'scaled_sigmoid' -> (0, scale) (VAR's top-k uses scale 4096).
    scale: multiplier of 'scaled_sigmoid'.
  """
  name: str
  activation: str
  scale: float = 1.0

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'Unknown activation {self.activation!r} for action '
                       f'{self.name!r}; expected one of {ACTIVATIONS}.')


@dataclasses.dataclass(frozen=True)
class ActionSpec:
  """The actions of one paradigm, their activations and baseline schedule.

  Attributes:
    dims: the ordered action dimensions; raw policy outputs are [..., A] in
      this order.
    heuristic: T -> float64 [T, A] hand-crafted schedule in activated space.
    smoothing: EMA coefficient s of action smoothing in pre-activation space
      (0 disables it): a_t = s a_{t-1} + (1 - s) raw_t, with no smoothing at
      t = 0.
  """
  dims: tuple[ActionDim, ...]
  heuristic: Callable[[int], np.ndarray]
  smoothing: float = 0.0

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(d.name for d in self.dims)

  @property
  def size(self) -> int:
    return len(self.dims)

  def activate(self, pre: jax.Array) -> dict[str, jax.Array]:
    """float [..., A] pre-activation -> dict name -> float [...]."""
    out = {}
    for i, d in enumerate(self.dims):
      x = pre[..., i]
      if d.activation == 'sigmoid':
        out[d.name] = jax.nn.sigmoid(x)
      elif d.activation == 'softplus':
        out[d.name] = jax.nn.softplus(x)
      else:
        out[d.name] = jax.nn.sigmoid(x) * d.scale
    return out

  def inverse_activate(self, act: np.ndarray) -> np.ndarray:
    """float [..., A] activated -> float64 [..., A] pre-activation (NumPy)."""
    act = np.asarray(act, np.float64)
    cols = []
    for i, d in enumerate(self.dims):
      x = act[..., i]
      if d.activation == 'softplus':
        x = np.maximum(x, _SOFTPLUS_MIN)
        cols.append(x + np.log(-np.expm1(-x)))
      else:
        x = np.clip(x / d.scale, _SIGMOID_EPS, 1 - _SIGMOID_EPS)
        cols.append(np.log(x / (1 - x)))
    return np.stack(cols, axis=-1)

  def residual(self, num_steps: int) -> np.ndarray:
    """float32 [T, A]: the pre-activation table added to the policy output.

    The inverse-activated heuristic is also inverse-smoothed, so a policy
    whose output is zero reproduces the heuristic exactly after EMA smoothing
    and activation.
    """
    pre = self.inverse_activate(self.heuristic(num_steps))
    return inverse_smooth(pre, self.smoothing).astype(np.float32)


def smooth_step(prev: jax.Array, raw: jax.Array, t: jax.Array,
                s: float) -> jax.Array:
  """One EMA step in pre-activation space; t == 0 passes `raw` through."""
  return jnp.where(t == 0, raw, s * prev + (1.0 - s) * raw)


def inverse_smooth(seq: np.ndarray, s: float) -> np.ndarray:
  """Inverse of the EMA along axis 0: out[0] = seq[0]."""
  seq = np.asarray(seq, np.float64)
  if s == 0.0:
    return seq
  out = seq.copy()
  out[1:] = (seq[1:] - s * seq[:-1]) / (1.0 - s)
  return out


Params = Any
State = Any  # a flax.struct.dataclass per paradigm.


def interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """[B, ...] twice -> [2B, ...] with a[i] at row 2i and b[i] at 2i + 1.

  Interleaved rather than concatenated (the guided forward's conditional
  and null-class rows) so that a batch sharded over devices stays local:
  each shard holds its own pairs.
  """
  return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def chunk_count(rows: int, max_rows: int, devices: int) -> int:
  """The fewest sequential chunks of `rows` with <= max_rows per device.

  The count divides each device's rows (all rows where they do not split
  evenly over the devices); max_rows <= 0 means one chunk.
  """
  if max_rows <= 0:
    return 1
  local = rows // devices if rows % devices == 0 else rows
  return next(k for k in range(-(-local // max_rows), local + 1)
              if local % k == 0)


def in_chunks(fn: Callable[..., Any], *xs: jax.Array, max_rows: int) -> Any:
  """fn(*xs) over the leading (batch) axis in sequential chunks.

  XLA:CPU runs a transformer forward fastest when its activations fit the
  cache: on 2 CPU devices the mid-size MaskGIT rollout at batch 32 runs 1.6x
  faster with 4 rows per device per forward than with all 32 at once
  (docs/RESULTS.md, Speed). Chunk j holds rows j, j + k, j + 2k, ... (k
  chunks), so the rows of a batch sharded over devices stay on their
  device. The result equals fn(*xs) for any fn that treats rows
  independently.

  Args:
    fn: maps arrays [R', ...] (one chunk) to a pytree of [R', ...] arrays.
    *xs: arrays [R, ...].
    max_rows: the most rows per device in one chunk; <= 0 runs fn once.
  """
  rows = xs[0].shape[0]
  k = chunk_count(rows, max_rows, jax.device_count())
  if k == 1:
    return fn(*xs)
  split = lambda x: x.reshape((rows // k, k) + x.shape[1:]).swapaxes(0, 1)
  merge = lambda y: y.swapaxes(0, 1).reshape((rows,) + y.shape[2:])
  out = jax.lax.map(lambda c: fn(*c), tuple(split(x) for x in xs))
  return jax.tree.map(merge, out)


class Generator(Protocol):
  """A frozen iterative generator as pure functions.

  Attributes:
    name: registry name ('maskgit', 'dit', 'sit', 'var').
    action_spec: its ActionSpec.
    num_steps: T, the number of policy decisions of one rollout.
    obs_shape: (N, C) of the per-sample features handed to the policy; N is a
      square number (tokens of a square map).
    image_shape: (H, W, C) of decoded images.
    num_classes: number of real classes (the null class, if any, is extra).
    stochastic: whether `step` samples (lookahead needs it).

  A generator whose images pass a tokenizer may also define
  `reconstruct(params, images) -> images` (encode then decode, float32
  [B, H, W, C] in [0, 1]), which `reward.real_reconstructed` needs.
  """
  name: str
  action_spec: ActionSpec
  num_steps: int
  obs_shape: tuple[int, int]
  image_shape: tuple[int, int, int]
  num_classes: int
  stochastic: bool

  def init(self, params: Params, labels: jax.Array,
           rng: jax.Array) -> tuple[State, jax.Array]:
    """labels int32 [B] -> (state, obs float32 [B, N, C])."""

  def step(self, params: Params, state: State, action: Mapping[str, jax.Array],
           rng: jax.Array) -> tuple[State, jax.Array]:
    """One transition; action: name -> float32 [B] in activated space."""

  def decode(self, params: Params, state: State) -> jax.Array:
    """-> float32 [B, H, W, C] images in [0, 1]."""

  def identity(self) -> dict[str, Any]:
    """JSON-able description (name, sizes, weights id) for exports."""
