"""Trains the small Fashion-MNIST MaskGIT shipped as assets/fmnist_maskgit.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_maskgit.py

Stage 1, the tokenizer (VQ-VAE with the MaskGIT VQGAN structure, no GAN):
28x28x1 -> 7x7 tokens. Loss: MSE + L1 reconstruction + beta * commitment
(beta 0.25); the codebook follows the encoder outputs by EMA (decay 0.99,
Laplace-smoothed counts) instead of a codebook loss, and codes unused for a
while are restarted on random encoder outputs of the batch. Both keep all
codes in use in a run of minutes, where a gradient-trained codebook leaves
many dead.

Stage 2, the UViT on the frozen tokenizer's ids of the train split: a
per-sample number of masked tokens, CE with label smoothing on the masked
positions, labels dropped to the null class with p_uncond for guidance,
AdamW, an EMA of the weights (the EMA is what ships).

Each stage keeps its result in WORKDIR ({tokenizer,transformer}.msgpack); a
rerun with the same workdir skips the stages already done. The output is
{'tokenizer': params, 'transformer': EMA params} as msgpack, and JSON
metadata with the sizes (`generator`, the fields of a `config.generator`)
and what was measured. With `config.eval.num > 0` the run ends by sampling
the shipped model with the cosine schedule at each `config.eval.steps` and
each seed and evaluating the
samples with adagen_jax.evaluate (FD-FMNIST, precision, recall, label
accuracy) against the test split; the tokenizer's reconstructions of the test
images are evaluated the same way. The samples are kept in WORKDIR too.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adagen_jax import assets
from adagen_jax.data import fashion_mnist
from adagen_jax.generators import maskgit
from adagen_jax.pretrain import common

_ASSET = 'fmnist_maskgit.msgpack'


# ----------------------------------------------------------------------------
# Stage 1: tokenizer.


@flax.struct.dataclass
class TokenizerState:
  params: Any
  opt_state: optax.OptState
  ema_count: jax.Array   # float32 [K]: EMA of assignments per code
  ema_sum: jax.Array     # float32 [K, D]: EMA of the assigned z
  last_used: jax.Array   # int32 [K]: steps since the code was last assigned


def _tokenizer_step(module, tx, cfg, state: TokenizerState, images, rng):
  """One step: Adam on encoder/decoder, EMA on the codebook, restarts."""

  def loss_fn(params):
    recon, z, z_q, ids = module.apply({'params': params}, images)
    rec = jnp.mean((recon - images) ** 2) + jnp.mean(jnp.abs(recon - images))
    commit = jnp.mean((z - jax.lax.stop_gradient(z_q)) ** 2)
    return rec + cfg.commitment * commit, (rec, ids, z)

  (loss, (rec, ids, z)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  # The codebook is set by the EMA below, never by the optimizer.
  grads['quantize']['embedding'] = jnp.zeros_like(
      grads['quantize']['embedding'])
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  k = state.ema_count.shape[0]
  flat_z = z.reshape(-1, z.shape[-1])
  onehot = jax.nn.one_hot(ids.reshape(-1), k, dtype=jnp.float32)
  count = onehot.sum(0)
  d = cfg.ema_decay
  ema_count = d * state.ema_count + (1 - d) * count
  ema_sum = d * state.ema_sum + (1 - d) * onehot.T @ flat_z
  total = ema_count.sum()
  smoothed = (ema_count + 1e-5) / (total + k * 1e-5) * total
  codebook = ema_sum / smoothed[:, None]
  # Restart codes unused for `restart_after` steps on random batch outputs.
  last_used = jnp.where(count > 0, 0, state.last_used + 1)
  dead = last_used >= cfg.restart_after
  pick = jax.random.choice(rng, flat_z.shape[0], (k,))
  codebook = jnp.where(dead[:, None], flat_z[pick], codebook)
  ema_sum = jnp.where(dead[:, None], flat_z[pick], ema_sum)
  ema_count = jnp.where(dead, 1.0, ema_count)
  last_used = jnp.where(dead, 0, last_used)
  params['quantize']['embedding'] = codebook
  state = TokenizerState(params=params, opt_state=opt_state,
                         ema_count=ema_count, ema_sum=ema_sum,
                         last_used=last_used)
  return state, loss, rec, jnp.sum(count > 0)


def train_tokenizer(config, images: np.ndarray, workdir: str) -> dict | None:
  """Stage 1 on float32 [N, 28, 28, 1] images; returns the params.

  Resumable (common.run_resumable); None when SIGTERM stopped it.
  """
  cfg = config.tokenizer_train
  tokenizer, _ = maskgit.make_nets(config.model)
  rng = jax.random.key(config.seed)
  rng_init, rng_train = jax.random.split(rng)
  params = tokenizer.init(rng_init, jnp.zeros((1,) + images.shape[1:]))[
      'params']
  params = flax.core.unfreeze(params)
  # Initialise the codebook on encoder outputs of real images.
  first = images[np.random.default_rng(config.seed).choice(
      images.shape[0], 512, replace=False)]
  _, z, _, _ = tokenizer.apply({'params': params}, first)
  z = np.asarray(z).reshape(-1, z.shape[-1])
  k = config.model.codebook_size
  codebook = z[np.random.default_rng(config.seed + 1).choice(
      z.shape[0], k, replace=False)]
  params['quantize']['embedding'] = jnp.asarray(codebook)
  tx = optax.adam(common.warmup_cosine(cfg, 0.1))
  state = TokenizerState(
      params=params, opt_state=tx.init(params),
      ema_count=jnp.ones((k,), jnp.float32),
      ema_sum=jnp.asarray(codebook),
      last_used=jnp.zeros((k,), jnp.int32))
  step_fn = jax.jit(functools.partial(_tokenizer_step, tokenizer, tx, cfg))
  batches = fashion_mnist.batches(images, np.zeros(images.shape[0]),
                                  cfg.batch_size, config.seed, 0, 1)
  # aux0: reconstruction loss, aux1: codes used in the batch.
  state = common.run_resumable(
      'tokenizer', workdir, cfg, {'model': config.model.to_dict(),
                                  'seed': config.seed}, state,
      lambda st, x, y, rng: step_fn(st, x, rng), batches, rng_train)
  return None if state is None else jax.device_get(state.params)


def tokenize(tokenizer, params, images: np.ndarray, batch: int = 1000
             ) -> np.ndarray:
  """float32 [N, 28, 28, 1] -> int32 [N, tokens^2] ids."""
  encode = jax.jit(lambda p, x: tokenizer.apply({'params': p}, x,
                                                method=tokenizer.encode))
  out = [np.asarray(encode(params, images[i:i + batch]))
         for i in range(0, images.shape[0], batch)]
  return np.concatenate(out).reshape(images.shape[0], -1)


# ----------------------------------------------------------------------------
# Stage 2: transformer.


def mask_tokens(rng: jax.Array, ids: jax.Array, mask_id: int):
  """Masks a per-sample random number of positions of int32 [B, N] ids.

  The masked fraction is cos(pi/2 u), u ~ U(0, 1): the distribution of mask
  ratios the cosine sampling schedule visits. The reference's Beta(12, 3)
  (mean 0.8) is for 500k-step runs; in a run of minutes it starves the low
  ratios the last sampling steps need. At least one position is masked.

  Returns:
    masked_ids int32 [B, N], mask bool [B, N] (True where masked).
  """
  b, n = ids.shape
  rng_ratio, rng_pos = jax.random.split(rng)
  ratio = jnp.cos(jnp.pi / 2 * jax.random.uniform(rng_ratio, (b, 1)))
  num = jnp.clip(jnp.ceil(ratio * n), 1, n)
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(rng_pos, (b, n)), -1), -1)
  mask = rank < num
  return jnp.where(mask, mask_id, ids), mask


def _transformer_step(module, tx, cfg, num_classes,
                      state: common.EmaTrainState, ids, labels, rng):
  rng_mask, rng_null, rng_drop = jax.random.split(rng, 3)
  masked_ids, mask = mask_tokens(rng_mask, ids, module.codebook_size)
  drop = jax.random.bernoulli(rng_null, cfg.p_uncond, labels.shape)
  labels = jnp.where(drop, num_classes, labels)

  def loss_fn(params):
    logits, _ = module.apply({'params': params}, masked_ids, labels,
                             train=True, rngs={'dropout': rng_drop})
    targets = optax.smooth_labels(
        jax.nn.one_hot(ids, module.codebook_size), cfg.label_smoothing)
    ce = optax.softmax_cross_entropy(logits, targets)
    loss = jnp.sum(ce * mask) / jnp.sum(mask)
    acc = jnp.sum((jnp.argmax(logits, -1) == ids) * mask) / jnp.sum(mask)
    return loss, acc

  (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  return common.apply_gradients(state, tx, grads, cfg.ema_decay), loss, acc


def _eval_loss(module, params, ids, labels, rng):
  masked_ids, mask = mask_tokens(rng, ids, module.codebook_size)
  logits, _ = module.apply({'params': params}, masked_ids, labels)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids)
  acc = jnp.argmax(logits, -1) == ids
  return jnp.sum(ce * mask) / jnp.sum(mask), jnp.sum(acc * mask) / jnp.sum(
      mask)


def train_transformer(config, ids: np.ndarray, labels: np.ndarray,
                      test_ids: np.ndarray, test_labels: np.ndarray,
                      workdir: str) -> tuple[dict | None, dict]:
  """Stage 2 on int32 [N, tokens^2] ids; returns (EMA params, metrics).

  Resumable (common.run_resumable); (None, {}) when SIGTERM stopped it.
  """
  cfg = config.transformer_train
  _, module = maskgit.make_nets(config.model, dropout=cfg.dropout)
  rng = jax.random.key(config.seed + 1)
  rng_init, rng_train = jax.random.split(rng)
  params = module.init(rng_init, jnp.asarray(ids[:2]),
                       jnp.asarray(labels[:2]))['params']
  tx = optax.adamw(
      common.warmup_cosine(cfg, 0.05), b1=cfg.b1, b2=cfg.b2,
      weight_decay=cfg.weight_decay, mask=common.weight_decay_mask)
  state = common.create_ema_state(params, tx)
  step_fn = jax.jit(functools.partial(
      _transformer_step, module, tx, cfg, config.model.num_classes))
  batches = fashion_mnist.batches(ids, labels, cfg.batch_size,
                                  config.seed, 0, 1)
  # aux0: masked-token accuracy.
  state = common.run_resumable(
      'transformer', workdir, cfg, {'model': config.model.to_dict(),
                                    'seed': config.seed}, state, step_fn,
      batches, rng_train)
  if state is None:
    return None, {}
  _, eval_module = maskgit.make_nets(config.model)
  eval_fn = jax.jit(functools.partial(_eval_loss, eval_module))
  ce, acc = eval_fn(state.ema_params, jnp.asarray(test_ids),
                    jnp.asarray(test_labels), jax.random.key(0))
  metrics = {'test_masked_ce': float(ce), 'test_masked_acc': float(acc)}
  logging.info('transformer (EMA) on test tokens: %s', metrics)
  return jax.device_get(state.ema_params), metrics


# ----------------------------------------------------------------------------
# Evaluation of the result.


def reconstruction_metrics(tokenizer, tok_params, images: np.ndarray,
                           labels: np.ndarray, evaluator) -> dict:
  """FeatureNet metrics of the tokenizer's reconstructions of `images`."""
  recon = jax.jit(lambda p, x: tokenizer.apply(
      {'params': p}, x, method=tokenizer.reconstruct))
  recons = np.concatenate([
      np.asarray(recon(tok_params, images[i:i + 1000]))
      for i in range(0, images.shape[0], 1000)])
  metrics = evaluator(recons, labels)
  logging.info('tokenizer reconstructions of the test split: %s', metrics)
  return metrics


