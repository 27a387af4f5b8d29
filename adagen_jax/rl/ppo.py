"""PPO as AdaNAT trains the policy (adagen_reference.md §2).

Every (trajectory, step) pair is one PPO sample. The reward is terminal and
gamma = 1, so every step's return is the trajectory's reward; returns are
normalised over the whole buffer, the advantage is R_norm - V_old(s_t) (no
GAE, no further normalisation; optionally R_norm minus its group's mean,
see make_batch) and the critic regresses R_norm:

  ratio = exp(logp_new - logp_old)
  loss  = mean(-min(ratio A, clip(ratio, 1 - eps, 1 + eps) A))
          + vf_coef mean((V(s) - R_norm)^2) - ent_coef H(sigma)

sigma is fixed (scheduled, not learned), so the entropy term is a constant:
reported, with no gradient. One Adam optimiser covers actor and critic. The
reference takes K = 5 full-batch gradient steps per iteration; minibatches are
optional.

Everything here is a pure function of arrays and pytrees: jit it with the
agent and config static (closure or `static_argnames`), shard the batch axis
as you like; there are no axis names or host callbacks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import rollout as rollout_lib

# The reference normalises with torch's default (unbiased) std.
_RETURN_EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Static PPO settings (hashable). Defaults are the reference's."""
  epochs: int = 5            # K gradient epochs per iteration
  num_minibatches: int = 1   # 1 = full batch, as the reference
  # Each gradient step's batch is split into this many equal chunks whose
  # gradients are averaged: the same step (every loss term is a mean over
  # samples), with 1/micro_batches of the activations alive at once.
  micro_batches: int = 1
  clip_eps: float = 0.2
  vf_coef: float = 0.5
  ent_coef: float = 0.01     # multiplies a constant: no gradient
  # Weight of KL(pi || pi_ref), pi_ref the policy the run started from
  # (PPOBatch.mean_ref). Not in the reference. Started at a tuned schedule,
  # the policy sits where the evaluation's gradient is small, so a noisy,
  # partly misaligned reward walks it away over the iterations; the KL
  # (RLHF's penalty towards the starting model) makes every move pay for
  # its distance, so only what the reward keeps asking for survives.
  kl_coef: float = 0.0


@flax.struct.dataclass
class TrainState:
  """PPO optimisation state; `tx` is static."""
  step: jax.Array   # int32 []: gradient steps taken
  params: Any       # {'actor': variables, 'critic': variables}
  opt_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def apply_gradients(self, grads) -> 'TrainState':
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1,
                        params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


def create_train_state(params, learning_rate: float = 1e-5,
                       tx: optax.GradientTransformation | None = None,
                       table_learning_rate: float | None = None
                       ) -> TrainState:
  """One Adam (reference: lr 1e-5, betas (0.9, 0.999)) over actor + critic.

  `table_learning_rate` (None: `learning_rate`) drives the per-step action
  tables (policy.is_table_param). Adam moves every parameter by about its
  learning rate per step, whatever the gradient's size, so a table entry
  (one action of one step, in raw units where the exploration std is ~0.6)
  moves at most epochs x iterations x lr: 0.09 over the default run's 60
  iterations at 3e-4, far short of the tuned schedules. Network weights
  reach the same action through many weights at once.
  """
  if tx is None:
    tx = optax.adam(learning_rate)
    if table_learning_rate is not None:
      tx = optax.multi_transform(
          {'net': tx, 'table': optax.adam(table_learning_rate)},
          lambda p: jax.tree_util.tree_map_with_path(
              lambda path, _: ('table' if policy_lib.is_table_param(path)
                               else 'net'), p))
  # Jitted: eagerly, each leaf's zeros compile as a program of their own.
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=jax.jit(tx.init)(params), tx=tx)


@flax.struct.dataclass
class PPOBatch:
  """M = B * T flattened samples, sample-major (index b * T + t)."""
  obs: jax.Array        # [M, N, C] (any float dtype): features of s_t
  t: jax.Array          # int32 [M]: step index
  raw: jax.Array        # float32 [M, A]: sampled pre-activation action
  logp_old: jax.Array   # float32 [M]: behaviour log-prob
  # float32 [M]: the advantage's baseline b(s_t): the behaviour critic
  # V_old(s_t) (the reference), or the mean R_norm of the sample's group
  # (make_batch's group_size).
  baseline: jax.Array
  returns: jax.Array    # float32 [M]: normalised returns R_norm
  # float32 [M, A]: the reference policy's mean at (obs, t), for
  # PPOConfig.kl_coef > 0 (with_reference_mean); None otherwise.
  mean_ref: jax.Array | None = None


