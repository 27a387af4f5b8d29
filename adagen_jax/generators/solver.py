"""Policy-timed ODE solvers of DiT (VP diffusion) and SiT (rectified flow).

AdaGen's DiT and SiT samplers (adagen_reference.md §6) are DPM-Solver++
singlestep order 2 ("2S") in which every time point, the intermediate one
included, is chosen per sample at run time. This module holds the pure
pieces: the two noise schedules, the clamps, the update formulas, the
per-decision advance of `SolverState`, and the heuristic time grids.

Decisions. A solver run of NFE model evaluations takes NFE + 1 decisions
k = 0 .. NFE; `SolverState.count` is k, the decisions taken so far.
  k = 0       sets the start time (the reference asks the policy on a zero
              feature map); the latent stays the initial noise.
  k >= 1      follows evaluation k, made at the pending point (x, t); it
              brings the model's prediction there and the next time point.
With 'dpm2s' and 'heun' a solver step spans two evaluations: odd k is the
evaluation at the step start s (stage 1), even k the one at the stage point
(stage 2). 'dpm2s': decision at s picks s1 and moves to
  x_s1 = (sigma_s1 / sigma_s) x_s - alpha_s1 expm1(lambda_s - lambda_s1) x0_s,
decision at s1 picks the step end t and completes
  x_t = (sigma_t / sigma_s) x_s - alpha_t expm1(-h) x0_s
        - (0.5 h / max(lambda_s1 - lambda_s, 1e-2)) alpha_t expm1(-h)
          (x0_s1 - x0_s),       h = lambda_t - lambda_s,
so the intermediate point is learned, not r1 = 1/2. If NFE is odd the last
decision is a stage-1 one and the first-order update is the step (as
DPM-Solver's singlestep order 2 ends with an order-1 step). 'heun'
(velocity): decision at s picks t, Euler predictor to t; the decision at
the predictor completes the trapezoid step at t and its time is unused.
'euler' (velocity): every decision k >= 1 is one step to the picked time.
The latest latent `x` is the sample after the last decision.

Clamps (`TimeRule`): a picked time moves at least `gap` from the current one
towards the data end and stops there: DiT t_next <= t_cur - 0.01, then
>= 0.01; SiT t_next >= t_cur + 0.01, then <= 0.99. The start time is only
kept inside `start_bounds` (a no-op for any sigmoid output in that range).
No final denoising step follows the last decision.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

METHODS = ('dpm2s', 'euler', 'heun')
SPACINGS = ('reference', 'logsnr')
# DPM-Solver's floor on the r1 h denominator of the 2S correction.
_MIN_R1H = 1e-2
# Time of the not-yet-chosen start in `init_state` (keeps the unused
# pre-start arithmetic finite).
_UNSET_TIME = 0.5


@dataclasses.dataclass(frozen=True)
class VPLinear:
  """DPM-Solver's continuous VP 'linear' schedule: t = 1 noise, t -> 0 data.

  log alpha_t = -(beta1 - beta0) t^2 / 4 - beta0 t / 2,
  sigma_t = sqrt(1 - alpha_t^2), lambda_t = log(alpha_t / sigma_t).
  Methods take `xp` (jnp or np) so the heuristic grids can use float64.
  """
  beta0: float = 0.1
  beta1: float = 20.0

  def log_alpha(self, t, xp=jnp):
    del xp  # polynomial: works on either
    return -0.25 * t ** 2 * (self.beta1 - self.beta0) - 0.5 * t * self.beta0

  def alpha(self, t, xp=jnp):
    return xp.exp(self.log_alpha(t, xp))

  def sigma(self, t, xp=jnp):
    return xp.sqrt(-xp.expm1(2.0 * self.log_alpha(t, xp)))

  def lam(self, t, xp=jnp):
    la = self.log_alpha(t, xp)
    return la - 0.5 * xp.log(-xp.expm1(2.0 * la))

  def inverse_lam(self, lam, xp=jnp):
    # alpha^2 = 1 / (1 + e^{-2 lambda}); solve the quadratic in t for
    # log alpha, in the cancellation-free form 2 L / (b0 + sqrt(b0^2 + 2 d L)).
    big_l = xp.logaddexp(0.0, -2.0 * lam)
    d = self.beta1 - self.beta0
    return 2.0 * big_l / (self.beta0 + xp.sqrt(self.beta0 ** 2 + 2.0 * d *
                                               big_l))


@dataclasses.dataclass(frozen=True)
class FlowLinear:
  """SiT's linear interpolant x_t = t x_data + (1 - t) noise: t = 0 noise."""

  def alpha(self, t, xp=jnp):
    del xp
    return t

  def sigma(self, t, xp=jnp):
    del xp
    return 1.0 - t

  def lam(self, t, xp=jnp):
    return xp.log(t) - xp.log1p(-t)

  def inverse_lam(self, lam, xp=jnp):
    return 1.0 / (1.0 + xp.exp(-lam))


Schedule = VPLinear | FlowLinear


