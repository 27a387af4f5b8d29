"""The Fashion-MNIST MaskGIT trainer (adagen_jax/pretrain/maskgit.py)."""

import importlib.util
import os

import ml_collections
import numpy as np

from adagen_jax import generators
from adagen_jax import sample
from adagen_jax.data import fashion_mnist
from adagen_jax.pretrain import maskgit

_CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, 'configs',
                       'pretrain', 'fmnist_maskgit.py')


def _tiny_config(tmp_path) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location('fmnist_maskgit', _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.model.update(codebook_size=16, width=16, depth=2, heads=2)
  config.model.tokenizer.update(filters=8, embedding_dim=4, norm_groups=4)
  config.tokenizer_train.update(steps=3, warmup_steps=1, batch_size=8)
  config.transformer_train.update(steps=3, warmup_steps=1, batch_size=8)
  config.eval.num = 0
  config.output = str(tmp_path / 'fmnist_maskgit.msgpack')
  return config


def test_tokenizer_stage_then_both_stages_write_an_asset_that_samples(
    tmp_path, monkeypatch):
  # 512 images per split: the trainer's path, not its data volume (the full
  # 60k + 10k made this the suite's slowest test).
  load = fashion_mnist.load
  monkeypatch.setattr(fashion_mnist, 'load', lambda *a, **k: tuple(
      x[:512] for x in load(*a, **k)))
  config = _tiny_config(tmp_path)
  workdir = str(tmp_path / 'work')
  config.tokenizer_only = True
  out = maskgit.train(config, workdir)
  rec = out['reconstruction']
  # Three steps of a 16-code tokenizer reconstruct nothing like the data.
  assert np.isfinite(rec['fd']) and rec['fd'] > 1.0
  assert 0.0 <= rec['recall'] <= 1.0
  assert not os.path.exists(config.output)
  assert os.path.exists(os.path.join(workdir, 'tokenizer.msgpack'))

  # The full run reuses the finished tokenizer stage.
  config.tokenizer_only = False
  meta = maskgit.train(config, workdir)
  assert meta['training']['tokenizer_minutes'] == out['tokenizer_minutes']
  gen_config = ml_collections.ConfigDict(meta['generator'])
  assert gen_config.weights == config.output
  assert meta['training']['codes_used_train'] >= 1
  gen_config.steps = 2
  generator, params = generators.build(gen_config)
  images, labels = sample.generate_with(generator, params, 4, seed=0)
  assert images.shape == (4, 28, 28, 1) and labels.tolist() == [0, 1, 2, 3]
  assert 0.0 <= images.min() and images.max() <= 1.0
