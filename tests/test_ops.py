"""adagen_jax.ops equals the usual forms: jax.nn.dot_product_attention, jax.nn.gelu."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adagen_jax import ops


def _qkv(shape, dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  # Scaled so the softmax is peaked, not near uniform: errors in the max
  # shift or the normalisation would show.
  return [(3.0 * jax.random.normal(k, shape)).astype(dtype) for k in keys]


@pytest.mark.parametrize('shape', [(2, 17, 4, 8), (3, 50, 2, 16),
                                   (1, 197, 1, 32)])
def test_equals_fused_reference(shape):
  q, k, v = _qkv(shape)
  got = jax.jit(ops.self_attention)(q, k, v)
  want = jax.nn.dot_product_attention(q, k, v)
  chex.assert_shape(got, shape)
  chex.assert_trees_all_close(got, want, atol=2e-5, rtol=2e-5)


def test_gradients_equal():
  q, k, v = _qkv((2, 9, 2, 8), seed=1)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  got = jax.grad(loss(ops.self_attention), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(jax.nn.dot_product_attention),
                  argnums=(0, 1, 2))(q, k, v)
  chex.assert_trees_all_close(got, want, atol=1e-4, rtol=1e-4)


def test_bfloat16_keeps_dtype_and_accumulates_in_float32():
  q, k, v = _qkv((2, 33, 2, 16), dtype=jnp.bfloat16, seed=2)
  got = ops.self_attention(q, k, v)
  assert got.dtype == jnp.bfloat16
  want = jax.nn.dot_product_attention(*(x.astype(jnp.float32)
                                        for x in (q, k, v)))
  # bf16 keeps ~3 significant digits; outputs are convex mixes of v (|v|
  # up to ~10), so 0.1 is a few bf16 ulps.
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=0.1)


def test_gelu_equals_exact_gelu_and_its_gradient():
  x = jnp.linspace(-8.0, 8.0, 4001)
  chex.assert_trees_all_close(ops.gelu(x), jax.nn.gelu(x, approximate=False),
                              atol=2e-6, rtol=1e-6)
  grad = lambda f: jax.vmap(jax.grad(f))(x)
  chex.assert_trees_all_close(
      grad(ops.gelu), grad(lambda y: jax.nn.gelu(y, approximate=False)),
      atol=2e-6, rtol=1e-5)
  assert ops.gelu(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
