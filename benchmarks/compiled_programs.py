"""Full-size programs compiled on the CPU from abstract shapes: FLOPs, memory.

  python benchmarks/compiled_programs.py --json=docs/results/compiled.json
  python benchmarks/compiled_programs.py --only=ppo_update   # one program

No weights and no accelerator: every parameter is a `jax.ShapeDtypeStruct`
(`generators.build_abstract`, `jax.eval_shape` of the inits), each program
is `jit(f).lower(*abstract).compile()`d for the local CPU, and XLA's
`cost_analysis()` and `memory_analysis()` are read:

- `maskgit_l_rollout`: MaskGIT-L (ImageNet 256, 16x16 tokens) training
  rollout at B=256, T=8: exploring actor, critic, kept bf16 observations,
  VQGAN decode (benchmarks/timing.policy_rollout).
- `ppo_update`: one PPO update (5 full-batch epochs) of 4096 trajectories x
  8 steps at MaskGIT-L's feature size (256 tokens x 768, bf16), policy and
  critic of width 512, on ONE device; with `ppo.micro_batches` = 1, 8, 32.
- `dit_xl_rollout`: DiT-XL/2 at 16 NFE (DPM-Solver++ 2S), B=256, SD-VAE decode.
- `var_d16_rollout`: VAR-d16, 10 scales, B=256, VQVAE decode.
- `discriminator_step`: 256 real + 256 generated 256x256 images through the
  DINO ViT-S/16 backbone at crop 224 and the projected discriminator.

FLOPs: XLA's HloCostAnalysis counts a loop body once, whatever its trip
count, and a conditional as its largest branch, so the scanned rollouts'
totals undercount. The per-image figures therefore compile the pieces
separately (init, one step, or each of VAR's per-scale steps, decode) and
add them as the rollout runs them, next to an analytic count of the
transformer's matmuls (2 FLOPs per multiply-add; `step_gflop_per_image`
is the largest step).
Memory: argument, output and temporary bytes of the one compiled program
(what a GPU of that size must hold), and whether it fits 80 GB.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from adagen_jax import cli
from adagen_jax import generators
from adagen_jax.backbones import dino_vit
from adagen_jax.rl import policy as policy_lib
from adagen_jax.rl import ppo as ppo_lib
from adagen_jax.rl import rewards as rewards_lib
import maskgit_rollout
import timing

GiB = 2 ** 30
BATCH = 256
POLICY_HIDDEN = 512  # the reference PolicyNet


def _key():
  return jax.eval_shape(lambda: jax.random.key(0))


def _sds(shape, dtype):
  return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))


def analyse(fn, *args, static_argnums=()) -> dict:
  """Compiles fn for abstract args; XLA's costs and memory."""
  t0 = time.time()
  compiled = jax.jit(fn, static_argnums=static_argnums).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  out = dict(compile_s=round(time.time() - t0, 1),
             flops=float(cost.get('flops', 0.0)))
  if mem is not None:
    out.update(argument_gib=mem.argument_size_in_bytes / GiB,
               output_gib=mem.output_size_in_bytes / GiB,
               alias_gib=mem.alias_size_in_bytes / GiB,
               temp_gib=mem.temp_size_in_bytes / GiB)
    out['total_gib'] = (out['argument_gib'] + out['output_gib'] -
                        out['alias_gib'] + out['temp_gib'])
    out['fits_80gb'] = out['total_gib'] <= 80 * 1e9 / GiB
  return out


def rollout_pieces(gen, params, batch: int, forward_steps: int) -> dict:
  """FLOPs per image of init + the steps that run a forward + decode.

  MaskGIT and DiT/SiT skip the network after their last decision (a
  `lax.cond`, whose cost analysis counts the forward branch), so
  `forward_steps` is num_steps - 1 for them and num_steps for VAR.
  """
  labels = _sds((batch,), 'int32')
  state, _ = jax.eval_shape(gen.init, params, labels, _key())
  spec = gen.action_spec
  action = {n: _sds((batch,), 'float32') for n in spec.names}
  init = analyse(lambda p, l, k: gen.init(p, l, k), params, labels, _key())
  if hasattr(gen, 'step_static'):
    # VAR's step is a lax.switch over scales, costed as its largest branch:
    # sum the per-scale programs instead.
    steps = [analyse(lambda p, s, a, k, si=si: gen.step_static(si, p, s, a, k),
                     params, state, action, _key())['flops']
             for si in range(forward_steps)]
  else:
    step = analyse(lambda p, s, a, k: gen.step(p, s, a, k), params, state,
                   action, _key())
    steps = [step['flops']] * forward_steps
  decode = analyse(lambda p, s: gen.decode(p, s), params, state)
  total = init['flops'] + sum(steps) + decode['flops']
  return dict(init_gflop_per_image=init['flops'] / batch / 1e9,
              step_gflop_per_image=max(steps) / batch / 1e9,
              decode_gflop_per_image=decode['flops'] / batch / 1e9,
              rollout_gflop_per_image=total / batch / 1e9)


def rollout_program(gen, params, batch: int, forward_steps: int) -> dict:
  """The training rollout (policy, critic, kept observations), compiled."""
  agent = policy_lib.make_agent(gen.action_spec.size, gen.num_steps,
                                hidden_size=POLICY_HIDDEN)
  agent_params = jax.eval_shape(
      lambda: agent.init(jax.random.key(0), gen.obs_shape))
  row = analyse(
      lambda p, a, l, k: timing.policy_rollout(gen, agent, p, a, l, k),
      params, agent_params, _sds((batch,), 'int32'), _key())
  row['scan_flops_note'] = 'loop bodies counted once'
  row.update(rollout_pieces(gen, params, batch, forward_steps))
  row['params_gib'] = sum(x.size * x.dtype.itemsize for x in
                          jax.tree.leaves(params)) / GiB
  return row


