"""Improved precision and recall (Kynkäänniemi et al. 2019), k = 3.

Each set's manifold is the union of balls around its points with radius the
distance to the k-th nearest neighbour (self excluded). Precision: fraction of
generated points inside the real manifold; recall: fraction of real points
inside the generated manifold. Squared Euclidean distances, computed in row
blocks with jnp so 10k x 10k runs in seconds on a CPU.
"""


import jax
import jax.numpy as jnp
import numpy as np

_BLOCK = 1024


@jax.jit
def _sq_dists(a, b):
  """float32 [n, D], [m, D] -> [n, m] squared distances, clamped at 0."""
  d = (jnp.sum(a * a, 1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, 1)[None])
  return jnp.maximum(d, 0.0)


def _blocks(x):
  for i in range(0, x.shape[0], _BLOCK):
    yield x[i:i + _BLOCK]


def kth_radii(feats: np.ndarray, k: int = 3) -> np.ndarray:
  """Squared distance of every point to its k-th nearest other point."""
  x = jnp.asarray(feats, jnp.float32)
  # k + 1 smallest, since the point itself is at distance 0.
  radii = [jax.lax.top_k(-_sq_dists(blk, x), k + 1)[0][:, -1] for blk in
           _blocks(x)]
  return -np.concatenate([np.asarray(r) for r in radii])


def _coverage(points, centres, radii) -> float:
  """Fraction of `points` inside at least one ball (centre, radius)."""
  c = jnp.asarray(centres, jnp.float32)
  r = jnp.asarray(radii, jnp.float32)
  inside = [jnp.any(_sq_dists(blk, c) <= r[None], axis=1)
            for blk in _blocks(jnp.asarray(points, jnp.float32))]
  return float(np.concatenate([np.asarray(v) for v in inside]).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray,
                     k: int = 3) -> tuple[float, float]:
  """float [N, D] real and [M, D] generated features -> (precision, recall)."""
  precision = _coverage(fake, real, kth_radii(real, k))
  recall = _coverage(real, fake, kth_radii(fake, k))
  return precision, recall


