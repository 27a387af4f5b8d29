"""MaskGIT as an AdaGen generator: the reference transition and schedules.

One rollout (adagen_reference.md §4.3), B samples, N tokens, K codes, id K =
[MASK], class `num_classes` = null:

  init:  ids = [MASK] * N; (cond, uncond) logits and features of one forward.
  step t with actions (ratio m, re-mask temperature tau2, sampling
  temperature tau1, guidance w), all [B]:
    logits  = cond + w (cond - uncond)             both on the current ids
    sampled = Categorical(logits / tau1)           every position
    conf    = log_softmax(logits)[sampled]         guided, without tau1
    sampled, conf = ids, +inf   where already revealed (never re-masked)
    mask_len = min(floor(N m), N - 1)              no lower clamp
    conf'   = conf + tau2 * Gumbel
    ids     = where(conf' < sort(conf')[mask_len], MASK, sampled)
    cond, uncond, features = forward(ids)          for step t + 1 (not after
                                                   the last step)
  decode: the VQGAN decoder on the last `sampled` (not `ids`).

The reference recomputes the unconditional pass at the start of each step on
the current ids; here it runs at the end of the previous step, batched with
the conditional pass on the same ids (one forward of 2B). The network is
deterministic at inference, so the logits are the same, with half the
network calls. The reference's forward after the last step feeds nothing
(decode reads the last `sampled`); here it is skipped, so a rollout costs
2T passes of B against the reference's 2T + 1.

Configs: configs/fmnist_maskgit.py (the small model shipped in
adagen_jax/assets/fmnist_maskgit.msgpack) and configs/maskgit_l.py (AdaGen's
MaskGIT-L, from converted published weights).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import assets
from adagen_jax import errors
from adagen_jax.generators import base
from adagen_jax.generators import maskgit_nets

NAME = 'maskgit'
SCHEDULES = ('cosine', 'linear', 'muse', 'autonat')
# The reference's offset in r_t = (t + 1 - 1e-3) / T (adagen_reference.md
# §1.4): the last ratio is cos(pi/2 (1 - 1e-3 / T)) > 0, a tiny number.
_EPS_T = 1e-3
# MUSE's fixed annealed "gen_temp" (adagen_reference.md §4.3).
_MUSE_TEMP = 4.5
# AutoNAT's searched T = 8 schedule (ImprovedNAT AutoNAT_L-T8_strategy.yaml);
# ratio and temperature are forced to 0 at the last step.
_AUTONAT = dict(
    ratio=(0.953, 0.880, 0.794, 0.746, 0.625, 0.407, 0.261, 0.0),
    temp=(2.40, 2.48, 1.19, 0.77, 1.07, 0.94, 0.78, 0.0),
    samp_temp=(2.90, 1.87, 1.14, 1.38, 1.47, 1.38, 1.71, 0.71),
    cfg=(1e-4, 1e-4, 1e-4, 0.92, 1.62, 1.19, 1.38, 1.23))
# Activated values are clamped into the range the inverse activations keep
# (base.ActionSpec.inverse_activate), so the zero policy executes exactly the
# table: a ratio of 0 becomes 1e-6 (floor(N * 1e-6) = 0 tokens stay masked).
_MIN_ACTION = 1e-6

ACTION_DIMS = (
    base.ActionDim('manual_gen_ratios', 'sigmoid'),
    base.ActionDim('manual_temp', 'softplus'),
    base.ActionDim('manual_samp_temp', 'softplus'),
    base.ActionDim('manual_cfg', 'softplus'),
)

_MISSING_WEIGHTS_FIX = (
    'convert the published MaskGIT-L.pth and vqgan_jax_strongaug.ckpt with '
    'python -m adagen_jax.generators.convert.maskgit --uvit=MaskGIT-L.pth '
    '--vqgan=vqgan_jax_strongaug.ckpt --out=weights and pass '
    '--config.generator.weights=weights/maskgit_l_uvit.msgpack,'
    'weights/maskgit_l_vqgan.msgpack (the shipped small model is '
    'weights=fmnist_maskgit, retrained with python -m adagen_jax.pretrain '
    '--config=configs/pretrain/fmnist_maskgit.py)')


def heuristic_schedule(schedule: str, num_steps: int, temp_init: float,
                       samp_temp_init: float, cfg_init: float) -> np.ndarray:
  """A hand-crafted schedule in activated space.

  Args:
    schedule: 'cosine' (AdaGen's), 'linear', 'muse' or 'autonat' (T = 8).
    num_steps: T.
    temp_init: re-mask temperature scale (cosine, linear).
    samp_temp_init: constant sampling temperature (cosine, linear).
    cfg_init: guidance scale reached at the end of the ramp (cosine, linear,
      muse).

  Returns:
    float64 [T, 4]: ratio, re-mask temperature, sampling temperature, w.

  Raises:
    UserError: unknown schedule, or 'autonat' with T != 8.
  """
  t = np.arange(num_steps, dtype=np.float64)
  r = (t + 1 - _EPS_T) / num_steps
  ramp = (t + _EPS_T) / num_steps * cfg_init
  ones = np.ones_like(t)
  if schedule in ('cosine', 'linear'):
    ratio = np.cos(np.pi / 2 * r) if schedule == 'cosine' else 1.0 - r
    table = [ratio, (1.0 - r) * temp_init, samp_temp_init * ones, ramp]
  elif schedule == 'muse':
    # MUSE anneals its Gumbel temperature 4.5 (1 - r), samples at
    # temperature 1 and scales guidance with the previous ratio t / T.
    table = [np.cos(np.pi / 2 * r), _MUSE_TEMP * (1.0 - r), ones,
             t / num_steps * cfg_init]
  elif schedule == 'autonat':
    if num_steps != len(_AUTONAT['ratio']):
      raise errors.UserError(
          f'the autonat schedule is searched for T=8, got steps={num_steps}; '
          'pass --config.generator.steps=8 or another schedule '
          f'({", ".join(SCHEDULES)}).')
    table = [np.asarray(_AUTONAT[k]) for k in ('ratio', 'temp', 'samp_temp',
                                                 'cfg')]
  else:
    raise errors.UserError(
        f'config.generator.schedule={schedule!r}; use one of '
        f'{", ".join(SCHEDULES)}.')
  table = np.stack(table, axis=-1)
  table[:, 0] = np.clip(table[:, 0], _MIN_ACTION, 1.0 - _MIN_ACTION)
  return np.maximum(table, _MIN_ACTION)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A hand-crafted schedule with its constants: T -> float64 [T, 4].

  A value (not a closure), so two generators built from equal configs are
  equal and share jit caches.
  """
  name: str
  temp_init: float
  samp_temp_init: float
  cfg_init: float

  def __call__(self, num_steps: int) -> np.ndarray:
    return heuristic_schedule(self.name, num_steps, self.temp_init,
                              self.samp_temp_init, self.cfg_init)


def sample_categorical(rng: jax.Array, logits: jax.Array) -> jax.Array:
  """int32 [...] samples of float logits [..., K], by inverse CDF.

  One uniform per sample instead of jax.random.categorical's K Gumbel
  variates: the same distribution, 4.7x faster on the CPU at 256 x 196
  ids x 512 codes (0.075 s against 0.35 s per step, most of a rollout's
  non-network time).
  """
  cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
  u = jax.random.uniform(rng, logits.shape[:-1] + (1,)) * cdf[..., -1:]
  # The first code whose CDF exceeds u; zero-probability codes never are.
  return jnp.sum(cdf <= u, axis=-1).astype(jnp.int32)


def make_action_spec(gen_config) -> base.ActionSpec:
  schedule = Schedule(gen_config.schedule, float(gen_config.temp_init),
                      float(gen_config.samp_temp_init),
                      float(gen_config.cfg_init))
  return base.ActionSpec(ACTION_DIMS, schedule, float(gen_config.smoothing))


def make_nets(model_config, dropout: float = 0.0
              ) -> tuple[maskgit_nets.VQGAN, maskgit_nets.UViT]:
  """The tokenizer and transformer a generator (or pretrain) config sizes."""
  tok = model_config.tokenizer
  group = int(model_config.get('token_group', 1))
  if (group < 1 or model_config.tokens % group
      or model_config.width % (group * group)):
    raise errors.UserError(
        f'token_group={group} must be >= 1 and divide tokens='
        f'{model_config.tokens}, with width={model_config.width} divisible '
        f'by token_group^2; e.g. tokens=14, token_group=2, width=128.')
  tokenizer = maskgit_nets.VQGAN(
      filters=tok.filters, channel_mult=tuple(tok.channel_mult),
      num_res_blocks=tok.num_res_blocks, embedding_dim=tok.embedding_dim,
      codebook_size=model_config.codebook_size,
      out_channels=model_config.image_channels, norm_groups=tok.norm_groups)
  transformer = maskgit_nets.UViT(
      codebook_size=model_config.codebook_size,
      num_tokens=model_config.tokens ** 2,
      num_classes=model_config.num_classes, width=model_config.width,
      depth=model_config.depth, num_heads=model_config.heads,
      mlp_ratio=model_config.mlp_ratio, dropout=dropout, token_group=group)
  return tokenizer, transformer


@flax.struct.dataclass
class State:
  """MaskGIT sampling state; B samples, N tokens, K codes, C width."""
  ids: jax.Array            # int32 [B, N]: current ids, K where masked
  sampled: jax.Array        # int32 [B, N]: last sampled ids (0 before any)
  cond_logits: jax.Array    # float32 [B, N, K]: conditional pass on `ids`
  uncond_logits: jax.Array  # float32 [B, N, K]: null-class pass on `ids`
  features: jax.Array       # float32 [B, N / g^2, C]: conditional features
  labels: jax.Array         # int32 [B]
  step: jax.Array           # int32 []: transitions taken


@dataclasses.dataclass(frozen=True)
class MaskGITGenerator:
  """Class-conditional MaskGIT with classifier-free guidance.

  Attributes:
    tokenizer: the VQGAN (decodes a [g, g] id grid to an image).
    transformer: the UViT.
    action_spec: 4 actions (ACTION_DIMS) and the configured schedule.
    num_steps: T.
    image_shape: (H, W, C).
    weights: what the parameters came from (asset name or paths).
    schedule: name of the hand-crafted schedule.
    weights_digest: assets.weights_digest of the weight files, so an export
      is tied to these exact weights.
    forward_rows: the most rows (samples x {cond, null}) per device in one
      transformer forward; 0 runs the 2B rows at once (base.in_chunks: on
      the CPU a few rows at a time keep the activations in cache).
  """
  tokenizer: maskgit_nets.VQGAN
  transformer: maskgit_nets.UViT
  action_spec: base.ActionSpec
  num_steps: int
  image_shape: tuple[int, int, int]
  weights: str
  schedule: str
  weights_digest: str = ''
  forward_rows: int = 0
  name: str = NAME
  stochastic: bool = True

  @property
  def num_classes(self) -> int:
    return self.transformer.num_classes

  @property
  def num_tokens(self) -> int:
    return self.transformer.num_tokens

  @property
  def mask_id(self) -> int:
    return self.transformer.codebook_size

  @property
  def obs_shape(self) -> tuple[int, int]:
    return (self.transformer.num_positions, self.transformer.width)

  def _forward(self, params, ids: jax.Array, labels: jax.Array):
    """Conditional and null-class passes on the same ids as one 2B batch
    (interleaved rows, in chunks of `forward_rows` rows per device).

    Returns:
      cond, uncond: float32 [B, N, K] logits; features float32 [B, N, C] of
      the conditional pass.
    """
    b = ids.shape[0]
    null = jnp.full_like(labels, self.num_classes)
    logits, features = base.in_chunks(
        lambda i, l: self.transformer.apply(
            {'params': params['transformer']}, i, l),
        base.interleave(ids, ids), base.interleave(labels, null),
        max_rows=self.forward_rows)
    logits = logits.reshape((b, 2) + logits.shape[1:])
    return logits[:, 0], logits[:, 1], features[::2]

  def init(self, params, labels: jax.Array, rng: jax.Array
           ) -> tuple[State, jax.Array]:
    """labels int32 [B] -> (all-masked state, obs float32 [B, N, C])."""
    del rng  # The initial state is deterministic.
    labels = labels.astype(jnp.int32)
    ids = jnp.full((labels.shape[0], self.num_tokens), self.mask_id,
                   jnp.int32)
    cond, uncond, features = self._forward(params, ids, labels)
    state = State(ids=ids, sampled=jnp.zeros_like(ids), cond_logits=cond,
                  uncond_logits=uncond, features=features, labels=labels,
                  step=jnp.zeros((), jnp.int32))
    return state, features

  def step(self, params, state: State, action: Mapping[str, jax.Array],
           rng: jax.Array) -> tuple[State, jax.Array]:
    """One reference transition (module docstring); action values [B]."""
    ratio, remask_temp, samp_temp, cfg = (
        action[d.name].astype(jnp.float32)[:, None] for d in ACTION_DIMS)
    rng_sample, rng_gumbel = jax.random.split(rng)
    n = self.num_tokens
    logits = state.cond_logits + cfg[..., None] * (
        state.cond_logits - state.uncond_logits)
    sampled = sample_categorical(rng_sample, logits / samp_temp[..., None])
    conf = jnp.take_along_axis(jax.nn.log_softmax(logits), sampled[..., None],
                               axis=-1)[..., 0]
    masked = state.ids == self.mask_id
    sampled = jnp.where(masked, sampled, state.ids)
    conf = jnp.where(masked, conf, jnp.inf)
    mask_len = jnp.minimum(jnp.floor(n * ratio), n - 1).astype(jnp.int32)
    conf = conf + remask_temp * jax.random.gumbel(rng_gumbel, conf.shape)
    cut = jnp.take_along_axis(jnp.sort(conf, axis=-1), mask_len, axis=-1)
    ids = jnp.where(conf < cut, self.mask_id, sampled)
    # The last transition's forward would only feed a decision that is
    # never taken (decode reads `sampled`): a scalar predicate, so only the
    # taken branch runs and a rollout costs T guided forwards, not T + 1
    # (20% of a T=4 rollout).
    cond, uncond, features = jax.lax.cond(
        state.step + 1 < self.num_steps,
        lambda: self._forward(params, ids, state.labels),
        lambda: (state.cond_logits, state.uncond_logits, state.features))
    state = State(ids=ids, sampled=sampled, cond_logits=cond,
                  uncond_logits=uncond, features=features,
                  labels=state.labels, step=state.step + 1)
    return state, features

  def decode(self, params, state: State) -> jax.Array:
    """-> float32 [B, H, W, C] in [0, 1], from the last sampled ids."""
    side = math.isqrt(self.num_tokens)
    ids = state.sampled.reshape(-1, side, side)
    return self.tokenizer.apply({'params': params['tokenizer']}, ids,
                                method=self.tokenizer.decode_ids)

  def reconstruct(self, params, images: jax.Array) -> jax.Array:
    """Images through the tokenizer: float32 [B, H, W, C] in [0, 1]."""
    return self.tokenizer.apply({'params': params['tokenizer']}, images,
                                method=self.tokenizer.reconstruct)

  def identity(self) -> dict[str, Any]:
    t = self.transformer
    return {
        'name': self.name, 'weights': self.weights,
        'tokens': t.num_tokens, 'codebook_size': t.codebook_size,
        'num_classes': t.num_classes, 'width': t.width, 'depth': t.depth,
        'heads': t.num_heads, 'image_shape': list(self.image_shape),
        'weights_digest': self.weights_digest,
        # Only when grouped, so identities made before the option match.
        **({'token_group': t.token_group} if t.token_group > 1 else {}),
    }


def _weight_files(weights: str) -> tuple[str, list[str]]:
  """(what, paths) of config.generator.weights (asset name or paths)."""
  if not weights:
    raise errors.UserError('config.generator.weights is empty; '
                           + _MISSING_WEIGHTS_FIX)
  names = [w.strip() for w in weights.split(',') if w.strip()]
  if len(names) == 1 and assets.is_shipped_name(names[0]):
    return f'shipped MaskGIT weights {names[0]!r}', [
        assets.weights_path(names[0])]
  return 'MaskGIT weights', [os.path.expanduser(n) for n in names]


def load_params(weights: str, tokenizer, transformer, image_shape,
                num_tokens: int) -> dict:
  """{'tokenizer': ..., 'transformer': ...} from msgpack files.

  Each file holds one or both top-level entries (a converter writes one per
  published checkpoint); they are merged and checked against the shapes of
  the configured networks.

  Raises:
    UserError: a file is missing or unreadable, an entry is missing, or a
      shape differs from the config's sizes.
  """
  what, paths = _weight_files(weights)
  params = {}
  for path in paths:
    params.update(assets.load_variables(path, what, _MISSING_WEIGHTS_FIX))
  side = math.isqrt(num_tokens)
  expected = {
      'tokenizer': jax.eval_shape(
          tokenizer.init, jax.random.key(0),
          jnp.zeros((1,) + tuple(image_shape)))['params'],
      'transformer': jax.eval_shape(
          transformer.init, jax.random.key(0),
          jnp.zeros((1, side * side), jnp.int32),
          jnp.zeros((1,), jnp.int32))['params'],
  }
  for key, shapes in expected.items():
    if key not in params:
      raise errors.UserError(f'{what} ({", ".join(paths)}) lack the {key}; '
                             + _MISSING_WEIGHTS_FIX)
    got = jax.tree.map(np.shape, params[key])
    want = jax.tree.map(lambda s: tuple(s.shape), shapes)
    if got != want:
      raise errors.UserError(
          f'the {key} in {what} ({", ".join(paths)}) does not match the '
          'sizes in config.generator (tokens, codebook_size, width, depth, '
          'heads, tokenizer.*); use the config the weights were made with.')
  return {k: jax.tree.map(jnp.asarray, params[k]) for k in expected}


def build(gen_config) -> tuple[MaskGITGenerator, dict]:
  """(generator, params) of a `config.generator` with name='maskgit'."""
  if gen_config.steps < 1:
    raise errors.UserError(f'config.generator.steps={gen_config.steps}; '
                           'use a positive number of steps.')
  spec = make_action_spec(gen_config)
  spec.heuristic(gen_config.steps)  # Fails early on a bad schedule / T.
  tokenizer, transformer = make_nets(gen_config)
  image_shape = (gen_config.image_size, gen_config.image_size,
                 gen_config.image_channels)
  if gen_config.get('random_init', False):  # benchmarks, abstract shapes
    params = random_params(tokenizer, transformer, image_shape)
    weights = digest = 'random_init'
  else:
    params = load_params(gen_config.weights, tokenizer, transformer,
                         image_shape, transformer.num_tokens)
    weights = gen_config.weights
    digest = assets.weights_digest(*_weight_files(weights)[1])
  generator = MaskGITGenerator(
      tokenizer=tokenizer, transformer=transformer, action_spec=spec,
      num_steps=int(gen_config.steps), image_shape=image_shape,
      weights=weights, schedule=gen_config.schedule, weights_digest=digest,
      forward_rows=int(gen_config.get('forward_rows', 0)))
  return generator, params


def random_params(tokenizer, transformer, image_shape) -> dict:
  """Freshly initialised {'tokenizer', 'transformer'} parameters."""
  k1, k2 = jax.random.split(jax.random.key(0))
  return {
      'tokenizer': tokenizer.init(
          k1, jnp.zeros((1,) + tuple(image_shape)))['params'],
      'transformer': transformer.init(
          k2, jnp.zeros((1, transformer.num_tokens), jnp.int32),
          jnp.zeros((1,), jnp.int32))['params'],
  }