@dataclasses.dataclass(frozen=True)
class TimeRule:
  """Where picked times may go.

  Attributes:
    decreasing: time runs down to the data (DiT VP) or up (SiT flow).
    end: the data-side bound every picked time stops at.
    start_bounds: (low, high) the start time is kept in.
    gap: the least move of a picked time towards `end`.
  """
  decreasing: bool
  end: float
  start_bounds: tuple[float, float]
  gap: float = 0.01

  def clamp_start(self, t: jax.Array) -> jax.Array:
    return jnp.clip(t, *self.start_bounds)

  def clamp_next(self, t_next: jax.Array, t_cur: jax.Array) -> jax.Array:
    if self.decreasing:
      return jnp.maximum(jnp.minimum(t_next, t_cur - self.gap), self.end)
    return jnp.minimum(jnp.maximum(t_next, t_cur + self.gap), self.end)


@flax.struct.dataclass
class SolverState:
  """Per-sample solver state; see the module docstring for the decisions."""
  x_start: jax.Array     # float32 [B, H, W, C]: latent at the step start s
  t_start: jax.Array     # float32 [B]: s
  x: jax.Array           # float32 [B, H, W, C]: latest latent, where the
                         #   pending evaluation is made
  t: jax.Array           # float32 [B]: its time
  pred_start: jax.Array  # float32 [B, H, W, C]: stage-1 prediction at s
                         #   (x0 for dpm2s, velocity for heun)
  count: jax.Array       # int32 []: decisions taken


def init_state(noise: jax.Array) -> SolverState:
  """float32 [B, H, W, C] initial noise -> state before decision 0."""
  t = jnp.full(noise.shape[:1], _UNSET_TIME, jnp.float32)
  return SolverState(x_start=noise, t_start=t, x=noise, t=t,
                     pred_start=jnp.zeros_like(noise),
                     count=jnp.zeros((), jnp.int32))


def _b(v: jax.Array) -> jax.Array:
  """[B] -> [B, 1, 1, 1] to scale NHWC latents."""
  return v[:, None, None, None]


def guide(cond: jax.Array, uncond: jax.Array, w: jax.Array,
          channels: int) -> jax.Array:
  """AdaGen's CFG cond + w (cond - uncond) on channels [:channels] only.

  Args:
    cond, uncond: float32 [B, H, W, C] conditional / unconditional outputs.
    w: float32 [B] guidance weight (standard scale 1 + w).
    channels: how many leading channels are guided; the rest are `cond`
      (DiT and SiT guide 3 of 4 latent channels, their reproducibility quirk).

  Returns:
    float32 [B, H, W, C].
  """
  guided = cond + _b(w) * (cond - uncond)
  keep = jnp.arange(cond.shape[-1]) < channels
  return jnp.where(keep, guided, cond)


def x0_from_noise(schedule: Schedule, eps: jax.Array, x: jax.Array,
                  t: jax.Array) -> jax.Array:
  """Data prediction (x - sigma_t eps) / alpha_t; eps, x [B, H, W, C]."""
  return (x - _b(schedule.sigma(t)) * eps) / _b(schedule.alpha(t))


def x0_from_v(schedule: VPLinear, v: jax.Array, x: jax.Array, t: jax.Array
              ) -> jax.Array:
  """Data prediction of a v-prediction v = alpha_t eps - sigma_t x0.

  alpha x - sigma v = (alpha^2 + sigma^2) x0 = x0 on a VP schedule: the
  network's error reaches x0 scaled by sigma <= 1, never by sigma / alpha.
  """
  return _b(schedule.alpha(t)) * x - _b(schedule.sigma(t)) * v


def noise_from_velocity(v: jax.Array, x: jax.Array, t: jax.Array
                        ) -> jax.Array:
  """FlowLinear's noise from velocity v = x_data - noise: eps = x - t v."""
  return x - _b(t) * v


def dpm_first_order(schedule: Schedule, x: jax.Array, s: jax.Array,
                    t: jax.Array, x0_s: jax.Array) -> jax.Array:
  """DPM-Solver++ order 1 from s to t (also the 2S move to s1)."""
  h = schedule.lam(t) - schedule.lam(s)
  return (_b(schedule.sigma(t) / schedule.sigma(s)) * x
          - _b(schedule.alpha(t) * jnp.expm1(-h)) * x0_s)


def dpm_second_order(schedule: Schedule, x: jax.Array, s: jax.Array,
                     s1: jax.Array, t: jax.Array, x0_s: jax.Array,
                     x0_s1: jax.Array, min_ratio: float = 0.0) -> jax.Array:
  """DPM-Solver++ 2S from s to t through s1 (reference form, §6).

  `min_ratio` > 0 also floors r1 h at min_ratio h, so the correction's
  factor 0.5 h / (r1 h) stays <= 0.5 / min_ratio. With a learned s1 the
  reference's absolute floor alone lets a policy put s1 next to s and
  scale the difference of two nearby (guided, imperfect) predictions up
  ~15x, which adds high-frequency noise that a low-level reward can like
  (docs/experiments/dit_uniform_t_2026-12.md, DiT at 8 NFE). 0 is the
  reference.
  """
  lam_s = schedule.lam(s)
  h = schedule.lam(t) - lam_s
  r1h = jnp.maximum(jnp.maximum(schedule.lam(s1) - lam_s, _MIN_R1H),
                    min_ratio * h)
  phi = schedule.alpha(t) * jnp.expm1(-h)
  return (_b(schedule.sigma(t) / schedule.sigma(s)) * x - _b(phi) * x0_s
          - _b(0.5 * h / r1h * phi) * (x0_s1 - x0_s))


