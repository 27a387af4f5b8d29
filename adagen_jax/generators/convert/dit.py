"""DiT / SiT and SD-VAE PyTorch checkpoints -> Flax params.

  python -m adagen_jax.generators.convert.dit \\
      --dit=DiT-XL-2-256x256.pt --sit=SiT-XL-2-256.pt \\
      --vae=autoencoder_kl_ema.pth --out=weights

writes weights/dit.msgpack, weights/sit.msgpack and weights/sd_vae.msgpack
(flax variables `{'params': ...}` of `dit_nets.DiT` / `sd_vae.VAEDecoder`),
each with a .json beside it whose 'module' entry holds the constructor
arguments read off the checkpoint's shapes (the head count, which the
weights do not fix, is DiT's for that width unless --num_heads is given).
Any flag may be given alone; configs/dit_xl.py and sit_xl.py read these
files.

Sources (adagen_reference.md §6, paradigms.md §2.1, §2.6):
  DiT-XL-2-256x256.pt: https://dl.fbaipublicfiles.com/DiT/models/
    DiT-XL-2-256x256.pt, a raw EMA state dict (training checkpoints nest it
    under 'ema', which is used when present).
  SiT-XL-2-256.pt: willisma/SiT's download.py link; DiT's keys, learned
    sigma (8 output channels).
  autoencoder_kl_ema.pth: U-ViT's SD kl-f8 VAE (sd-vae-ft-EMA) in CompVis
    keys (Google Drive id 10nbEiFd4YCHlzfTkJjZf45YcSMCN34m6), the file
    AdaGen's DiT and SiT wrappers decode with. Only `post_quant_conv.*` and
    `decoder.*` are converted; `encoder.*`, `quant_conv.*` and training
    `loss.*` keys are dropped. (diffusers' AutoencoderKL layout is not
    read.)

DiT's `pos_embed` [1, N, D] is a fixed sin-cos buffer: it must be in the
file and equal `dit_nets.sincos_pos_embed`, which the Flax module recomputes,
so it is checked and dropped rather than copied.
"""

import os
import sys

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import assets
from adagen_jax import cli
from adagen_jax import errors
from adagen_jax.generators import dit_nets
from adagen_jax.generators import sd_vae
from adagen_jax.generators.convert import common

# Heads of the published DiT sizes (S, B, L / XL), by width.
DIT_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}
FILES = {'dit': 'dit.msgpack', 'sit': 'sit.msgpack', 'vae': 'sd_vae.msgpack'}
_WHAT = {'dit': 'DiT weights', 'sit': 'SiT weights', 'vae': 'SD-VAE weights'}
_FIX = {
    'dit': 'download https://dl.fbaipublicfiles.com/DiT/models/'
           'DiT-XL-2-256x256.pt and pass --dit=PATH',
    'sit': "download SiT-XL-2-256.pt (willisma/SiT download.py) and pass "
           '--sit=PATH',
    'vae': 'download autoencoder_kl_ema.pth (U-ViT, Google Drive id '
           '10nbEiFd4YCHlzfTkJjZf45YcSMCN34m6) and pass --vae=PATH'}
# A DiT training checkpoint holds 'model' and 'ema': sample with the EMA.
_DIT_WRAPPERS = ('ema', 'model', 'state_dict')
_VAE_UNUSED = ('encoder.', 'quant_conv.', 'loss.')
_POS_EMBED_ATOL = 1e-5


