"""The AdaGen training loop end to end on a tiny random MaskGIT (28x28).

Checks that non-finite values stop the run naming the iteration with the
checkpoint intact, that a checkpoint of another config is refused, and the
variants' training paths (fidelity policy, reconstructed reals, grouped
rollouts, FD warm-up, confidence bonus). Resuming to the uninterrupted state
and the run's outputs are checked on launched runs (test_faults).
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax import train
from adagen_jax.checkpoint import manager
from adagen_jax.configs import experiment
from adagen_jax.generators import maskgit
from adagen_jax.rl import export
from adagen_jax.rl import rewards


def tiny_generator(weights: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='maskgit', weights=weights, steps=3, schedule='cosine',
      smoothing=0.8, temp_init=1.0, samp_temp_init=1.0, cfg_init=1.0,
      image_size=28, image_channels=1, num_classes=10, tokens=7,
      codebook_size=8, width=16, depth=2, heads=2, mlp_ratio=2.0,
      tokenizer=dict(filters=4, channel_mult=(1, 1, 2), num_res_blocks=1,
                     embedding_dim=4, norm_groups=4)))


def make_weights(path: str) -> str:
  """Random tiny MaskGIT weights written to `path`."""
  tokenizer, transformer = maskgit.make_nets(tiny_generator(path))
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {
      'tokenizer': tokenizer.init(k1, jnp.zeros((1, 28, 28, 1)))['params'],
      'transformer': transformer.init(k2, jnp.zeros((1, 49), jnp.int32),
                                      jnp.zeros((1,), jnp.int32))['params'],
  }
  assets.save_variables(path, params)
  return path


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
  return make_weights(str(tmp_path_factory.mktemp('gen') / 'tiny.msgpack'))


def tiny_config(weights, **overrides):
  c = experiment.adagen_config(tiny_generator(weights))
  c.policy.hidden = 16
  c.ppo.update(trajectories=32, rollout_batch=16, epochs=2,
               learning_rate=1e-3)
  c.reward.update(d_steps=1, d_batch=16, mapping_layers=1)
  c.update(num_iterations=3, eval_every=0, final_eval_num=16,
           checkpoint_every=1, plots_every=0)
  for key, value in overrides.items():
    c[key] = value
  return c


def _params(workdir, config):
  gen, _ = train.generators.build(config.generator)
  ckpt = manager.Checkpointer(os.path.join(workdir, 'checkpoints'),
                              manager.fingerprint(config, gen))
  trainer = train.Trainer(config, workdir)
  trainer_state = trainer.init_state(next(trainer.real_batches(0)))
  step, state = ckpt.restore_latest(jax.eval_shape(lambda: trainer_state))
  return step, jax.device_get(state)


def test_nonfinite_reward_stops_with_checkpoint_intact(weights, tmp_path,
                                                       monkeypatch):
  workdir = str(tmp_path / 'nan')
  config = tiny_config(weights)
  calls = {'n': 0}
  original = train.Trainer.iteration

  def poisoned(self, state, it, real_iter):
    state, metrics, plot = original(self, state, it, real_iter)
    calls['n'] += 1
    if it == 1:
      metrics['reward_mean'] = float('nan')
    return state, metrics, plot

  monkeypatch.setattr(train.Trainer, 'iteration', poisoned)
  with pytest.raises(errors.UserError, match='iteration 2.*checkpoint: 1'):
    train.train_and_evaluate(config, workdir)
  step, _ = _params(workdir, config)
  assert step == 1


def test_no_final_eval_still_exports_and_other_config_is_refused(
    weights, tmp_path):
  workdir = str(tmp_path / 'other')
  # final_eval_num=0 skips the end-of-run evaluation, not the export.
  assert train.train_and_evaluate(
      tiny_config(weights, num_iterations=1, final_eval_num=0), workdir) == {}
  assert not os.path.exists(os.path.join(workdir, 'samples_adagen.png'))
  other = tiny_config(weights)
  other.policy.kind = 'nonadaptive'
  with pytest.raises(errors.UserError, match='another run'):
    train.train_and_evaluate(other, workdir)
  meta = json.load(open(os.path.join(workdir, 'policy', 'policy.json')))
  assert meta['policy']['kind'] == 'adaptive'


def test_fidelity_policy_trains_against_the_frozen_main_policy(weights,
                                                               tmp_path):
  from adagen_jax import train_fidelity  # pylint: disable=g-import-not-at-top
  main_dir, fid_dir = str(tmp_path / 'main'), str(tmp_path / 'fid')
  config = tiny_config(weights, num_iterations=1)
  train.train_and_evaluate(config, main_dir)
  metrics = train_fidelity.train_fidelity(
      config, os.path.join(main_dir, 'policy'), fid_dir, iterations=2)
  assert 0.0 <= metrics['lam'] <= 1.0
  assert 0.0 <= metrics['reward_fid'] <= 1.0
  gen, _ = train.generators.build(config.generator)
  _, params, card = export.load(os.path.join(fid_dir, 'policy'), gen)
  assert card['notes']['iterations'] == 2
  # Two PPO iterations moved the zero-initialised fidelity actor.
  assert any(np.any(np.asarray(p) != 0)
             for p in jax.tree.leaves(params['actor']['params']['linear3']))


def test_fidelity_policy_of_an_fd_reward_policy(weights, tmp_path):
  """The blend also serves policies trained with the FD reward and a
  confidence bonus (the MaskGIT T=8 recipe): the main reward and the
  confidence are standardised before they are blended. Also the FD
  reward's training on the 8 test devices (it once hung there:
  rewards._eigvalsh). The main policy is anchored to its start
  (ppo.kl_coef), which the fidelity policy's training leaves out."""
  from adagen_jax import train_fidelity  # pylint: disable=g-import-not-at-top
  main_dir, fid_dir = str(tmp_path / 'main'), str(tmp_path / 'fid')
  config = tiny_config(weights, num_iterations=1)
  config.reward.name = 'fd'
  config.reward.static_weight = 0.1
  config.ppo.kl_coef = 0.5
  train.train_and_evaluate(config, main_dir)
  with open(os.path.join(main_dir, 'metrics.jsonl')) as f:
    row = json.loads(f.readline())
  # The first epoch starts at the reference; later ones move off it.
  assert 0.0 <= row['kl_ref'] < 1.0
  metrics = train_fidelity.train_fidelity(
      config, os.path.join(main_dir, 'policy'), fid_dir, iterations=1)
  assert 0.0 <= metrics['reward_fid'] <= 1.0
  # Both terms standardised: the blended reward has mean ~0 whatever lam.
  assert abs(metrics['reward']) < 1e-4
  gen, _ = train.generators.build(config.generator)
  _, _, card = export.load(os.path.join(fid_dir, 'policy'), gen)
  assert card['notes']['fidelity_of'] == os.path.abspath(
      os.path.join(main_dir, 'policy'))


