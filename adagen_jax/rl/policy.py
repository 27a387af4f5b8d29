"""The AdaGen policy and value networks, and the Gaussian agent around them.

`PolicyNet` is the reference actor (adagen_reference.md §1.1), generic over
observations [B, N, C] with N a square number:

  x [B, N, C] -> x_embedder Dense(C -> hidden)        (only if C != hidden)
  c = TimestepEmbedder(t)                              (DiT, cos first)
  x = AdaLN1(x, c) -> [B, s, s, hidden], s = sqrt(N)
  depthwise conv 3x3 stride 2, pad 1 + GELU -> [B, ceil(s/2), ceil(s/2), hidden]
  pointwise conv -> hidden / 4 + GELU
  flatten channel-major (C, H, W), as PyTorch does
  linear1 -> 2 hidden, AdaLN2, GELU; linear2 -> hidden, AdaLN3, GELU
  linear3 -> out (zero-init)

At the reference size (C = 768, N = 256, hidden 512, out 4) it has
11,876,484 parameters (linear1 alone 8,389,632), the paper's "12M". The value
network is the same class with out = 1 and its own parameters.

The policy works in pre-activation space: its output is the mean of a
Gaussian with a fixed, scheduled std `sigma`; the rollout adds the heuristic
residual, smooths and activates (rl/rollout.py). Zero-initialised `linear3`
and AdaLN modulations make an untrained policy's mean exactly 0, so it
reproduces the hand-crafted schedule exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adagen_jax import ops
from adagen_jax.rl import rollout as rollout_lib

Variables = Any  # a flax variables dict {'params': ...}
_LOG_2PI = math.log(2.0 * math.pi)

_dense = functools.partial(nn.Dense,
                           kernel_init=nn.initializers.xavier_uniform(),
                           bias_init=nn.initializers.zeros)


class TimestepEmbedder(nn.Module):
  """DiT's step embedding: sinusoid (cos first) -> Linear -> SiLU -> Linear."""
  hidden_size: int
  freq_dim: int = 256
  max_period: float = 10000.0

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    """t: int or float [B] raw step index -> float32 [B, hidden]."""
    half = self.freq_dim // 2
    freqs = jnp.exp(-math.log(self.max_period) *
                    jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    init = nn.initializers.normal(0.02)
    h = _dense(self.hidden_size, kernel_init=init, name='mlp_0')(emb)
    return _dense(self.hidden_size, kernel_init=init, name='mlp_2')(
        nn.silu(h))


class AdaLN(nn.Module):
  """LayerNorm without affine, modulated by c: x (1 + scale) + shift."""

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    """x: float [B, D] or [B, N, D]; c: float [B, Dc] -> like x."""
    mod = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.zeros,
                   name='adaLN_modulation')(nn.silu(c))
    shift, scale = jnp.split(mod, 2, axis=-1)  # the reference: shift first
    if x.ndim == 3:
      shift, scale = shift[:, None], scale[:, None]
    x = nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False,
                     use_fast_variance=False)(x)
    return x * (1.0 + scale) + shift