def dit_layers(net: dit_nets.DiT) -> list[common.Layer]:
  """The layers of `net`'s PyTorch counterpart (without `pos_embed`)."""
  d, p = net.hidden_size, net.patch_size
  hidden = int(d * net.mlp_ratio)
  layers = [
      common.conv_layer('x_embedder.proj', 'x_embedder/proj', net.in_channels,
                        d, (p, p)),
      common.linear_layer('t_embedder.mlp.0', 't_embedder/mlp_0',
                          dit_nets.FREQ_DIM, d),
      common.linear_layer('t_embedder.mlp.2', 't_embedder/mlp_2', d, d),
      common.embedding_layer('y_embedder.embedding_table',
                             'y_embedder/embedding_table',
                             net.num_classes + 1, d)]
  for i in range(net.depth):
    t, f = f'blocks.{i}', f'blocks_{i}'
    layers += [
        common.linear_layer(f'{t}.attn.qkv', f'{f}/attn/qkv', d, 3 * d),
        common.linear_layer(f'{t}.attn.proj', f'{f}/attn/proj', d, d),
        common.linear_layer(f'{t}.mlp.fc1', f'{f}/mlp/fc1', d, hidden),
        common.linear_layer(f'{t}.mlp.fc2', f'{f}/mlp/fc2', hidden, d),
        common.linear_layer(f'{t}.adaLN_modulation.1',
                            f'{f}/adaLN_modulation_1', d, 6 * d)]
  return layers + [
      common.linear_layer('final_layer.linear', 'final_layer/linear', d,
                          p * p * net.out_channels),
      common.linear_layer('final_layer.adaLN_modulation.1',
                          'final_layer/adaLN_modulation_1', d, 2 * d)]


def dit_manifest(net: dit_nets.DiT) -> dict[str, common.Shape]:
  """{torch key: shape} that convert_dit accepts for `net`'s sizes."""
  return {'pos_embed': (1, net.num_tokens, net.hidden_size),
          **common.manifest(dit_layers(net))}


def _resnet(t: str, f: str, c_in: int, c_out: int) -> list[common.Layer]:
  layers = [
      common.norm_layer(f'{t}.norm1', f'{f}/norm1', c_in),
      common.conv_layer(f'{t}.conv1', f'{f}/conv1', c_in, c_out, (3, 3)),
      common.norm_layer(f'{t}.norm2', f'{f}/norm2', c_out),
      common.conv_layer(f'{t}.conv2', f'{f}/conv2', c_out, c_out, (3, 3))]
  if c_in != c_out:  # CompVis: a 1x1 conv of the block input.
    layers.append(common.conv_layer(f'{t}.nin_shortcut', f'{f}/nin_shortcut',
                                    c_in, c_out, (1, 1)))
  return layers


def vae_layers(vae: sd_vae.VAEDecoder) -> list[common.Layer]:
  """The decoder-side layers of the CompVis AutoencoderKL (see sd_vae)."""
  widths = [vae.ch * m for m in vae.ch_mult]
  c = widths[-1]
  layers = [
      common.conv_layer('post_quant_conv', 'post_quant_conv', vae.z_channels,
                        vae.z_channels, (1, 1)),
      common.conv_layer('decoder.conv_in', 'decoder/conv_in', vae.z_channels,
                        c, (3, 3))]
  layers += _resnet('decoder.mid.block_1', 'decoder/mid_block_1', c, c)
  layers.append(common.norm_layer('decoder.mid.attn_1.norm',
                                  'decoder/mid_attn_1/norm', c))
  for name in ('q', 'k', 'v', 'proj_out'):
    layers.append(common.conv_layer(f'decoder.mid.attn_1.{name}',
                                    f'decoder/mid_attn_1/{name}', c, c,
                                    (1, 1)))
  layers += _resnet('decoder.mid.block_2', 'decoder/mid_block_2', c, c)
  for i in reversed(range(len(widths))):
    for j in range(vae.num_res_blocks + 1):
      layers += _resnet(f'decoder.up.{i}.block.{j}',
                        f'decoder/up_{i}_block_{j}', c, widths[i])
      c = widths[i]
    if i > 0:
      layers.append(common.conv_layer(f'decoder.up.{i}.upsample.conv',
                                      f'decoder/up_{i}_upsample_conv', c, c,
                                      (3, 3)))
  return layers + [
      common.norm_layer('decoder.norm_out', 'decoder/norm_out', c),
      common.conv_layer('decoder.conv_out', 'decoder/conv_out', c,
                        vae.out_channels, (3, 3))]


