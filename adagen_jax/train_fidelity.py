r"""Trains the fidelity policy of the lambda-blend (paper Sec. III-F).

  python -m adagen_jax.train_fidelity --config=CONFIG \
      --policy=WORKDIR/policy --workdir=WORKDIR/fidelity \
      [--iterations=N] [--config.key=value ...]

Then sample a blend with
  python -m adagen_jax.sample --config=CONFIG --policy=WORKDIR/policy \
      --fidelity_policy=WORKDIR/fidelity/policy --lam=0.5 ...

The main policy (an export of `python -m adagen_jax.main`) and its reward
are frozen. Each iteration draws lam ~ U[0, 1], rolls out
(1 - lam) a_main + lam a_fid and updates the fidelity policy by PPO on
(1 - lam) r_main + lam r_fidelity, where r_fidelity is the reward
backbone's classifier confidence in the target class (`StaticReward`; never
the evaluation network) and r_main the main policy's reward: its
discriminator, or its FD gain against its real statistics (then both terms
are standardised over the batch first), plus its confidence bonus if it
had one. The reward stays the one the main
policy was trained with, so r_main means the same for both policies. Uses
CONFIG's policy size, PPO settings (ppo.rollout_batch trajectories per
iteration) and exploration schedule; exports to WORKDIR/policy.
"""

import dataclasses
import math
import os

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from adagen_jax import cli
from adagen_jax import errors
from adagen_jax import generators
from adagen_jax import progress
from adagen_jax.rl import export
from adagen_jax.rl import ppo as ppo_lib
from adagen_jax.rl import refine
from adagen_jax.rl import rewards as rewards_lib

_CONFIG = cli.define_config(None, 'The main policy\'s experiment config.')
_POLICY = flags.DEFINE_string('policy', None, 'Main policy export folder.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.')
_ITERATIONS = flags.DEFINE_integer('iterations', 50, 'PPO iterations.')


def train_fidelity(config, policy: str, workdir: str, iterations: int):
  """Trains and exports the fidelity policy; returns the last metrics."""
  # Imported here: train pulls in the data and evaluation stack.
  from adagen_jax import train  # pylint: disable=g-import-not-at-top
  gen, gen_params = generators.build(config.generator)
  main_agent, main_params, card = export.load(policy, gen)
  reward_config = ml_collections.ConfigDict(card['reward'])
  if reward_config.name not in ('adversarial', 'fd'):
    raise errors.UserError(
        f'{policy} was trained with the {reward_config.name!r} reward; the '
        'blend needs a main policy trained with the adversarial or the fd '
        'one.')
  # Blend rollouts are not in groups: the FD gain is leave-one-out here.
  adv = train.make_reward_model(reward_config, gen.num_classes)
  adv_state = export.load_reward_state(policy, gen, adv)
  # The fidelity reward: the class confidence of the main reward's
  # classifier (a confidence bonus's own, which r_main already holds a
  # little of: the blend moves it from that weight towards all of it).
  classifier = (adv.static.backbone
                if isinstance(adv, rewards_lib.ConfidenceBonus)
                else getattr(adv, 'backbone', None))
  if classifier is None or not classifier.classifier:
    raise errors.UserError(
        f'{policy}\'s reward backbone ({reward_config.backbone}) has no '
        'classifier, so no class confidence to blend in; use a main policy '
        'whose reward.backbone is fmnist (or another classifier).')
  fid = rewards_lib.StaticReward(classifier)
  fid_state = fid.init(None, None, None)
  fid_agent = export.build_agent(config.policy, gen)
  trainer = refine.FidelityTraining(
      generator=gen, main_agent=main_agent, fid_agent=fid_agent,
      adv_reward=adv, fid_reward=fid,
      # No KL anchor: the main policy's run anchored it to its start; the
      # fidelity policy has no such start to stay near.
      ppo_config=dataclasses.replace(train.ppo_settings(config.ppo),
                                     kl_coef=0.0),
      standardise=reward_config.name == 'fd')
  rng = jax.random.key(config.seed)
  k_init, rng = jax.random.split(rng)
  state = ppo_lib.create_train_state(
      fid_agent.init(k_init, gen.obs_shape), config.ppo.learning_rate,
      table_learning_rate=config.ppo.get('table_learning_rate'))
  step = jax.jit(trainer.iteration, donate_argnums=0)
  bar = progress.Progress(iterations, 'fidelity iterations')
  metrics = {}
  for it in range(iterations):
    k_lab, k_it = jax.random.split(jax.random.fold_in(rng, it))
    labels = jax.random.randint(k_lab, (config.ppo.rollout_batch,), 0,
                                gen.num_classes, jnp.int32)
    sigma = train.exploration_std(config.policy, it)
    state, metrics, _ = step(state, gen_params, main_params, adv_state,
                             fid_state, labels, k_it, sigma)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not all(map(math.isfinite, metrics.values())):
      raise errors.UserError(f'non-finite fidelity metrics at iteration '
                             f'{it + 1}: {metrics}; lower the learning rate.')
    bar.update(1, lam=metrics['lam'], r_fid=metrics['reward_fid'])
  export.export_policy(os.path.join(workdir, 'policy'), state.params, config,
                       gen, notes={'fidelity_of': os.path.abspath(policy),
                                   'iterations': iterations,
                                   'last_metrics': metrics})
  logging.info('Fidelity policy exported to %s/policy.', workdir)
  return metrics


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments {argv[1:]}; flags only.')
  if _CONFIG.value is None or not _POLICY.value or not _WORKDIR.value:
    raise errors.UserError('pass --config=CONFIG --policy=WORKDIR/policy '
                           '--workdir=DIR (see --help).')
  os.makedirs(_WORKDIR.value, exist_ok=True)
  train_fidelity(_CONFIG.value, _POLICY.value, _WORKDIR.value,
                 _ITERATIONS.value)


if __name__ == '__main__':
  cli.run(main)
