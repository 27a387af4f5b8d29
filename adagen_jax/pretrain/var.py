"""Trains the small Fashion-MNIST VAR shipped as assets/fmnist_var{,_vqvae}.

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_var.py

Stage 1, the multi-scale residual VQVAE (`var_vqvae.VQVAE`, VAR's structure
at small sizes): 28x28x1 -> a 7x7 latent quantised residually at the scales
`patch_nums` (1, 2, 3, 4, 5, 7). The quantiser is trained as VAR's
`VectorQuantizer2`: the residual loop runs on the detached latent f, and at
every scale k the partial f_hat_k adds beta ||sg(f_hat_k) - f||^2 +
||f_hat_k - sg(f)||^2 (averaged over the scales; the second term trains the
codebook and the phi convs); the decoder sees the straight-through
f + sg(f_hat - f). Reconstruction: MSE + L1. Codes unused for
`restart_after` steps are restarted on random residuals of the batch, so a
run of minutes keeps the codebook alive.

Stage 2, the VAR transformer on the frozen VQVAE's token maps of the train
split: teacher-forced next-scale prediction (every scale at once under the
block-causal mask, inputs from `VQVAE.teacher_inputs`), CE with label
smoothing, labels dropped to the null class with p_uncond for guidance,
AdamW, an EMA of the weights (what ships).

Each stage keeps its result in WORKDIR ({vqvae,var}.msgpack); a rerun reuses
finished stages. With config.vqvae_only the run stops after stage 1 and
scores the VQVAE's reconstructions of the test split (about the best FD
the samples can reach; no asset is written), so the tokenizer can be
checked before the transformer's hours. Outputs: config.output (default
assets/fmnist_var.msgpack) holds the transformer, the same name with _vqvae
the VQVAE, and a JSON with the `generator` section that samples them and
what was measured (with config.eval.num > 0: FD-FMNIST etc. of the
reconstructions and of the hand-crafted sampler, per seed).
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
from adagen_jax import generators
from adagen_jax.data import fashion_mnist
from adagen_jax.generators import var
from adagen_jax.generators import var_nets
from adagen_jax.generators import var_vqvae
from adagen_jax.pretrain import common

_ASSET = 'fmnist_var.msgpack'


def vqvae_asset(output: str) -> str:
  """Path of the VQVAE file written beside the transformer's."""
  stem, ext = os.path.splitext(output)
  return f'{stem}_vqvae{ext}'


# ----------------------------------------------------------------------------
# Stage 1: the multi-scale VQVAE.


def quantise(module: var_vqvae.VQVAE, f: jax.Array, beta: float):
  """VAR's residual quantiser in training form (see the module docstring).

  Called as `vae.apply(variables, f, beta, method=quantise)`.

  Args:
    module: the bound VQVAE.
    f: float32 [B, s, s, Cvae] encoder latents.
    beta: commitment weight.

  Returns:
    f_st: float32 [B, s, s, Cvae], straight-through f_hat for the decoder;
    vq_loss: float32 [];
    ids: K int32 [B, pn_k^2] token maps (those of `VQVAE.to_scales`);
    residuals: float32 [M, Cvae], every scale's quantiser inputs (restarts).
  """
  s = module.latent_side
  f_ng = jax.lax.stop_gradient(f)
  f_hat = jnp.zeros_like(f)
  ids_all, residuals, vq = [], [], 0.0
  for si, pn in enumerate(module.patch_nums):
    rest = f_ng - jax.lax.stop_gradient(f_hat)
    z = rest if pn == s else var_vqvae.resize_area(rest, (pn, pn))
    ids = module.quantize.nearest(z)
    f_hat = module.add_scale(f_hat, module.lookup(ids), si)
    vq += (beta * jnp.mean((jax.lax.stop_gradient(f_hat) - f) ** 2) +
           jnp.mean((f_hat - f_ng) ** 2))
    ids_all.append(ids.reshape(f.shape[0], pn * pn))
    residuals.append(z.reshape(-1, z.shape[-1]))
  f_st = f + jax.lax.stop_gradient(f_hat - f)
  return (f_st, vq / len(module.patch_nums), ids_all,
          jnp.concatenate(residuals))