def vae_manifest(vae: sd_vae.VAEDecoder) -> dict[str, common.Shape]:
  """{torch key: shape} of the converted keys (the unused ones dropped)."""
  return common.manifest(vae_layers(vae))


def convert_dit(state: common.StateDict, net: dit_nets.DiT,
                kind: str = 'dit') -> dict:
  """DiT / SiT state dict -> `{'params': ...}` for `net`.

  Args:
    state: {torch key: array}.
    net: the Flax module whose sizes the state dict must have.
    kind: 'dit' | 'sit', for messages.

  Raises:
    UserError: missing, unexpected or misshaped keys, or a `pos_embed` that
      is not DiT's sin-cos table.
  """
  what, fix = _WHAT[kind], _FIX[kind]
  common.check_manifest(state, dit_manifest(net), what, fix)
  want = dit_nets.sincos_pos_embed(net.hidden_size,
                                   net.input_size // net.patch_size)
  err = float(np.max(np.abs(np.asarray(state['pos_embed'])[0] - want)))
  if not err <= _POS_EMBED_ATOL:
    raise errors.UserError(
        f'{what}: pos_embed differs from the 2-D sin-cos table by {err:.3g}; '
        f'not a DiT/SiT checkpoint of this layout; {fix}')
  state = {k: v for k, v in state.items() if k != 'pos_embed'}
  return {'params': common.convert(state, dit_layers(net), what, fix)}


def convert_vae(state: common.StateDict, vae: sd_vae.VAEDecoder) -> dict:
  """CompVis AutoencoderKL state dict -> `{'params': ...}` for `vae`.

  Raises:
    UserError: missing, unexpected or misshaped decoder keys.
  """
  state = {k: v for k, v in state.items() if not k.startswith(_VAE_UNUSED)}
  return {'params': common.convert(state, vae_layers(vae), _WHAT['vae'],
                                   _FIX['vae'])}


def _shape(state, key, kind):
  if key not in state:
    raise errors.UserError(f'{_WHAT[kind]} have no {key}, so their sizes are '
                           f'unknown; {_FIX[kind]}')
  return np.shape(state[key])


def _count(state, pattern: str) -> int:
  n = 0
  while pattern.format(n) in state:
    n += 1
  return n


def dit_config(state: common.StateDict, kind: str = 'dit',
               num_heads: int | None = None) -> dict:
  """`dit_nets.DiT` arguments read off a state dict's shapes."""
  shape = lambda key: _shape(state, key, kind)
  d, c, p, _ = shape('x_embedder.proj.weight')
  if num_heads is None:
    if d not in DIT_HEADS:
      raise errors.UserError(
          f'{_WHAT[kind]} have width {d}, not a published DiT size; pass '
          '--num_heads=H')
    num_heads = DIT_HEADS[d]
  n = shape('pos_embed')[1]
  return dict(
      input_size=int(round(n ** 0.5)) * p, in_channels=c, patch_size=p,
      hidden_size=d, depth=_count(state, 'blocks.{}.attn.qkv.weight'),
      num_heads=num_heads, mlp_ratio=shape('blocks.0.mlp.fc1.weight')[0] / d,
      num_classes=shape('y_embedder.embedding_table.weight')[0] - 1,
      learn_sigma=shape('final_layer.linear.weight')[0] == 2 * c * p * p)


def vae_config(state: common.StateDict) -> dict:
  """`sd_vae.VAEDecoder` arguments read off a state dict's shapes."""
  shape = lambda key: _shape(state, key, 'vae')
  out_channels, ch = shape('decoder.conv_out.weight')[:2]
  levels = _count(state, 'decoder.up.{}.block.0.conv1.weight')
  return dict(
      z_channels=shape('post_quant_conv.weight')[0],
      scale_factor=sd_vae.SCALE_FACTOR, ch=ch,
      ch_mult=tuple(shape(f'decoder.up.{i}.block.0.conv1.weight')[0] // ch
                    for i in range(levels)),
      num_res_blocks=_count(state, 'decoder.up.0.block.{}.conv1.weight') - 1,
      out_channels=out_channels, norm_groups=32)


def dit_init_args(net: dit_nets.DiT) -> tuple:
  """Arguments of `net.init` (shapes only matter)."""
  return (jax.random.key(0),
          jnp.zeros((1, net.input_size, net.input_size, net.in_channels)),
          jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))


