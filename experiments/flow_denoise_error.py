r"""Data-prediction error of the shipped SiT / DiT across noise levels.

  python experiments/flow_denoise_error.py            # shipped sit, dit
  python experiments/flow_denoise_error.py \
      --dit_weights=runs/fmnist_dit_v/network.msgpack --dit_output=v

For 512 test images and one fixed noise draw, at each half log-SNR
lambda = log(alpha / sigma), every network gets the noisy image of its own
schedule at that lambda and predicts the data x0 (SiT: x_t + (1 - t) v;
DiT eps: (x_t - sigma eps) / alpha; DiT v: alpha x_t - sigma v). Prints
the mean squared error of x0 in [-1, 1] pixels, conditional and
unconditional. Matching lambda makes the two schedules comparable: the
task at one lambda is the same, only the parameterisation differs. The
diagnosis of the first Fashion-MNIST DiT
(docs/experiments/dit_uniform_t_2026-12.md) reads this.
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import generators
from adagen_jax.configs import shipped
from adagen_jax.data import fashion_mnist

_LAMBDAS = flags.DEFINE_list('lambdas', [str(v) for v in range(-5, 6)],
                             'Half log-SNR values.')
_NUM = flags.DEFINE_integer('num', 512, 'Test images.')
_DIT_WEIGHTS = flags.DEFINE_string('dit_weights', '',
                                   'Another DiT .msgpack to compare.')
_DIT_OUTPUT = flags.DEFINE_string('dit_output', 'noise',
                                  "What --dit_weights predicts: noise | v.")


def x0_error(gen, params, x, eps, labels, lam: float) -> tuple[float, float]:
  """MSE of the conditional and unconditional x0 predictions at lam."""
  sched = gen.paradigm.schedule
  t = float(sched.inverse_lam(np.float64(lam), np))
  alpha = float(sched.alpha(np.float64(t), np))
  sigma = float(sched.sigma(np.float64(t), np))
  x_t = alpha * x + sigma * eps
  times = jnp.full((x.shape[0],), t, jnp.float32)
  cond, uncond, _ = jax.jit(gen.evaluate)(params, x_t, times, labels)
  return tuple(float(jnp.mean((gen.prediction(o, x_t, times) - x) ** 2))
               for o in (cond, uncond))


def main(argv):
  del argv
  images, labels = fashion_mnist.load('test')
  x = jnp.asarray(2.0 * images[:_NUM.value] - 1.0)
  labels = jnp.asarray(labels[:_NUM.value].astype(np.int32))
  eps = jax.random.normal(jax.random.key(0), x.shape)
  models = {p: shipped.fmnist_flow_generator(p) for p in ('sit', 'dit')}
  if _DIT_WEIGHTS.value:
    other = shipped.fmnist_flow_generator('dit')
    other.update(weights=_DIT_WEIGHTS.value, output=_DIT_OUTPUT.value)
    models[f'dit ({_DIT_OUTPUT.value})'] = other
  built = {name: generators.build(cfg) for name, cfg in models.items()}
  print('| lambda | ' + ' | '.join(f'{n} cond / uncond' for n in built)
        + ' |')
  print('|---' * (len(built) + 1) + '|')
  for lam in (float(v) for v in _LAMBDAS.value):
    cells = [' / '.join(f'{e:.4f}' for e in x0_error(g, p, x, eps, labels,
                                                    lam))
             for g, p in built.values()]
    print(f'| {lam:g} | ' + ' | '.join(cells) + ' |', flush=True)


if __name__ == '__main__':
  app.run(main)
