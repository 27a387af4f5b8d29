"""Trains the small Fashion-MNIST DiT / SiT shipped as assets/fmnist_{dit,sit}.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:sit
  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:dit

A class-conditional DiT network (`dit_nets.DiT`: adaLN-Zero, no variance
channels) on the pixels themselves (28x28x1 scaled to [-1, 1]; the generator
section has decoder='pixels'), trained with its paradigm's objective on the
schedule its sampler integrates (generators/solver.py):

  sit  x_t = t x + (1 - t) eps (t = 0 is noise), the network fed t predicts
       the velocity d x_t / dt = x - eps;
  dit  VP-linear x_t = alpha_t x + sigma_t eps, the network fed 1000 t
       predicts eps, or v = alpha_t eps - sigma_t x with
       config.sampling.output='v' (the generator section's `output`).

t in config.train.t_range (uniform, logit-normal or normal in half
log-SNR); labels are dropped to the null class with p_uncond so the model
can be guided; AdamW with warm-up and cosine decay; an
EMA of the weights is what ships. Writes {'params': EMA} as msgpack to
config.output (default adagen_jax/assets/fmnist_{paradigm}.msgpack) with a
JSON beside it: the `generator` section that samples it and what was
measured. With config.eval.num > 0 the run ends by sampling the written
asset with the hand-crafted time grid at each config.eval.steps (NFE) and
seed, and evaluating FD-FMNIST, precision, recall and label accuracy.
A rerun with the same --workdir reuses the trained weights and samples.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax import generators
from adagen_jax.data import fashion_mnist
from adagen_jax.generators import dit
from adagen_jax.generators import dit_nets
from adagen_jax.generators import sit
from adagen_jax.generators import solver
from adagen_jax.pretrain import common

PARADIGMS = {'dit': dit.DIT, 'sit': sit.SIT}


def noisy_inputs(paradigm: dit.Paradigm, output: str, x: jax.Array,
                 eps: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(x_t, regression target) of data x and noise eps, float32 [B, H, W, C].

  The target is what `LatentGenerator.prediction` reads for `output`: eps
  ('noise'), alpha_t eps - sigma_t x ('v'), or the velocity alpha'(t) x +
  sigma'(t) eps ('velocity', x - eps for SiT).
  """
  def coef(fn):
    value, slope = jax.jvp(fn, (t,), (jnp.ones_like(t),))
    return value[:, None, None, None], slope[:, None, None, None]

  alpha, d_alpha = coef(paradigm.schedule.alpha)
  sigma, d_sigma = coef(paradigm.schedule.sigma)
  targets = {'noise': eps, 'v': alpha * eps - sigma * x,
             'velocity': d_alpha * x + d_sigma * eps}
  target = targets[output]
  return alpha * x + sigma * eps, target


def sample_times(cfg, schedule: solver.Schedule, rng: jax.Array,
                 batch: int) -> jax.Array:
  """Training times t, float32 [batch], in cfg.t_range.

  'uniform'; 'logit_normal' (t = sigmoid(n), n ~ N(0, 1); SD3's choice for
  rectified flow): it spends the steps on the middle times, where the
  velocity is hardest to predict, instead of the nearly trivial ends; or
  'lambda_normal': the same noise levels for any schedule, the half
  log-SNR lambda = log(alpha / sigma) ~ N(0, 1) mapped to t (for SiT's
  linear interpolant lambda = logit(t), so this is logit_normal). Uniform t
  on DiT's VP-linear schedule puts half the steps at t > 0.5, where alpha <
  0.29 and the image is nearly pure noise.
  """
  lo, hi = cfg.t_range
  if cfg.t_sampling == 'logit_normal':
    t = jax.nn.sigmoid(jax.random.normal(rng, (batch,)))
    return lo + (hi - lo) * t
  if cfg.t_sampling == 'lambda_normal':
    t = schedule.inverse_lam(jax.random.normal(rng, (batch,)))
    return jnp.clip(t, lo, hi)
  if cfg.t_sampling != 'uniform':
    raise errors.UserError(
        f'config.train.t_sampling={cfg.t_sampling!r}; use uniform, '
        'logit_normal or lambda_normal.')
  return jax.random.uniform(rng, (batch,), minval=lo, maxval=hi)


def _train_step(net: dit_nets.DiT, paradigm: dit.Paradigm, output: str, tx,
                cfg, state: common.EmaTrainState, images, labels, rng):
  k_t, k_eps, k_null = jax.random.split(rng, 3)
  x = 2.0 * images - 1.0
  t = sample_times(cfg, paradigm.schedule, k_t, x.shape[0])
  x_t, target = noisy_inputs(paradigm, output, x,
                             jax.random.normal(k_eps, x.shape), t)
  drop = jax.random.bernoulli(k_null, cfg.p_uncond, labels.shape)
  labels = jnp.where(drop, net.num_classes, labels)

  def loss_fn(params):
    out, _ = net.apply({'params': params}, x_t, paradigm.time_scale * t,
                       labels)
    return jnp.mean((out[..., :net.in_channels] - target) ** 2)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return common.apply_gradients(state, tx, grads, cfg.ema_decay), loss


