"""The Fashion-MNIST DiT / SiT trainer (adagen_jax/pretrain/flow.py)."""

import importlib.util
import os

import chex
import jax
import ml_collections
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax import generators
from adagen_jax import sample
from adagen_jax.checkpoint import manager
from adagen_jax.configs import shipped
from adagen_jax.generators import dit
from adagen_jax.generators import sit
from adagen_jax.generators import solver
from adagen_jax.pretrain import flow

_CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                       'pretrain', 'fmnist_flow.py')


def _pretrain_config(paradigm: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location('fmnist_flow', _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(paradigm)


def _data(shape=(3, 28, 28, 1)):
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x = jax.random.uniform(k1, shape, minval=-1.0, maxval=1.0)
  return x, jax.random.normal(k2, shape), jax.random.uniform(k3, (shape[0],))


def test_sit_inputs_are_the_linear_interpolant_and_its_velocity():
  x, eps, t = _data()
  x_t, target = flow.noisy_inputs(sit.SIT, 'velocity', x, eps, t)
  tt = t[:, None, None, None]
  np.testing.assert_allclose(x_t, tt * x + (1 - tt) * eps, rtol=1e-6)
  np.testing.assert_allclose(target, x - eps, rtol=1e-6, atol=1e-6)


def test_dit_inputs_are_vp_noise_and_the_target_is_eps():
  x, eps, t = _data()
  x_t, target = flow.noisy_inputs(dit.DIT, 'noise', x, eps, t)
  np.testing.assert_array_equal(target, eps)
  alpha = dit.DIT.schedule.alpha(t)[:, None, None, None]
  sigma = dit.DIT.schedule.sigma(t)[:, None, None, None]
  np.testing.assert_allclose(alpha ** 2 + sigma ** 2, 1.0, rtol=1e-5)
  np.testing.assert_allclose(x_t, alpha * x + sigma * eps, rtol=1e-5,
                             atol=1e-6)
  # The velocity form (used for SiT) is d x_t / dt on any schedule.
  h = 1e-3
  _, v = flow.noisy_inputs(dit.DIT, 'velocity', x, eps, t)
  up, _ = flow.noisy_inputs(dit.DIT, 'velocity', x, eps, t + h)
  down, _ = flow.noisy_inputs(dit.DIT, 'velocity', x, eps, t - h)
  np.testing.assert_allclose(v, (up - down) / (2 * h), rtol=2e-2, atol=2e-2)
  # v-prediction: the generator's x0 of the exact target is the data.
  x_t, v = flow.noisy_inputs(dit.DIT, 'v', x, eps, t)
  np.testing.assert_allclose(v, alpha * eps - sigma * x, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(
      solver.x0_from_v(dit.DIT.schedule, v, x_t, t), x, rtol=1e-4,
      atol=1e-4)


def test_lambda_normal_times_are_normal_in_half_log_snr():
  rng = jax.random.key(3)
  cfg = ml_collections.ConfigDict(dict(t_range=(0.0, 1.0),
                                       t_sampling='logit_normal'))
  logit = flow.sample_times(cfg, sit.SIT.schedule, rng, 64)
  cfg.t_sampling = 'lambda_normal'
  # On SiT's interpolant lambda = logit(t): the two are one distribution.
  np.testing.assert_allclose(
      flow.sample_times(cfg, sit.SIT.schedule, rng, 64), logit, rtol=1e-5,
      atol=1e-6)
  cfg.t_range = (0.001, 1.0)
  t = flow.sample_times(cfg, dit.DIT.schedule, rng, 8192)
  chex.assert_shape(t, (8192,))
  assert float(t.min()) >= 0.001 and float(t.max()) <= 1.0
  lam = np.asarray(dit.DIT.schedule.lam(t))
  assert abs(lam.mean()) < 0.05 and abs(lam.std() - 1.0) < 0.05
  # Most steps at middle noise: lambda = 0 is t ~ 0.26 on VP-linear.
  assert 0.2 < float(np.median(t)) < 0.32
  cfg.t_sampling = 'cosine'
  with pytest.raises(errors.UserError, match='lambda_normal'):
    flow.sample_times(cfg, dit.DIT.schedule, rng, 4)


@pytest.mark.parametrize('paradigm,output', [('sit', 'velocity'),
                                             ('dit', 'v')])
def test_train_writes_an_asset_that_samples(paradigm, output, tmp_path):
  config = _pretrain_config(paradigm)
  config.sampling.output = output
  config.model.update(hidden_size=16, depth=1, num_heads=2, patch_size=7)
  config.train.update(steps=3, warmup_steps=1, batch_size=8)
  config.eval.num = 0
  config.output = str(tmp_path / f'fmnist_{paradigm}.msgpack')
  meta = flow.train(config, str(tmp_path / 'work'))
  gen_config = ml_collections.ConfigDict(meta['generator'])
  assert gen_config.weights == config.output
  gen_config.steps = 2
  generator, params = generators.build(gen_config)
  assert generator.name == paradigm and generator.num_steps == 3
  assert generator.prediction_type == output
  images, labels = sample.generate_with(generator, params, 4, seed=0)
  assert images.shape == (4, 28, 28, 1) and labels.tolist() == [0, 1, 2, 3]
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert np.std(images) > 0
  # A rerun with the same workdir reuses the trained network.
  again = flow.train(config, str(tmp_path / 'work'))
  assert again['training'] == meta['training']


def test_a_preempted_run_resumes_to_the_uninterrupted_result(tmp_path,
                                                             monkeypatch):
  config = _pretrain_config('sit')
  config.model.update(hidden_size=16, depth=1, num_heads=2, patch_size=7)
  config.train.update(steps=4, warmup_steps=1, batch_size=8)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(32, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 10, 32).astype(np.int32)
  straight = flow.train_network(config, images, labels, str(tmp_path / 'a'))
  # SIGTERM seen after the second step: saved, stopped, then resumed.
  calls = []
  monkeypatch.setattr(manager.Preemption, 'agreed',
                      lambda self: calls.append(1) or len(calls) == 2)
  assert flow.train_network(config, images, labels,
                            str(tmp_path / 'b')) is None
  assert len(calls) == 2
  monkeypatch.undo()
  resumed = flow.train_network(config, images, labels, str(tmp_path / 'b'))
  chex.assert_trees_all_equal(resumed, straight)
  # Another schedule is another run: its checkpoint is not resumed.
  config.train.lr = 5e-4
  with pytest.raises(errors.UserError, match='belongs to another run'):
    flow.train_network(config, images, labels, str(tmp_path / 'b'))


def test_missing_shipped_weights_say_how_to_train_them():
  gen_config = shipped.fmnist_flow_generator('sit')
  gen_config.weights = 'no_such_fmnist_asset'
  with pytest.raises(errors.UserError,
                     match='pretrain --config=configs/pretrain/fmnist_flow'):
    generators.build(gen_config)
  gen_config.decoder = 'latent'
  with pytest.raises(errors.UserError, match='decoder'):
    generators.build(gen_config)


@pytest.mark.parametrize('paradigm', ['sit', 'dit'])
def test_pretrain_config_matches_the_shipped_generator_section(paradigm):
  written = flow.generator_config(_pretrain_config(paradigm), 'x').to_dict()
  section = shipped.fmnist_flow_generator(paradigm).to_dict()
  written.pop("weights"), section.pop("weights")
  assert written == section
