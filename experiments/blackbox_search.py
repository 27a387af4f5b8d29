r"""Black-box search of the per-step action table: PPO's yardstick.

Issue 19's first check asks what the RL machinery can reach on a reward that
measures what the evaluation measures. This script searches the same object
the non-adaptive policy learns (a [T, A] table of pre-activation actions
added to the hand-crafted schedule) with an evolution strategy instead of
PPO, on the same reward and the same number of generated samples:

  python experiments/blackbox_search.py --generator=maskgit --steps=4 \
      --budget=15360 --out=runs/diag/es_T4_s0
  python experiments/fmnist_table.py --stage=eval --generator=maskgit \
      --steps=4 --method=policy:runs/diag/es_T4_s0/policy --seeds=0

Objective (a DIAGNOSTIC, never a result): FD-FMNIST of a candidate's
`--num` class-balanced samples against the *training*-split reference
(`adagen_jax.evaluate`'s 'fmnist-train'); the tables evaluate on the test
split with other sampling seeds. The search is a separable (mu/mu_w,
lambda) evolution strategy with mirrored samples: each generation draws
`--pop` / 2 directions e and scores table m +- sigma e, all candidates of a
generation on the same labels and generator noise (common random numbers,
so their differences are the table's effect, not sampling noise); the mean
moves to the rank-weighted average of the best half. sigma starts at the
PPO exploration std (0.6) and halves at half the budget, as the default
run's schedule does. The final mean is exported as a non-adaptive policy
(`WORKDIR/policy`), so the table's evaluation path is the policies' own.
"""

import json
import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax import errors
from adagen_jax import evaluate
from adagen_jax import generators
from adagen_jax import progress
from adagen_jax import sample
from adagen_jax.configs import experiment
from adagen_jax.configs import shipped
from adagen_jax.metrics import fid
from adagen_jax.rl import export
from adagen_jax.rl import rewards
from adagen_jax.rl import rollout as rollout_lib

_GENERATOR = flags.DEFINE_enum('generator', 'maskgit',
                               list(shipped.FMNIST_GENERATORS),
                               'Which shipped Fashion-MNIST model.')
_STEPS = flags.DEFINE_integer('steps', 4, 'Generation steps T (NFE).')
_BUDGET = flags.DEFINE_integer(
    'budget', 15360, 'Generated samples in all (the default run: 60 PPO '
    'iterations x 256 trajectories).')
_POP = flags.DEFINE_integer('pop', 6, 'Candidates per generation (even).')
_NUM = flags.DEFINE_integer('num', 512, 'Samples per candidate.')
_SIGMA = flags.DEFINE_float('sigma', 0.6, 'Initial search std (raw space).')
_SEED = flags.DEFINE_integer('seed', 0, 'Search seed.')
_OUT = flags.DEFINE_string('out', None, 'Output folder.', required=True)


def search_weights(pop: int) -> np.ndarray:
  """Rank weights of the best half (CMA-ES's log weights), summing to 1."""
  mu = pop // 2
  w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
  return w / w.sum()


def main(argv):
  del argv
  if _POP.value < 2 or _POP.value % 2:
    raise errors.UserError(f'--pop={_POP.value}: use an even number >= 2.')
  gen_config = shipped.fmnist_generator(_GENERATOR.value, _STEPS.value)
  gen, params = generators.build(gen_config)
  spec = gen.action_spec
  shape = (gen.num_steps, spec.size)
  train_ref = evaluate.Evaluator.create('fmnist-train')

  @jax.jit
  def images_of(table, labels, rng):
    return rollout_lib.rollout(gen, params, labels, rng,
                               rollout_lib.table_act(table),
                               keep_obs=False).images

  labels = jnp.asarray(sample.class_balanced_labels(_NUM.value,
                                                    gen.num_classes))

  def objective(table, rng):
    images = np.asarray(images_of(jnp.asarray(table, jnp.float32), labels,
                                  rng))
    feats, _ = train_ref.features(images, 'candidate')
    return fid.frechet_distance(*fid.feature_stats(feats),
                                *train_ref.ref_stats)

  rs = np.random.default_rng(_SEED.value)
  key = jax.random.key(_SEED.value)
  mean = np.zeros(shape, np.float32)  # the hand-crafted schedule
  weights = search_weights(_POP.value)
  generations = max(1, _BUDGET.value // (_POP.value * _NUM.value))
  history = []
  bar = progress.Progress(generations, 'evolution strategy')
  for g in range(generations):
    sigma = _SIGMA.value * (0.5 if g >= generations // 2 else 1.0)
    half = rs.standard_normal((_POP.value // 2,) + shape).astype(np.float32)
    cands = mean + sigma * np.concatenate([half, -half])
    rng = jax.random.fold_in(key, g)
    fds = np.array([objective(c, rng) for c in cands])
    order = np.argsort(fds)[:_POP.value // 2]
    mean = np.einsum('k,k...->...', weights, cands[order]).astype(np.float32)
    history.append(dict(generation=g, sigma=sigma, fd_best=float(fds.min()),
                        fd_median=float(np.median(fds)),
                        samples=(g + 1) * _POP.value * _NUM.value))
    bar.update(1, fd_best=fds.min(), fd_median=np.median(fds))

  os.makedirs(_OUT.value, exist_ok=True)
  # The MaskGIT policies' 2-core CPU settings (experiment.CPU_RL).
  config = experiment.adagen_config(
      shipped.fmnist_maskgit_generator(), f'steps={_STEPS.value}',
      overrides=experiment.CPU_RL)
  config.generator = gen_config
  config.policy.kind = 'nonadaptive'
  config.reward.update(name='fd', backbone=rewards.DIAGNOSTIC_BACKBONE)
  agent = export.build_agent(config.policy, gen)
  agent_params = agent.init(jax.random.key(0), gen.obs_shape)
  agent_params['actor']['params']['table'] = jnp.asarray(mean)
  export.export_policy(
      os.path.join(_OUT.value, 'policy'), agent_params, config, gen,
      notes=dict(diagnostic=True, search='separable ES, mirrored, common '
                 'random numbers; objective FD vs fmnist-train',
                 budget=_BUDGET.value, pop=_POP.value, num=_NUM.value))
  with open(os.path.join(_OUT.value, 'search.json'), 'w') as f:
    json.dump(dict(history=history, table=mean.tolist(),
                   actions=list(spec.names)), f, indent=1)
  print(json.dumps(history[-1]))


if __name__ == '__main__':
  cli.run(main)