def evaluate_model(config, gen_config, workdir: str, test_images,
                   test_labels) -> dict:
  """Reconstruction and sample metrics of the written asset (see module).

  All samples are drawn (and kept in `workdir`) before the evaluation
  network is loaded, so a missing evaluator costs no sampling on a rerun.
  """
  cfg = config.eval
  samples = {}
  for steps in cfg.steps:
    gen_config.steps = steps
    generator, params = maskgit.build(gen_config)
    for seed in cfg.seeds:
      samples[steps, seed] = common.cached_samples(
          workdir, generator, params, cfg.num, seed, cfg.batch, f'T{steps}')
  # Imported here: the evaluation network is not needed for training.
  from adagen_jax import evaluate  # pylint: disable=g-import-not-at-top
  evaluator = evaluate.Evaluator.create('fmnist-test', config.data_dir or None)
  out = {'num_samples': cfg.num, 'seeds': list(cfg.seeds),
         'schedule': gen_config.schedule, 'reference': 'fmnist-test',
         'reconstruction': reconstruction_metrics(
             generator.tokenizer, params['tokenizer'], test_images,
             test_labels, evaluator)}
  for steps in cfg.steps:
    out[f'T{steps}'] = common.sample_metrics(
        evaluator, [samples[steps, seed] for seed in cfg.seeds])
    logging.info('T=%d: %s', steps, out[f'T{steps}'])
  return out


