"""AdaGen training: rollouts, terminal rewards, PPO and discriminator updates.

One iteration (adagen_reference.md §2):
  1. collect `ppo.trajectories` rollouts of the exploring policy;
  2. reward the terminal images;
  3. PPO: `ppo.epochs` updates of policy and critic on all (trajectory, step)
     pairs;
  4. `reward.d_steps` discriminator updates on fresh rollouts of the updated
     policy against real images (adversarial reward only);
  5. every so often: FD-FMNIST of the deterministic policy, sample grids,
     schedule plots, a checkpoint.
Everything runs under `jit` on a ('data',) mesh: batches sharded, parameters
replicated. Only logged scalars and evaluation images leave the devices.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time
from typing import Any

from absl import logging
from clu import parameter_overview
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax import generators
from adagen_jax import images as images_lib
from adagen_jax import plots
from adagen_jax import progress as progress_lib
from adagen_jax.backbones import dino_vit
from adagen_jax.checkpoint import manager
from adagen_jax.data import fashion_mnist
from adagen_jax.generators import base
from adagen_jax.metrics import writers
from adagen_jax.parallel import mesh as mesh_lib
from adagen_jax.rl import export
from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import ppo as ppo_lib
from adagen_jax.rl import rewards as rewards_lib
from adagen_jax.rl import rollout as rollout_lib


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs (all leaves global jax.Arrays)."""
  ppo: Any          # ppo_lib.TrainState: actor/critic params, Adam, step
  reward: Any       # the reward model's state (discriminator, its Adam)
  rng: jax.Array    # typed key []
  iteration: jax.Array  # int32 []: completed iterations


def _log_parameters(state: TrainState):
  """The parameter tables of what this run trains, once at start-up."""
  logging.info('policy and critic:\n%s',
               parameter_overview.get_parameter_overview(
                   state.ppo.params, include_stats=False))
  if isinstance(state.reward, rewards_lib.DiscState):
    logging.info('discriminator:\n%s',
                 parameter_overview.get_parameter_overview(
                     state.reward.params, include_stats=False))


def _finite_or_raise(metrics: dict, iteration: int, last_ckpt):
  bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
  if bad:
    raise errors.UserError(
        f'non-finite {", ".join(bad)} at iteration {iteration}; stopped '
        f'without saving, last good checkpoint: {last_ckpt} (lower the '
        'learning rates or check the reward).')


def ppo_settings(ppo_config) -> ppo_lib.PPOConfig:
  """The static PPOConfig of a config's `ppo` section."""
  return ppo_lib.PPOConfig(
      epochs=ppo_config.epochs, num_minibatches=ppo_config.num_minibatches,
      micro_batches=ppo_config.get('micro_batches', 1),
      clip_eps=ppo_config.clip_eps, vf_coef=ppo_config.vf_coef,
      kl_coef=ppo_config.get('kl_coef', 0.0))


def exploration_std(policy_config, iteration: int) -> jax.Array:
  """float32 []: the `policy` section's exploration std at `iteration`."""
  return policy_lib.action_std(
      iteration, policy_config.std_init, policy_config.std_decay_rate,
      tuple(policy_config.std_decay_steps), policy_config.std_min)


