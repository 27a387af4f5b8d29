r"""How each reward ranks samples, against the evaluation network (issue 19).

  python experiments/reward_alignment.py --steps=4 --num=2048 \
      --out=docs/results/reward_alignment_maskgit_T4.json
  python experiments/reward_alignment.py --generator=dit --steps=4 \
      --num=2048 --out=docs/results/reward_alignment_dit_T4.json

Draws `--num` samples of a shipped Fashion-MNIST generator with the PPO
exploration distribution around the hand-crafted schedule, or with
--center=tuned around the shipped tuned one (raw actions ~ N(0, sigma^2)
per sample and step, the default run's first iterations),
so samples differ both in noise and in schedule. Each reward scores them
as training would (batches of `--batch`; the adversarial reward is a
discriminator trained against these exploring samples for as many steps
as a policy's run gives it with the 2-core CPU settings; the FD rewards use
10k real training images, on each of DiscBackbone's feature sets: the
embedded tokens and the outputs of blocks 1-4, `reward.feature_index`;
with --contrast also on each stage of ContrastNet, the self-supervised
backbone, `reward.backbone=fmnist_contrast`; with --resnet on each stage of
the supervised residual backbone, `reward.backbone=fmnist_resnet`).
Reported:

- `spearman`: per-sample rank correlations between every pair of signals.
  The reference signals read FeatureNet, the evaluation network: its
  leave-one-out FD gain against the *training* split (the diagnostic
  reward) and its kNN realism (minus the distance to the 3rd-nearest real
  training embedding, a per-sample precision).
- `pushes`: which actions each signal pushes. The least-squares slope of
  the (standardised) signal on the raw action noise estimates its gradient
  in action space; reported per step and action, with each reward's
  cosine similarity to the diagnostic reward's gradient.

Nothing here trains a policy; nothing is used to pick one.
"""

import json
import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from adagen_jax import cli
from adagen_jax import evaluate
from adagen_jax import generators
from adagen_jax import sample
from adagen_jax import train
from adagen_jax.configs import experiment
from adagen_jax.configs import shipped
from adagen_jax.data import fashion_mnist
from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import rewards as rewards_lib
from adagen_jax.rl import rollout as rollout_lib

_GENERATOR = flags.DEFINE_enum('generator', 'maskgit',
                               ['maskgit', 'sit', 'dit'], 'Generator.')
_STEPS = flags.DEFINE_integer('steps', 4, 'Steps T (NFE for the flows; '
                              'MaskGIT needs a shipped AdaGen policy at T).')
_NUM = flags.DEFINE_integer('num', 2048, 'Samples.')
_BATCH = flags.DEFINE_integer('batch', 256, 'Reward batch (as training).')
_SIGMA = flags.DEFINE_float('sigma', 0.6, 'Exploration std (raw space).')
_REALS = flags.DEFINE_integer('reals', 10240, 'Real training images for the '
                              'FD rewards\' statistics.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_CONTRAST = flags.DEFINE_bool('contrast', False, 'Also the FD rewards on '
                              'each stage of ContrastNet (the '
                              'self-supervised reward backbone).')
_RESNET = flags.DEFINE_bool('resnet', False, 'Also the FD rewards on each '
                            'stage of the supervised residual backbone '
                            '(reward.backbone=fmnist_resnet).')
_CENTER = flags.DEFINE_enum(
    'center', 'heuristic', ['heuristic', 'tuned'], 'The schedule the '
    'exploration is centred on: the reference constants, or the shipped '
    'tuned ones (where a policy started at the tuned schedule explores).')
_LABEL_SCALES = flags.DEFINE_list(
    'label_scales', [], 'Also the FD on the joint (features, label) of '
    'DiscBackbone sets 3 and 4 (reward.label_scale), for each of these '
    'one-hot lengths relative to sqrt(trace) of the real features\' '
    'covariance.')
_OUT = flags.DEFINE_string('out', None, 'Output JSON.', required=True)


def _fd_state(model, reals, real_labels):
  state = model.init(jax.random.key(0), jnp.asarray(reals[:256]),
                     jnp.asarray(real_labels[:256]))
  update = jax.jit(model.update)
  for i in range(256, reals.shape[0], 256):
    chunk = jnp.asarray(reals[i:i + 256])
    y = jnp.asarray(real_labels[i:i + 256])
    state, _ = update(state, chunk, y, chunk, y, jax.random.key(0))
  return state


