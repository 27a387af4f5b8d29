r"""How far DPM-Solver-2S's correction is scaled by a DiT schedule.

  python experiments/dit_stage_factors.py --steps=8 \
      --policies=heuristic,tuned,adagen,nonadaptive,RUN/policy [--floor=0]

The 2S step from s to t through the learned stage point s1 adds
0.5 h / (r1 h) x (x0_s1 - x0_s), h = lambda_t - lambda_s (log-SNR), r1 h =
lambda_s1 - lambda_s (solver.dpm_second_order). DPM-Solver's fixed r1 = 1/2
gives a factor 1; a policy that puts s1 next to s scales the difference of
two nearby predictions up. For each schedule this rolls out --num samples
of the shipped Fashion-MNIST DiT (sampling seed --seed), replays the clamps
on the picked times, and prints the factor per 2S step: median, max and the
share above 5 (what `generator.min_stage_ratio=0.1` caps). The factors are
those of the reference floor alone (r1 h >= 0.01), whatever the config's
floor. It also samples the same --num images with the config's floor and
with none (0, the reference) and prints the share of samples that differ.
--floor sets the config's min_stage_ratio the policies are loaded against
(0 for exports made before the option).
"""

import dataclasses

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax import generators
from adagen_jax import sample
from adagen_jax.configs import shipped
from adagen_jax.generators import solver
from adagen_jax.rl import rollout as rollout_lib

_STEPS = flags.DEFINE_integer('steps', 8, 'NFE.')
_POLICIES = flags.DEFINE_list(
    'policies', ['heuristic', 'tuned', 'adagen', 'nonadaptive'],
    "'heuristic', 'tuned', a shipped policy name or an export directory.")
_NUM = flags.DEFINE_integer('num', 500, 'Samples per schedule.')
_SEED = flags.DEFINE_integer('seed', 1, 'Sampling seed.')
_FLOOR = flags.DEFINE_float(
    'floor', None, "The config's min_stage_ratio (default: the shipped one).")


def picked_times(rule: solver.TimeRule, picks: np.ndarray) -> np.ndarray:
  """float [K, B] picks -> the times the solver uses (its clamps)."""
  times = [rule.clamp_start(picks[0])]
  for pick in picks[1:]:
    times.append(rule.clamp_next(pick, times[-1]))
  return np.stack(times)


def factors(schedule, times: np.ndarray) -> np.ndarray:
  """[num 2S steps, B] correction factors 0.5 h / max(r1 h, 0.01)."""
  lam = lambda t: np.asarray(schedule.lam(jnp.asarray(t)))
  out = []
  for k in range(1, times.shape[0] - 1, 2):
    s, s1, t = times[k - 1], times[k], times[k + 1]
    out.append(0.5 * (lam(t) - lam(s)) / np.maximum(lam(s1) - lam(s), 1e-2))
  return np.stack(out)


def main(argv):
  del argv
  gen_config = shipped.fmnist_flow_generator('dit', _STEPS.value)
  if _FLOOR.value is not None:
    gen_config.min_stage_ratio = _FLOOR.value
  labels = jnp.asarray(sample.class_balanced_labels(_NUM.value, 10))
  print(f'DiT {_STEPS.value} NFE, {_NUM.value} samples of seed '
        f'{_SEED.value}: 2S correction factor per step (median / max / '
        'share > 5)')
  for policy in _POLICIES.value:
    config = (sample.tuned_section(gen_config) if policy == sample.TUNED
              else gen_config)
    gen, params = generators.build(config)
    act = sample.make_act_fn(policy, gen)
    roll = jax.jit(lambda l, k, g=gen, a=act: rollout_lib.rollout(
        g, params, l, k, a, keep_obs=False).actions)
    actions = np.asarray(roll(labels, jax.random.key(_SEED.value)))
    picks = actions[:, :, gen.action_spec.names.index('timesteps')]
    f = factors(gen.paradigm.schedule, picked_times(gen.rule, picks))
    cells = ', '.join(f'{np.median(x):.2f} / {x.max():.1f} / '
                      f'{np.mean(x > 5):.3f}' for x in f)
    floored, _ = sample.generate_with(gen, params, _NUM.value, _SEED.value,
                                      act)
    free, _ = sample.generate_with(
        dataclasses.replace(gen, min_stage_ratio=0.0), params, _NUM.value,
        _SEED.value, act)
    differ = np.mean(np.any(floored != free, axis=(1, 2, 3)))
    print(f'{policy}: {cells}; samples changed by the floor '
          f'{gen.min_stage_ratio}: {differ:.3f}', flush=True)


if __name__ == '__main__':
  cli.reexec_with_huge_pages()
  app.run(main)