class DepthwiseConv3x3S2(nn.Module):
  """Depthwise 3x3 conv, stride 2, padding 1, as nine strided slices.

  Same parameters as nn.Conv(C, (3, 3), feature_group_count=C) (kernel
  [3, 3, 1, C], bias [C]) and the same output. Written out because XLA:CPU
  runs the gradient of a grouped convolution inside a `while` loop (PPO's
  scan over epochs) ~30x slower than this form; elsewhere the two are equal.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float32 [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]."""
    c = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.xavier_uniform(),
                        (3, 3, 1, c), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    h_out, w_out = -(-x.shape[1] // 2), -(-x.shape[2] // 2)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = bias
    for i in range(3):
      for j in range(3):
        out = out + xp[:, i:i + 2 * h_out - 1:2,
                       j:j + 2 * w_out - 1:2] * kernel[i, j, 0]
    return out


class PolicyNet(nn.Module):
  """The AdaGen actor / critic over per-token generator features.

  Attributes:
    out_size: A (action dims) for the actor, 1 for the critic.
    hidden_size: 512 in the reference.
  """
  out_size: int
  hidden_size: int = 512

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    """x: float [B, N, C], t: int32 [] or [B] step index -> float32 [B, out]."""
    b, n, c = x.shape
    side = math.isqrt(n)
    if side * side != n:
      raise ValueError(f'PolicyNet needs a square token count, got N={n}.')
    hid = self.hidden_size
    x = x.astype(jnp.float32)
    t = jnp.broadcast_to(t, (b,))
    if c != hid:
      x = _dense(hid, name='x_embedder')(x)
    cond = TimestepEmbedder(hid, name='t_embedder')(t)
    x = AdaLN(name='adaLN1')(x, cond)
    x = x.reshape(b, side, side, hid)  # tokens are row-major
    conv_init = dict(kernel_init=nn.initializers.xavier_uniform(),
                     bias_init=nn.initializers.zeros)
    # PyTorch's F.gelu: the exact erf form (Flax defaults to the tanh one).
    # Explicit (1, 1) padding: 'SAME' with stride 2 pads (0, 1) in XLA.
    x = ops.gelu(DepthwiseConv3x3S2(name='dw_conv')(x))
    x = ops.gelu(nn.Conv(hid // 4, (1, 1), name='pw_conv', **conv_init)(x))
    # Channel-major flatten keeps linear1 interchangeable with PyTorch's.
    x = x.transpose(0, 3, 1, 2).reshape(b, -1)
    x = ops.gelu(AdaLN(name='adaLN2')(_dense(2 * hid, name='linear1')(x),
                                      cond))
    x = ops.gelu(AdaLN(name='adaLN3')(_dense(hid, name='linear2')(x), cond))
    return _dense(self.out_size, kernel_init=nn.initializers.zeros,
                  name='linear3')(x)


class NonAdaptivePolicy(nn.Module):
  """Ablation: a learnable [T, out] table, the same actions for every sample.

  Zero-initialised, so it starts at the heuristic schedule like PolicyNet.
  """
  out_size: int
  num_steps: int

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    """x: [B, ...] (only its batch size is used), t: int32 [] or [B]."""
    table = self.param('table', nn.initializers.zeros,
                       (self.num_steps, self.out_size), jnp.float32)
    return table[jnp.broadcast_to(t, x.shape[:1])]


class StepBiasPolicy(nn.Module):
  """PolicyNet plus a learnable per-step table: mean = table[t] + net(x, t).

  The table is the non-adaptive policy; the network adds each sample's
  deviation from it. So the adaptive policy holds the non-adaptive one as a
  special case, and the schedule-wide shift (which every sample wants) can
  move at the table's own learning rate (`table_learning_rate`) instead of
  through the network's last layer. Both parts start at zero.
  """
  out_size: int
  num_steps: int
  hidden_size: int = 512

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    table = NonAdaptivePolicy(self.out_size, self.num_steps, name='step')
    net = PolicyNet(out_size=self.out_size, hidden_size=self.hidden_size,
                    name='net')
    return table(x, t) + net(x, t)


def is_table_param(path) -> bool:
  """True for the per-step table of NonAdaptivePolicy / StepBiasPolicy."""
  return any(getattr(k, 'key', None) == 'table' for k in path)


def set_table(agent_params, table: jax.Array):
  """agent_params with the actor's per-step table set to float32 [T, A].

  Raises ValueError if the actor has no table (a plain PolicyNet).
  """
  found = []

  def put(path, leaf):
    if not is_table_param(path):
      return leaf
    found.append(path)
    return jnp.asarray(table, leaf.dtype).reshape(leaf.shape)
  out = {'actor': jax.tree_util.tree_map_with_path(put, agent_params['actor']),
         'critic': agent_params['critic']}
  if not found:
    raise ValueError('the actor has no per-step table')
  return out


def gaussian_log_prob(x: jax.Array, mean: jax.Array,
                      sigma: jax.Array) -> jax.Array:
  """float32 [B]: log N(x; mean, diag sigma^2) summed over the last axis.

  sigma: float32 [] or [A], broadcast over the action dims.
  """
  x, mean = x.astype(jnp.float32), mean.astype(jnp.float32)
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), mean.shape)
  z = (x - mean) / sigma
  return jnp.sum(-0.5 * jnp.square(z) - jnp.log(sigma) - 0.5 * _LOG_2PI,
                 axis=-1)


def gaussian_entropy(sigma: jax.Array, action_size: int) -> jax.Array:
  """float32 []: entropy of N(., diag sigma^2) over `action_size` dims."""
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (action_size,))
  return jnp.sum(0.5 * (1.0 + _LOG_2PI) + jnp.log(sigma))