def _trained_discriminator(model, reward_cfg, iterations, explore, reals,
                           real_labels, num_classes):
  """A discriminator trained as a policy's run trains it: reward_cfg's
  batch and d_steps x iterations steps, here against exploring
  hand-crafted samples (the shipped exports do not keep their
  discriminator)."""
  batch = int(reward_cfg['d_batch'])
  num_steps = int(reward_cfg['d_steps']) * iterations
  rs = np.random.default_rng(2)
  key = jax.random.key(2)
  state = model.init(key, jnp.asarray(reals[:8]), jnp.asarray(real_labels[:8]))
  update = jax.jit(model.update)
  for k in range(num_steps):
    idx = rs.choice(reals.shape[0], batch, replace=False)
    fake_labels = jnp.asarray(rs.integers(0, num_classes, batch), jnp.int32)
    fakes, _ = explore(fake_labels, jax.random.fold_in(key, 10_000 + k))
    state, metrics = update(state, jnp.asarray(reals[idx]),
                            jnp.asarray(real_labels[idx]), fakes, fake_labels,
                            jax.random.fold_in(key, k))
  print(f'discriminator: {num_steps} steps, last accuracy '
        f'{float(metrics["d_acc"]):.3f}')
  return state


def main(argv):
  del argv
  gen_config = shipped.fmnist_generator(_GENERATOR.value, _STEPS.value)
  if _CENTER.value == 'tuned':
    gen_config = sample.tuned_section(gen_config)
  gen, params = generators.build(gen_config)
  # The policies' 2-core CPU settings (experiment.CPU_RL).
  config = experiment.adagen_config(
      gen_config, f'steps={_STEPS.value}', overrides=experiment.CPU_RL)

  # Exploring rollouts around the hand-crafted schedule.
  agent = policy_lib.make_agent(gen.action_spec.size, gen.num_steps,
                                adaptive=False, hidden_size=16)
  agent_params = agent.init(jax.random.key(0), gen.obs_shape)
  act = agent.make_act_fn(agent_params, jnp.float32(_SIGMA.value),
                          explore=True, with_value=False)

  @jax.jit
  def explore(labels, rng):
    traj = rollout_lib.rollout(gen, params, labels, rng, act, keep_obs=False)
    return traj.images, traj.raw

  labels = sample.class_balanced_labels(_NUM.value, gen.num_classes)
  labels = np.random.default_rng(_SEED.value).permutation(labels)
  key = jax.random.key(_SEED.value)
  images, raws = [], []
  for i in range(0, _NUM.value, _BATCH.value):
    im, raw = explore(jnp.asarray(labels[i:i + _BATCH.value]),
                      jax.random.fold_in(key, i))
    images.append(np.asarray(im))
    raws.append(np.asarray(raw).transpose(1, 0, 2))  # [B, T, A]
  images, raws = np.concatenate(images), np.concatenate(raws)

  reals, real_labels = fashion_mnist.load('train')
  perm = np.random.default_rng(1).permutation(reals.shape[0])
  keep = perm[:_REALS.value]
  reals, real_labels = reals[keep], real_labels[keep]
  disc_backbone = train.make_backbone(config.reward)
  # The shipped policies use FD rewards: the discriminator gets the 2-core
  # CPU settings' steps.
  adv_cfg = config.reward.copy_and_resolve_references()
  adv_cfg.name = 'adversarial'
  adv_iterations = config.num_iterations
  adv_name = 'adversarial (2-core CPU D)'
  num_sets = len(disc_backbone.features(disc_backbone.variables,
                                        jnp.zeros((1, 28, 28, 1))))
  # Each extra backbone's FD reward on each of its stages.
  extra = {}
  for on, label, load in (
      (_CONTRAST.value, 'ContrastNet', rewards_lib.fmnist_contrast_backbone),
      (_RESNET.value, 'ResNet', rewards_lib.fmnist_resnet_backbone)):
    if on:
      backbone = load()
      sets = len(backbone.features(backbone.variables,
                                   jnp.zeros((1, 28, 28, 1))))
      extra.update({f'FD, {label} stage {k}': rewards_lib.FDReward(
          backbone, feature_index=k) for k in range(sets)})
  for k in (3, -1) if _LABEL_SCALES.value else ():
    marginal = rewards_lib.FDReward(disc_backbone, feature_index=k)
    _, sigma = marginal.real_stats(_fd_state(marginal, reals, real_labels))
    root_trace = float(jnp.sqrt(jnp.trace(sigma)))
    for rel in map(float, _LABEL_SCALES.value):
      print(f'DiscBackbone set {k}: sqrt(trace) {root_trace:.4f}, '
            f'label_scale {rel:g}x = {rel * root_trace:.4f}')
      extra[f'FD, DiscBackbone set {k} + labels x {rel:g}'] = (
          rewards_lib.FDReward(disc_backbone, feature_index=k,
                               label_scale=rel * root_trace,
                               num_classes=gen.num_classes))
  models = {
      adv_name: rewards_lib.make_reward(adv_cfg, disc_backbone,
                                        gen.num_classes),
      **{f'FD, DiscBackbone set {k}': rewards_lib.FDReward(
          disc_backbone, feature_index=k) for k in range(num_sets)},
      'static, DiscBackbone': rewards_lib.StaticReward(disc_backbone),
      **extra,
      'DIAGNOSTIC FD, FeatureNet': rewards_lib.FDReward(
          rewards_lib.featurenet_diagnostic_backbone()),
  }
  signals = {}
  for name, model in models.items():
    if isinstance(model, rewards_lib.FDReward):
      state = _fd_state(model, reals, real_labels)
    elif model.adversarial:
      state = _trained_discriminator(model, adv_cfg, adv_iterations, explore,
                                     reals, real_labels, gen.num_classes)
    else:
      state = model.init(jax.random.key(0), None, None)
    reward = jax.jit(model.reward)
    signals[name] = np.concatenate([
        np.asarray(reward(state, jnp.asarray(images[i:i + _BATCH.value]),
                          jnp.asarray(labels[i:i + _BATCH.value]),
                          jax.random.fold_in(key, i)))
        for i in range(0, _NUM.value, _BATCH.value)])

  # FeatureNet kNN realism: minus the distance to the k-th nearest real
  # training embedding (the radius test of precision, made continuous).
  train_ref = evaluate.Evaluator.create('fmnist-train')
  feats, preds = train_ref.features(images)
  ref = train_ref.ref_features
  d2 = (np.sum(feats ** 2, 1)[:, None] - 2 * feats @ ref.T +
        np.sum(ref ** 2, 1)[None])
  signals['FeatureNet kNN realism'] = -np.sqrt(np.maximum(
      np.partition(d2, 2, axis=1)[:, 2], 0))
  signals['FeatureNet label correct'] = (preds == labels).astype(np.float64)

  names = list(signals)
  spearman = {a: {b: float(stats.spearmanr(signals[a], signals[b])[0])
                  for b in names} for a in names}
  # Gradient estimates: slope of the standardised signal on the raw noise.
  x = raws.reshape(raws.shape[0], -1) / _SIGMA.value
  x = np.concatenate([x, np.ones((x.shape[0], 1))], 1)
  pushes = {}
  for name, s in signals.items():
    z = (s - s.mean()) / (s.std() + 1e-12)
    coef = np.linalg.lstsq(x, z, rcond=None)[0][:-1]
    pushes[name] = coef.reshape(raws.shape[1:])
  ref_grad = pushes['DIAGNOSTIC FD, FeatureNet'].ravel()
  cosine = {n: float(p.ravel() @ ref_grad / (np.linalg.norm(p) *
                                             np.linalg.norm(ref_grad)))
            for n, p in pushes.items()}
  out = dict(
      generator=_GENERATOR.value, steps=_STEPS.value, center=_CENTER.value,
      num=_NUM.value, sigma=_SIGMA.value,
      batch=_BATCH.value, actions=list(gen.action_spec.names),
      spearman=spearman, cosine_to_diagnostic_gradient=cosine,
      pushes={n: p.round(4).tolist() for n, p in pushes.items()})
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, 'w') as f:
    json.dump(out, f, indent=1)
  ref_name = 'DIAGNOSTIC FD, FeatureNet'
  for n in names:
    print(f'{n:34s} spearman vs diagnostic {spearman[n][ref_name]:+.3f}, '
          f'vs kNN realism {spearman[n]["FeatureNet kNN realism"]:+.3f}, '
          f'gradient cosine {cosine[n]:+.3f}')


if __name__ == '__main__':
  cli.run(main)
