"""Exported policies: Orbax parameters + a JSON card, loadable by sample.py.

An export directory holds
  params/         Orbax tree {'actor': ..., 'critic': ...}; the critic is the
                  value network that lookahead refinement needs;
  reward/         Orbax tree of what inference needs of the reward model's
                  state (the discriminator that best-of-N refinement scores
                  with: its parameters and spectral-norm statistics, not
                  its optimiser state or the frozen backbone), if exported;
  fidelity/       optional: the fidelity policy of the lambda-blend (an
                  export of `adagen_jax.train_fidelity`), used by
                  `sample --lam` when no --fidelity_policy is given;
  policy.json     format, generator identity, steps, action names and
                  activations, the hand-crafted schedule the residual was
                  built from, policy kind and size, the reward config, and
                  free-form notes (how it was trained, what it measured).
The generator identity (sizes, sampler, and a digest of the weight files) and
schedule are checked on load, so a policy is never run on a generator, its
retrained weights, a step count or a baseline it was not trained for.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import rewards as rewards_lib

FORMAT = 'adagen_jax.policy/1'
SHIPPED = ('adagen', 'nonadaptive')


def _card(config, generator, notes) -> dict:
  spec = generator.action_spec
  return {
      'format': FORMAT,
      'generator': generator.identity(),
      'num_steps': generator.num_steps,
      'actions': [{'name': d.name, 'activation': d.activation,
                   'scale': d.scale} for d in spec.dims],
      'smoothing': spec.smoothing,
      'heuristic': np.asarray(spec.heuristic(generator.num_steps)).round(
          6).tolist(),
      'policy': {'kind': config.policy.kind, 'hidden': config.policy.hidden,
                 'step_bias': bool(config.policy.get('step_bias', False))},
      'reward': config.reward.to_dict(),
      'notes': notes or {},
  }


def export_policy(directory: str, agent_params, config, generator,
                  reward_state=None, notes: dict | None = None):
  """Writes the policy export atomically (tmp folder, then rename)."""
  if jax.process_index() == 0 and os.path.exists(directory + '.tmp'):
    shutil.rmtree(directory + '.tmp')
  tmp = os.path.abspath(directory + '.tmp')
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(tmp, 'params'), agent_params)
  if reward_state is not None:
    ckptr.save(os.path.join(tmp, 'reward'), _inference_part(reward_state))
  ckptr.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(tmp, 'policy.json'), 'w') as f:
      json.dump(_card(config, generator, notes), f, indent=2)
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.replace(tmp, directory)


def _inference_part(reward_state):
  """The reward state without what only training needs.

  A discriminator's Adam moments are twice its parameters and the frozen
  backbone ships on its own: dropping both makes a Fashion-MNIST export
  3x smaller (15 -> 5 MB). `load_reward_state` restores them.
  """
  if isinstance(reward_state, rewards_lib.DiscState):
    return reward_state.replace(frozen=None, opt_state=None)
  return reward_state


def _steps(generator) -> int:
  """The user's --steps: generation steps, or NFE for the ODE samplers."""
  return generator.identity().get('steps', generator.num_steps)


def shipped_policy_dir(generator, kind: str) -> str:
  """Package folder of the shipped policy for this generator and T."""
  weights = generator.identity().get('weights', generator.name)
  return assets.asset_path(os.path.join(
      'policies', f'{weights}_T{_steps(generator)}_{kind}'))


def resolve(spec: str, generator) -> str:
  if spec in SHIPPED:
    path = shipped_policy_dir(generator, spec)
    if not os.path.isdir(path):
      raise errors.UserError(
          f'no shipped {spec!r} policy for {generator.identity().get("weights")}'
          f' at T={_steps(generator)} (looked in {path}); train one with '
          'python -m adagen_jax.main --config=... and pass --policy=WORKDIR/'
          'policy, or use --steps with a shipped step count.')
    return path
  if not os.path.isfile(os.path.join(spec, 'policy.json')):
    raise errors.UserError(
        f'--policy={spec} is neither heuristic, {" nor ".join(SHIPPED)}, nor '
        'a policy export folder (with policy.json); train one with '
        'python -m adagen_jax.main.')
  return spec