def test_reconstructed_reals_train_the_discriminator_on_tokenizer_output(
    weights, tmp_path):
  """real_reconstructed=True on real X == False on the tokenizer's recon(X)."""
  plain = train.Trainer(tiny_config(weights), str(tmp_path / 'plain'))
  config = tiny_config(weights)
  config.reward.real_reconstructed = True
  recon = train.Trainer(config, str(tmp_path / 'recon'))
  images, labels = next(plain.real_batches(0))
  recon_images = np.asarray(jax.device_get(
      plain.generator.reconstruct(plain.gen_params, jnp.asarray(images))))
  assert np.abs(recon_images - images).max() > 0.1  # a real difference
  fakes = (jnp.asarray(recon_images[::-1]), jnp.asarray(labels[::-1]))

  def d_metrics(trainer, real):
    """Loss and mean logits of one D step (before its update: Adam's first
    step is sign-like and would magnify float noise in the parameters)."""
    state = trainer.init_state(real)
    _, metrics = trainer.d_step(
        state.reward, state.ppo.params, (jnp.asarray(real[0]),
                                         jnp.asarray(real[1])),
        fakes, jax.random.key(1), jnp.float32(0.0))
    return np.array([metrics[k] for k in ('d_loss', 'd_real_logit',
                                          'd_fake_logit')])

  expected = d_metrics(plain, (recon_images, labels))
  np.testing.assert_allclose(d_metrics(recon, (images, labels)), expected,
                             rtol=1e-4, atol=1e-6)
  # A wrong reading (the raw images) gives a different real logit.
  raw = d_metrics(plain, (images, labels))
  assert abs(raw[1] - expected[1]) > 1e-3, (raw, expected)


def test_reconstructed_reals_need_a_tokenizer(weights, tmp_path, monkeypatch):
  monkeypatch.delattr(maskgit.MaskGITGenerator, 'reconstruct')
  config = tiny_config(weights)
  config.reward.real_reconstructed = True
  with pytest.raises(errors.UserError, match='real_reconstructed=True.*'
                     'set it to False'):
    train.Trainer(config, str(tmp_path))