def generator_config(config) -> ml_collections.ConfigDict:
  """The `config.generator` fields of the trained model (for the JSON)."""
  g = ml_collections.ConfigDict(config.model.to_dict())
  g.name = maskgit.NAME
  g.weights = config.output or os.path.splitext(_ASSET)[0]
  g.update(config.sampling.to_dict())
  return g


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Both stages, the asset, and (optionally) its evaluation.

  Returns:
    The metadata written next to the weights.
  """
  t0 = time.time()
  output = config.output or assets.asset_path(_ASSET)
  data_dir = config.data_dir or None
  train_x, train_y = fashion_mnist.load('train', data_dir)
  test_x, test_y = fashion_mnist.load('test', data_dir)
  os.makedirs(workdir, exist_ok=True)
  tokenizer_path = os.path.join(workdir, 'tokenizer.msgpack')
  if os.path.exists(tokenizer_path):
    logging.info('stage 1: reusing %s', tokenizer_path)
    tok_params = assets.load_variables(tokenizer_path, 'tokenizer', '')
    tok_minutes = assets.load_meta(tokenizer_path)['minutes']
  else:
    tok_params = train_tokenizer(config, train_x, workdir)
    if tok_params is None:  # preempted: saved, a rerun resumes
      return {}
    tok_minutes = round((time.time() - t0) / 60, 1)
    assets.save_variables(tokenizer_path, tok_params,
                          {'minutes': tok_minutes})
  if config.get('tokenizer_only', False):
    # Tokenizer experiments: score the reconstructions, write no asset.
    from adagen_jax import evaluate  # pylint: disable=g-import-not-at-top
    tokenizer, _ = maskgit.make_nets(config.model)
    return {'tokenizer_minutes': tok_minutes,
            'reconstruction': reconstruction_metrics(
                tokenizer, tok_params, test_x, test_y,
                evaluate.Evaluator.create('fmnist-test', data_dir))}
  t1 = time.time()
  transformer_path = os.path.join(workdir, 'transformer.msgpack')
  if os.path.exists(transformer_path):
    logging.info('stage 2: reusing %s', transformer_path)
    ema_params = assets.load_variables(transformer_path, 'transformer', '')
    metrics = assets.load_meta(transformer_path)
  else:
    tokenizer, _ = maskgit.make_nets(config.model)
    train_ids = tokenize(tokenizer, tok_params, train_x)
    test_ids = tokenize(tokenizer, tok_params, test_x)
    used = np.unique(train_ids).size
    logging.info('tokenizer uses %d of %d codes on the train split', used,
                 config.model.codebook_size)
    ema_params, metrics = train_transformer(config, train_ids, train_y,
                                            test_ids, test_y, workdir)
    if ema_params is None:  # preempted: saved, a rerun resumes
      return {}
    metrics['codes_used_train'] = int(used)
    metrics['transformer_minutes'] = round((time.time() - t1) / 60, 1)
    assets.save_variables(transformer_path, ema_params, metrics)
  gen = generator_config(config)
  meta = {
      'generator': gen.to_dict(),
      'training': {
          'command': ' '.join(['python -m adagen_jax.pretrain'] + [
              shlex.quote(a) for a in sys.argv[1:]]),
          'seed': config.seed,
          'tokenizer_steps': config.tokenizer_train.steps,
          'transformer_steps': config.transformer_train.steps,
          'tokenizer_minutes': tok_minutes,
          **metrics,
      },
  }
  assets.save_variables(output, {'tokenizer': tok_params,
                                 'transformer': ema_params}, meta)
  logging.info('wrote %s', output)
  if config.eval.num > 0:
    gen.weights = output
    meta['measured'] = evaluate_model(config, gen, workdir, test_x, test_y)
    assets.save_variables(output, {'tokenizer': tok_params,
                                   'transformer': ema_params}, meta)
    logging.info('measured: %s', meta['measured'])
  return meta
