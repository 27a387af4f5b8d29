"""The Fashion-MNIST VAR trainer (adagen_jax/pretrain/var.py)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax import generators
from adagen_jax import sample
from adagen_jax.configs import shipped
from adagen_jax.data import fashion_mnist
from adagen_jax.generators import var
from adagen_jax.pretrain import common
from adagen_jax.pretrain import var as var_pretrain

_CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                       'pretrain', 'fmnist_var.py')


def _pretrain_config():
  spec = importlib.util.spec_from_file_location('fmnist_var', _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _tiny_config():
  c = _pretrain_config()
  c.model.update(depth=1, width=32, num_heads=2, patch_nums=(1, 2, 7))
  c.model.vae.update(vocab_size=16, z_channels=4, ch=8, norm_groups=4)
  c.vqvae_train.update(steps=3, warmup_steps=1, batch_size=8,
                       restart_after=1)
  c.var_train.update(steps=3, warmup_steps=1, batch_size=8)
  c.eval.num = 0
  return c


@pytest.fixture(scope='module')
def vae():
  _, module = var.modules_from_config(
      var_pretrain.generator_config(_tiny_config(), ''))
  images = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  variables = module.init(jax.random.key(1), images)
  return module, variables, images


def test_training_quantiser_matches_to_scales(vae):
  module, variables, images = vae
  f = module.apply(variables, images, method=module.encode)
  ids, f_hat = module.apply(variables, f, method=module.to_scales)
  f_st, vq, train_ids, residuals = module.apply(variables, f, 0.25,
                                                method=var_pretrain.quantise)
  for a, b in zip(ids, train_ids):
    np.testing.assert_array_equal(a, b)
  # Straight-through: the decoder input's value is f_hat.
  np.testing.assert_allclose(f_st, f_hat, rtol=1e-5, atol=1e-5)
  assert residuals.shape == (3 * (1 + 4 + 49), 4) and float(vq) > 0
  # The gradient of the input reaches the encoder side only through f_st.
  grad = jax.grad(lambda x: jnp.sum(module.apply(
      variables, x, 0.25, method=var_pretrain.quantise)[0]))(f)
  np.testing.assert_allclose(grad, 1.0)


def test_teacher_inputs_of_tokenized_ids(vae):
  module, variables, images = vae
  ids = var_pretrain.tokenize(module, variables, np.asarray(images), batch=2)
  assert ids.shape == (3, 1 + 4 + 49) and ids.dtype == np.int32
  split = var_pretrain._split_scales  # pylint: disable=protected-access
  scales = split(jnp.asarray(ids), (1, 2, 7))
  assert [s.shape[1] for s in scales] == [1, 4, 49]
  x_in = module.apply(variables, scales, method=module.teacher_inputs)
  assert x_in.shape == (3, 4 + 49, 4)


def test_train_writes_an_asset_that_samples(tmp_path):
  config = _tiny_config()
  config.output = str(tmp_path / 'fmnist_var.msgpack')
  meta = var_pretrain.train(config, str(tmp_path / 'work'))
  assert os.path.exists(var_pretrain.vqvae_asset(config.output))
  gen_config = ml_collections.ConfigDict(meta['generator'])
  generator, params = generators.build(gen_config)
  assert generator.num_steps == 3
  images, _ = sample.generate_with(generator, params, 4, seed=0)
  assert images.shape == (4, 28, 28, 1)
  assert 0.0 <= images.min() and images.max() <= 1.0
  again = var_pretrain.train(config, str(tmp_path / 'work'))
  assert again['training'] == meta['training']


def test_vqvae_only_scores_reconstructions_and_writes_no_asset(
    tmp_path, monkeypatch):
  # 512 test images: the trainer's path, not its data volume.
  load = fashion_mnist.load
  monkeypatch.setattr(fashion_mnist, 'load', lambda *a, **k: tuple(
      x[:512] for x in load(*a, **k)))
  config = _tiny_config()
  config.output = str(tmp_path / 'fmnist_var.msgpack')
  config.vqvae_only = True
  out = var_pretrain.train(config, str(tmp_path / 'work'))
  rec = out['reconstruction']
  # Three steps of a 16-code VQVAE reconstruct nothing like the data.
  assert np.isfinite(rec['fd']) and rec['fd'] > 1.0
  assert out['vqvae_minutes'] >= 0.0
  assert not os.path.exists(config.output)
  assert os.path.exists(str(tmp_path / 'work' / 'vqvae.msgpack'))


def test_missing_shipped_var_says_how_to_train_it():
  gen_config = var_pretrain.generator_config(_tiny_config(), '')
  gen_config.var_weights, gen_config.vae_weights = 'nope_var', 'nope_vqvae'
  with pytest.raises(errors.UserError,
                     match='pretrain --config=configs/pretrain/fmnist_var'):
    generators.build(gen_config)



def test_pretrain_config_matches_the_shipped_generator_section():
  written = var_pretrain.generator_config(_pretrain_config(), 'x').to_dict()
  section = shipped.fmnist_var_generator().to_dict()
  for key in ('var_weights', 'vae_weights'):
    written.pop(key), section.pop(key)
  assert written == section


def test_a_warmup_longer_than_a_later_stage_is_refused_before_training():
  c = _tiny_config()
  common.check_schedules(c)  # the tiny schedules fit
  c.var_train.update(steps=100, warmup_steps=300)
  with pytest.raises(errors.UserError,
                     match=r'config.var_train: warmup_steps=300 .*steps=100'):
    common.check_schedules(c)