def vae_init_args(vae: sd_vae.VAEDecoder) -> tuple:
  return (jax.random.key(0), jnp.zeros((1, 1, 1, vae.z_channels)))


def convert_files(out_dir: str, dit: str | None = None,
                  sit: str | None = None, vae: str | None = None,
                  num_heads: int | None = None,
                  command: str = '') -> list[str]:
  """Converts the given published checkpoints into `out_dir`.

  Args:
    out_dir: output folder (created).
    dit, sit, vae: paths of the checkpoints, or None.
    num_heads: DiT/SiT heads; None = DiT's for the checkpoint's width.
    command: the command line, recorded in the metadata.

  Returns:
    The msgpack files written.

  Raises:
    UserError: nothing to convert, a missing or unreadable file, keys or
      shapes that do not fit.
  """
  jobs = [(kind, path) for kind, path in (('dit', dit), ('sit', sit),
                                          ('vae', vae)) if path]
  if not jobs:
    raise errors.UserError('nothing to convert; pass --dit=DiT-XL-2-256x256.pt,'
                           ' --sit=SiT-XL-2-256.pt and/or '
                           '--vae=autoencoder_kl_ema.pth')
  for kind, path in jobs:  # Fail fast, before any slow work.
    errors.require_file(path, _WHAT[kind], _FIX[kind])
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for kind, path in jobs:
    if kind == 'vae':
      state = common.read_torch_state_dict(path, _WHAT[kind], _FIX[kind])
      kwargs = vae_config(state)
      module = sd_vae.VAEDecoder(**kwargs)
      variables = convert_vae(state, module)
      init_args = vae_init_args(module)
    else:
      state = common.read_torch_state_dict(path, _WHAT[kind], _FIX[kind],
                                           wrappers=_DIT_WRAPPERS)
      kwargs = dit_config(state, kind, num_heads)
      module = dit_nets.DiT(**kwargs)
      variables = convert_dit(state, module, kind)
      init_args = dit_init_args(module)
    common.check_module_layout(variables, module.init, *init_args)
    num_params = sum(int(np.prod(v.shape))
                     for v in jax.tree.leaves(variables))
    out = os.path.join(out_dir, FILES[kind])
    assets.save_variables(out, variables, {
        'module': kwargs, 'source': os.path.basename(path),
        'num_params': num_params, 'command': command})
    print(f'wrote {out}: {type(module).__name__}({kwargs}), {num_params} '
          'parameters')
    written.append(out)
  return written


def _main(argv):
  del argv
  f = flags.FLAGS
  command = ' '.join(['python -m adagen_jax.generators.convert.dit'] +
                     sys.argv[1:])
  convert_files(f.out, dit=f.dit, sit=f.sit, vae=f.vae,
                num_heads=f.num_heads, command=command)


if __name__ == '__main__':
  # Flags are defined here, not at import, so importing the converters
  # never touches the global flag registry.
  flags.DEFINE_string('dit', None, 'DiT-XL-2-256x256.pt (DiT state dict).')
  flags.DEFINE_string('sit', None, 'SiT-XL-2-256.pt (SiT state dict).')
  flags.DEFINE_string('vae', None, 'autoencoder_kl_ema.pth (CompVis keys).')
  flags.DEFINE_integer('num_heads', None, 'DiT/SiT attention heads (default:'
                       " DiT's for the checkpoint's width).")
  flags.DEFINE_string('out', None, 'Output folder for the msgpack files.')
  flags.mark_flag_as_required('out')
  cli.run(_main)