def normalize_returns(returns: jax.Array) -> jax.Array:
  """(r - mean) / (std + 1e-7) over all entries, std unbiased (ddof 1)."""
  returns = returns.astype(jnp.float32)
  mean = jnp.mean(returns)
  std = jnp.std(returns, ddof=1)
  return (returns - mean) / (std + _RETURN_EPS)


def group_means(x: jax.Array, group_size: int) -> jax.Array:
  """[N] -> [N]: each entry replaced by the mean of its run of group_size
  consecutive entries."""
  return jnp.repeat(x.reshape(-1, group_size).mean(axis=1), group_size)


def make_batch(trajectory: rollout_lib.Trajectory,
               rewards: jax.Array, group_size: int = 1) -> PPOBatch:
  """Flattens a rollout and its terminal rewards float32 [B] into a batch.

  The returns of all B * T steps are normalised together, exactly as the
  reference does over its buffer (each reward counted T times, unbiased std).
  Flattening is sample-major ([T, B] -> [B, T] -> [B * T]) so a batch axis
  sharded over devices stays contiguous per device: no data moves.
  Concatenating several rollouts' trajectories before this call (along B)
  gives the reference's multi-rollout buffer.

  group_size G > 1: the trajectories come in runs of G from one initial
  state (rollout's group_size). The baseline is then the group's mean
  return instead of the critic: the initial noise, which the critic cannot
  see at step 0 and which dominates the reward differences between
  samples, cancels, and the advantage measures the actions alone (the
  group baseline of RLOO / GRPO, without GRPO's per-group scaling). The
  critic still regresses R_norm.
  """
  if trajectory.obs is None:
    raise ValueError('PPO needs the observations: roll out with '
                     'keep_obs=True.')
  num_steps, batch = trajectory.raw.shape[:2]

  def flat(x):  # [T, B, ...] -> [B * T, ...]
    return jnp.swapaxes(x, 0, 1).reshape((batch * num_steps,) + x.shape[2:])

  returns = normalize_returns(
      jnp.repeat(rewards.astype(jnp.float32), num_steps))
  if group_size > 1:
    if batch % group_size:
      raise ValueError(f'{batch} trajectories do not split into groups of '
                       f'{group_size}.')
    # Sample-major: a group's G trajectories are G * T consecutive entries.
    baseline = group_means(returns, group_size * num_steps)
  else:
    baseline = flat(trajectory.value)
  return PPOBatch(
      obs=flat(trajectory.obs),
      t=jnp.tile(jnp.arange(num_steps, dtype=jnp.int32), batch),
      raw=flat(trajectory.raw), logp_old=flat(trajectory.logp),
      baseline=baseline, returns=returns)


def with_reference_mean(batch: PPOBatch, agent: policy_lib.Agent,
                        ref_params) -> PPOBatch:
  """`batch` with mean_ref: the mean of the policy `ref_params` at its
  observations (one actor forward, no gradient)."""
  mean = agent.mean(ref_params, batch.obs, batch.t)
  return batch.replace(mean_ref=jax.lax.stop_gradient(mean))


