r"""Trains ContrastNet, the self-supervised reward backbone, without labels.

  python -m adagen_jax.pretrain \
      --config=configs/pretrain/fmnist_contrast_backbone.py \
      --workdir=runs/contrast_backbone

SimCLR's objective (NT-Xent): each image gives two augmented views; a view's
projection must pick out its partner among the other 2B - 1 views of the
batch. No labels are read. The views differ by translation, flip and a
cut-out square, never by blur or resizing: a backbone trained to ignore blur
could not reward sharpness. The projection head only serves the objective;
the asset keeps the EMA backbone. Labels are used once, after training, for
a k-nearest-neighbour probe of the embedding (reported, not optimised).
Resumable (common.run_resumable).
"""

import functools
import os
import sys
import time

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adagen_jax import assets
from adagen_jax import progress
from adagen_jax.backbones import fmnist as nets
from adagen_jax.data import fashion_mnist
from adagen_jax.pretrain import classifier
from adagen_jax.pretrain import common


class ProjectionHead(nn.Module):
  """MLP on the mean-pooled last stage: [B, C] -> [B, dim], L2-normalised."""
  dim: int

  @nn.compact
  def __call__(self, pooled):
    h = nn.gelu(nn.Dense(pooled.shape[-1])(pooled))
    z = nn.Dense(self.dim)(h)
    return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-6)


def embed(module, params, images: jax.Array) -> jax.Array:
  """float32 [B, C]: the mean-pooled last stage (what the probe reads)."""
  features, _ = module.apply({'params': params}, images)
  return jnp.mean(features[-1], axis=1)


def cutout(rng: jax.Array, images: jax.Array, size: int,
           prob: float) -> jax.Array:
  """Zeroes a random size x size square (clipped at the border) with `prob`.

  Args:
    rng: typed key.
    images: float32 [B, H, W, C].
    size: side of the square in pixels.
    prob: chance that an image gets a square.
  """
  b, h, w, _ = images.shape
  rng_pos, rng_on = jax.random.split(rng)
  centre = jax.random.randint(rng_pos, (b, 2), 0, jnp.array([h, w]))
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  top = centre[:, 0, None, None] - size // 2
  left = centre[:, 1, None, None] - size // 2
  inside = ((rows >= top) & (rows < top + size) &
            (cols >= left) & (cols < left + size))
  on = jax.random.bernoulli(rng_on, prob, (b, 1, 1))
  return jnp.where((inside & on)[..., None], 0.0, images)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float
            ) -> tuple[jax.Array, jax.Array]:
  """SimCLR's loss on unit vectors z1, z2 [B, D] (row i of each: one image).

  Returns:
    (mean loss, accuracy: how often a view's nearest other view is its
    partner).
  """
  b = z1.shape[0]
  z = jnp.concatenate([z1, z2])
  sim = z @ z.T / temperature
  sim = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, sim)
  partner = jnp.concatenate([jnp.arange(b) + b, jnp.arange(b)])
  loss = optax.softmax_cross_entropy_with_integer_labels(sim, partner)
  return loss.mean(), jnp.mean(jnp.argmax(sim, -1) == partner)


def _train_step(module, head, tx, cfg, state, images, labels, rng):
  del labels  # self-supervised
  rngs = jax.random.split(rng, 4)

  def view(k):
    x = classifier.augment(rngs[2 * k], images, cfg.shift)
    return cutout(rngs[2 * k + 1], x, cfg.cutout, cfg.p_cutout)

  views = jnp.concatenate([view(0), view(1)])

  def loss_fn(params):
    z = head.apply({'params': params['head']},
                   embed(module, params['net'], views))
    return nt_xent(z[:images.shape[0]], z[images.shape[0]:], cfg.temperature)

  (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = common.apply_gradients(state, tx, grads, cfg.ema_decay)
  return state, loss, acc


def knn_accuracy(module, params, train_x, train_y, test_x, test_y,
                 k: int, batch: int = 1000) -> float:
  """Test accuracy of a cosine k-NN vote over the train embeddings."""
  embed_fn = jax.jit(functools.partial(embed, module))

  def unit(x):
    e = np.concatenate([np.asarray(embed_fn(params, x[i:i + batch]))
                        for i in range(0, x.shape[0], batch)])
    return e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-6)

  ref, queries = unit(train_x), unit(test_x)
  correct = 0
  bar = progress.Progress(queries.shape[0], 'k-NN probe')
  for i in range(0, queries.shape[0], batch):
    sim = queries[i:i + batch] @ ref.T
    nearest = np.argpartition(-sim, k, axis=1)[:, :k]
    votes = np.apply_along_axis(np.bincount, 1, train_y[nearest],
                                minlength=nets.NUM_CLASSES)
    correct += int(np.sum(np.argmax(votes, 1) == test_y[i:i + batch]))
    bar.update(n=min(batch, queries.shape[0] - i))
  return correct / queries.shape[0]


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ContrastNet; writes the asset and returns its metadata."""
  t0 = time.time()
  cfg = config.train
  module = nets.ContrastNet(**config.module)
  head = ProjectionHead(cfg.proj_dim)
  output = config.output or assets.asset_path(nets.CONTRAST_ASSET)
  train_x, train_y = fashion_mnist.load('train', config.data_dir or None)
  test_x, test_y = fashion_mnist.load('test', config.data_dir or None)

  rng_net, rng_head, rng_train = jax.random.split(
      jax.random.key(config.seed), 3)
  net_params = module.init(rng_net, jnp.zeros((1, 28, 28, 1)))['params']
  pooled = embed(module, net_params, jnp.zeros((1, 28, 28, 1)))
  params = {'net': net_params,
            'head': head.init(rng_head, pooled)['params']}
  tx = optax.adamw(common.warmup_cosine(cfg, 0.0),
                   weight_decay=cfg.weight_decay,
                   mask=common.weight_decay_mask)
  state = common.create_ema_state(params, tx)
  step_fn = jax.jit(functools.partial(_train_step, module, head, tx, cfg),
                    donate_argnums=0)
  batches = fashion_mnist.batches(train_x, train_y, cfg.batch_size,
                                  config.seed, 0, 1)
  state = common.run_resumable(
      'contrast', workdir, cfg,
      {'module': config.module.to_dict(), 'seed': config.seed}, state,
      step_fn, batches, rng_train)
  if state is None:  # preempted: saved, a rerun resumes
    return {}
  params = state.ema_params['net']
  knn = knn_accuracy(module, params, train_x, train_y, test_x, test_y,
                     config.knn_k)
  meta = {
      'net': 'contrast_backbone',
      'module': config.module.to_dict(),
      'knn_test_accuracy': round(knn, 4),
      'knn_k': config.knn_k,
      'steps': cfg.steps,
      'seed': config.seed,
      'minutes': round((time.time() - t0) / 60, 1),
      'command': ' '.join(['python -m adagen_jax.pretrain'] + sys.argv[1:]),
  }
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  assets.save_variables(output, {'params': params}, meta)
  logging.info('k-NN test accuracy %.4f; wrote %s', knn, output)
  return meta