def euler(x: jax.Array, s: jax.Array, t: jax.Array, v: jax.Array
          ) -> jax.Array:
  """x + (t - s) v."""
  return x + _b(t - s) * v


def advance(method: str, schedule: Schedule, rule: TimeRule,
            state: SolverState, pred: jax.Array,
            t_pick: jax.Array, min_stage_ratio: float = 0.0) -> SolverState:
  """Applies decision k = state.count.

  Args:
    method: 'dpm2s' | 'euler' | 'heun'.
    schedule: the noise schedule (dpm2s only).
    rule: the time clamps.
    state: the state before the decision.
    pred: float32 [B, H, W, C], the guided prediction of the pending
      evaluation at (state.x, state.t): the data prediction x0 for 'dpm2s',
      the velocity otherwise. Ignored at k = 0.
    t_pick: float32 [B] the picked time (the start time at k = 0).
    min_stage_ratio: 'dpm2s' only: `dpm_second_order`'s min_ratio.

  Returns:
    The state after the decision; its (x, t) is the next evaluation point.
  """
  if method not in METHODS:
    raise ValueError(f'unknown solver {method!r}; expected one of {METHODS}')
  k = state.count
  t_next = rule.clamp_next(t_pick, state.t)
  if method == 'euler':
    x_new = euler(state.x, state.t, t_next, pred)
    stage1 = jnp.zeros((), bool)  # every step is complete
    x_end, t_end = x_new, t_next
  else:
    stage1 = k % 2 == 1
    if method == 'dpm2s':
      x_new = dpm_first_order(schedule, state.x_start, state.t_start, t_next,
                              pred)
      x_end = dpm_second_order(schedule, state.x_start, state.t_start,
                               state.t, t_next, state.pred_start, pred,
                               min_stage_ratio)
      t_end = t_next
    else:  # heun: the stage point is the step end, t_pick unused there.
      x_new = euler(state.x_start, state.t_start, t_next, pred)
      x_end = state.x_start + _b(0.5 * (state.t - state.t_start)) * (
          state.pred_start + pred)
      t_end = state.t
  # Stage 1 moves only the evaluation point; stage 2 (and euler) completes
  # the step, which becomes the next step's start.
  x = jnp.where(stage1, x_new, x_end)
  t = jnp.where(stage1, t_next, t_end)
  new = SolverState(
      x_start=jnp.where(stage1, state.x_start, x),
      t_start=jnp.where(stage1, state.t_start, t),
      x=x, t=t,
      pred_start=jnp.where(stage1, pred, state.pred_start),
      count=k + 1)
  start = rule.clamp_start(t_pick)
  at_start = SolverState(x_start=state.x, t_start=start, x=state.x, t=start,
                         pred_start=state.pred_start, count=k + 1)
  return jax.tree.map(lambda a, b: jnp.where(k == 0, a, b), at_start, new)


def heuristic_times(method: str, num_evals: int, t_start: float,
                    t_end: float, spacing: str,
                    schedule: Schedule) -> np.ndarray:
  """float64 [num_evals + 1]: the time picked at each decision.

  The grid runs from t_start to t_end over the solver's steps, evenly in
  time ('reference': AdaGen's linspace, e.g. DiT 0.9 -> 0.01) or in
  lambda = log SNR / 2 ('logsnr': DPM-Solver's default; for dpm2s with even
  NFE its midpoints are the r1 = 1/2 points of DPM-Solver's own grid). dpm2s
  and euler pick one grid point per decision; heun's steps take two
  evaluations, so its grid has ceil(NFE / 2) steps and each step end is
  picked at stage 1 and repeated (unused) at stage 2.
  """
  if spacing not in SPACINGS:
    raise ValueError(f'unknown spacing {spacing!r}; expected one of '
                     f'{SPACINGS}')
  steps = (num_evals + 1) // 2 if method == 'heun' else num_evals
  if spacing == 'reference':
    grid = np.linspace(t_start, t_end, steps + 1)
  else:
    lam = np.linspace(schedule.lam(np.float64(t_start), np),
                      schedule.lam(np.float64(t_end), np), steps + 1)
    grid = schedule.inverse_lam(lam, np)
  if method != 'heun':
    return grid
  times = np.empty(num_evals + 1)
  times[0] = grid[0]
  k = np.arange(1, num_evals + 1)
  times[1:] = grid[(k + 1) // 2]
  return times
