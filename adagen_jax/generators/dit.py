"""DiT (VP diffusion) as an AdaGen generator, and the latent-ODE generator
it shares with SiT (`sit.py`).

The frozen model is a class-conditional latent transformer (`dit_nets.DiT`)
sampled by a policy-timed solver (`solver.py`: DPM-Solver++ 2S, or Euler /
Heun for SiT) and decoded by the SD VAE (`sd_vae.py`). AdaGen's sampler
(adagen_reference.md §6) asks the policy once before sampling, on a zero
feature map at step index 0, for the start time, then once after every model
evaluation, with that evaluation's features and index 1..NFE, for the
evaluation's guidance weight and the next time point. On `base.Generator`:

  num_steps = NFE + 1 decisions; `steps` in the config is NFE (16).
  init      x_T ~ N(0, I) latents [B, H, W, C]; obs = zeros [B, N, D] (the
            reference's zero feature map).
  step k=0  'timesteps' is the start time t_T (DiT: 0.9 in VP time; SiT:
            0.01 in flow time); its 'manual_cfg' is unused. Runs evaluation
            1 at (x_T, t_T); obs = its features.
  step k>=1 'manual_cfg' is the guidance weight w of evaluation k, whose
            conditional and unconditional outputs the state holds:
            cond + w (cond - uncond) on the first `cfg_channels` channels.
            'timesteps' is the next time (`solver.advance`: the 2S stage
            point s1 after an evaluation at a step start s, the step end t
            after one at s1, within the clamps). Then evaluation k + 1 at
            the new point; none after the last decision (obs = zeros there).
  decode    the latest latent through the VAE, 0.5 (x + 1) clipped.

So the 2S intermediate point is a policy decision, the time and guidance
actions of one evaluation share its features, and `rollout.rollout` drives
the sampler unchanged; transitions are deterministic (`stochastic=False`),
the only randomness is init's noise. One evaluation is one 2B forward of
(x, y) and (x, null) pairs; the features are the conditional rows' last
block tokens [B, N, D] before `final_layer`.

DiT specifics: continuous VP-linear schedule (beta0 0.1, beta1 20), the
network is fed 1000 t, its first C output channels are eps (the learned-sigma
half is dropped), the solver takes x0 = (x - sigma eps) / alpha. A network
trained for v = alpha eps - sigma x0 instead (`config.generator.output='v'`,
the small pixel-space models) gives x0 = alpha x - sigma v. Heuristic:
timesteps linspace(0.9, 0.01, NFE + 1) (or log-SNR-uniform,
`schedule='logsnr'`), manual_cfg = cfg_init (1.0); smoothing 0.4.
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
from adagen_jax.generators import dit_nets
from adagen_jax.generators import sd_vae
from adagen_jax.generators import solver
from adagen_jax.generators.convert import common
from adagen_jax.generators.convert import dit as convert_dit

ACTIONS = (base.ActionDim('timesteps', 'sigmoid'),
           base.ActionDim('manual_cfg', 'softplus'))
VAE_CHECKPOINT = 'autoencoder_kl_ema.pth'


@dataclasses.dataclass(frozen=True)
class Paradigm:
  """What differs between DiT and SiT.

  Attributes:
    name: registry name.
    schedule: the noise schedule of the solver.
    rule: the time clamps.
    time_scale: the network is fed time_scale * t.
    outputs: what the network may predict, the published model's first:
      DiT 'noise' (eps) or 'v' (alpha eps - sigma x0, Salimans & Ho's
      v-prediction, for small pixel-space models: eps's x0 = (x - sigma
      eps) / alpha multiplies the network's error by sigma / alpha, ~60 at
      DiT's start time), SiT 'velocity'.
    t_start: start time of the heuristic grid.
    methods: the solvers it supports.
    checkpoint: the published checkpoint's file name (for messages).
  """
  name: str
  schedule: solver.Schedule
  rule: solver.TimeRule
  time_scale: float
  outputs: tuple[str, ...]
  t_start: float
  methods: tuple[str, ...]
  checkpoint: str


DIT = Paradigm(
    name='dit', schedule=solver.VPLinear(beta0=0.1, beta1=20.0),
    rule=solver.TimeRule(decreasing=True, end=0.01, start_bounds=(0.01, 1.0)),
    time_scale=1000.0, outputs=('noise', 'v'), t_start=0.9, methods=('dpm2s',),
    checkpoint='DiT-XL-2-256x256.pt')


@flax.struct.dataclass
class LatentState:
  solver: solver.SolverState
  cond: jax.Array    # float32 [B, H, W, C]: conditional output of the
                     #   pending evaluation (eps or velocity)
  uncond: jax.Array  # float32 [B, H, W, C]: its unconditional output
  labels: jax.Array  # int32 [B]


@dataclasses.dataclass(frozen=True)
class LatentGenerator:
  """Implements `base.Generator` for DiT and SiT; hashable (static jit arg).

  Attributes:
    paradigm: DIT or sit.SIT.
    net: the transformer.
    vae: the latent decoder.
    nfe: model evaluations per sample.
    smoothing: action smoothing coefficient.
    cfg_init: the heuristic (constant) guidance weight.
    method: 'dpm2s' | 'euler' | 'heun'.
    spacing: heuristic grid: 'reference' (even in t) | 'logsnr'.
    t_start: heuristic start time.
    cfg_channels: latent channels that get guidance (3: DiT/SiT's rule).
    weights: identity of the loaded weights, for exports.
    weights_digest: assets.weights_digest of the weight files ('random'
      for random_init), so an export is tied to these exact weights.
    x0_clip: > 0 clips the data prediction x0 to [-x0_clip, x0_clip]
      before every solver update (DDPM's clip_denoised, for pixel-space
      models whose data lie in [-1, 1]); 0 (the published models) never
      clips. Only 'dpm2s' uses x0.
    output: what the network predicts (one of paradigm.outputs); '' is
      the published model's.
    t_end: the data-side end of the time grid and of the clamps; None is
      the paradigm's (DiT 0.01, SiT 0.99: the reference's). Pixel-space
      models may end closer to the data: at DiT's 0.01 the sample keeps
      noise of sigma 0.045 (5.7 grey levels of 255), which an SD-VAE
      latent hides and a pixel image shows.
    forward_rows: the most rows (samples x {cond, null}) per device in one
      network forward; 0 runs the 2B rows at once (base.in_chunks).
    min_stage_ratio: 'dpm2s': the least r1 (the learned stage point's share
      of the step in log-SNR) the second-order correction assumes
      (solver.dpm_second_order); 0 is the reference.
  """
  paradigm: Paradigm
  net: dit_nets.DiT
  vae: sd_vae.VAEDecoder | sd_vae.PixelDecoder
  nfe: int = 16
  smoothing: float = 0.4
  cfg_init: float = 1.0
  method: str = 'dpm2s'
  spacing: str = 'reference'
  t_start: float = 0.9
  cfg_channels: int = 3
  weights: str = ''
  weights_digest: str = ''
  stochastic: bool = False
  x0_clip: float = 0.0
  t_end: float | None = None
  output: str = ''
  forward_rows: int = 0
  min_stage_ratio: float = 0.0

  @property
  def name(self) -> str:
    return self.paradigm.name

  @property
  def prediction_type(self) -> str:
    return self.output or self.paradigm.outputs[0]

  @property
  def rule(self) -> solver.TimeRule:
    """The paradigm's clamps, ending at t_end when that is set."""
    if self.t_end is None:
      return self.paradigm.rule
    return dataclasses.replace(self.paradigm.rule, end=self.t_end)

  @property
  def num_steps(self) -> int:
    return self.nfe + 1

  @property
  def obs_shape(self) -> tuple[int, int]:
    return (self.net.num_tokens, self.net.hidden_size)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    side = self.net.input_size * self.vae.downsample
    return (side, side, self.vae.out_channels)

  @property
  def num_classes(self) -> int:
    return self.net.num_classes

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    return (self.net.input_size, self.net.input_size, self.net.in_channels)

  @property
  def action_spec(self) -> base.ActionSpec:
    return base.ActionSpec(ACTIONS, self.heuristic, self.smoothing)

  def heuristic(self, num_steps: int) -> np.ndarray:
    """float64 [num_steps, 2]: (time picked, cfg) per decision."""
    times = solver.heuristic_times(
        self.method, num_steps - 1, self.t_start, self.rule.end,
        self.spacing, self.paradigm.schedule)
    return np.stack([times, np.full_like(times, self.cfg_init)], axis=-1)

  def evaluate(self, params, x: jax.Array, t: jax.Array, labels: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One batched cond + uncond forward.

    Args:
      params: {'dit': variables, 'vae': variables}.
      x: float32 [B, H, W, C] latents.
      t: float32 [B] solver times.
      labels: int32 [B].

    Returns:
      cond, uncond: float32 [B, H, W, C] (eps or velocity).
      feat: float32 [B, N, D] conditional last-block tokens.
    """
    b, c = x.shape[0], self.net.in_channels
    null = jnp.full_like(labels, self.net.num_classes)
    out, feat = base.in_chunks(
        functools.partial(self.net.apply, params['dit']),
        base.interleave(x, x),
        self.paradigm.time_scale * base.interleave(t, t),
        base.interleave(labels, null), max_rows=self.forward_rows)
    out = out[..., :c].reshape((b, 2) + out.shape[1:-1] + (c,))
    feat = feat.reshape((b, 2) + feat.shape[1:])
    return out[:, 0], out[:, 1], feat[:, 0]

  def prediction(self, out: jax.Array, x: jax.Array, t: jax.Array
                 ) -> jax.Array:
    """Guided network output at (x, t) -> what `solver.advance` takes."""
    p = self.paradigm
    kind = self.prediction_type
    if kind == 'velocity':
      if self.method != 'dpm2s':
        return out
      out = solver.noise_from_velocity(out, x, t)
    if kind == 'v':
      x0 = solver.x0_from_v(p.schedule, out, x, t)
    else:
      x0 = solver.x0_from_noise(p.schedule, out, x, t)
    if self.x0_clip > 0:
      # Near t = 1, alpha_t is ~0.02 and x0 = (x - sigma eps) / alpha
      # multiplies the network's eps error ~50x; clipping keeps the few
      # large early steps inside the data range.
      x0 = jnp.clip(x0, -self.x0_clip, self.x0_clip)
    return x0

  def init(self, params, labels: jax.Array,
           rng: jax.Array) -> tuple[LatentState, jax.Array]:
    del params
    b = labels.shape[0]
    noise = jax.random.normal(rng, (b,) + self.latent_shape, jnp.float32)
    zeros = jnp.zeros_like(noise)
    state = LatentState(solver=solver.init_state(noise), cond=zeros,
                        uncond=zeros, labels=labels)
    return state, jnp.zeros((b,) + self.obs_shape, jnp.float32)

  def step(self, params, state: LatentState,
           action: Mapping[str, jax.Array],
           rng: jax.Array) -> tuple[LatentState, jax.Array]:
    del rng  # deterministic transitions
    sol = state.solver
    out = solver.guide(state.cond, state.uncond, action['manual_cfg'],
                       self.cfg_channels)
    pred = self.prediction(out, sol.x, sol.t)
    sol = solver.advance(self.method, self.paradigm.schedule,
                         self.rule, sol, pred, action['timesteps'],
                         self.min_stage_ratio)

    def run(sol):
      return self.evaluate(params, sol.x, sol.t, state.labels)

    def skip(sol):
      zeros = jnp.zeros_like(sol.x)
      b = sol.x.shape[0]
      return zeros, zeros, jnp.zeros((b,) + self.obs_shape, jnp.float32)

    # A scalar predicate: only the taken branch runs, so the last decision
    # costs no forward pass.
    cond, uncond, obs = jax.lax.cond(sol.count <= self.nfe, run, skip, sol)
    return LatentState(solver=sol, cond=cond, uncond=uncond,
                       labels=state.labels), obs

  def decode(self, params, state: LatentState) -> jax.Array:
    return sd_vae.to_images(self.vae.apply(params['vae'], state.solver.x))

  def identity(self) -> dict[str, Any]:
    net = {f.name: getattr(self.net, f.name)
           for f in dataclasses.fields(self.net)
           if f.name not in ('parent', 'name', 'dtype')}
    vae = {f.name: getattr(self.vae, f.name)
           for f in dataclasses.fields(self.vae)
           if f.name not in ('parent', 'name', 'dtype')}
    return {'name': self.name, 'steps': self.nfe, 'solver': self.method,
            'schedule': self.spacing, 't_start': self.t_start,
            'smoothing': self.smoothing, 'cfg_init': self.cfg_init,
            'cfg_channels': self.cfg_channels,
            'model': {k: list(v) if isinstance(v, tuple) else v
                      for k, v in net.items()},
            'vae': {k: list(v) if isinstance(v, tuple) else v
                    for k, v in vae.items()},
            'weights': self.weights, 'weights_digest': self.weights_digest,
            # Only when on, so identities (and policies) made before the
            # option existed still match.
            **({'x0_clip': self.x0_clip} if self.x0_clip > 0 else {}),
            **({'t_end': self.t_end} if self.t_end is not None else {}),
            **({'output': self.output} if self.output else {}),
            **({'min_stage_ratio': self.min_stage_ratio}
               if self.min_stage_ratio > 0 else {})}


def _converter_command(paradigm: Paradigm, out_dir: str) -> str:
  return ('python -m adagen_jax.generators.convert.dit '
          f'--{paradigm.name}={paradigm.checkpoint} --vae={VAE_CHECKPOINT} '
          f'--out={out_dir or "."}')


@functools.partial(jax.jit, static_argnums=0)
def _init(module, rng, *args):
  # One compiled init, cached per (hashable) module: eager init would
  # compile every op on its own.
  return module.init(rng, *args)


def load_params(gen_config, paradigm: Paradigm, net: dit_nets.DiT,
                vae: sd_vae.VAEDecoder | sd_vae.PixelDecoder
                ) -> dict[str, Any]:
  """{'dit', 'vae'} variables: random (`random_init`) or weight files.

  `config.generator.weights` is a converted checkpoint's path or the name
  of a shipped asset (e.g. 'fmnist_sit'); a pixel-space model has no VAE
  weights ({} for 'vae').

  Raises:
    UserError: a weights file is missing or does not fit the config sizes.
  """
  init_args = {'dit': (net, convert_dit.dit_init_args(net))}
  if isinstance(vae, sd_vae.VAEDecoder):
    init_args['vae'] = (vae, convert_dit.vae_init_args(vae))
  params = {'vae': {}}
  if gen_config.get('random_init', False):
    # 'rbg' keys: XLA's RNG compiles several times faster than threefry,
    # and untrained weights only serve tests and speed measurements.
    keys = jax.random.split(
        jax.random.key(gen_config.get('seed', 0), impl='rbg'))
    params.update({name: _init(module, k, *args[1:]) for k, (name, (
        module, args)) in zip(keys, init_args.items())})
    return params
  paths = {'dit': assets.weights_path(gen_config.weights)}
  if 'vae' in init_args:
    paths['vae'] = os.path.expanduser(gen_config.vae_weights)
  missing = [p for p in paths.values() if not os.path.exists(p)]
  if assets.is_shipped_name(gen_config.weights):
    fix = ('train it with: python -m adagen_jax.pretrain '
           f'--config=configs/pretrain/fmnist_flow.py:{paradigm.name}')
  else:
    fix = ('convert the published checkpoints with: ' + _converter_command(
        paradigm, os.path.dirname(gen_config.weights)))
  if missing:
    raise errors.UserError(f'{paradigm.name} weights not found: '
                           f'{", ".join(missing)}; {fix}')
  for name, (module, args) in init_args.items():
    variables = assets.load_variables(paths[name], f'{name} weights', fix)
    try:
      common.check_module_layout(variables, module.init, *args)
    except ValueError as e:
      section = 'model' if name == 'dit' else 'vae'
      raise errors.UserError(
          f'{name} weights at {paths[name]} do not fit config.generator.'
          f'{section} ({e}); set the sizes recorded in the .json beside the '
          f'weights, or {fix}') from None
    params[name] = jax.tree.map(jnp.asarray, variables)
  return params


def module_kwargs(section) -> dict[str, Any]:
  """ConfigDict -> module kwargs (lists become tuples: modules hash)."""
  return {k: tuple(v) if isinstance(v, list) else v
          for k, v in section.to_dict().items()}


def build_generator(gen_config, paradigm: Paradigm
                    ) -> tuple[LatentGenerator, dict[str, Any]]:
  """(generator, params) of a DiT / SiT generator section (configs/)."""
  method = gen_config.get('solver', 'dpm2s')
  if method not in paradigm.methods:
    raise errors.UserError(
        f'config.generator.solver={method!r} is not available for '
        f'{paradigm.name}; use one of {", ".join(paradigm.methods)}.')
  spacing = gen_config.get('schedule', 'reference')
  if spacing not in solver.SPACINGS:
    raise errors.UserError(
        f'config.generator.schedule={spacing!r}; use one of '
        f'{", ".join(solver.SPACINGS)}.')
  nfe = int(gen_config.steps)
  if nfe < 1:
    raise errors.UserError(f'config.generator.steps={nfe}; use NFE >= 1.')
  dtype = jnp.dtype(gen_config.get('dtype', 'float32'))
  net = dit_nets.DiT(**module_kwargs(gen_config.model), dtype=dtype)
  decoder = gen_config.get('decoder', 'sd_vae')
  if decoder == 'pixels':
    vae = sd_vae.PixelDecoder(out_channels=net.in_channels)
  elif decoder == 'sd_vae':
    vae = sd_vae.VAEDecoder(**module_kwargs(gen_config.vae), dtype=dtype)
  else:
    raise errors.UserError(f'config.generator.decoder={decoder!r}; use '
                           "'sd_vae' (latent models) or 'pixels'.")
  channels = int(gen_config.get('cfg_channels', 3))
  if not 0 <= channels <= net.in_channels:
    raise errors.UserError(
        f'config.generator.cfg_channels={channels}; use 0..'
        f'{net.in_channels}.')
  # Cheap config checks first: a bad value fails before the weights load.
  output = gen_config.get('output', '') or paradigm.outputs[0]
  if output not in paradigm.outputs:
    raise errors.UserError(
        f'config.generator.output={output!r}: a {paradigm.name} network '
        f'predicts one of {", ".join(paradigm.outputs)}; set what the '
        'weights were trained for (the .json beside them records it).')
  t_start = float(gen_config.get('t_start', paradigm.t_start))
  t_end = gen_config.get('t_end')
  if t_end is not None:
    t_end = float(t_end)
    lo, hi = sorted((t_start, 0.0 if paradigm.rule.decreasing else 1.0))
    if not lo < t_end < hi:
      raise errors.UserError(
          f'config.generator.t_end={t_end}: the grid runs from t_start='
          f'{t_start} towards the data, so use a time strictly between '
          f'{lo} and {hi} (the reference: {paradigm.rule.end}).')
  x0_clip = float(gen_config.get('x0_clip', 0.0))
  if x0_clip < 0:
    raise errors.UserError(
        f'config.generator.x0_clip={x0_clip}: use 0 (off) or the data '
        'range bound, e.g. 1.0 for pixels in [-1, 1].')
  min_stage_ratio = float(gen_config.get('min_stage_ratio', 0.0))
  if not 0 <= min_stage_ratio < 1:
    raise errors.UserError(
        f'config.generator.min_stage_ratio={min_stage_ratio}: use 0 (the '
        'reference) or a share of the step in [0, 1), e.g. 0.1.')
  params = load_params(gen_config, paradigm, net, vae)
  if gen_config.get('random_init', False):
    weights = digest = 'random_init'
  else:
    weights = os.path.basename(gen_config.weights)
    files = [assets.weights_path(gen_config.weights)]
    if decoder == 'sd_vae':
      files.append(os.path.expanduser(gen_config.vae_weights))
    digest = assets.weights_digest(*files)
  gen = LatentGenerator(
      paradigm=paradigm, net=net, vae=vae, nfe=nfe,
      smoothing=float(gen_config.smoothing),
      cfg_init=float(gen_config.cfg_init), method=method, spacing=spacing,
      t_start=t_start, cfg_channels=channels, weights=weights,
      weights_digest=digest, x0_clip=x0_clip, t_end=t_end,
      # The published model's output is stored as '' so that both spellings
      # give one identity.
      output='' if output == paradigm.outputs[0] else output,
      forward_rows=int(gen_config.get('forward_rows', 0)),
      min_stage_ratio=min_stage_ratio)
  return gen, params


def build(gen_config) -> tuple[LatentGenerator, dict[str, Any]]:
  """gen_config: see configs/dit_xl.py."""
  return build_generator(gen_config, DIT)