def train_network(config, images: np.ndarray, labels: np.ndarray,
                  workdir: str) -> dict | None:
  """EMA params of the network trained on float32 [N, 28, 28, 1] images.

  Resumable (common.run_resumable); None when SIGTERM stopped it.
  """
  cfg = config.train
  net = dit_nets.DiT(**dit.module_kwargs(config.model))
  rng_init, rng_train = jax.random.split(jax.random.key(config.seed))
  params = net.init(rng_init, jnp.zeros((1,) + images.shape[1:]),
                    jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))['params']
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(common.warmup_cosine(cfg, 0.05),
                  weight_decay=cfg.weight_decay,
                  mask=common.weight_decay_mask))
  state = common.create_ema_state(params, tx)
  step_fn = jax.jit(functools.partial(
      _train_step, net, PARADIGMS[config.paradigm], config.sampling.output,
      tx, cfg), donate_argnums=0)
  batches = fashion_mnist.batches(images, labels, cfg.batch_size, config.seed,
                                  0, 1)
  state = common.run_resumable(
      config.paradigm, workdir, cfg,
      {'paradigm': config.paradigm, 'model': config.model.to_dict(),
       'seed': config.seed}, state, step_fn, batches, rng_train)
  return None if state is None else jax.device_get(state.ema_params)


def generator_config(config, output: str) -> ml_collections.ConfigDict:
  """The `config.generator` section that samples the written asset."""
  g = ml_collections.ConfigDict(dict(
      name=config.paradigm, decoder='pixels', weights=output,
      model=config.model.to_dict(), dtype='float32'))
  g.update(config.sampling.to_dict())
  return g


def evaluate_model(config, gen_config, workdir: str) -> dict:
  """Sample metrics of the asset at each config.eval.steps NFE."""
  cfg = config.eval
  samples = {}
  for nfe in cfg.steps:
    gen_config.steps = nfe
    generator, params = generators.build(gen_config)
    samples[nfe] = [common.cached_samples(workdir, generator, params, cfg.num,
                                          seed, cfg.batch, f'nfe{nfe}')
                    for seed in cfg.seeds]
  # Imported here: the evaluation network is not needed for training.
  from adagen_jax import evaluate  # pylint: disable=g-import-not-at-top
  evaluator = evaluate.Evaluator.create('fmnist-test', config.data_dir or None)
  out = {'num_samples': cfg.num, 'seeds': list(cfg.seeds),
         'solver': gen_config.solver, 'reference': 'fmnist-test'}
  for nfe in cfg.steps:
    out[f'NFE{nfe}'] = common.sample_metrics(evaluator, samples[nfe])
    logging.info('NFE=%d: %s', nfe, out[f'NFE{nfe}'])
  return out


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or reuses) the network, writes the asset, evaluates it.

  Returns:
    The metadata written next to the weights.
  """
  if config.paradigm not in PARADIGMS:
    raise errors.UserError(
        f'config.paradigm={config.paradigm!r}; use one of '
        f'{", ".join(sorted(PARADIGMS))} (--config=configs/pretrain/'
        'fmnist_flow.py:sit).')
  t0 = time.time()
  output = config.output or assets.asset_path(
      f'fmnist_{config.paradigm}.msgpack')
  os.makedirs(workdir, exist_ok=True)
  trained = os.path.join(workdir, 'network.msgpack')
  if os.path.exists(trained):
    logging.info('reusing %s', trained)
    params = assets.load_variables(trained, 'network', '')
    metrics = assets.load_meta(trained)
  else:
    images, labels = fashion_mnist.load('train', config.data_dir or None)
    params = train_network(config, images, labels, workdir)
    if params is None:  # preempted: saved, a rerun resumes
      return {}
    metrics = {'minutes': round((time.time() - t0) / 60, 1)}
    assets.save_variables(trained, params, metrics)
  gen = generator_config(config, output)
  # The shipped asset is named, not a path, so exports stay portable.
  if not config.output:
    gen.weights = f'fmnist_{config.paradigm}'
  meta = {
      'generator': gen.to_dict(),
      'training': {
          'command': ' '.join(['python -m adagen_jax.pretrain'] + [
              shlex.quote(a) for a in sys.argv[1:]]),
          'seed': config.seed, 'steps': config.train.steps, **metrics,
      },
  }
  assets.save_variables(output, {'params': params}, meta)
  logging.info('wrote %s', output)
  if config.eval.num > 0:
    meta['measured'] = evaluate_model(config, gen, workdir)
    assets.save_variables(output, {'params': params}, meta)
    logging.info('measured: %s', meta['measured'])
  return meta
