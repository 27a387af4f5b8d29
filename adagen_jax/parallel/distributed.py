"""`jax.distributed` initialisation for TPU pods, SLURM and local processes."""

import os

from absl import logging
import jax


def maybe_initialize():
  """Initialises multi-process JAX when the environment asks for it.

  - Cloud TPU pods and SLURM: `ADAGEN_DISTRIBUTED=1` (set by launch/), and
    jax.distributed detects coordinator, process count and id itself.
  - Local multi-process runs (tests, launch/local_multiprocess.sh): the
    coordinator is given explicitly with ADAGEN_COORDINATOR (host:port),
    ADAGEN_NUM_PROCESSES and ADAGEN_PROCESS_ID.
  - Otherwise a single process; nothing to do.
  """
  coordinator = os.environ.get('ADAGEN_COORDINATOR')
  if coordinator:
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=int(os.environ['ADAGEN_NUM_PROCESSES']),
        process_id=int(os.environ['ADAGEN_PROCESS_ID']))
  elif os.environ.get('ADAGEN_DISTRIBUTED') == '1':
    jax.distributed.initialize()
  else:
    return
  logging.info('Process %d/%d, %d local / %d global devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
