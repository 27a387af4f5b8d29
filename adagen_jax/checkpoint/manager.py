"""Training checkpoints: Orbax CheckpointManager around the whole train state.

A checkpoint is a Composite of
  state: the train state pytree (policy/critic/discriminator parameters and
         optimiser states, RNG key, iteration) as global jax.Arrays, and
  meta:  JSON: the run's fingerprint (generator identity, action names,
         policy kind and sizes, reward kind) and the config.
Orbax writes each step into a temporary folder and renames it when complete,
so a process killed at any moment leaves the previous step intact, and only
completed steps are ever listed or restored; the unfinished folders such a
kill leaves are deleted when the next run opens the directory. Every process
calls `save` and `restore` (Orbax coordinates them), with global arrays: each
restored leaf gets the sharding of the corresponding leaf of the target.
"""

import json
import os
import signal
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from adagen_jax import errors


class Preemption:
  """SIGTERM sets a flag; the loop saves at the step's end and exits.

  The processes of a multi-host job get the signal at different moments, so
  they stop after the first step at whose end any of them has it: all
  must join the same last save. Use it as a context manager, so the
  previous handler comes back however the loop ends.
  """

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint after this step.')
    self.requested = True

  def agreed(self) -> bool:
    """Whether to stop now; the same answer on every process."""
    if jax.process_count() > 1:
      return bool(np.any(multihost_utils.process_allgather(
          np.int32(self.requested))))
    return self.requested

  def uninstall(self):
    """Restores the previous SIGTERM handler (the default one kills)."""
    signal.signal(signal.SIGTERM, self._previous)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.uninstall()


class Checkpointer:
  """Saves and restores (state, meta); refuses another run's checkpoint."""

  def __init__(self, directory: str, fingerprint: dict, keep: int = 3):
    self._fingerprint = json.loads(json.dumps(fingerprint))
    # Orbax's tensorstore writer refuses relative paths (the default
    # --workdir is one); URLs such as gs://... are already absolute.
    if '://' not in directory:
      directory = os.path.abspath(directory)
    self._mngr = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            # Synchronous: a SIGTERM handler saves and exits right after.
            enable_async_checkpointing=False))

  @property
  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, state: Any, config_json: str):
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({'fingerprint': self._fingerprint,
                                'config': json.loads(config_json)})),
                    force=True)
    self._mngr.wait_until_finished()
    logging.info('Saved checkpoint %d to %s.', step, self._mngr.directory)

  def restore_latest(self, target: Any) -> tuple[int, Any] | None:
    """(step, state) of the newest complete checkpoint, or None.

    Args:
      target: the state's structure: a pytree of jax.Arrays (e.g. a freshly
        initialised state) or of jax.ShapeDtypeStructs. Restored leaves get
        the target leaf's sharding. A leaf without one (`jax.eval_shape`
        drops them) gets the saved sharding, which names the saving run's
        devices: pass arrays when the process or device layout may differ.
    """
    step = self.latest_step
    if step is None:
      return None
    where = f'{self._mngr.directory}/{step}'
    try:
      meta = self._mngr.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))['meta']
    except Exception as e:  # pylint: disable=broad-except
      raise errors.UserError(
          f'checkpoint {where} is unreadable ({type(e).__name__}); delete it '
          'or use another --workdir.') from None
    theirs = meta.get('fingerprint')
    if theirs != self._fingerprint:
      diff = sorted(k for k in set(self._fingerprint) | set(theirs or {})
                    if (theirs or {}).get(k) != self._fingerprint.get(k))
      raise errors.UserError(
          f'checkpoint {where} belongs to another run (differs in {diff}); '
          'use a new --workdir or the config that wrote it.')
    try:
      state = self._mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(jax.tree.map(_abstract, target))
      ))['state']
    except Exception as e:  # pylint: disable=broad-except
      raise errors.UserError(
          f'checkpoint {where} is corrupted or incompatible '
          f'({type(e).__name__}: {str(e).splitlines()[0][:120]}); delete '
          'that step folder to resume from an earlier one.') from None
    logging.info('Restored checkpoint %d from %s.', step, where)
    return step, state

  def close(self):
    self._mngr.close()


def _abstract(x):
  """A restore target leaf: shape, dtype and the sharding to restore to."""
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x


def fingerprint(config, generator) -> dict:
  """What must match for a checkpoint to be resumable by this run."""
  return {
      'generator': generator.identity(),
      'actions': list(generator.action_spec.names),
      'num_steps': generator.num_steps,
      'policy_kind': config.policy.kind,
      'policy_hidden': config.policy.hidden,
      'reward': config.reward.name,
  }