@flax.struct.dataclass
class VQState:
  params: Any
  opt_state: optax.OptState
  last_used: jax.Array   # int32 [V]: steps since the code was last chosen


def _vq_step(vae: var_vqvae.VQVAE, tx, cfg, state: VQState, images, rng):

  def loss_fn(params):
    variables = {'params': params}
    f = vae.apply(variables, images, method=vae.encode)
    f_st, vq, ids, residuals = vae.apply(variables, f, cfg.beta,
                                         method=quantise)
    x = vae.apply(variables, f_st, method=lambda m, z: m.decoder(
        m.post_quant_conv(z)))
    target = 2.0 * images - 1.0
    rec = jnp.mean((x - target) ** 2) + jnp.mean(jnp.abs(x - target))
    return rec + vq, (rec, vq, ids, residuals)

  (_, (rec, vq, ids, residuals)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  v = state.last_used.shape[0]
  used = jnp.zeros((v,), bool)
  for i in ids:
    used = used.at[i.reshape(-1)].set(True)
  last_used = jnp.where(used, 0, state.last_used + 1)
  dead = last_used >= cfg.restart_after
  pick = jax.random.choice(rng, residuals.shape[0], (v,))
  table = params['quantize']['embedding']['embedding']
  params['quantize']['embedding']['embedding'] = jnp.where(
      dead[:, None], residuals[pick], table)
  state = VQState(params=params, opt_state=opt_state,
                  last_used=jnp.where(dead, 0, last_used))
  return state, rec, vq, jnp.sum(used)


def train_vqvae(config, images: np.ndarray, workdir: str) -> dict | None:
  """Stage 1 on float32 [N, 28, 28, 1] images; returns the variables.

  Resumable (common.run_resumable); None when SIGTERM stopped it.
  """
  cfg = config.vqvae_train
  _, vae = var.modules_from_config(generator_config(config, ''))
  rng_init, rng_train = jax.random.split(jax.random.key(config.seed))
  params = vae.init(rng_init, var_vqvae.init_inputs(vae))['params']
  tx = optax.adam(common.warmup_cosine(cfg, 0.1))
  state = VQState(params=params, opt_state=tx.init(params),
                  last_used=jnp.zeros((vae.vocab_size,), jnp.int32))
  step_fn = jax.jit(functools.partial(_vq_step, vae, tx, cfg))
  batches = fashion_mnist.batches(images, np.zeros(images.shape[0]),
                                  cfg.batch_size, config.seed, 0, 1)
  # loss: reconstruction; aux0: VQ loss, aux1: codes used in the batch.
  state = common.run_resumable(
      'vqvae', workdir, cfg, {'model': config.model.to_dict(),
                              'seed': config.seed}, state,
      lambda st, x, y, rng: step_fn(st, x, rng), batches, rng_train)
  return None if state is None else {'params': jax.device_get(state.params)}


def reconstruction_metrics(vae: var_vqvae.VQVAE, variables,
                           images: np.ndarray, labels: np.ndarray,
                           evaluator) -> dict:
  """Evaluator metrics of the VQVAE's reconstructions of `images`.

  Samples are decoded by the same VQVAE, so this is about the best FD the
  transformer's samples can reach.
  """
  recon = jax.jit(lambda v, x: vae.apply(v, x)[0])
  recons = np.concatenate([np.asarray(recon(variables, images[i:i + 1000]))
                           for i in range(0, images.shape[0], 1000)])
  metrics = evaluator(recons, labels)
  logging.info('VQVAE reconstructions of the test split: %s', metrics)
  return metrics


def tokenize(vae: var_vqvae.VQVAE, variables, images: np.ndarray,
             batch: int = 1000) -> np.ndarray:
  """float32 [N, 28, 28, 1] -> int32 [N, L]: every scale's ids, in order."""
  fn = jax.jit(lambda v, x: jnp.concatenate(vae.apply(
      v, vae.apply(v, x, method=vae.encode), method=vae.to_scales)[0], 1))
  return np.concatenate([np.asarray(fn(variables, images[i:i + batch]))
                         for i in range(0, images.shape[0], batch)])


# ----------------------------------------------------------------------------
# Stage 2: the VAR transformer.


def _split_scales(ids: jax.Array, patch_nums) -> list[jax.Array]:
  """int32 [B, L] -> K int32 [B, pn_k^2]."""
  bounds = np.cumsum([p * p for p in patch_nums])[:-1]
  return jnp.split(ids, bounds, axis=1)


def _var_loss(net, vae, vae_vars, params, ids, labels, smoothing):
  x_in = vae.apply(vae_vars, _split_scales(ids, net.patch_nums),
                   method=vae.teacher_inputs)
  logits = net.apply({'params': params}, labels, x_in)
  targets = optax.smooth_labels(jax.nn.one_hot(ids, net.vocab_size),
                                smoothing)
  loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
  acc = jnp.mean(jnp.argmax(logits, -1) == ids)
  return loss, acc


def _var_step(net, vae, tx, cfg, vae_vars, state: common.EmaTrainState, ids,
              labels, rng):
  drop = jax.random.bernoulli(rng, cfg.p_uncond, labels.shape)
  labels = jnp.where(drop, net.num_classes, labels)
  (loss, acc), grads = jax.value_and_grad(
      lambda p: _var_loss(net, vae, vae_vars, p, ids, labels,
                          cfg.label_smoothing), has_aux=True)(state.params)
  return common.apply_gradients(state, tx, grads, cfg.ema_decay), loss, acc


def train_var(config, vae_vars, ids: np.ndarray, labels: np.ndarray,
              test_ids: np.ndarray, test_labels: np.ndarray, workdir: str
              ) -> tuple[dict | None, dict]:
  """Stage 2 on int32 [N, L] ids; returns (EMA variables, test metrics).

  Resumable (common.run_resumable); (None, {}) when SIGTERM stopped it.
  """
  cfg = config.var_train
  net, vae = var.modules_from_config(generator_config(config, ''))
  rng_init, rng_train = jax.random.split(jax.random.key(config.seed + 1))
  params = net.init(rng_init, *var_nets.init_inputs(net))['params']
  tx = optax.adamw(
      common.warmup_cosine(cfg, 0.05), b1=0.9, b2=0.95,
      weight_decay=cfg.weight_decay, mask=common.weight_decay_mask)
  state = common.create_ema_state(params, tx)
  step_fn = jax.jit(functools.partial(_var_step, net, vae, tx, cfg),
                    donate_argnums=1)
  batches = fashion_mnist.batches(ids, labels, cfg.batch_size, config.seed,
                                  0, 1)
  # aux0: token accuracy.
  state = common.run_resumable(
      'var', workdir, cfg, {'model': config.model.to_dict(),
                            'seed': config.seed}, state,
      lambda st, x, y, rng: step_fn(vae_vars, st, x, y, rng), batches,
      rng_train)
  if state is None:
    return None, {}
  loss, acc = jax.jit(functools.partial(_var_loss, net, vae, smoothing=0.0))(
      vae_vars, state.ema_params, jnp.asarray(test_ids[:2000]),
      jnp.asarray(test_labels[:2000]))
  metrics = {'test_ce': float(loss), 'test_token_acc': float(acc)}
  logging.info('VAR (EMA) on 2000 test images: %s', metrics)
  return {'params': jax.device_get(state.ema_params)}, metrics


# ----------------------------------------------------------------------------
# The asset.


def generator_config(config, output: str) -> ml_collections.ConfigDict:
  """The `config.generator` section that samples the written asset."""
  g = ml_collections.ConfigDict(config.model.to_dict())
  g.name = 'var'
  g.steps = len(config.model.patch_nums)
  g.var_weights = output
  g.vae_weights = vqvae_asset(output) if output else ''
  g.update(config.sampling.to_dict())
  return g


def evaluate_model(config, gen_config, workdir: str) -> dict:
  """Sample metrics of the asset with the hand-crafted sampler."""
  cfg = config.eval
  generator, params = generators.build(gen_config)
  samples = [common.cached_samples(workdir, generator, params, cfg.num, seed,
                                   cfg.batch, 'var') for seed in cfg.seeds]
  # Imported here: the evaluation network is not needed for training.
  from adagen_jax import evaluate  # pylint: disable=g-import-not-at-top
  data_dir = config.data_dir or None
  evaluator = evaluate.Evaluator.create('fmnist-test', data_dir)
  test_x, test_y = fashion_mnist.load('test', data_dir)
  return {'num_samples': cfg.num, 'seeds': list(cfg.seeds),
          'reference': 'fmnist-test',
          'reconstruction': reconstruction_metrics(
              generator.vae, params['vae'], test_x, test_y, evaluator),
          f'T{generator.num_steps}': common.sample_metrics(evaluator,
                                                           samples)}


def _stage(path: str, train_fn):
  """(variables, metadata) of a stage: reused from `path`, or trained.

  (None, None) when SIGTERM stopped the stage (saved; a rerun resumes).
  """
  if os.path.exists(path):
    logging.info('reusing %s', path)
    return assets.load_variables(path, 'stage', ''), assets.load_meta(path)
  t0 = time.time()
  variables, meta = train_fn()
  if variables is None:
    return None, None
  meta = dict(meta, minutes=round((time.time() - t0) / 60, 1))
  assets.save_variables(path, variables, meta)
  return variables, meta


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Both stages, the asset, and (optionally) its evaluation."""
  output = config.output or assets.asset_path(_ASSET)
  data_dir = config.data_dir or None
  train_x, train_y = fashion_mnist.load('train', data_dir)
  test_x, test_y = fashion_mnist.load('test', data_dir)
  os.makedirs(workdir, exist_ok=True)
  vae_vars, vq_meta = _stage(os.path.join(workdir, 'vqvae.msgpack'),
                             lambda: (train_vqvae(config, train_x, workdir),
                                      {}))
  if vae_vars is None:  # preempted
    return {}
  _, vae = var.modules_from_config(generator_config(config, ''))
  if config.get('vqvae_only', False):
    # Tokenizer check before the transformer's hours: score the
    # reconstructions, write no asset.
    from adagen_jax import evaluate  # pylint: disable=g-import-not-at-top
    return {'vqvae_minutes': vq_meta['minutes'],
            'reconstruction': reconstruction_metrics(
                vae, vae_vars, test_x, test_y,
                evaluate.Evaluator.create('fmnist-test', data_dir))}

  def stage2():
    ids = tokenize(vae, vae_vars, train_x)
    used = int(np.unique(ids).size)
    logging.info('the VQVAE uses %d of %d codes on the train split', used,
                 vae.vocab_size)
    variables, metrics = train_var(config, vae_vars, ids, train_y,
                                   tokenize(vae, vae_vars, test_x), test_y,
                                   workdir)
    return variables, dict(metrics, codes_used_train=used)

  var_vars, var_meta = _stage(os.path.join(workdir, 'var.msgpack'), stage2)
  if var_vars is None:  # preempted
    return {}
  gen = generator_config(config, output)
  if not config.output:
    # Shipped assets are named, not paths, so exports stay portable.
    gen.var_weights, gen.vae_weights = 'fmnist_var', 'fmnist_var_vqvae'
  meta = {
      'generator': gen.to_dict(),
      'training': {
          'command': ' '.join(['python -m adagen_jax.pretrain'] + [
              shlex.quote(a) for a in sys.argv[1:]]),
          'seed': config.seed, 'vqvae_steps': config.vqvae_train.steps,
          'var_steps': config.var_train.steps,
          'vqvae_minutes': vq_meta['minutes'], **var_meta,
      },
  }
  assets.save_variables(vqvae_asset(output), vae_vars)
  assets.save_variables(output, var_vars, meta)
  logging.info('wrote %s and %s', output, vqvae_asset(output))
  if config.eval.num > 0:
    meta['measured'] = evaluate_model(config, gen, workdir)
    assets.save_variables(output, var_vars, meta)
    logging.info('measured: %s', meta['measured'])
  return meta
