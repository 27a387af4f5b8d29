"""Weights shipped inside the package (adagen_jax/assets/) and their I/O.

Shipped weights are flax msgpack files (`flax.serialization.to_bytes` of a
variables dict) next to a JSON file with the module's constructor arguments and
what the weights were measured to do. Reading them needs no pickle.
"""

import hashlib
import json
import os
from typing import Any

from flax import serialization
import jax
import numpy as np

from adagen_jax import errors

ASSET_DIR = os.path.join(os.path.dirname(__file__), 'assets')


def asset_path(name: str) -> str:
  return os.path.join(ASSET_DIR, name)


def is_shipped_name(weights: str) -> bool:
  """A bare name like 'fmnist_sit' (no folder, no .msgpack) names an asset."""
  return not weights.endswith('.msgpack') and os.sep not in weights


def weights_path(weights: str) -> str:
  """config.generator.weights -> file: a shipped asset or a user's path."""
  if is_shipped_name(weights):
    return asset_path(weights + '.msgpack')
  return os.path.expanduser(weights)


def tuned_schedule_path(weights: str, steps: int) -> str:
  """The shipped tuned hand-crafted constants of asset `weights` at T."""
  return asset_path(os.path.join('tuned', f'{weights}_T{steps}.json'))


def tuned_constants(identity: dict[str, Any], steps: int) -> dict[str, Any]:
  """The shipped tuned constants of a generator section at `steps`.

  Args:
    identity: the built generator's identity() (its weights and digest).
    steps: the config's step count (T; NFE for DiT and SiT), as
      experiments/fmnist_table.py --steps names the file.

  The file records the weights digest it was tuned on, so a schedule tuned
  for other weights is refused, not used.
  """
  weights = identity.get('weights', '')
  path = tuned_schedule_path(weights, steps)
  if not os.path.exists(path):
    raise errors.UserError(
        f'no tuned schedule ships for {weights} at T={steps} '
        f'(looked for {path}); tune one with python experiments/'
        'fmnist_table.py --stage=tune, or use --policy=heuristic.')
  with open(path) as f:
    tuned = json.load(f)
  if tuned['weights_digest'] != identity.get('weights_digest'):
    raise errors.UserError(
        f'the tuned schedule {path} was tuned on other weights of {weights} '
        f'(digest {tuned["weights_digest"]}, these are '
        f'{identity.get("weights_digest")}); retune it with python '
        'experiments/fmnist_table.py --stage=tune.')
  return tuned['best']


def weights_digest(*paths: str) -> str:
  """The first 16 hex digits of the SHA-256 of the files' bytes, in order.

  Recorded in a generator's identity, so a policy exported for one set of
  weights is refused on another one of the same name (a retrained asset).
  """
  h = hashlib.sha256()
  for path in paths:
    with open(path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 24), b''):
        h.update(chunk)
  return h.hexdigest()[:16]


def save_variables(path: str, variables: Any, meta: dict | None = None):
  """Writes `variables` as msgpack (atomically) and `meta` as JSON beside it."""
  variables = jax.tree.map(np.asarray, jax.device_get(variables))
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(serialization.msgpack_serialize(variables))
  os.replace(tmp, path)
  if meta is not None:
    with open(os.path.splitext(path)[0] + '.json', 'w') as f:
      json.dump(meta, f, indent=2, sort_keys=True)


def load_variables(path: str, what: str, fix: str) -> Any:
  """Reads a msgpack variables dict; a missing file is a UserError."""
  errors.require_file(path, what, fix)
  with open(path, 'rb') as f:
    try:
      return serialization.msgpack_restore(f.read())
    except Exception as e:  # pylint: disable=broad-except
      raise errors.UserError(f'{what} at {path} is not a valid weights file '
                             f'({type(e).__name__}); {fix}') from None


def load_meta(path: str) -> dict:
  with open(os.path.splitext(path)[0] + '.json') as f:
    return json.load(f)
