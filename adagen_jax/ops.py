"""Network operations with a faster XLA:CPU form, equal to the usual one.

Measured on the project's 2-core CPU (benchmarks/ops.py; docs/RESULTS.md
"Speed"); every form here equals its usual counterpart up to float32
round-off (tests/test_ops.py).

`self_attention`: on GPU and TPU `jax.nn.dot_product_attention` lowers to
the fused kernel (cuDNN flash attention on NVIDIA). On CPU it is plain XLA,
and its layout (scores as 'BTNS' from [B, L, H, D] operands, normalised
before the value product) costs 1.4-2x the form here:
- heads first ([B, H, L, D]), so each (batch, head) score matrix is a
  contiguous matmul for XLA:CPU's dot emitter;
- the softmax sum divides the [L, D] output, not the [L, L] weights: one
  pass fewer over the largest tensor.

`gelu`: the exact (erf) GELU as PyTorch writes it, x (1 + erf(x / sqrt 2))
/ 2. `jax.nn.gelu(approximate=False)` writes it with erfc, which XLA:CPU
evaluates 5-7x slower than erf; the two differ by < 1e-6.
"""

import jax
import jax.numpy as jnp


def gelu(x: jax.Array) -> jax.Array:
  """The exact GELU, x * Phi(x), in x's dtype."""
  return x * (1 + jax.lax.erf(x * jnp.asarray(0.5 ** 0.5, x.dtype))) / 2


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Multi-head softmax attention, scale 1/sqrt(head_dim), no mask.

  Args:
    q, k, v: [B, L, H, D], the layout of `jax.nn.dot_product_attention`.

  Returns:
    [B, L, H, D] in q's dtype.
  """
  if jax.default_backend() != 'cpu':
    return jax.nn.dot_product_attention(q, k, v)
  heads_first = lambda x: x.transpose(0, 2, 1, 3)  # [B, H, L, D]
  q, k, v = heads_first(q), heads_first(k), heads_first(v)
  scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  # Scores and softmax in float32 whatever the generator's dtype, as the
  # fused kernels accumulate.
  scores = jnp.einsum('bhld,bhmd->bhlm', q * scale, k,
                      preferred_element_type=jnp.float32)
  e = jnp.exp(scores - scores.max(-1, keepdims=True))
  out = jnp.einsum('bhlm,bhmd->bhld', e.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return heads_first(out / e.sum(-1, keepdims=True)).astype(q.dtype)