def action_std(iteration, init: float = 0.6, decay_rate: float = 0.3,
               decay_steps: Sequence[int] = (500,),
               minimum: float = 0.1) -> jax.Array:
  """The reference's step-decayed exploration std (AdaNAT train.py).

  std = max(init - decay_rate * #{s in decay_steps : s <= iteration}, minimum)

  The reference recomputes it after PPO update `iteration` (0-based), for the
  rollouts of the next one, so with the defaults updates 0..500 use 0.6 and
  later ones 0.3. Works on Python ints and traced int32 scalars.

  Returns:
    float32 [] (pass it as the traced `sigma`, so changes do not recompile).
  """
  steps = jnp.asarray(tuple(decay_steps), jnp.int32).reshape(-1)
  count = jnp.sum(steps <= iteration)
  return jnp.maximum(init - decay_rate * count, minimum).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Agent:
  """A Gaussian actor (mean network, fixed sigma) plus a separate critic.

  Hashable (its fields are Linen modules), so it can be a static jit argument
  or a closure constant. Parameters live outside: {'actor': variables,
  'critic': variables}, each a flax variables dict {'params': ...}.

  Attributes:
    actor: maps (obs [B, N, C], t) -> float32 [B, A] pre-activation means.
    critic: maps (obs, t) -> float32 [B, 1] state values.
  """
  actor: nn.Module
  critic: nn.Module

  def init(self, rng: jax.Array, obs_shape: tuple[int, int]) -> dict:
    """obs_shape: (N, C) -> {'actor': variables, 'critic': variables}."""
    k_actor, k_critic = jax.random.split(rng)
    obs = jnp.zeros((1,) + tuple(obs_shape), jnp.float32)
    t = jnp.zeros((), jnp.int32)
    return {'actor': self.actor.init(k_actor, obs, t),
            'critic': self.critic.init(k_critic, obs, t)}

  def mean(self, params, obs: jax.Array, t: jax.Array) -> jax.Array:
    """obs [B, N, C], t int32 [] or [B] -> float32 [B, A] Gaussian mean."""
    return self.actor.apply(params['actor'], obs, t).astype(jnp.float32)

  def value(self, params, obs: jax.Array, t: jax.Array) -> jax.Array:
    """obs [B, N, C], t int32 [] or [B] -> float32 [B] V(s_t)."""
    return self.critic.apply(params['critic'], obs, t)[:, 0].astype(
        jnp.float32)

  def log_prob(self, params, obs: jax.Array, t: jax.Array, raw: jax.Array,
               sigma: jax.Array) -> jax.Array:
    """float32 [B]: log pi(raw | obs, t), summed over the A action dims."""
    return gaussian_log_prob(raw, self.mean(params, obs, t), sigma)

  def make_act_fn(self, params, sigma: jax.Array, explore: bool, *,
                  with_value: bool = True) -> rollout_lib.ActFn:
    """The policy as a rollout `ActFn`.

    Args:
      params: {'actor', 'critic'} variables.
      sigma: float32 [] (or [A]) exploration std, a traced array.
      explore: True samples raw ~ N(mean, sigma^2) (training rollouts);
        False takes raw = mean (evaluation), with logp of the mean (+inf,
        not NaN, for sigma = 0).
      with_value: False skips the critic (value = 0) when nobody reads it.

    Returns:
      act(obs [B, N, C], t int32 [], rng) -> (raw float32 [B, A],
      logp float32 [B], value float32 [B]).
    """
    def act(obs, t, rng):
      mean = self.mean(params, obs, t)
      if explore:
        raw = mean + sigma * jax.random.normal(rng, mean.shape, jnp.float32)
        logp = gaussian_log_prob(raw, mean, sigma)
      else:
        # log N(mean; mean, sigma^2) in closed form: no 0 / 0 when sigma = 0.
        raw = mean
        sig = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), mean.shape)
        logp = -jnp.sum(jnp.log(sig) + 0.5 * _LOG_2PI, axis=-1)
      if with_value:
        value = self.value(params, obs, t)
      else:
        value = jnp.zeros(mean.shape[:1], jnp.float32)
      return raw, logp, value
    return act


def make_agent(action_size: int, num_steps: int, *, adaptive: bool = True,
               hidden_size: int = 512,
               critic_hidden_size: int | None = None,
               step_bias: bool = False) -> Agent:
  """The AdaGen agent, or the non-adaptive ablation (table actor).

  Args:
    action_size: A, the generator's `action_spec.size`.
    num_steps: T, the generator's `num_steps` (sizes the ablation's table).
    adaptive: False swaps the actor for `NonAdaptivePolicy`; the critic stays
      a feature-based PolicyNet either way, so both variants get the same
      variance reduction and differ only in what the actor can see.
    hidden_size: actor width (512 in the reference).
    critic_hidden_size: critic width; defaults to `hidden_size`.
    step_bias: adaptive only: add a per-step table (`StepBiasPolicy`).
  """
  if adaptive and step_bias:
    actor = StepBiasPolicy(out_size=action_size, num_steps=num_steps,
                           hidden_size=hidden_size)
  elif adaptive:
    actor = PolicyNet(out_size=action_size, hidden_size=hidden_size)
  else:
    actor = NonAdaptivePolicy(out_size=action_size, num_steps=num_steps)
  critic = PolicyNet(out_size=1,
                     hidden_size=critic_hidden_size or hidden_size)
  return Agent(actor=actor, critic=critic)
