"""VAR as an AdaGen generator: one policy decision per scale.

adagen_reference.md §6 (VAR-d16 / d30), paradigms.md §1.4 and §3.3. Step si
samples the si-th token map of the scale schedule (T = len(patch_nums) = 10)
from the logits of its tokens, with four actions:

  cfg               softplus; t = cfg si / (T - 1) (VAR's linear ramp) and
                    logits = (1 + t) cond - t uncond, from one batched 2B pass
  top_k             4096 sigmoid, int() at use; k <= 0 keeps every token
  top_p             sigmoid
  manual_samp_temp  softplus

filtered per sample in the reference's order: top-k, then top-p (sort
ascending, drop tokens with cumulative probability <= 1 - p, always keep the
top one), then division by the temperature, then a categorical draw. The
codes are added to the VQVAE's f_hat, whose area-downsampled map is the next
scale's input; that scale goes through the transformer with the KV cache of
the coarser scales, and its last-block hidden states (conditional half),
bicubic-resized to obs_side x obs_side, are the next observation
[B, obs_side^2, C]. `init` does the same for the SOS token (a 1x1 map).
The hand-crafted schedule is VAR's published one: cfg 1.5 (d16) / 2.0 (d30),
top-k 900, top-p 0.96, temperature 1.

Fixed shapes under `lax.scan`: the scales have different token counts, so
`step` dispatches on the traced step index with `lax.switch` over T branches,
each with its scale's static shapes (exact compute, no padding FLOPs). The
state has fixed shapes: a KV cache [depth, 2B, L, H, Dh] preallocated for the
whole sequence, and the next scale's hidden states padded to the largest
scale. A branch returns its scale's new keys/values padded to that size and
they are written at the scale's (traced) offset outside the switch, so the
cache itself is only read inside the branches: XLA updates it in place (no
cache-sized copy in the compiled rollout; with the writes inside the
branches XLA made 22 for T = 10). Padded chunks spill into later scales'
slots, which those scales overwrite before anything reads them. Padding
every step to the largest scale instead would process 10 x 256 = 2560
tokens per sample rather than L = 680. `step_static` is the same step for a
Python-int scale (unrolled loops). Conditional and unconditional rows are
interleaved ([c0, u0, c1, u1, ...]) rather than stacked, so a batch sharded
over devices keeps each sample's pair on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax.generators import base
from adagen_jax.generators import var_nets
from adagen_jax.generators import var_vqvae
from adagen_jax.generators.convert import common

TOP_K_SCALE = 4096.0
ACTIONS = (base.ActionDim('cfg', 'softplus'),
           base.ActionDim('top_k', 'scaled_sigmoid', TOP_K_SCALE),
           base.ActionDim('top_p', 'sigmoid'),
           base.ActionDim('manual_samp_temp', 'softplus'))

_CONVERT = 'python -m adagen_jax.generators.convert.var'
_HF = 'https://huggingface.co/FoundationVision/var'


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array,
                  temperature: jax.Array) -> jax.Array:
  """Per-sample top-k, then top-p, then temperature (the reference's order).

  Args:
    logits: float32 [B, n, V].
    top_k: int32 [B]; k <= 0 or k >= V keeps every token, else tokens below
      the k-th largest logit are dropped (ties with it are kept).
    top_p: float32 [B]; after top-k, tokens are sorted ascending and those
      whose cumulative probability is <= 1 - p are dropped; the most likely
      token is always kept.
    temperature: float32 [B], divides the surviving logits.

  Returns:
    float32 [B, n, V], dropped tokens at -inf.
  """
  v = logits.shape[-1]
  asc = jnp.sort(logits, axis=-1)
  k = top_k[:, None, None]
  kth = jnp.take_along_axis(asc, jnp.clip(v - k, 0, v - 1), axis=-1)
  keep_all = k <= 0
  logits = jnp.where(keep_all | (logits >= kth), logits, -jnp.inf)
  # Masking the smallest entries keeps the sorted copy sorted.
  asc = jnp.where(keep_all | (asc >= kth), asc, -jnp.inf)
  cum = jnp.cumsum(jax.nn.softmax(asc, axis=-1), axis=-1)
  drop = cum <= 1.0 - top_p[:, None, None]
  drop = drop.at[..., -1].set(False)
  # The dropped tokens are a prefix of the ascending order: keep the logits
  # at least the smallest surviving one. (Ties straddling the cut are all
  # kept; a sort-order scatter would keep an arbitrary subset.)
  first_kept = jnp.sum(drop, axis=-1, keepdims=True)
  cut = jnp.take_along_axis(asc, first_kept, axis=-1)
  logits = jnp.where(logits >= cut, logits, -jnp.inf)
  return logits / temperature[:, None, None]


def heuristic(num_steps: int, cfg: float, top_k: float, top_p: float,
              samp_temp: float) -> np.ndarray:
  """float64 [T, 4]: VAR's published settings, constant over the scales."""
  return np.tile(np.asarray([cfg, top_k, top_p, samp_temp], np.float64),
                 (num_steps, 1))


@flax.struct.dataclass
class VARState:
  labels: jax.Array   # int32 [B]
  hidden: jax.Array   # dtype [2B, n_max, C]: last-block output of the scale
  #                     sampled next, rows interleaved c/u, zero-padded
  cache_k: jax.Array  # dtype [depth, 2B, L, H, Dh]: keys of scales < step
  cache_v: jax.Array  # dtype [depth, 2B, L, H, Dh]
  f_hat: jax.Array    # float32 [B, s, s, Cvae]: sum of the sampled scales
  tokens: jax.Array   # int32 [B, L]: sampled codes of scales < step
  step: jax.Array     # int32 []: scales sampled so far


@dataclasses.dataclass(frozen=True)
class VARGenerator:
  """Implements `base.Generator`; hashable (a static jit argument).

  Attributes:
    var: the transformer.
    vae: the multi-scale VQVAE (same patch_nums, vocab, Cvae).
    cfg, top_k, top_p, samp_temp: the hand-crafted schedule's constants.
    obs_side: side of the square observation map (reference: 16).
    smoothing: action smoothing (reference: 0 for VAR).
    weights_id: what the weights are, for exports.
    weights_digest: assets.weights_digest of the weight files ('random'
      for random_init), so an export is tied to these exact weights.
  """
  var: var_nets.VAR
  vae: var_vqvae.VQVAE
  cfg: float = 1.5
  top_k: float = 900.0
  top_p: float = 0.96
  samp_temp: float = 1.0
  obs_side: int = 16
  smoothing: float = 0.0
  weights_id: str = ''
  weights_digest: str = ''
  name: str = 'var'
  stochastic: bool = True

  def __post_init__(self):
    pns = tuple(self.var.patch_nums)
    if pns != tuple(self.vae.patch_nums) or any(
        a >= b for a, b in zip(pns, pns[1:])):
      raise ValueError(f'patch_nums must be increasing and shared by VAR and '
                       f'its VQVAE: {pns} vs {tuple(self.vae.patch_nums)}')
    if (self.var.vocab_size, self.var.cvae) != (self.vae.vocab_size,
                                                self.vae.z_channels):
      raise ValueError('VAR and VQVAE disagree on vocab_size / Cvae.')

  @property
  def patch_nums(self) -> tuple[int, ...]:
    return tuple(self.var.patch_nums)

  @property
  def num_steps(self) -> int:
    return len(self.patch_nums)

  @property
  def num_classes(self) -> int:
    return self.var.num_classes

  @property
  def obs_shape(self) -> tuple[int, int]:
    return (self.obs_side ** 2, self.var.width)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    side = self.vae.image_side
    return (side, side, self.vae.image_channels)

  @property
  def action_spec(self) -> base.ActionSpec:
    return base.ActionSpec(ACTIONS, functools.partial(
        heuristic, cfg=self.cfg, top_k=self.top_k, top_p=self.top_p,
        samp_temp=self.samp_temp), self.smoothing)

  def _var(self, params, *args, method):
    return self.var.apply(params['var'], *args, method=method)

  def _vae(self, params, *args, method):
    return self.vae.apply(params['vae'], *args, method=method)

  def _obs(self, hidden: jax.Array, pn: int) -> jax.Array:
    """hidden [2B, pn^2, C] -> conditional rows' map [B, side^2, C]."""
    h = hidden[0::2].astype(jnp.float32)
    b, _, c = h.shape
    side = self.obs_side
    h = var_vqvae.resize_bicubic(h.reshape(b, pn, pn, c), (side, side))
    return h.reshape(b, side * side, c)

  def _pad(self, x: jax.Array, axis: int) -> jax.Array:
    """Zero-pads `axis` to the largest scale's token count."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, self.patch_nums[-1] ** 2 - x.shape[axis])
    return jnp.pad(x, widths)

  def _cond(self, params, labels: jax.Array) -> jax.Array:
    """int32 [B] -> interleaved (label, null) class embeddings [2B, C]."""
    null = jnp.full_like(labels, self.var.num_classes)
    return self._var(params, base.interleave(labels, null),
                     method=var_nets.VAR.embed_class)

  def init(self, params, labels: jax.Array,
           rng: jax.Array) -> tuple[VARState, jax.Array]:
    """labels int32 [B] -> (state, obs float32 [B, side^2, C]); no sampling."""
    del rng
    b, v = labels.shape[0], self.var
    cond = self._cond(params, labels)
    x = self._var(params, cond, method=var_nets.VAR.first_tokens)
    cache = jnp.zeros((v.depth, 2 * b, v.seq_len, v.num_heads, v.head_dim),
                      v.dtype)
    hidden, k, vv = self._var(params, x, cond, cache, cache, 0,
                              method=var_nets.VAR.blocks_cached)
    s = self.vae.latent_side
    state = VARState(
        labels=labels, hidden=self._pad(hidden, 1),
        cache_k=cache.at[:, :, :v.first_l].set(k),
        cache_v=cache.at[:, :, :v.first_l].set(vv),
        f_hat=jnp.zeros((b, s, s, self.vae.z_channels), jnp.float32),
        tokens=jnp.zeros((b, v.seq_len), jnp.int32),
        step=jnp.zeros((), jnp.int32))
    return state, self._obs(hidden, self.patch_nums[0])

  def _scale_step(self, si: int, params, state: VARState,
                  action: Mapping[str, jax.Array], rng: jax.Array):
    """Samples scale si (static) and runs scale si + 1 through VAR.

    Returns:
      f_hat, this scale's codes int32 [B, n_max], the next hidden
      [2B, n_max, C], the next scale's keys and values
      [depth, 2B, n_max, H, Dh] (zeros after the last scale) and obs.
    """
    pns, last = self.patch_nums, self.num_steps - 1
    b, pn = state.labels.shape[0], pns[si]
    cond = self._cond(params, state.labels)
    logits = self._var(params, state.hidden[:, :pn * pn], cond,
                       method=var_nets.VAR.logits)
    logits = logits.reshape(b, 2, pn * pn, -1)
    t = action['cfg'][:, None, None] * (si / last if last else 0.0)
    logits = (1.0 + t) * logits[:, 0] - t * logits[:, 1]
    logits = filter_logits(
        logits, jnp.floor(action['top_k']).astype(jnp.int32),
        action['top_p'], action['manual_samp_temp'])
    ids = jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
    h = self._vae(params, ids.reshape(b, pn, pn),
                  method=var_vqvae.VQVAE.lookup)
    f_hat = self._vae(params, state.f_hat, h, si,
                      method=var_vqvae.VQVAE.add_scale)
    if si == last:
      kv = jnp.zeros_like(state.cache_k[:, :, :pns[-1] ** 2])
      return (f_hat, self._pad(ids, 1), state.hidden, kv, kv,
              jnp.zeros((b,) + self.obs_shape, jnp.float32))
    nxt = pns[si + 1]
    f_down = var_vqvae.resize_area(f_hat, (nxt, nxt)).reshape(b, nxt * nxt, -1)
    x = self._var(params, f_down, si + 1, method=var_nets.VAR.scale_tokens)
    start = var_nets.scale_offsets(pns)[si + 1]
    hidden, k, v = self._var(params, jnp.repeat(x, 2, axis=0), cond,
                             state.cache_k, state.cache_v, start,
                             method=var_nets.VAR.blocks_cached)
    return (f_hat, self._pad(ids, 1), self._pad(hidden, 1), self._pad(k, 2),
            self._pad(v, 2), self._obs(hidden, nxt))

  def step(self, params, state: VARState, action: Mapping[str, jax.Array],
           rng: jax.Array) -> tuple[VARState, jax.Array]:
    """Samples scale `state.step`; works with a traced step (lax.scan)."""
    branches = [functools.partial(self._scale_step, si)
                for si in range(self.num_steps)]
    return self._update(state, *jax.lax.switch(
        state.step, branches, params, state, dict(action), rng))

  def step_static(self, si: int, params, state: VARState,
                  action: Mapping[str, jax.Array],
                  rng: jax.Array) -> tuple[VARState, jax.Array]:
    """`step` when the scale si is a Python int (an unrolled loop)."""
    return self._update(state, *self._scale_step(si, params, state,
                                                 dict(action), rng))

  def _update(self, state: VARState, f_hat, ids, hidden, k, v,
              obs) -> tuple[VARState, jax.Array]:
    """Writes a scale step's outputs at the (traced) scale offsets."""
    offsets = jnp.asarray(var_nets.scale_offsets(self.patch_nums), jnp.int32)
    # Chunks are n_max wide and start at most at the last scale's offset,
    # so they fit in [0, L). After the last scale the cache is dead.
    kv_at = offsets[jnp.minimum(state.step + 1, self.num_steps - 1)]
    zero = jnp.zeros((), jnp.int32)

    def write(cache, new):
      return jax.lax.dynamic_update_slice(
          cache, new.astype(cache.dtype), (zero, zero, kv_at, zero, zero))

    state = VARState(
        labels=state.labels, hidden=hidden,
        cache_k=write(state.cache_k, k), cache_v=write(state.cache_v, v),
        f_hat=f_hat,
        tokens=jax.lax.dynamic_update_slice(
            state.tokens, ids, (zero, offsets[state.step])),
        step=state.step + 1)
    return state, obs

  def decode(self, params, state: VARState) -> jax.Array:
    """-> float32 [B, H, W, C] images in [0, 1]."""
    return self._vae(params, state.f_hat, method=var_vqvae.VQVAE.decode)

  def identity(self) -> dict[str, Any]:
    v = self.var
    return {'name': self.name, 'depth': v.depth, 'width': v.width,
            'num_heads': v.num_heads, 'patch_nums': list(self.patch_nums),
            'vocab_size': v.vocab_size, 'num_classes': v.num_classes,
            'cfg': self.cfg, 'top_k': self.top_k, 'top_p': self.top_p,
            'samp_temp': self.samp_temp, 'obs_side': self.obs_side,
            'smoothing': self.smoothing, 'weights': self.weights_id,
            'weights_digest': self.weights_digest}


def random_params(gen: VARGenerator, rng: jax.Array) -> dict[str, Any]:
  """Randomly initialised {'var', 'vae'} variables (tests, benchmarks)."""
  k1, k2 = jax.random.split(rng)
  return {'var': gen.var.init(k1, *var_nets.init_inputs(gen.var)),
          'vae': gen.vae.init(k2, var_vqvae.init_inputs(gen.vae))}


def modules_from_config(gen_config) -> tuple[var_nets.VAR, var_vqvae.VQVAE]:
  """The VAR and VQVAE modules a generator config section describes."""
  c, vc = gen_config, gen_config.vae
  patch_nums = tuple(int(p) for p in c.patch_nums)
  vae = var_vqvae.VQVAE(
      vocab_size=vc.vocab_size, z_channels=vc.z_channels, ch=vc.ch,
      ch_mult=tuple(vc.ch_mult), num_res_blocks=vc.num_res_blocks,
      using_sa=vc.using_sa, using_mid_sa=vc.using_mid_sa,
      quant_resi=vc.quant_resi, share_quant_resi=vc.share_quant_resi,
      patch_nums=patch_nums, image_channels=vc.image_channels,
      norm_groups=vc.norm_groups)
  var = var_nets.VAR(
      num_classes=c.num_classes, vocab_size=vc.vocab_size,
      cvae=vc.z_channels, depth=c.depth, width=c.width,
      num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, patch_nums=patch_nums,
      shared_aln=c.shared_aln, attn_l2_norm=c.attn_l2_norm,
      dtype=jnp.dtype(c.get('dtype', 'float32')))
  return var, vae


def _load(path: str, what: str, fix: str, module, init_args) -> Any:
  variables = assets.load_variables(path, what, fix)
  try:
    common.check_module_layout(variables, module.init, *init_args)
  except ValueError as e:
    raise errors.UserError(f'{what} at {path} do not fit the configured '
                           f'sizes ({e}); {fix}') from None
  return jax.tree.map(jnp.asarray, variables)


def _fix(c, var, var_file: str) -> str:
  """How to get missing VAR weights: train the asset or convert."""
  if assets.is_shipped_name(c.var_weights):
    return ('train it with: python -m adagen_jax.pretrain '
            '--config=configs/pretrain/fmnist_var.py')
  return (f'download var_d{var.depth}.pth and vae_ch160v4096z32.pth from '
          f'{_HF} and run {_CONVERT} --var=var_d{var.depth}.pth '
          f'--vae=vae_ch160v4096z32.pth '
          f'--out={os.path.dirname(var_file) or "."}')


def build(gen_config) -> tuple[VARGenerator, dict[str, Any]]:
  """config.generator (name='var') -> (VARGenerator, {'var', 'vae'} params).

  Weights are msgpack files at `var_weights` and `vae_weights` (the
  converter's, or shipped asset names like 'fmnist_var'); a missing file is
  a UserError naming the command that makes it.
  `random_init=True` gives untrained weights instead (speed tests only).
  """
  c = gen_config
  var, vae = modules_from_config(c)
  steps = int(c.get('steps', len(var.patch_nums)))
  if steps != len(var.patch_nums):
    raise errors.UserError(
        f'config.generator.steps={steps} but VAR takes one step per scale of '
        f'patch_nums {tuple(var.patch_nums)}; drop steps= or use '
        f'steps={len(var.patch_nums)}')
  random = bool(c.get('random_init'))
  var_file = assets.weights_path(c.var_weights)
  vae_file = assets.weights_path(c.vae_weights)
  if not random:
    for path, what in ((var_file, f'VAR-d{var.depth} weights'),
                       (vae_file, 'VAR VQVAE weights')):
      errors.require_file(path, what, _fix(c, var, var_file))
  gen = VARGenerator(var=var, vae=vae, cfg=float(c.cfg),
                     top_k=float(c.top_k), top_p=float(c.top_p),
                     samp_temp=float(c.samp_temp), obs_side=int(c.obs_side),
                     smoothing=float(c.smoothing),
                     weights_id=('random' if random else
                                 os.path.basename(c.var_weights)),
                     weights_digest=('random' if random else
                                     assets.weights_digest(var_file,
                                                           vae_file)))
  if random:
    init = jax.jit(functools.partial(random_params, gen))
    return gen, init(jax.random.key(int(c.get('seed', 0))))
  fix = _fix(c, var, var_file)
  key = jax.random.key(0)
  params = {
      'var': _load(var_file, f'VAR-d{var.depth} weights', fix, var,
                   (key,) + var_nets.init_inputs(var)),
      'vae': _load(vae_file, 'VAR VQVAE weights', fix, vae,
                   (key, var_vqvae.init_inputs(vae)))}
  return gen, params
