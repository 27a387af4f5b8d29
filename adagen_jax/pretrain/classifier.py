"""Trains a Fashion-MNIST backbone (FeatureNet or DiscBackbone) as a classifier.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_features.py

Cross-entropy on the train split with light augmentation (random shifts of up
to `config.shift` pixels, horizontal flips: Fashion-MNIST items are roughly
mirror symmetric), AdamW with warmup + cosine decay. Writes the variables and
their metadata (module arguments, test accuracy, epochs, seed, command) to
`config.output` (default: the shipped asset of `config.net`).
"""

import functools
import os
import sys
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax import progress
from adagen_jax.backbones import fmnist as nets
from adagen_jax.data import fashion_mnist
from adagen_jax.metrics import writers
from adagen_jax.pretrain import common


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any  # {} for networks without BatchNorm
  opt_state: optax.OptState


def augment(rng: jax.Array, images: jax.Array, shift: int) -> jax.Array:
  """Random translation by up to `shift` px (zero fill) and random hflip.

  Args:
    rng: typed key.
    images: float32 [B, H, W, C].
    shift: maximal shift in pixels along each axis.

  Returns:
    float32 [B, H, W, C].
  """
  b, h, w, _ = images.shape
  rng_shift, rng_flip = jax.random.split(rng)
  # Zero is the Fashion-MNIST background, so zero padding adds no artefact.
  padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
  offsets = jax.random.randint(rng_shift, (b, 2), 0, 2 * shift + 1)
  crop = jax.vmap(lambda x, o: jax.lax.dynamic_slice(
      x, (o[0], o[1], 0), (h, w, x.shape[-1])))
  images = crop(padded, offsets)
  flip = jax.random.bernoulli(rng_flip, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def _logits(module, variables, images, train, rng=None):
  mutable = ['batch_stats'] if 'batch_stats' in variables and train else False
  out = module.apply(variables, images, train=train, mutable=mutable,
                     rngs={'dropout': rng} if rng is not None else None)
  (_, logits), new_vars = out if mutable else (out, {})
  return logits, new_vars


def _variables(state: TrainState) -> dict:
  if state.batch_stats:
    return {'params': state.params, 'batch_stats': state.batch_stats}
  return {'params': state.params}


def _make_optimizer(config, warmup_steps: int,
                    total_steps: int) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.lr, warmup_steps, total_steps)
  # No decay on biases and normalisation scales (ndim < 2).
  return optax.adamw(schedule, weight_decay=config.weight_decay,
                     mask=common.weight_decay_mask)


def _train_step(module, tx, shift, state, images, labels, rng):
  """One AdamW step; returns (state, loss, accuracy)."""
  rng_aug, rng_drop = jax.random.split(rng)
  images = augment(rng_aug, images, shift)

  def loss_fn(params):
    variables = _variables(state.replace(params=params))
    logits, new_vars = _logits(module, variables, images, True, rng_drop)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss.mean(), (logits, new_vars)

  (loss, (logits, new_vars)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  state = state.replace(params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state,
                        batch_stats=new_vars.get('batch_stats', {}))
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return state, loss, accuracy


def accuracy(predict, variables, images, labels, batch_size: int = 1000
            ) -> float:
  """Top-1 accuracy on float [N, 28, 28, 1] images.

  Args:
    predict: jitted (variables, images) -> int [B] predicted classes.
    variables: the network's variables.
    images: float32 [N, 28, 28, 1] in [0, 1].
    labels: int [N].
    batch_size: images per call of `predict`.
  """
  correct = 0
  for i in range(0, images.shape[0], batch_size):
    correct += int(jnp.sum(predict(variables, images[i:i + batch_size]) ==
                           labels[i:i + batch_size]))
  return correct / images.shape[0]


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.net` on the Fashion-MNIST train split; writes the asset.

  Returns:
    The metadata written next to the weights.
  """
  if config.net not in nets.NETS:
    raise errors.UserError(f'config.net={config.net!r}; use one of '
                           f'{", ".join(nets.NETS)}.')
  module_cls, asset = nets.NETS[config.net]
  module = module_cls(**config.module)
  output = config.output or assets.asset_path(asset)
  train_x, train_y = fashion_mnist.load('train', config.data_dir or None)
  test_x, test_y = fashion_mnist.load('test', config.data_dir or None)

  steps_per_epoch = train_x.shape[0] // config.batch_size
  if config.epochs < 1 or steps_per_epoch < 1:
    raise errors.UserError(
        f'config.epochs={config.epochs} and config.batch_size='
        f'{config.batch_size} leave no training step for '
        f'{train_x.shape[0]} images; use epochs >= 1 and a smaller batch.')
  total_steps = config.epochs * steps_per_epoch
  tx = _make_optimizer(config, int(config.warmup_epochs * steps_per_epoch),
                       total_steps)

  rng = jax.random.key(config.seed)
  rng_init, rng_train = jax.random.split(rng)
  variables = module.init({'params': rng_init, 'dropout': rng_init},
                          jnp.zeros((1, 28, 28, 1)))
  state = TrainState(params=variables['params'],
                     batch_stats=variables.get('batch_stats', {}),
                     opt_state=tx.init(variables['params']))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('Training %s (%d parameters) for %d epochs, %d steps.',
               config.net, num_params, config.epochs, total_steps)

  step_fn = jax.jit(functools.partial(_train_step, module, tx, config.shift),
                    donate_argnums=0)
  predict = jax.jit(lambda v, x: jnp.argmax(_logits(module, v, x, False)[0],
                                            -1))
  data = fashion_mnist.batches(train_x, train_y, config.batch_size,
                               config.seed, process_index=0, process_count=1)
  writer = writers.create_writer(workdir)
  writer.write_hparams(config.to_dict())
  bar = progress.Progress(total_steps, f'pretrain {config.net}')
  start = time.time()
  for step in range(1, total_steps + 1):
    images, labels = next(data)
    state, loss, acc = step_fn(state, images, labels,
                               jax.random.fold_in(rng_train, step))
    bar.update(loss=loss, acc=acc)
    if step % config.log_every == 0:
      writer.write_scalars(step, {'train/loss': loss, 'train/accuracy': acc})
    if step % steps_per_epoch == 0:  # the last step always ends an epoch
      test_acc = accuracy(predict, _variables(state), test_x, test_y)
      logging.info('epoch %d: test accuracy %.4f', step // steps_per_epoch,
                   test_acc)
      writer.write_scalars(step, {'test/accuracy': test_acc})
  writer.close()

  meta = {
      'net': config.net,
      'module': config.module.to_dict(),
      'test_accuracy': round(test_acc, 4),
      'epochs': config.epochs,
      'seed': config.seed,
      'num_params': int(num_params),
      'train_seconds': round(time.time() - start),
      'command': ' '.join(['python -m adagen_jax.pretrain'] + sys.argv[1:]),
  }
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  assets.save_variables(output, _variables(state), meta)
  logging.info('Test accuracy %.4f; wrote %s', test_acc, output)
  return meta
