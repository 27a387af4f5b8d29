"""SiT (rectified flow) as an AdaGen generator.

The decision mapping, state and evaluation are `dit.LatentGenerator`'s (see
dit.py); what SiT changes (adagen_reference.md §6, paradigms.md §2):

  path      linear interpolant x_t = t x_data + (1 - t) noise, t = 0 noise,
            alpha_t = t, sigma_t = 1 - t, lambda = log(t / (1 - t)); the
            network is fed t itself and predicts the velocity
            x_data - noise (its learned-sigma half is dropped).
  guidance  cond + w (cond - uncond) on the velocity's first 3 channels.
  solver    'dpm2s' (the reference): velocity -> noise eps = x - t v ->
            x0 = (x - (1 - t) eps) / t, then DPM-Solver++ 2S in this
            schedule; or 'euler' / 'heun' on the velocity directly.
  times     increasing; clamps t_next >= t_cur + 0.01, then <= 0.99.
            Heuristic linspace(0.01, 0.99, NFE + 1) (or log-SNR-uniform),
            manual_cfg = cfg_init (1.5); smoothing 0.8.
"""

from typing import Any

from adagen_jax.generators import dit
from adagen_jax.generators import solver

SIT = dit.Paradigm(
    name='sit', schedule=solver.FlowLinear(),
    rule=solver.TimeRule(decreasing=False, end=0.99,
                         start_bounds=(0.01, 0.99)),
    time_scale=1.0, outputs=('velocity',), t_start=0.01,
    methods=solver.METHODS, checkpoint='SiT-XL-2-256.pt')


def build(gen_config) -> tuple[dit.LatentGenerator, dict[str, Any]]:
  """gen_config: see configs/sit_xl.py."""
  return dit.build_generator(gen_config, SIT)
