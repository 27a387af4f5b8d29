"""Rollout speed of DiT / SiT with the AdaGen policy (random weights).

  python benchmarks/flow_rollout.py --size=dit_xl --paradigm=dit \
      --batches=64,256 --nfe=16 --dtype=bfloat16    # on a GPU (H100 figures)
  python benchmarks/flow_rollout.py --size=dit_xl --paradigm=sit \
      --batches=64,256 --nfe=16 --dtype=bfloat16    # SiT-XL/2, same network
  python benchmarks/flow_rollout.py --size=tiny --paradigm=dit --batches=8
  python benchmarks/flow_rollout.py --size=tiny --paradigm=sit --batches=8

`dit_xl` is the generator section of configs/dit_xl.py (or configs/sit_xl.py
with --paradigm=sit): DiT-XL/2 on 32 x 32 x 4 latents, DPM-Solver++ 2S,
guidance on, with `random_init=True`; `tiny` is the Fashion-MNIST pixel-space
DiT / SiT of adagen_jax/configs/shipped.py (28 x 28 x 1, width 128, depth 6),
random weights. The policy is the reference's PolicyNet (hidden 512; 64 for
tiny).

The timed rollout stops at the latents, as the reference's FLOPs do: the
generator is built with the parameter-free 'pixels' decoder, so the SD-VAE
decode is not run. --decode builds the configs' SD-VAE decoder (random
weights) and times it as part of the rollout; the FLOPs (and so the MFU)
still count the DiT only.

Prints one row per batch size: images/s of the rollout with the policy as
training runs it (exploring actor, critic values, observations kept;
timing.policy_rollout), the same rollout with the hand-crafted time grid as
sampling runs it (the policy's share of the time is
1 - t_heuristic / t_policy), model FLOPs utilisation (matmul FLOPs of one
DiT forward per image x 2 NFE forwards: every evaluation runs the
conditional and the unconditional pass) against a measured dense matmul rate
in the same dtype, and peak device memory so far where the backend reports
it. Times are the best of --repeats (3) after a warm-up (compile) run;
--json=PATH also writes the rows (benchmarks/gpu_suite.sh collects them).
Results go into docs/RESULTS.md by hand, with the command and machine.
"""

import argparse

import jax
import jax.numpy as jnp

from adagen_jax import cli
from adagen_jax.configs import shipped
from adagen_jax.generators import dit
from adagen_jax.generators import dit_nets
from adagen_jax.generators import sit
from adagen_jax.rl import policy as policy_lib
import timing

BUILD = {'dit': dit.build, 'sit': sit.build}
SIZES = ('dit_xl', 'tiny')


def generator_config(size: str, paradigm: str, nfe: int, dtype: str,
                     decode: bool):
  """The config.generator section to time, with random weights."""
  if size == 'dit_xl':
    cfg = timing.config_module(f'{paradigm}_xl').generator()
    cfg.decoder = 'sd_vae' if decode else 'pixels'
  else:
    cfg = shipped.fmnist_flow_generator(paradigm)  # decoder 'pixels'
  cfg.steps = nfe
  cfg.random_init = True
  cfg.dtype = dtype
  return cfg


def forward_flops(net) -> int:
  """Matmul FLOPs (2 per MAC) of one DiT forward of one image.

  Patch embedding, per block qkv + proj + MLP on N tokens, attention scores
  and values (2 N^2 D MACs), the adaLN modulations and timestep MLP (per
  image), and the final linear. DiT-XL/2 at 256: ~237 GFLOP (the DiT paper's
  118.6 "Gflops" counts multiply-adds).
  """
  n, d, p = net.num_tokens, net.hidden_size, net.patch_size
  hidden = int(d * net.mlp_ratio)
  macs = n * p * p * net.in_channels * d                    # x_embedder
  macs += dit_nets.FREQ_DIM * d + d * d                 # t_embedder
  per_block = n * (3 * d * d + d * d + 2 * d * hidden)      # qkv, proj, mlp
  per_block += 2 * n * n * d                                # q k^T, a v
  per_block += d * 6 * d                                    # adaLN
  macs += net.depth * per_block
  macs += d * 2 * d + n * d * p * p * net.out_channels      # final layer
  return 2 * macs


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', default='tiny', choices=SIZES)
  p.add_argument('--paradigm', default='dit', choices=sorted(BUILD))
  p.add_argument('--batches', default='8')
  p.add_argument('--nfe', type=int, default=16)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--decode', action='store_true',
                 help='dit_xl: also run the SD-VAE decode (random weights)')
  p.add_argument('--hidden', type=int, default=None,
                 help='policy width (default 512; 64 for tiny)')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--forward_rows', type=int, default=0,
                 help="generator.forward_rows: the guided forward's rows per "
                 'device at once (0: the whole batch)')
  timing.add_json_flag(p)
  args = p.parse_args()
  rows = timing.JsonRows(args.json, 'flow_rollout', args)
  dtype = jnp.dtype(args.dtype)
  batches = [int(x) for x in args.batches.split(',')]
  for b in batches:
    if b % 8:
      raise SystemExit(f'--batches: {b} is not a multiple of 8.')

  gen_cfg = generator_config(args.size, args.paradigm, args.nfe, args.dtype,
                             args.decode)
  gen_cfg.forward_rows = args.forward_rows
  gen, params = BUILD[args.paradigm](gen_cfg)
  hidden = args.hidden or (64 if args.size == 'tiny' else 512)
  agent = policy_lib.make_agent(gen.action_spec.size, gen.num_steps,
                                hidden_size=hidden)
  agent_params = timing.init_agent(agent, gen.obs_shape)

  run = timing.jitted_rollout(gen, agent)
  peak = timing.matmul_tflops(dtype)
  forwards = 2 * gen.nfe  # cond + uncond per model evaluation
  flops_per_image = forward_flops(gen.net) * forwards
  net = gen.net
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'{args.size} {args.paradigm} (latent {gen.latent_shape}, patch '
        f'{net.patch_size}, width {net.hidden_size}, depth {net.depth}), '
        f'NFE={gen.nfe} ({gen.num_steps} decisions, {forwards} forwards per '
        f'image), {args.dtype}, decode '
        f'{"sd_vae" if args.decode and args.size != "tiny" else "none"}, '
        f'measured matmul {peak:.1f} TFLOP/s, '
        f'{flops_per_image / 1e9:.1f} GFLOP/image')
  rows.note(matmul_tflops=peak, flops_per_image=flops_per_image,
            forwards_per_image=forwards)
  timing.print_rollout_rows(run, params, agent_params, batches,
                            gen.num_classes, flops_per_image, peak,
                            repeats=args.repeats, rows=rows)

if __name__ == '__main__':
  cli.reexec_with_huge_pages()  # time what the commands run
  main()