def build_agent(policy_config, generator):
  """The Agent a policy config ({kind, hidden}) describes for `generator`."""
  if policy_config.kind not in ('adaptive', 'nonadaptive'):
    raise errors.UserError(
        f'config.policy.kind={policy_config.kind!r}; use adaptive or '
        'nonadaptive.')
  return policy_lib.make_agent(
      generator.action_spec.size, generator.num_steps,
      adaptive=policy_config.kind == 'adaptive',
      hidden_size=policy_config.hidden,
      step_bias=bool(policy_config.get('step_bias', False)))


def load(spec: str, generator):
  """(agent, params, card) of an export, checked against `generator`."""
  path = resolve(spec, generator)
  with open(os.path.join(path, 'policy.json')) as f:
    card = json.load(f)
  if card.get('format') != FORMAT:
    raise errors.UserError(f'{path} is not an adagen_jax policy export '
                           f'(format {card.get("format")!r}).')
  ours = json.loads(json.dumps(generator.identity()))
  theirs = card['generator']
  if ({**theirs, 'weights_digest': None} == {**ours, 'weights_digest': None}
      and theirs.get('weights_digest') != ours.get('weights_digest')):
    raise errors.UserError(
        f'policy {path} was trained on other weights of the same generator '
        f'({ours.get("weights")}: digest {theirs.get("weights_digest")}, '
        f'these are {ours.get("weights_digest")}); retrain it on these '
        'weights with python -m adagen_jax.main.')
  if theirs != ours or card['num_steps'] != generator.num_steps:
    raise errors.UserError(
        f'policy {path} was trained for {card["generator"]} at T='
        f'{card["num_steps"]}, not for this generator {ours} at T='
        f'{generator.num_steps}; pass the matching --config/--steps.')
  heuristic = np.asarray(generator.action_spec.heuristic(
      generator.num_steps)).round(6)
  if not np.allclose(card['heuristic'], heuristic, atol=1e-5):
    raise errors.UserError(
        f'policy {path} was trained on another hand-crafted schedule than '
        'this config\'s (config.generator schedule / temp_init / cfg_init / '
        'smoothing); use the config it was trained with.')
  agent = build_agent(ml_collections.ConfigDict(card['policy']), generator)
  abstract = jax.eval_shape(
      lambda: agent.init(jax.random.key(0), generator.obs_shape))
  params = ocp.StandardCheckpointer().restore(
      os.path.abspath(os.path.join(path, 'params')), abstract)
  return agent, params, card


def load_reward_state(spec: str, generator, reward_model):
  """The exported reward model state (the discriminator) of a policy."""
  path = os.path.join(resolve(spec, generator), 'reward')
  if not os.path.isdir(path):
    raise errors.UserError(
        f'policy {resolve(spec, generator)} was exported without its reward '
        'model; best-of-N needs one (retrain, or export with reward_state).')
  abstract = jax.eval_shape(lambda: reward_model.init(
      jax.random.key(0), jax.numpy.zeros((8,) + tuple(generator.image_shape)),
      jax.numpy.zeros((8,), jax.numpy.int32)))
  ckptr = ocp.StandardCheckpointer()
  saved = ckptr.metadata(os.path.abspath(path))
  saved = getattr(saved, 'item_metadata', saved)
  # Exports written before the inference part was split off hold the
  # whole state (optimiser moments included); they still load.
  whole = hasattr(saved, 'get') and saved.get('opt_state') is not None
  state = ckptr.restore(os.path.abspath(path),
                        abstract if whole else _inference_part(abstract))
  if isinstance(state, rewards_lib.DiscState):
    # Fresh optimiser moments: an exported discriminator is used, not
    # trained further.
    state = state.replace(frozen=reward_model.backbone.variables,
                          opt_state=reward_model.tx.init(state.params))
  return state


def load_policy(spec: str, generator):
  """An ActFn running the export's deterministic (mean) policy."""
  agent, params, _ = load(spec, generator)
  return agent.make_act_fn(params, jax.numpy.float32(0.0), explore=False)
