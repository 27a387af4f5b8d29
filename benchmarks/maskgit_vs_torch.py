"""The MaskGIT rollout, adagen_jax against a PyTorch rollout, on this CPU.

  python benchmarks/maskgit_vs_torch.py --size=tiny --batches=8,32 \
      --steps=4,8,16 --json=docs/results/maskgit_vs_torch_tiny.json
  python benchmarks/maskgit_vs_torch.py --size=mid --batches=8,32 --steps=8

Both sides run float32 on the same cores (--threads each, one side at a
time, each in its own process so peak RSS is its own), random weights of
the same sizes, and end at the sampled token ids (no tokenizer decode):

- jax: `adagen_jax.rl.rollout` on the project's MaskGITGenerator (one
  batched conditional + unconditional forward of 2B per step, none after
  the last step: 2T passes of B); the policy row is the training rollout
  (exploring actor, critic values, observations kept,
  timing.policy_rollout).
- torch: written here from the reference semantics
  (../shared/reference/adagen_reference.md §1, §4.3): a conditional
  forward at reset, then per step an unconditional forward on the current
  ids and a conditional forward on the new ids (2T + 1 passes of B); the
  policy row evaluates the actor and the critic at every step, as AdaNAT's
  PPO rollout does. `torch.inference_mode`, eager (what the reference runs).

The jax side runs once per DEVICES:ROWS in --jax: DEVICES CPU devices
(1: XLA's intra-op threads share the cores, the default; one per core:
the batch split over them, as train.py's mesh and adagen_jax.sample split
it; see adagen_jax/cli.py), and the guided forward in
chunks of ROWS rows per device (generator.forward_rows; 0: all 2B rows at
once). torch gets the same --threads.

Rows: img/s of the hand-crafted schedule and with the policy (its share
is 1 - t_heuristic / t_policy), the first call (jax: compile + run; a
scan should compile in about constant time in T), and peak RSS. A second
table says where the ratio comes from: each side's transformer FLOP rate
in its hand-crafted rollout (passes x XLA's count of FLOPs per row-pass x
img/s), as a share of that side's own rate on the MLP's two GEMMs at one
guided forward's rows (2B x (side^2 + 1) tokens, split over the devices as
the rollout's batch is).
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {
    # The held-out measurement's sizes (issue 20).
    'tiny': dict(width=64, depth=4, heads=4, side=7, codebook=128,
                 classes=10, hidden=64),
    'mid': dict(width=256, depth=8, heads=8, side=16, codebook=1024,
                classes=1000, hidden=512),
}
SIGMA = 0.6


def _rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


# ----------------------------------------------------------------- jax side --


def run_jax(size: dict, batches, steps_list, repeats: int,
            forward_rows: int) -> list[dict]:
  # pylint: disable=g-import-not-at-top
  import dataclasses
  import jax
  import jax.numpy as jnp
  import ml_collections
  from adagen_jax.generators import maskgit
  from adagen_jax.rl import policy as policy_lib
  import timing
  # pylint: enable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class IdsOnly(maskgit.MaskGITGenerator):
    """Ends at the sampled ids, like the torch side (no tokenizer)."""

    def decode(self, params, state):
      side = math.isqrt(self.num_tokens)
      return state.sampled.reshape(-1, side, side, 1).astype(jnp.float32)

  rows = []
  for steps in steps_list:
    cfg = ml_collections.ConfigDict(dict(
        tokens=size['side'], codebook_size=size['codebook'],
        num_classes=size['classes'], width=size['width'],
        depth=size['depth'], heads=size['heads'], mlp_ratio=4.0,
        image_channels=1, steps=steps, schedule='cosine', smoothing=0.0,
        temp_init=1.0, samp_temp_init=1.0, cfg_init=1.0,
        tokenizer=dict(filters=8, channel_mult=(1,), num_res_blocks=1,
                       embedding_dim=8, norm_groups=4)))
    _, transformer = maskgit.make_nets(cfg)
    side = size['side']
    params = {'transformer': jax.jit(transformer.init)(
        jax.random.key(1), jnp.zeros((1, side * side), jnp.int32),
        jnp.zeros((1,), jnp.int32))['params']}
    gen = IdsOnly(tokenizer=None, transformer=transformer,
                  action_spec=maskgit.make_action_spec(cfg), num_steps=steps,
                  image_shape=(side, side, 1), weights='random',
                  schedule='cosine', forward_rows=forward_rows)
    agent = policy_lib.make_agent(4, steps, hidden_size=size['hidden'])
    agent_params = timing.init_agent(agent, gen.obs_shape)
    run = timing.jitted_rollout(gen, agent)
    params, agent_params = timing.replicated((params, agent_params))
    # One pass of the transformer over one row, as XLA counts it: both
    # sides run this network, so their rates are comparable.
    ids = jnp.zeros((8, side * side), jnp.int32)
    pass_gflop = jax.jit(transformer.apply).lower(
        {'params': params['transformer']}, ids, ids[:, 0]).compile(
        ).cost_analysis()['flops'] / 8 / 1e9
    for b in batches:
      labels = jnp.arange(b, dtype=jnp.int32) % size['classes']
      row = dict(framework='jax', devices=jax.device_count(),
                 forward_rows=forward_rows, steps=steps, batch=b,
                 passes=2 * steps, pass_gflop=pass_gflop,
                 gemm_gflop_s=_gemm_rate_jax(size, b))
      for use_policy in (False, True):
        stats = {}
        secs = timing.time_fn(
            lambda p, a, l, k, u=use_policy: run(p, a, l, k, u), params,
            agent_params, labels, jax.random.key(0), repeats=repeats,
            stats=stats)
        tag = 'policy' if use_policy else 'heuristic'
        row[f'{tag}_img_s'] = b / secs
        row[f'{tag}_first_call_s'] = stats['first_call_s']
      rows.append(row)
  return rows


def _gemm_rows(size: dict, batch: int) -> int:
  """Token rows of one guided forward (2B rows of side^2 + 1 tokens)."""
  return 2 * batch * (size['side'] ** 2 + 1)


def _gemm_rate_jax(size: dict, batch: int) -> float:
  """GFLOP/s of the transformer's MLP (two GEMMs) at one forward's rows.

  The rows are split over the devices as the rollout splits its batch.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  from adagen_jax.parallel import mesh as mesh_lib
  import cpu_gemm
  import timing
  # pylint: enable=g-import-not-at-top
  mesh = mesh_lib.make_mesh()
  place = lambda x, w1, w2: (
      jax.device_put(x, mesh_lib.batch_sharded(mesh)),
      *timing.replicated((w1, w2)))
  return cpu_gemm.jax_mlp_gflop_s(_gemm_rows(size, batch), size['width'],
                                  repeats=10, place=place)


