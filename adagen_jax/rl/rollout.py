"""Rollouts: one `jax.lax.scan` over the T decisions of a frozen generator.

The same scan runs the hand-crafted schedule (no policy: the raw action is 0
and only the heuristic residual acts) and a learned policy, so the baseline
and AdaGen share every line of generation code.

Per step t, with obs_t the generator's features of state_t:

  raw_t, logp_t, v_t = act_fn(obs_t, t, rng)         # pre-activation, [B, A]
  pre_t = EMA_s(pre_{t-1}, raw_t + residual[t])      # action smoothing
  action_t = activate(pre_t)                          # e.g. ratio in (0, 1)
  state_{t+1}, obs_{t+1} = generator.step(params, state_t, action_t, rng)
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import flax
import jax
import jax.numpy as jnp

from adagen_jax.generators import base

# act_fn(obs [B, N, C], t int32 [], rng) -> (raw float32 [B, A],
#   logp float32 [B], value float32 [B]).
ActFn = Callable[[jax.Array, jax.Array, jax.Array],
                 tuple[jax.Array, jax.Array, jax.Array]]
# transition(params, state, action, rng, t) -> (state, obs): one generator
# step; refinement (lookahead) wraps generator.step with this signature.
Transition = Callable[..., tuple[Any, jax.Array]]


@flax.struct.dataclass
class Trajectory:
  """What one rollout leaves for PPO, rewards and plots."""
  obs: jax.Array | None  # obs_dtype [T, B, N, C]: features before each act
  raw: jax.Array         # float32 [T, B, A]: pre-activation policy samples
  logp: jax.Array        # float32 [T, B]: log N(raw; mean, sigma^2), sum A
  value: jax.Array       # float32 [T, B]: V(obs_t, t) of the behaviour critic
  actions: jax.Array     # float32 [T, B, A]: executed, activated actions
  images: jax.Array      # float32 [B, H, W, C] in [0, 1]
  labels: jax.Array      # int32 [B]


def heuristic_act(action_size: int) -> ActFn:
  """The hand-crafted schedule: zero raw action, so residual = heuristic."""
  def act(obs, t, rng):
    del t, rng
    b = obs.shape[0]
    zeros = jnp.zeros((b,), jnp.float32)
    return jnp.zeros((b, action_size), jnp.float32), zeros, zeros
  return act


def table_act(table: jax.Array) -> ActFn:
  """A fixed raw action per step, float32 [T, A], for every sample.

  table = residual' - residual runs another hand-crafted schedule (e.g. a
  tuned one) through the same scan and smoothing as the policy.
  """
  def act(obs, t, rng):
    del rng
    b = obs.shape[0]
    zeros = jnp.zeros((b,), jnp.float32)
    return jnp.broadcast_to(table[t], (b, table.shape[-1])), zeros, zeros
  return act


def actions_from_raw(spec: base.ActionSpec, residual: jax.Array,
                     prev: jax.Array, raw: jax.Array,
                     t: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """raw [B, A] -> (smoothed pre-activation [B, A], activated action dict)."""
  pre = base.smooth_step(prev, raw + residual[t], t, spec.smoothing)
  return pre, spec.activate(pre)


def check_obs(generator: base.Generator, obs: jax.Array, batch: int):
  """The protocol's observation contract: float [B, *obs_shape].

  chex checks shapes while tracing, so a generator that breaks the
  contract fails at its first rollout with the names of what differs,
  and a compiled rollout pays nothing.
  """
  chex.assert_shape(obs, (batch,) + tuple(generator.obs_shape))
  chex.assert_type(obs, float)


def _grouped_init(generator: base.Generator, gen_params, labels: jax.Array,
                  rng: jax.Array, group_size: int):
  """generator.init on every group_size-th label, each sample's state repeated.

  A leaf is batched along the one axis whose size differs between the
  small and the full init: that axis holds k consecutive rows per sample
  (k = 1, or 2 for VAR's interleaved conditional / unconditional rows in
  its hidden states and key-value cache, on axis 1 of the cache), and each
  sample's k rows are repeated group_size times together. The rest (step
  counters, shared tables) are kept as they are.
  """
  batch = labels.shape[0]
  if batch % group_size:
    raise ValueError(f'a batch of {batch} does not split into groups of '
                     f'{group_size} (ppo.group_size).')
  groups = batch // group_size
  small = generator.init(gen_params, labels[::group_size], rng)
  full = jax.eval_shape(generator.init, gen_params, labels, rng)

  def expand(x, f):
    axes = [a for a, (n, m) in enumerate(zip(x.shape, f.shape)) if n != m]
    if not axes:
      return x
    a, = axes
    k = x.shape[a] // groups
    rows = x.reshape(x.shape[:a] + (groups, k) + x.shape[a + 1:])
    return jnp.repeat(rows, group_size, axis=a).reshape(f.shape)

  return jax.tree.map(expand, small, full)


def rollout(generator: base.Generator, gen_params, labels: jax.Array,
            rng: jax.Array, act_fn: ActFn | None = None, *,
            keep_obs: bool = True, obs_dtype=jnp.float32,
            transition: Transition | None = None,
            group_size: int = 1) -> Trajectory:
  """Generates images for `labels` int32 [B]; jit it with `generator` static.

  Args:
    generator: the frozen generator (its parameters get no gradient).
    gen_params: its parameters.
    labels: int32 [B] class labels.
    rng: key for the generator's sampling and the policy's exploration.
    act_fn: the policy; None runs the hand-crafted schedule.
    keep_obs: keep the [T, B, N, C] observations (PPO needs them; sampling
      does not, and they are the largest array of a rollout).
    obs_dtype: dtype the kept observations are stored in.
    transition: replaces `generator.step` (e.g. value lookahead); it also
      receives the step index t.
    group_size: G > 1 starts each run of G consecutive samples (which must
      share their label) from one initial state: their terminal rewards
      then differ only through the policy's actions (and the generator's
      own step noise, if any), which `ppo.make_batch` uses as a baseline.

  Returns:
    The Trajectory.
  """
  spec = generator.action_spec
  num_steps = generator.num_steps
  residual = jnp.asarray(spec.residual(num_steps))  # float32 [T, A]
  if act_fn is None:
    act_fn = heuristic_act(spec.size)
  if transition is None:
    transition = lambda p, s, a, k, t: generator.step(p, s, a, k)
  gen_params = jax.lax.stop_gradient(gen_params)
  rng_init, rng_steps = jax.random.split(rng)
  batch = labels.shape[0]
  chex.assert_type(labels, int)
  if group_size > 1:
    state, obs = _grouped_init(generator, gen_params, labels, rng_init,
                               group_size)
  else:
    state, obs = generator.init(gen_params, labels, rng_init)
  check_obs(generator, obs, batch)
  prev = jnp.zeros((batch, spec.size), jnp.float32)

  def body(carry, xs):
    state, obs, prev = carry
    t, key = xs
    k_act, k_step = jax.random.split(key)
    raw, logp, value = act_fn(obs, t, k_act)
    chex.assert_shape(raw, (batch, spec.size))
    chex.assert_shape((logp, value), (batch,))
    pre, action = actions_from_raw(spec, residual, prev, raw, t)
    state, next_obs = transition(gen_params, state, action, k_step, t)
    check_obs(generator, next_obs, batch)
    out = (obs.astype(obs_dtype) if keep_obs else None, raw, logp, value,
           jnp.stack([action[n] for n in spec.names], axis=-1))
    return (state, next_obs, pre), out

  (state, _, _), (all_obs, raw, logp, value, actions) = jax.lax.scan(
      body, (state, obs, prev),
      (jnp.arange(num_steps), jax.random.split(rng_steps, num_steps)))
  images = generator.decode(gen_params, state)
  chex.assert_shape(images, (batch,) + tuple(generator.image_shape))
  chex.assert_type(images, float)
  return Trajectory(obs=all_obs, raw=raw, logp=logp, value=value,
                    actions=actions, images=images, labels=labels)