class Trainer:
  """Holds the static pieces (modules, mesh, jitted steps) of one run."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    # Batches split over devices and into the discriminator's groups of 8.
    mesh_lib.check_batch(config.ppo.rollout_batch, 'ppo.rollout_batch', 8)
    mesh_lib.check_batch(config.reward.d_batch, 'reward.d_batch', 8)
    self.group_size = group = config.ppo.get('group_size', 1)
    if group < 1 or config.ppo.rollout_batch % group:
      raise errors.UserError(
          f'ppo.group_size={group} must be >= 1 and divide '
          f'ppo.rollout_batch={config.ppo.rollout_batch}.')
    if config.ppo.trajectories % config.ppo.rollout_batch:
      raise errors.UserError(
          f'ppo.trajectories={config.ppo.trajectories} must be a multiple of '
          f'ppo.rollout_batch={config.ppo.rollout_batch}.')
    self.mesh = mesh_lib.make_mesh()
    self.generator, gen_params = generators.build(config.generator)
    if (config.reward.real_reconstructed and
        not hasattr(self.generator, 'reconstruct')):
      raise errors.UserError(
          'config.reward.real_reconstructed=True needs a generator with a '
          f'tokenizer; {self.generator.name!r} has none: set it to False.')
    self.gen_params = mesh_lib.replicate(gen_params, self.mesh)
    self.agent = export.build_agent(config.policy, self.generator)
    self.tuned_spec = _tuned_spec(config, self.generator)
    self.ppo_config = ppo_settings(config.ppo)
    if self.ppo_config.kl_coef < 0:
      raise errors.UserError(
          f'ppo.kl_coef={self.ppo_config.kl_coef} must be >= 0 (0: no '
          'penalty towards the starting policy).')
    self.reward_model = make_reward_model(
        config.reward, self.generator.num_classes, group)
    self.data_sharding = mesh_lib.batch_sharded(self.mesh)
    self.repl = mesh_lib.replicated(self.mesh)
    self._build_steps()

  # ---------------------------------------------------------------- jitted --
  def _labels(self, rng, batch, group=1):
    """int32 [batch] random classes, in runs of `group` equal ones."""
    labels = jax.random.randint(rng, (batch // group,), 0,
                                self.generator.num_classes, jnp.int32)
    return jax.lax.with_sharding_constraint(jnp.repeat(labels, group),
                                            self.data_sharding)

  def _build_steps(self):
    cfg, gen = self.config, self.generator
    obs_dtype = jnp.dtype(cfg.ppo.obs_dtype)
    group = self.group_size

    # A sum of standardised terms (ConfidenceBonus, FDEnsemble) logs each
    # term's mean: the sum's is 0.
    has_parts = hasattr(self.reward_model, 'parts')

    def collect(gen_params, agent_params, reward_state, rng, sigma):
      """One exploring rollout batch, its terminal rewards and the batch
      means of the reward's terms ({} for a single-term reward)."""
      k_lab, k_roll, k_rew = jax.random.split(rng, 3)
      labels = self._labels(k_lab, cfg.ppo.rollout_batch, group)
      act = self.agent.make_act_fn(agent_params, sigma, explore=True)
      traj = rollout_lib.rollout(gen, gen_params, labels, k_roll, act,
                                 obs_dtype=obs_dtype, group_size=group)
      if not has_parts:
        return traj, self.reward_model.reward(reward_state, traj.images,
                                              labels, k_rew), {}
      parts = self.reward_model.parts(reward_state, traj.images, labels,
                                      k_rew)
      return traj, self.reward_model.combine(parts), {
          f'reward_{k}_mean': jnp.mean(v) for k, v in parts.items()}

    def update(ppo_state, trajs, rewards, sigma, rng, ref_params):
      """PPO on all rollouts of the iteration (tuples, one per batch);
      `ref_params` is the policy at iteration 0 (ppo.kl_coef)."""
      rewards = jnp.concatenate(rewards)
      batch = ppo_lib.make_batch(concat_trajectories(trajs), rewards, group)
      if self.ppo_config.kl_coef > 0:
        batch = ppo_lib.with_reference_mean(batch, self.agent, ref_params)
      ppo_state, metrics = ppo_lib.ppo_update(ppo_state, self.agent, batch,
                                              sigma, self.ppo_config, rng)
      if group > 1:
        # The share of the reward variance the actions make (within a
        # group); the rest is the initial noise and the label.
        within = rewards - ppo_lib.group_means(rewards, group)
        metrics['reward_within_group'] = (
            jnp.var(within) / jnp.maximum(jnp.var(rewards), 1e-12))
      return ppo_state, metrics

    def real_view(gen_params, images):
      """Real images as the reward sees them (reward.real_reconstructed)."""
      if cfg.reward.real_reconstructed:
        return gen.reconstruct(gen_params, images)
      return images

    def d_step(gen_params, reward_state, agent_params, real, fakes, rng,
               sigma):
      """One D step: real vs fakes, or vs fresh samples of the updated
      (exploring) policy when `fakes` is None (the reference)."""
      k_lab, k_roll, k_upd = jax.random.split(rng, 3)
      real = (real_view(gen_params, real[0]), real[1])
      if fakes is None:
        labels = self._labels(k_lab, cfg.reward.d_batch)
        act = self.agent.make_act_fn(agent_params, sigma, explore=True,
                                     with_value=False)
        traj = rollout_lib.rollout(gen, gen_params, labels, k_roll, act,
                                   keep_obs=False)
        fakes = (traj.images, labels)
      return self.reward_model.update(reward_state, real[0], real[1],
                                      fakes[0], fakes[1], k_upd)

    def sample(gen_params, agent_params, labels, rng, table=None):
      """Deterministic policy (its mean); None params = hand-crafted, moved
      by the raw [T, A] `table` if given (rollout.table_act)."""
      if agent_params is not None:
        act = self.agent.make_act_fn(agent_params, jnp.float32(0.0),
                                     explore=False, with_value=False)
      else:
        act = None if table is None else rollout_lib.table_act(table)
      traj = rollout_lib.rollout(gen, gen_params, labels, rng, act,
                                 keep_obs=False)
      return traj.images, traj.actions

    # The generator's parameters are bound as arguments: closed over, they
    # would be baked into every executable as constants (slow to compile,
    # and a second copy of MaskGIT-L's 194M parameters per step).
    def bind(f, **jit_kwargs):
      return functools.partial(jax.jit(f, **jit_kwargs), self.gen_params)

    self.collect = bind(collect)
    self.reward = jax.jit(self.reward_model.reward)
    self.update = jax.jit(update, donate_argnums=0)
    self.d_step = bind(d_step, donate_argnums=1)
    self.sample = bind(sample)
    self.real_view = bind(real_view)

  # ----------------------------------------------------------------- state --
  def init_state(self, real) -> TrainState:
    """Fresh state; `real` (images, labels) is a host batch of real data."""
    rng = jax.random.key(self.config.seed)
    k_pol, k_rew, rng = jax.random.split(rng, 3)
    agent_params = self.agent.init(k_pol, self.generator.obs_shape)
    agent_params = self._init_table(agent_params)
    # The KL penalty's reference (None without one). A function of the
    # seed and the config, so a resumed run rebuilds the same one here.
    # Copied: `update` donates the PPO state, and a replicated leaf would
    # otherwise be the same buffer in both.
    self.ref_params = None
    if self.ppo_config.kl_coef > 0:
      self.ref_params = jax.tree.map(
          jnp.copy, mesh_lib.replicate(agent_params, self.mesh))
    ppo_state = ppo_lib.create_train_state(
        agent_params, self.config.ppo.learning_rate,
        table_learning_rate=self.config.ppo.get('table_learning_rate'))
    # The discriminator takes its input sizes from `real`; the FD reward its
    # initial real statistics.
    images, labels = mesh_lib.shard_host_batch(real, self.mesh)
    reward_state = self.reward_model.init(k_rew, self.real_view(images),
                                          labels)
    state = TrainState(ppo=ppo_state, reward=reward_state, rng=rng,
                       iteration=jnp.int32(0))
    return mesh_lib.replicate(state, self.mesh)

  def _init_table(self, agent_params):
    """Starts the per-step table at `policy.table_init`."""
    where = self.config.policy.get('table_init', 'heuristic')
    if where == 'heuristic':
      return agent_params
    if where != 'tuned':
      raise errors.UserError(
          f"policy.table_init={where!r}: expected 'heuristic' or 'tuned'.")
    if self.tuned_spec is None:
      raise errors.UserError(
          'policy.table_init=tuned but no tuned schedule ships for '
          f'{self.generator.identity()!r} at '
          f'{self.config.generator.steps} steps: use table_init=heuristic '
          '(or tune one: experiments/fmnist_table.py --stage=tune).')
    try:
      return policy_lib.set_table(
          agent_params, tuned_table(self.generator, self.tuned_spec))
    except ValueError as e:
      raise errors.UserError(
          f'policy.table_init=tuned: {e}: set policy.kind=nonadaptive or '
          'policy.step_bias=True.') from None

  def warm_reward(self, state: TrainState) -> TrainState:
    """The FD reward's real statistics from `reward.fd_init_batches` batches.

    Grown only by the loop's real batches, they start from one batch (256
    images for 128-d features on the CPU): a covariance that noisy makes the
    first iterations' rewards noise. An independent shuffle of the real
    data fills them before iteration 0.
    """
    if self.config.reward.name != 'fd':
      return state
    reward_state = state.reward
    batches = self.real_batches(0, stream=1)
    for k in range(self.config.reward.get('fd_init_batches', 0)):
      real = mesh_lib.shard_host_batch(next(batches), self.mesh)
      reward_state, _ = self.d_step(reward_state, state.ppo.params, real,
                                    real, jax.random.key(k), 0.0)
    return state.replace(reward=reward_state)

  def real_batches(self, start: int, stream: int = 0):
    """This process's real (images, labels) batches from batch `start` on.

    `stream` 0 is the training loop's; others are independent shuffles.
    """
    cfg = self.config
    seed = cfg.seed + 1000 * stream
    if cfg.data.name == 'fashion_mnist':
      it = fashion_mnist.batches(
          *fashion_mnist.load('train', cfg.data.path or None),
          global_batch=cfg.reward.d_batch, seed=seed)
      return itertools.islice(it, start, None)
    if cfg.data.name == 'imagenet2012':
      from adagen_jax.data import imagenet  # pylint: disable=g-import-not-at-top
      ds = imagenet.make_dataset('train', cfg.reward.d_batch, seed,
                                 image_size=self.generator.image_shape[0],
                                 data_dir=cfg.data.path or None)
      return (ds[i] for i in itertools.count(start))
    raise errors.UserError(f'config.data.name={cfg.data.name!r}; use '
                           'fashion_mnist or imagenet2012.')

  # ------------------------------------------------------------ evaluation --
  def generate(self, agent_params, num: int, seed: int, batch: int = 1000,
               table=None):
    """Class-balanced samples on the host: (images, labels, actions)."""
    batch = min(batch, num)
    mesh_lib.check_batch(batch, 'eval batch')
    outs, acts = [], []
    labels_all = np.arange(num, dtype=np.int32) % self.generator.num_classes
    for i in range(0, num, batch):
      labels = labels_all[i:i + batch]
      labels = mesh_lib.shard_host_batch(labels[mesh_lib.process_slice(batch)],
                                         self.mesh)
      rng = jax.random.fold_in(jax.random.key(seed), i)
      imgs, actions = self.sample(agent_params, labels, rng, table)
      outs.append(multihost_utils.process_allgather(imgs, tiled=True))
      acts.append(multihost_utils.process_allgather(
          jnp.swapaxes(actions, 0, 1), tiled=True))
    return (np.concatenate(outs), labels_all,
            np.swapaxes(np.concatenate(acts), 0, 1))


  # ------------------------------------------------------------- training --
  def iteration(self, state: TrainState, it: int, real_iter):
    """One AdaGen iteration -> (state, host metrics, (actions, rewards))."""
    cfg = self.config
    sigma = exploration_std(cfg.policy, it)
    k_col, k_ppo, k_d = jax.random.split(jax.random.fold_in(state.rng, it), 3)
    trajs, rewards, parts = zip(*[
        self.collect(state.ppo.params, state.reward,
                     jax.random.fold_in(k_col, i), sigma)
        for i in range(cfg.ppo.trajectories // cfg.ppo.rollout_batch)])
    ppo_state, metrics = self.update(state.ppo, trajs, rewards, sigma, k_ppo,
                                     self.ref_params)
    metrics.update({k: jnp.mean(jnp.stack([p[k] for p in parts]))
                    for k in parts[0]})
    reward_state = state.reward
    # The adversarial reward trains its discriminator; the FD reward folds
    # real batches into its statistics; the static reward needs nothing.
    num_updates = (cfg.reward.d_steps if self.reward_model.adversarial else
                   int(cfg.reward.name == 'fd'))
    for k in range(num_updates):
      real = mesh_lib.shard_host_batch(next(real_iter), self.mesh)
      fakes = (None if cfg.reward.fresh_fakes and
               self.reward_model.adversarial else
               (trajs[k % len(trajs)].images, trajs[k % len(trajs)].labels))
      reward_state, d_metrics = self.d_step(
          reward_state, ppo_state.params, real, fakes,
          jax.random.fold_in(k_d, k), sigma)
      metrics = {**metrics, **d_metrics}
    state = state.replace(ppo=ppo_state, reward=reward_state,
                          iteration=state.iteration + 1)
    metrics = jax.device_get({**metrics, 'sigma': sigma,
                              'reward_mean': jnp.mean(jnp.concatenate(
                                  rewards))})
    return (state, {k: float(np.mean(v)) for k, v in metrics.items()},
            (trajs[0].actions, rewards[0]))

  def scored_samples(self, state: TrainState, num: int):
    """Actions [T, num, A] of the deterministic policy and their rewards.

    Samples are scored by the reward model, never by the evaluation network,
    to split them into easy and hard ones for the schedule plots.
    """
    imgs, labels, actions = self.generate(state.ppo.params, num, seed=4321)
    rows = mesh_lib.process_slice(num)
    scores = self.reward(state.reward, *mesh_lib.shard_host_batch(
        (imgs[rows], labels[rows]), self.mesh), jax.random.key(0))
    return actions, multihost_utils.process_allgather(scores, tiled=True)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains the policy; returns the final hand-crafted vs AdaGen metrics."""
  os.makedirs(workdir, exist_ok=True)
  trainer = Trainer(config, workdir)
  gen, cfg = trainer.generator, config
  is_chief = jax.process_index() == 0
  writer = writers.create_writer(workdir)
  ckpt = manager.Checkpointer(os.path.join(workdir, 'checkpoints'),
                              manager.fingerprint(config, gen),
                              keep=cfg.keep_checkpoints)
  state = trainer.init_state(next(trainer.real_batches(0)))
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state = mesh_lib.replicate(restored[1], trainer.mesh)
  else:
    state = trainer.warm_reward(state)
  start = int(state.iteration)
  if is_chief:
    _log_parameters(state)
  logging.info('Starting at iteration %d of %d.', start, cfg.num_iterations)
  evaluator = _make_evaluator(cfg) if is_chief else None
  # Batch 0 initialised the reward model; iteration i reads d_steps batches.
  real_iter = trainer.real_batches(1 + start * cfg.reward.d_steps)
  preempt = manager.Preemption()
  prog = progress_lib.Progress(cfg.num_iterations - start, 'adagen iterations')

  def evaluate_policy(params, num, tag, iteration, table=None):
    """Metrics (chief, Fashion-MNIST) and a sample grid of one policy."""
    imgs, labels, _ = trainer.generate(params, num, seed=1234, table=table)
    if evaluator is None:
      return None
    metrics = evaluator(imgs, labels)
    images_lib.save_grid(os.path.join(workdir, f'samples_{tag}.png'),
                         imgs[:100], nrow=10, upscale=2)
    writer.write_scalars(iteration, {f'eval_{tag}/{k}': v
                                     for k, v in metrics.items()})
    logging.info('iteration %d, %s: %s', iteration, tag, metrics)
    return metrics

  # The handler goes however the loop ends (done, preempted, or an error
  # such as non-finite values): afterwards SIGTERM kills as usual.
  window = None  # clu averages since the last write (log_every)
  try:
    for it in range(start, cfg.num_iterations):
      t0 = time.time()
      state, metrics, plot_data = trainer.iteration(state, it, real_iter)
      _finite_or_raise(metrics, it + 1, ckpt.latest_step)
      metrics['iter_seconds'] = time.time() - t0
      window = writers.average_into(window, metrics)
      if (it + 1) % cfg.log_every == 0:
        writer.write_scalars(it + 1, writers.window_means(window))
        window = None
      # A sum of standardised terms has mean 0: show its terms too.
      prog.update(1, reward=metrics['reward_mean'], **{
          k[len('reward_'):-len('_mean')]: v for k, v in metrics.items()
          if k.startswith('reward_') and k.endswith('_mean') and
          k != 'reward_mean'})
      last = it + 1 == cfg.num_iterations
      if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and not last:
        evaluate_policy(state.ppo.params, cfg.eval_num, 'adagen', it + 1)
      if cfg.plots_every and (it + 1) % cfg.plots_every == 0:
        # Every process joins the gather of the batch-sharded arrays.
        plot_data = multihost_utils.process_allgather(plot_data, tiled=True)
        if is_chief:
          _plot_schedules(workdir, trainer, *plot_data,
                          f'iteration {it + 1}, exploring policy')
      stop = preempt.agreed()
      if (it + 1) % cfg.checkpoint_every == 0 or last or stop:
        ckpt.save(it + 1, state, config.to_json())
      if stop:
        logging.warning('Preempted after iteration %d; checkpoint saved.',
                        it + 1)
        writer.close()
        ckpt.close()
        return {'preempted_at': it + 1}
  finally:
    preempt.uninstall()

  export.export_policy(os.path.join(workdir, 'policy'), state.ppo.params,
                       config, gen, reward_state=state.reward,
                       notes={'iterations': cfg.num_iterations})
  results = {}
  # final_eval_num=0 leaves the evaluation to experiments/fmnist_table.py
  # (sweeps that evaluate every trained seed on the same footing).
  # The same noise for every schedule; 'tuned' where one ships.
  runs = [('heuristic', None, None)]
  if trainer.tuned_spec is not None and cfg.final_eval_num:
    runs.append(('tuned', None, tuned_table(gen, trainer.tuned_spec)))
  runs.append(('adagen', state.ppo.params, None))
  for tag, params, table in runs:
    metrics = (evaluate_policy(params, cfg.final_eval_num, tag,
                               cfg.num_iterations, table)
               if cfg.final_eval_num else None)
    if metrics is not None:
      results[tag] = metrics
  actions, scores = trainer.scored_samples(state, cfg.ppo.rollout_batch)
  if is_chief:
    _plot_schedules(workdir, trainer, actions, scores,
                    'final deterministic policy', 'schedules_final.png')
    with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
      json.dump(results, f, indent=2)
  writer.close()
  ckpt.close()
  return results


def _tuned_spec(config, gen) -> base.ActionSpec | None:
  """The action spec of the shipped tuned schedule for these weights and
  steps (assets.tuned_constants), or None where none ships: the final
  table then omits the 'tuned' row and the plots its line."""
  try:
    best = assets.tuned_constants(gen.identity(), int(config.generator.steps))
  except errors.UserError:
    return None
  section = ml_collections.ConfigDict(config.generator.to_dict())
  section.update(best)
  tuned, _ = generators.build(section)
  # The constants move the hand-crafted table only; the smoothing and the
  # activations stay, so `tuned_table`'s offset reproduces the tuned rollout.
  assert gen.action_spec.smoothing == tuned.action_spec.smoothing
  return tuned.action_spec


def tuned_table(gen, tuned_spec: base.ActionSpec) -> jax.Array:
  """Raw float32 [T, A] from the hand-crafted to the tuned schedule."""
  return jnp.asarray(tuned_spec.residual(gen.num_steps)
                     - gen.action_spec.residual(gen.num_steps), jnp.float32)


def _make_evaluator(cfg):
  """FD-FMNIST needs the in-house feature net; other data sets are evaluated
  offline (`python -m adagen_jax.evaluate`) on exported samples."""
  if cfg.data.name != 'fashion_mnist':
    return None
  from adagen_jax import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.Evaluator.create('fmnist-test', cfg.data.path or None)


def make_backbone(reward_config) -> rewards_lib.Backbone:
  """The frozen reward backbone; the evaluation network only as a diagnostic."""
  if reward_config.backbone == 'fmnist':
    return rewards_lib.fmnist_backbone()
  if reward_config.backbone == 'fmnist_contrast':
    return rewards_lib.fmnist_contrast_backbone()
  if reward_config.backbone == 'fmnist_resnet':
    return rewards_lib.fmnist_resnet_backbone()
  if reward_config.backbone == rewards_lib.DIAGNOSTIC_BACKBONE:
    logging.warning(
        'DIAGNOSTIC run: the reward reads FeatureNet, the network that '
        'computes FD-FMNIST. Its FD measures what the RL machinery can reach '
        'on an aligned reward; it is not a result and is never shipped.')
    return rewards_lib.featurenet_diagnostic_backbone()
  if reward_config.backbone == 'dino_vits16':
    model = dino_vit.DinoViT()
    params = dino_vit.load_dino_vits16(reward_config.backbone_weights)
    return rewards_lib.Backbone(
        apply=lambda v, x: (model.apply(v, x), None),
        variables={'params': params}, readout=True, classifier=False)
  raise errors.UserError(
      f'config.reward.backbone={reward_config.backbone!r}; use fmnist, '
      f'fmnist_contrast, fmnist_resnet, dino_vits16 or '
      f'{rewards_lib.DIAGNOSTIC_BACKBONE}.')


def make_reward_model(reward_config, num_classes: int,
                      group_size: int = 1) -> rewards_lib.RewardModel:
  """`reward_config`'s reward model on its frozen backbone(s)."""
  static = reward_config.get('static_backbone', '')
  return rewards_lib.make_reward(
      reward_config, make_backbone(reward_config), num_classes, group_size,
      make_backbone(ml_collections.ConfigDict({'backbone': static}))
      if static else None, _ensemble(reward_config.get('ensemble', '')))


def _ensemble(spec: str) -> tuple:
  """config.reward.ensemble 'backbone:feature_index,...' as
  ((Backbone, feature_index), ...)."""
  members = []
  for item in filter(None, spec.split(',')):
    name, _, index = item.strip().partition(':')
    try:
      index = int(index or -1)
    except ValueError:
      raise errors.UserError(
          f'config.reward.ensemble={spec!r}: {item!r} is not '
          'backbone[:feature_index]; pass e.g. fmnist_resnet:-1.') from None
    try:
      backbone = make_backbone(ml_collections.ConfigDict({'backbone': name}))
    except errors.UserError as e:
      raise errors.UserError(f'config.reward.ensemble={spec!r}: {e}') from None
    members.append((backbone, index))
  return tuple(members)


def concat_trajectories(trajs) -> rollout_lib.Trajectory:
  """Joins rollout batches along the batch axis (1 for [T, B, ...] fields)."""
  def cat(name):
    parts = [getattr(t, name) for t in trajs]
    if parts[0] is None:
      return None
    return jnp.concatenate(parts, axis=0 if name in ('images', 'labels')
                           else 1)
  return rollout_lib.Trajectory(**{f.name: cat(f.name) for f in
                                   dataclasses.fields(rollout_lib.Trajectory)})


def _plot_schedules(workdir, trainer, actions, scores, title,
                    name='schedules.png'):
  gen, tuned = trainer.generator, trainer.tuned_spec
  plots.plot_schedules(
      os.path.join(workdir, name), np.asarray(jax.device_get(actions)),
      gen.action_spec.names, np.asarray(jax.device_get(scores)),
      gen.action_spec.heuristic(gen.num_steps),
      tuned=None if tuned is None else tuned.heuristic(gen.num_steps),
      title=title)