# --------------------------------------------------------------- torch side --


def run_torch(size: dict, batches, steps_list, repeats: int) -> list[dict]:
  import cpu_gemm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class Block(nn.Module):
    def __init__(self, w, heads, skip):
      super().__init__()
      self.skip_linear = nn.Linear(2 * w, w) if skip else None
      self.norm1, self.norm2 = nn.LayerNorm(w), nn.LayerNorm(w)
      self.qkv = nn.Linear(w, 3 * w, bias=False)
      self.proj = nn.Linear(w, w)
      self.fc1, self.fc2 = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)
      self.heads = heads

    def forward(self, x, skip=None):
      if self.skip_linear is not None:
        x = self.skip_linear(torch.cat([x, skip], -1))
      b, l, c = x.shape
      q, k, v = self.qkv(self.norm1(x)).reshape(
          b, l, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
      a = F.scaled_dot_product_attention(q, k, v)
      x = x + self.proj(a.transpose(1, 2).reshape(b, l, c))
      return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

  class UViT(nn.Module):
    """The reference U-ViT: in-context class token, long skips, tied head."""

    def __init__(self, s):
      super().__init__()
      w, n = s['width'], s['side'] ** 2
      self.word = nn.Embedding(s['codebook'] + 1, w)
      self.pos = nn.Parameter(torch.randn(1, n, w) * 0.02)
      self.ln_tok = nn.LayerNorm(w, eps=1e-6)
      self.ctx = nn.Embedding(s['classes'] + 1, w)
      self.ctx_pos = nn.Parameter(torch.randn(1, 1, w) * 0.02)
      self.ln_ctx = nn.LayerNorm(w, eps=1e-6)
      half = s['depth'] // 2
      self.ins = nn.ModuleList([Block(w, s['heads'], False)
                                for _ in range(half)])
      self.mid = Block(w, s['heads'], False)
      self.outs = nn.ModuleList([Block(w, s['heads'], True)
                                 for _ in range(half)])
      self.norm = nn.LayerNorm(w)
      self.mlm_fc, self.mlm_ln = nn.Linear(w, w), nn.LayerNorm(w)
      self.mlm_bias = nn.Parameter(torch.zeros(s['codebook'] + 1))
      self.codebook = s['codebook']

    def forward(self, ids, labels):
      x = self.ln_tok(self.word(ids) + self.pos)
      c = self.ln_ctx(self.ctx(labels)[:, None] + self.ctx_pos)
      x = torch.cat([c, x], 1)
      skips = []
      for blk in self.ins:
        x = blk(x)
        skips.append(x)
      x = self.mid(x)
      for blk in self.outs:
        x = blk(x, skips.pop())
      x = self.norm(x)
      h = self.mlm_ln(F.gelu(self.mlm_fc(x)))
      logits = h @ self.word.weight.t() + self.mlm_bias
      return logits[:, 1:, :self.codebook], x[:, 1:]

  class AdaLN(nn.Module):
    def __init__(self, w):
      super().__init__()
      self.norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
      self.mod = nn.Linear(w, 2 * w)

    def forward(self, x, c):
      shift, scale = self.mod(F.silu(c)).chunk(2, -1)
      if x.dim() == 3:
        shift, scale = shift[:, None], scale[:, None]
      return self.norm(x) * (1 + scale) + shift

  class PolicyNet(nn.Module):
    """The reference PolicyBackbone (adagen_reference.md §1.1)."""

    def __init__(self, c_in, n, hidden, out):
      super().__init__()
      self.embed = nn.Linear(c_in, hidden) if c_in != hidden else None
      self.t1, self.t2 = nn.Linear(256, hidden), nn.Linear(hidden, hidden)
      self.ada1, self.ada2, self.ada3 = (AdaLN(hidden), AdaLN(2 * hidden),
                                         AdaLN(hidden))
      self.ada2.mod = nn.Linear(hidden, 4 * hidden)
      self.dw = nn.Conv2d(hidden, hidden, 3, 2, 1, groups=hidden)
      self.pw = nn.Conv2d(hidden, hidden // 4, 1)
      side = math.isqrt(n)
      flat = hidden // 4 * ((side + 1) // 2) ** 2
      self.l1, self.l2 = nn.Linear(flat, 2 * hidden), nn.Linear(2 * hidden,
                                                                hidden)
      self.l3 = nn.Linear(hidden, out)
      self.side = side
      freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
      self.register_buffer('freqs', freqs)

    def forward(self, x, t):
      if self.embed is not None:
        x = self.embed(x)
      arg = t.float()[:, None] * self.freqs[None]
      c = self.t2(F.silu(self.t1(torch.cat([torch.cos(arg),
                                            torch.sin(arg)], -1))))
      x = self.ada1(x, c)
      b, n, h = x.shape
      x = x.permute(0, 2, 1).reshape(b, h, self.side, self.side)
      x = F.gelu(self.pw(F.gelu(self.dw(x)))).flatten(1)
      x = F.gelu(self.ada2(self.l1(x), c))
      x = F.gelu(self.ada3(self.l2(x), c))
      return self.l3(x)

  s = size
  n = s['side'] ** 2
  mask_id = s['codebook']
  torch.manual_seed(0)
  nnet = UViT(s).eval()
  actor = PolicyNet(s['width'], n, s['hidden'], 4).eval()
  critic = PolicyNet(s['width'], n, s['hidden'], 1).eval()

  def rollout(b, steps, use_policy):
    labels = torch.arange(b) % s['classes']
    null = torch.full_like(labels, s['classes'])
    r = (np.arange(steps) + 1 - 1e-3) / steps
    ratios = np.cos(np.pi / 2 * r)
    ids = torch.full((b, n), mask_id)
    logits_c, feat = nnet(ids, labels)
    for t in range(steps):
      cfg, temp, samp_temp = (t + 1e-3) / steps, 1 - r[t], 1.0
      if use_policy:
        tt = torch.full((b,), t)
        mean = actor(feat, tt)
        critic(feat, tt)
        # The exploring action is drawn as training does; the executed one
        # would be it plus the residual, activated (not needed for timing).
        mean.add(SIGMA * torch.randn_like(mean))
      logits_u, _ = nnet(ids, null)
      logits = logits_c + cfg * (logits_c - logits_u)
      sampled = torch.distributions.Categorical(
          logits=logits / samp_temp).sample()
      conf = torch.log_softmax(logits, -1).gather(
          -1, sampled[..., None])[..., 0]
      masked = ids == mask_id
      sampled = torch.where(masked, sampled, ids)
      conf = torch.where(masked, conf, torch.full_like(conf, math.inf))
      mask_len = min(int(math.floor(n * ratios[t])), n - 1)
      gumbel = -torch.log(-torch.log(torch.rand_like(conf).clamp_min(1e-20)))
      conf = conf + temp * gumbel
      cut = torch.sort(conf, -1).values[:, mask_len:mask_len + 1]
      ids = torch.where(conf < cut, torch.full_like(ids, mask_id), sampled)
      logits_c, feat = nnet(ids, labels)
    return sampled

  rows = []
  with torch.inference_mode():
    for steps in steps_list:
      for b in batches:
        gemm = cpu_gemm.torch_mlp_gflop_s(_gemm_rows(s, b), s['width'],
                                          repeats=10)
        row = dict(framework='torch', devices=1, forward_rows=b, steps=steps,
                   batch=b, passes=2 * steps + 1, gemm_gflop_s=gemm)
        for use_policy in (False, True):
          t0 = time.perf_counter()
          rollout(b, steps, use_policy)
          first = time.perf_counter() - t0
          times = []
          for _ in range(repeats):
            t0 = time.perf_counter()
            rollout(b, steps, use_policy)
            times.append(time.perf_counter() - t0)
          tag = 'policy' if use_policy else 'heuristic'
          row[f'{tag}_img_s'] = b / min(times)
          row[f'{tag}_first_call_s'] = first
        rows.append(row)
  return rows


# --------------------------------------------------------------------- main --


def _child(args):
  size = SIZES[args.size]
  batches = [int(x) for x in args.batches.split(',')]
  steps = [int(x) for x in args.steps.split(',')]
  if args.framework == 'jax':
    rows = run_jax(size, batches, steps, args.repeats, args.forward_rows)
  else:
    rows = run_torch(size, batches, steps, args.repeats)
  for row in rows:
    row['peak_rss_gib'] = _rss_gib()
  print('ROWS ' + json.dumps(rows), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', default='tiny', choices=sorted(SIZES))
  p.add_argument('--batches', default='8,32')
  p.add_argument('--steps', default='4,8,16')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--threads', type=int, default=os.cpu_count())
  p.add_argument('--jax', default=f'1:0,{os.cpu_count()}:0,'
                 f'{os.cpu_count()}:4',
                 help='DEVICES:ROWS settings to run the jax side with')
  p.add_argument('--forward_rows', type=int, default=0,
                 help='(set by --jax for its child processes)')
  p.add_argument('--framework', default='both',
                 choices=['both', 'jax', 'torch'])
  p.add_argument('--json', default='', help='also write the rows here')
  args = p.parse_args()
  if args.framework != 'both':
    if args.framework == 'torch':
      import torch  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(args.threads)
    return _child(args)

  env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        ' --xla_cpu_multi_thread_eigen=true').strip())
  rows = []
  children = [('jax',) + tuple(map(int, c.split(':')))
              for c in args.jax.split(',')]
  for framework, devices, forward_rows in children + [('torch', 1, 0)]:
    out = subprocess.run(
        [sys.executable, __file__, f'--framework={framework}',
         f'--forward_rows={forward_rows}'] +
        [f'--{k}={getattr(args, k)}' for k in
         ('size', 'batches', 'steps', 'repeats', 'threads')],
        env=dict(env, JAX_NUM_CPU_DEVICES=str(devices)),
        capture_output=True, text=True, check=True)
    line = [l for l in out.stdout.splitlines() if l.startswith('ROWS ')][-1]
    rows += json.loads(line[5:])
  print(f'{args.size}, float32, {args.threads} threads; img/s (first call '
        's); policy share = 1 - t_heuristic / t_policy')
  print('dev rows steps batch |   jax heur   jax policy  share |  torch heur '
        'torch policy  share | jax/torch heur  policy | RSS GiB jax torch')
  torch_rows = {(r['steps'], r['batch']): r for r in rows
                if r['framework'] == 'torch'}
  share = lambda x: 1 - x['policy_img_s'] / x['heuristic_img_s']
  for r in sorted((r for r in rows if r['framework'] == 'jax'),
                  key=lambda r: (r['steps'], r['batch'], r['devices'],
                                 r['forward_rows'])):
    t = torch_rows[(r['steps'], r['batch'])]
    print(f'{r["devices"]:3d} {r["forward_rows"]:4d} {r["steps"]:5d} '
          f'{r["batch"]:5d} | '
          f'{r["heuristic_img_s"]:7.1f} '
          f'({r["heuristic_first_call_s"]:4.1f}) {r["policy_img_s"]:7.1f} '
          f'{share(r):5.1%} | {t["heuristic_img_s"]:7.1f}      '
          f'{t["policy_img_s"]:7.1f}  {share(t):5.1%} | '
          f'{r["heuristic_img_s"] / t["heuristic_img_s"]:6.2f}      '
          f'{r["policy_img_s"] / t["policy_img_s"]:6.2f} | '
          f'{r["peak_rss_gib"]:5.2f} {t["peak_rss_gib"]:5.2f}')
  # Where the ratio comes from: each side's transformer FLOP rate in its
  # hand-crafted rollout (passes x XLA's FLOPs per row-pass x img/s) against
  # its own GEMM rate at the MLP's shape.
  print('transformer GFLOP/s in the hand-crafted rollout (share of the side\'s'
        ' MLP GEMM rate); passes per image')
  print('dev rows steps batch |  jax GFLOP/s (share) passes | torch GFLOP/s '
        '(share) passes')
  rate = lambda r, g: r['passes'] * g * r['heuristic_img_s']
  for r in sorted((r for r in rows if r['framework'] == 'jax'),
                  key=lambda r: (r['steps'], r['batch'], r['devices'],
                                 r['forward_rows'])):
    t = torch_rows[(r['steps'], r['batch'])]
    rj, rt = rate(r, r['pass_gflop']), rate(t, r['pass_gflop'])
    print(f'{r["devices"]:3d} {r["forward_rows"]:4d} {r["steps"]:5d} '
          f'{r["batch"]:5d} | {rj:8.1f} ({rj / r["gemm_gflop_s"]:4.0%}) '
          f'{r["passes"]:5d} | {rt:8.1f} ({rt / t["gemm_gflop_s"]:4.0%}) '
          f'{t["passes"]:5d}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(dict(size=args.size, threads=args.threads, rows=rows), f,
                indent=1)


if __name__ == '__main__':
  # Both sides (this process's children) on huge pages, as the commands run.
  from adagen_jax import cli  # pylint: disable=g-import-not-at-top
  cli.reexec_with_huge_pages()
  main()
