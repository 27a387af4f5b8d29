"""The small Fashion-MNIST SiT (rectified flow) or DiT (VP diffusion).

  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:sit \
      --workdir=/tmp/fmnist_sit
  python -m adagen_jax.pretrain --config=configs/pretrain/fmnist_flow.py:dit \
      --workdir=/tmp/fmnist_dit

Writes adagen_jax/assets/fmnist_{sit,dit}.{msgpack,json}, sampled by
configs/fmnist_{sit,dit}.py. A DiT-style network in pixel space (adaLN-Zero,
patch 4 -> 7x7 tokens, width 128, 6 blocks) trained on the 60k training
images with the paradigm's objective (adagen_jax/pretrain/flow.py): SiT's
velocity on the linear interpolant, or DiT's VP-linear diffusion with
v-prediction (alpha eps - sigma x: in pixel space, eps prediction at this
size gives 2-10x the data-prediction error at low SNR;
docs/experiments/dit_uniform_t_2026-12.md). Sizes and sampling defaults
(the paradigm's reference values: SiT start 0.01, w = 1.5, smoothing 0.8;
DiT start 0.9, w = 1.0, smoothing 0.4, end 0.001 rather than 0.01 in pixel
space) are adagen_jax/configs/shipped.py's `fmnist_flow_generator`.
Measured results are in docs/RESULTS.md and in the JSON beside the weights.

Training times: SiT draws them logit-normally (SD3's choice for rectified
flow: the steps go to the middle times, where the velocity is hardest);
DiT draws the same noise levels, half log-SNR normal
(`t_sampling='lambda_normal'`). Drawn uniformly in t, the same DiT scored
FD 10.7 at 50 NFE instead of 6.5.

Expected (docs/RESULTS.md): SiT FD-FMNIST 13.7 at 4 NFE, 9.7 at 8 and
8.8 at 50 (label accuracy 0.96-0.97); DiT 13.0 at 4 NFE and 6.5 at 50
(label accuracy 0.94 / 0.96). 5500 steps of 128 take ~1.1 h on the
2-core CPU (the DiT: 55 min on one pinned core at 1.66 steps/s, the other
core busy; one step is ~48 GFLOP). The run saves an Orbax checkpoint in
WORKDIR every 10 minutes and on SIGTERM, and the same command resumes it.
"""

import ml_collections

from adagen_jax.configs import shipped

_SAMPLING = ('steps', 'smoothing', 'cfg_init', 'solver', 'schedule',
             't_start', 'cfg_channels', 'output', 't_end',
             'forward_rows', 'min_stage_ratio')


def get_config(paradigm: str = 'sit'):
  c = ml_collections.ConfigDict()
  c.trainer = 'flow'
  c.paradigm = paradigm  # 'sit' | 'dit'
  c.seed = 0
  c.data_dir = ''  # '' = search (adagen_jax.data.fashion_mnist)
  c.output = ''    # '' = adagen_jax/assets/fmnist_{paradigm}.msgpack
  # Sizes (the fields of dit_nets.DiT) and sampling defaults: the shipped
  # generator section (one source of truth).
  gen = shipped.fmnist_flow_generator(paradigm)
  c.model = ml_collections.ConfigDict(gen.model.to_dict())
  c.sampling = ml_collections.ConfigDict({k: gen[k] for k in _SAMPLING})
  dit = paradigm == 'dit'
  c.train = ml_collections.ConfigDict(dict(
      steps=5500, batch_size=128, lr=1e-3, warmup_steps=200,
      weight_decay=0.0, grad_clip=1.0, p_uncond=0.1, ema_decay=0.999,
      t_range=(0.001, 1.0) if dit else (0.0, 1.0),
      t_sampling='lambda_normal' if dit else 'logit_normal'))
  # Final evaluation of the written asset (hand-crafted grid); num=0 skips.
  c.eval = ml_collections.ConfigDict(dict(
      steps=(4, 8, 50), seeds=(0, 1, 2), num=5000, batch=500))
  return c