def maskgit_l_rollout() -> dict:
  cfg = timing.config_module('maskgit_l').generator_config()
  cfg.steps = 8
  gen, params = generators.build_abstract(cfg)
  row = rollout_program(gen, params, BATCH, gen.num_steps - 1)
  size = dict(width=cfg.width, depth=cfg.depth, codebook_size=
              cfg.codebook_size)
  # Conditional + unconditional passes at each of the T guided forwards
  # (at init and after every step but the last).
  row['analytic_transformer_gflop_per_image'] = (
      2 * maskgit_rollout.forward_flops(size, cfg.tokens ** 2) *
      cfg.steps / 1e9)
  return row


def dit_transformer_flops(tokens: int, width: int, depth: int) -> float:
  """Matmul FLOPs of one DiT forward per image (blocks only)."""
  per_block = 2 * tokens * 12 * width * width + 2 * 2 * tokens ** 2 * width
  return depth * per_block


def dit_xl_rollout() -> dict:
  cfg = timing.config_module('dit_xl').generator()
  gen, params = generators.build_abstract(cfg)
  row = rollout_program(gen, params, BATCH, gen.num_steps - 1)
  m = cfg.model
  tokens = (m.input_size // m.patch_size) ** 2
  # Guided: conditional and unconditional halves at each of the 16 NFE.
  row['analytic_transformer_gflop_per_image'] = (
      2 * cfg.steps * dit_transformer_flops(tokens, m.hidden_size, m.depth)
      / 1e9)
  return row


def var_transformer_flops(patch_nums, width: int, depth: int,
                          vocab: int) -> float:
  """Matmul FLOPs of VAR's scale-by-scale decoding per image (KV cached)."""
  n = np.array([p * p for p in patch_nums])
  context = np.cumsum(n)
  tokens = n.sum()
  per_block = (2 * tokens * 12 * width * width +
               2 * 2 * float(np.sum(n * context)) * width)
  return depth * per_block + 2 * tokens * width * vocab


def var_d16_rollout() -> dict:
  cfg = timing.config_module('var_d16').generator(16, cfg=1.5)
  gen, params = generators.build_abstract(cfg)
  row = rollout_program(gen, params, BATCH, gen.num_steps)
  # Conditional + unconditional halves of every scale.
  row['analytic_transformer_gflop_per_image'] = float(
      2 * var_transformer_flops(cfg.patch_nums, cfg.width, cfg.depth,
                                cfg.vae.vocab_size) / 1e9)
  return row


def ppo_update() -> dict:
  """4096 x 8 samples at MaskGIT-L feature size, for 1, 8 and 32 chunks."""
  n, c, hidden, actions = 256, 768, POLICY_HIDDEN, 4
  steps, trajectories = 8, 4096
  m = trajectories * steps
  agent = policy_lib.make_agent(actions, steps, hidden_size=hidden)
  params = jax.eval_shape(lambda: agent.init(jax.random.key(0), (n, c)))
  state = jax.eval_shape(lambda p: ppo_lib.create_train_state(p, 1e-5),
                         params)
  batch = ppo_lib.PPOBatch(
      obs=_sds((m, n, c), 'bfloat16'), t=_sds((m,), 'int32'),
      raw=_sds((m, actions), 'float32'), logp_old=_sds((m,), 'float32'),
      baseline=_sds((m,), 'float32'), returns=_sds((m,), 'float32'))
  rows = {}
  for micro in (1, 8, 32):
    config = ppo_lib.PPOConfig(epochs=5, micro_batches=micro)
    rows[f'micro_batches={micro}'] = analyse(
        lambda s, b, cfg=config: ppo_lib.ppo_update(
            s, agent, b, jnp.float32(0.6), cfg), state, batch)
  return rows


def discriminator_step() -> dict:
  reward_config = timing.config_module('maskgit_l').get_config().reward
  model = dino_vit.DinoViT()

  def make(variables):
    backbone = rewards_lib.Backbone(
        apply=lambda v, x: (model.apply(v, x), None), variables=variables,
        readout=True)
    return rewards_lib.make_reward(reward_config, backbone, 1000)

  def init():  # traced: the DINO weights are never allocated
    variables = model.init(jax.random.key(0), jnp.zeros(
        (1, model.image_size, model.image_size, 3)))
    return make(variables).init(jax.random.key(0),
                                jnp.zeros((8, 256, 256, 3)),
                                jnp.zeros((8,), jnp.int32))

  state = jax.eval_shape(init)
  # update reads the backbone from state.frozen only.
  reward = make(state.frozen)
  images = _sds((BATCH, 256, 256, 3), 'float32')
  labels = _sds((BATCH,), 'int32')
  return analyse(reward.update, state, images, labels, images, labels,
                 _key())


PROGRAMS = {
    'maskgit_l_rollout': maskgit_l_rollout,
    'ppo_update': ppo_update,
    'dit_xl_rollout': dit_xl_rollout,
    'var_d16_rollout': var_d16_rollout,
    'discriminator_step': discriminator_step,
}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--only', default='', help='comma-separated programs')
  timing.add_json_flag(p)
  args = p.parse_args()
  rows = timing.JsonRows(args.json, 'compiled_programs', args)
  names = [n for n in args.only.split(',') if n] or list(PROGRAMS)
  unknown = sorted(set(names) - set(PROGRAMS))
  if unknown:
    raise SystemExit(f'--only: unknown {unknown}; use {sorted(PROGRAMS)}')
  rows.note(backend=jax.default_backend(), jax=jax.__version__)
  for name in names:
    result = PROGRAMS[name]()
    print(name, ml_collections.ConfigDict(result), flush=True)
    rows.add(program=name, **result)


if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