def test_fd_reward_statistics_are_warmed_before_the_first_iteration(
    weights, tmp_path):
  """fd_init_batches independent real batches join the initial batch."""
  config = tiny_config(weights)
  config.reward.update(name='fd', fd_init_batches=3)
  trainer = train.Trainer(config, str(tmp_path))
  state = trainer.init_state(next(trainer.real_batches(0)))
  d_batch = config.reward.d_batch
  assert float(state.reward.count) == d_batch
  # (warm_reward donates the old reward state, as the loop's D steps do.)
  warm = trainer.warm_reward(state)
  assert float(warm.reward.count) == 4 * d_batch
  # The warm-up batches are another shuffle than the loop's.
  loop = next(trainer.real_batches(1))[0]
  other = next(trainer.real_batches(0, stream=1))[0]
  assert np.abs(np.asarray(loop) - np.asarray(other)).max() > 0.1
  # Other rewards are left alone.
  adversarial = train.Trainer(tiny_config(weights), str(tmp_path / 'adv'))
  adv_state = adversarial.init_state(next(adversarial.real_batches(0)))
  assert adversarial.warm_reward(adv_state) is adv_state


def test_grouped_rollouts_train(weights, tmp_path):
  """One iteration with ppo.group_size; a size that does not divide the
  rollout batch is a one-line UserError."""
  config = tiny_config(weights)
  config.ppo.group_size = 4
  trainer = train.Trainer(config, str(tmp_path))
  real_iter = trainer.real_batches(0)
  state = trainer.init_state(next(real_iter))
  before = jax.device_get(state.ppo.params)
  new, metrics, _ = trainer.iteration(state, 0, real_iter)
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before,
                       jax.device_get(new.ppo.params))
  assert max(jax.tree.leaves(moved)) > 0
  config.ppo.group_size = 3
  with pytest.raises(errors.UserError, match='ppo.group_size=3'):
    train.Trainer(config, str(tmp_path / 'bad'))
  config.ppo.group_size = 4
  config.ppo.kl_coef = -0.1
  with pytest.raises(errors.UserError, match='ppo.kl_coef=-0.1 must be'):
    train.Trainer(config, str(tmp_path / 'bad_kl'))


def test_confidence_bonus_from_another_backbone_trains(weights, tmp_path):
  """FD on the self-supervised backbone plus DiscBackbone's confidence; the
  headless backbone alone is refused in one line."""
  config = tiny_config(weights)
  config.reward.update(name='fd', backbone='fmnist_contrast',
                       feature_index=0, static_weight=0.5, fd_init_batches=0)
  with pytest.raises(errors.UserError, match='static_backbone=fmnist'):
    train.Trainer(config, str(tmp_path / 'bad'))
  config.reward.static_backbone = 'fmnist'
  trainer = train.Trainer(config, str(tmp_path))
  real_iter = trainer.real_batches(0)
  state = trainer.init_state(next(real_iter))
  assert isinstance(state.reward, rewards.BonusState)
  count = float(state.reward.base.count)  # the iteration donates the state
  new, metrics, _ = trainer.iteration(state, 0, real_iter)
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())
  # Standardised over the batch: the logged mean reward is ~0; the two
  # terms are logged before standardising (a probability, an FD gain).
  assert abs(float(metrics['reward_mean'])) < 1e-3
  assert 0.0 < metrics['reward_confidence_mean'] <= 1.0
  assert 'reward_base_mean' in metrics
  assert float(new.reward.base.count) > count


def test_reward_ensemble_config_builds_fd_members():
  """config.reward.ensemble adds FD members on the named backbones; a
  malformed entry is one line that shows the form."""
  config = ml_collections.ConfigDict({'name': 'fd', 'backbone': 'fmnist',
                                      'feature_index': 3,
                                      'ensemble': 'fmnist_resnet:-1'})
  model = train.make_reward_model(config, 10)
  assert isinstance(model, rewards.FDEnsemble)
  assert model.names == ('fd0', 'fd1')
  assert [m.feature_index for m in model.members] == [3, -1]
  assert model.members[1].backbone.variables is not (
      model.members[0].backbone.variables)
  config.ensemble = 'fmnist_resnet:last'
  with pytest.raises(errors.UserError, match='backbone\\[:feature_index\\]'):
    train.make_reward_model(config, 10)
  config.ensemble = 'imagenet:-1'
  with pytest.raises(errors.UserError, match='ensemble=.*use fmnist'):
    train.make_reward_model(config, 10)
