"""What the generator pretrainers share: the EMA train state and the
evaluation of a written asset's samples."""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any, Callable, Iterator

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adagen_jax import errors
from adagen_jax import plots
from adagen_jax import progress
from adagen_jax import samples_io
from adagen_jax.checkpoint import manager
from adagen_jax.metrics import writers


@flax.struct.dataclass
class EmaTrainState:
  params: Any
  ema_params: Any        # what ships
  opt_state: optax.OptState
  step: jax.Array        # int32 []


def create_ema_state(params, tx) -> EmaTrainState:
  # A copy: the step donates its state, and one buffer cannot go twice.
  return EmaTrainState(params=params,
                       ema_params=jax.tree.map(jnp.copy, params),
                       opt_state=tx.init(params),
                       step=jnp.zeros((), jnp.int32))


def check_schedules(config) -> None:
  """Refuses, before any training, a section whose warm-up does not fit.

  Checked up front because the pretrainers run stages in sequence: a bad
  value in the second stage must not cost the first stage's hours.
  """
  for name, section in config.items():
    if not (isinstance(section, ml_collections.ConfigDict)
            and 'steps' in section and 'warmup_steps' in section):
      continue
    if section.steps <= 0:
      raise errors.UserError(f'config.{name}.steps={section.steps} must be '
                             f'positive; pass e.g. --config.{name}.steps=1000')
    if not 0 <= section.warmup_steps < section.steps:
      raise errors.UserError(
          f'config.{name}: warmup_steps={section.warmup_steps} must be in '
          f'[0, steps={section.steps}); pass e.g. '
          f'--config.{name}.warmup_steps={section.steps // 10}')


def warmup_cosine(cfg, final_fraction: float) -> optax.Schedule:
  """0 -> cfg.lr over cfg.warmup_steps, cosine to final_fraction * lr."""
  return optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr * final_fraction)


def weight_decay_mask(params):
  """True for matrices and kernels: biases and norm scales get no decay."""
  return jax.tree.map(lambda x: x.ndim > 1, params)


def apply_gradients(state: EmaTrainState, tx, grads,
                    ema_decay: float) -> EmaTrainState:
  """One optimiser step, then the EMA of the weights.

  The EMA decay warms up as (1 + step) / (10 + step), so the early average
  is not dominated by the initialisation.
  """
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p,
                     state.ema_params, params)
  return EmaTrainState(params=params, ema_params=ema, opt_state=opt_state,
                       step=state.step + 1)


def run_resumable(name: str, workdir: str, section: ml_collections.ConfigDict,
                  fingerprint: dict, state: EmaTrainState,
                  step_fn: Callable[..., tuple], batches: Iterator,
                  rng: jax.Array, save_every_s: float = 600.0,
                  log_every: int = 100) -> EmaTrainState | None:
  """Runs `section.steps` steps of one training stage, resumably.

  The stage's state is saved with Orbax under WORKDIR/ckpt_NAME every
  `save_every_s` seconds and on SIGTERM, and restored when the stage starts
  again, so a run longer than a session continues where it stopped (the
  data stream is skipped forward to the restored step, and step i always
  uses fold_in(rng, i): a resumed run takes exactly the uninterrupted run's
  steps). A checkpoint whose fingerprint (the stage's sizes and schedule)
  differs is refused with one line.

  Args:
    name: the stage, e.g. 'sit'; names the checkpoint folder and progress.
    workdir: the pretraining run's folder.
    section: the stage's config section (steps, batch_size, lr, ...).
    fingerprint: what else must match to resume (e.g. the model's sizes).
    state: the freshly initialised state (the restore target).
    step_fn: (state, x, y, rng) -> (state, loss, *aux): scalars that the
      progress line shows as loss, aux0, aux1, ...
    batches: the stage's infinite (x, y) numpy stream from step 0.
    rng: the stage's key; step i gets fold_in(rng, i).
    save_every_s: seconds between periodic saves.
    log_every: steps per line of WORKDIR/NAME/metrics.jsonl (the means of
      loss and aux over those steps); the curve is plotted into
      WORKDIR/NAME_loss.png when the stage ends.

  Returns:
    The final state, or None when SIGTERM stopped the stage (saved).
  """
  ckpt = manager.Checkpointer(
      os.path.join(workdir, f'ckpt_{name}'),
      {'stage': name, 'section': section.to_dict(), **fingerprint}, keep=1)
  start = 0
  restored = ckpt.restore_latest(state)
  if restored is not None:
    start, state = restored
    logging.info('%s: resuming at step %d of %d', name, start, section.steps)
  batches = itertools.islice(batches, start, None)
  config_json = json.dumps(section.to_dict())
  bar = progress.Progress(section.steps - start, name)
  writer = writers.create_writer(os.path.join(workdir, name))
  window = None
  last_save = time.monotonic()
  with manager.Preemption() as preempt:
    for step in range(start, section.steps):
      x, y = next(batches)
      state, loss, *aux = step_fn(state, jnp.asarray(x), jnp.asarray(y),
                                  jax.random.fold_in(rng, step))
      scalars = {'loss': loss, **{f'aux{i}': a for i, a in enumerate(aux)}}
      bar.update(**scalars)
      window = writers.average_into(window, scalars)
      if (step + 1) % log_every == 0:
        writer.write_scalars(step + 1, writers.window_means(window))
        window = None
      if preempt.agreed():
        ckpt.save(step + 1, state, config_json)
        ckpt.close()
        writer.close()
        logging.warning('%s: stopped at step %d; rerun to resume.', name,
                        step + 1)
        return None
      if time.monotonic() - last_save > save_every_s:
        ckpt.save(step + 1, state, config_json)
        # The curve on disk then ends where the checkpoint does, even if the
        # run is killed before it can close the writer.
        writer.flush()
        last_save = time.monotonic()
  if start < section.steps:  # a rerun of a finished stage has saved it
    ckpt.save(section.steps, state, config_json)
  ckpt.close()
  writer.close()
  _plot_loss(workdir, name)
  return state


def _plot_loss(workdir: str, name: str):
  """WORKDIR/NAME_loss.png from the stage's metrics.jsonl (all sessions)."""
  path = os.path.join(workdir, name, writers.JSONL_NAME)
  if jax.process_index() or not os.path.exists(path):
    return
  rows = writers.read_jsonl(path)
  if not rows:
    return
  plots.plot_curves(os.path.join(workdir, f'{name}_loss.png'),
                    {name: ([r['step'] for r in rows],
                            [r['loss'] for r in rows])},
                    'step', 'training loss (window mean)',
                    f'{name}: training loss')


def mean_std(values: list[float]) -> dict:
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)),
          'values': [float(v) for v in values]}


def cached_samples(workdir: str, generator, params, num: int, seed: int,
                   batch: int, tag: str) -> tuple[np.ndarray, np.ndarray]:
  """Hand-crafted samples of one (tag, seed), kept in WORKDIR for reruns."""
  from adagen_jax import sample  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, f'samples_{tag}_seed{seed}_n{num}.npz')
  if os.path.exists(path):
    return samples_io.load_samples(path)
  images, labels = sample.generate_with(generator, params, num, seed,
                                        batch=batch)
  samples_io.save_samples(path, images, labels)
  return images, labels


def sample_metrics(evaluator, samples: list[tuple[np.ndarray, np.ndarray]]
                   ) -> dict:
  """{metric: mean_std over the seeds' (images, labels)}."""
  runs = [evaluator(*s) for s in samples]
  return {k: mean_std([r[k] for r in runs])
          for k in ('fd', 'precision', 'recall', 'label_acc')}