def ppo_loss(params, agent: policy_lib.Agent, batch: PPOBatch,
             sigma: jax.Array, clip_eps: float = 0.2, vf_coef: float = 0.5,
             ent_coef: float = 0.01, kl_coef: float = 0.0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The clipped PPO loss (float32 []) and its pieces.

  Args:
    params: {'actor', 'critic'} variables being optimised.
    agent: the Agent.
    batch: a PPOBatch of M samples.
    sigma: float32 [] (or [A]) std the batch was sampled with.
    clip_eps, vf_coef, ent_coef: the reference's 0.2, 0.5, 0.01.
    kl_coef: weight of KL(pi || pi_ref) (static; > 0 needs batch.mean_ref).
      Both are Gaussians of the same sigma, so the KL is
      sum_a (mean - mean_ref)^2 / (2 sigma^2), averaged over samples.

  Returns:
    (loss, metrics): metrics has policy_loss, value_loss, entropy, approx_kl
    (mean of (ratio - 1) - log ratio, >= 0), clip_frac, ratio, value, and
    kl_ref when kl_coef > 0.
  """
  logp = agent.log_prob(params, batch.obs, batch.t, batch.raw, sigma)
  value = agent.value(params, batch.obs, batch.t)
  log_ratio = logp - batch.logp_old
  ratio = jnp.exp(log_ratio)
  adv = batch.returns - batch.baseline
  surr = jnp.minimum(ratio * adv,
                     jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
  policy_loss = -jnp.mean(surr)
  value_loss = jnp.mean(jnp.square(value - batch.returns))
  entropy = jax.lax.stop_gradient(
      policy_lib.gaussian_entropy(sigma, batch.raw.shape[-1]))
  loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
  kl_metrics = {}
  if kl_coef > 0:
    if batch.mean_ref is None:
      raise ValueError('kl_coef > 0 needs the reference policy\'s means: '
                       'build the batch with with_reference_mean.')
    # The same actor forward as log_prob's: XLA computes it once.
    mean = agent.mean(params, batch.obs, batch.t)
    kl_ref = jnp.mean(jnp.sum(jnp.square(mean - batch.mean_ref)
                              / (2.0 * jnp.square(sigma)), axis=-1))
    loss = loss + kl_coef * kl_ref
    kl_metrics['kl_ref'] = kl_ref
  metrics = {
      'policy_loss': policy_loss, 'value_loss': value_loss,
      'entropy': entropy,
      'approx_kl': jnp.mean((ratio - 1.0) - log_ratio),
      'clip_frac': jnp.mean((jnp.abs(ratio - 1.0) > clip_eps)
                            .astype(jnp.float32)),
      'ratio': jnp.mean(ratio), 'value': jnp.mean(value), **kl_metrics,
  }
  return loss, metrics


def ppo_update(state: TrainState, agent: policy_lib.Agent, batch: PPOBatch,
               sigma: jax.Array, config: PPOConfig = PPOConfig(),
               rng: jax.Array | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """K epochs of PPO gradient steps on one batch, as one `lax.scan`.

  Args:
    state: the TrainState.
    agent: the Agent (static).
    batch: PPOBatch of M samples (from `make_batch`, or several concatenated).
    sigma: float32 [] (or [A]) exploration std of the rollouts.
    config: PPOConfig (static).
    rng: key for the minibatch shuffles; needed iff num_minibatches > 1.

  Returns:
    (state, metrics): metrics are means over all gradient steps (loss and
    ppo_loss's pieces), plus 'loss_first', the loss of the first step (at
    the behaviour parameters when the batch is fresh).
  """
  nmb, micro = config.num_minibatches, config.micro_batches
  m = batch.t.shape[0]
  if nmb > 1:
    if rng is None:
      raise ValueError('ppo_update needs rng when num_minibatches > 1.')
    if m % nmb:
      raise ValueError(f'{m} samples do not split into {nmb} minibatches.')
  if (m // nmb) % micro:
    raise ValueError(f'minibatches of {m // nmb} samples do not split into '
                     f'{micro} micro-batches (ppo.micro_batches).')
  grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)

  def loss_and_grads(params, mb):
    """Value and gradient of ppo_loss on `mb`, `micro` chunks at a time."""
    if micro == 1:
      return grad_fn(params, agent, mb, sigma, config.clip_eps,
                     config.vf_coef, config.ent_coef, config.kl_coef)
    # Sample-major chunks: chunk j holds samples j*n .. (j+1)*n - 1.
    chunks = jax.tree.map(
        lambda x: x.reshape((micro, x.shape[0] // micro) + x.shape[1:]), mb)

    def one(chunk):
      return grad_fn(params, agent, chunk, sigma, config.clip_eps,
                     config.vf_coef, config.ent_coef, config.kl_coef)

    def add(total, chunk):
      return jax.tree.map(jnp.add, total, one(chunk)), None

    zeros = jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype),
        jax.eval_shape(one, jax.tree.map(lambda x: x[0], chunks)))
    total, _ = jax.lax.scan(add, zeros, chunks)
    return jax.tree.map(lambda x: x / micro, total)

  def step(state, mb):
    (loss, metrics), grads = loss_and_grads(state.params, mb)
    return state.apply_gradients(grads), dict(metrics, loss=loss)

  def full_batch_epoch(state, _):
    state, metrics = step(state, batch)
    return state, jax.tree.map(lambda x: x[None], metrics)

  def minibatch_epoch(state, key):
    perm = jax.random.permutation(key, m).reshape(nmb, m // nmb)
    return jax.lax.scan(step, state, jax.tree.map(lambda x: x[perm], batch))

  if nmb == 1:
    state, metrics = jax.lax.scan(full_batch_epoch, state, None,
                                  length=config.epochs)
  else:
    state, metrics = jax.lax.scan(minibatch_epoch, state,
                                  jax.random.split(rng, config.epochs))
  # metrics leaves: [epochs, minibatches]
  out = jax.tree.map(jnp.mean, metrics)
  out['loss_first'] = metrics['loss'][0, 0]
  return state, out
