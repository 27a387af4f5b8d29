"""The ('data',) mesh, shardings, and moving host batches onto it.

The batch axis is sharded over every device of every process; the policy,
critic and discriminator (small) and the frozen generator are replicated. With
`jit` and these shardings, XLA inserts the cross-device reductions (PPO
return statistics, the discriminator's batch statistics) itself.
"""

import math

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from adagen_jax import errors


def make_mesh() -> Mesh:
  """A 1-D ('data',) mesh over all devices of all processes."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(AxisType.Auto,))


def local_mesh() -> Mesh:
  """A 1-D ('data',) mesh over this process's devices (host-side tools:
  sampling and evaluation, which every process runs on its own)."""
  return Mesh(np.asarray(jax.local_devices()), ('data',),
              axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over 'data'; the rest replicated."""
  return NamedSharding(mesh, P('data'))


def check_batch(global_batch: int, what: str, multiple: int = 1):
  """A global batch must split evenly over devices and into `multiple`s.

  (The discriminator normalises over groups of 8 samples; under jit a group
  may span devices, so only the global batch must be a multiple of 8.)
  """
  n = math.lcm(jax.device_count(), multiple)
  if global_batch % n:
    raise errors.UserError(
        f'{what}={global_batch} must be a multiple of {n} (the device count '
        f'and {multiple}); set --config.{what}='
        f'{max(n, global_batch // n * n)}.')


def replicate(tree, mesh: Mesh):
  """Host or device pytree -> global arrays replicated on every mesh device.

  Leaves already replicated on `mesh` pass through. In a multi-process run a
  host value or a process-local array (NumPy, Python scalar, an array on this
  process's devices) must be the same on every process (e.g. a deterministic
  init), since each process only fills its own devices; a global array with
  another sharding is resharded by one jitted copy. Typed PRNG keys travel as
  their key data.
  """
  target = replicated(mesh)
  leaves, treedef = jax.tree.flatten(tree)
  out = list(leaves)
  global_idx = []  # global arrays with another sharding: resharded together
  for i, x in enumerate(leaves):
    # Only a NamedSharding on `mesh` passes: a single-device array is
    # "equivalent" on a 1-device mesh, but jit keys its cache on the mesh, so
    # it would retrace (and recompile) every step once its outputs come back
    # on the mesh.
    if (isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding)
        and x.sharding.mesh == mesh
        and x.sharding.is_equivalent_to(target, x.ndim)):
      continue
    if (isinstance(x, jax.Array) and
        jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)):
      out[i] = jax.random.wrap_key_data(
          replicate(jax.random.key_data(x), mesh), impl=jax.random.key_impl(x))
    elif jax.process_count() == 1:
      out[i] = jax.device_put(x, target)
    elif isinstance(x, jax.Array) and not x.is_fully_addressable:
      global_idx.append(i)
    else:
      host = np.asarray(x)
      out[i] = jax.make_array_from_callback(host.shape, target,
                                            lambda index, h=host: h[index])
  if global_idx:
    moved = jax.jit(lambda *xs: xs, out_shardings=target)(
        *[leaves[i] for i in global_idx])
    for i, y in zip(global_idx, moved):
      out[i] = y
  return jax.tree.unflatten(treedef, out)


def shard_host_batch(tree, mesh: Mesh):
  """This process's slice of a global batch (NumPy) -> global jax.Arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding,
                                                       np.asarray(x)), tree)


def process_slice(global_batch: int) -> slice:
  """The rows of a global batch that this process feeds."""
  per = global_batch // jax.process_count()
  start = jax.process_index() * per
  return slice(start, start + per)
