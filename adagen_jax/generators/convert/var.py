"""FoundationVision/VAR's PyTorch checkpoints -> Flax params of VAR.

  python -m adagen_jax.generators.convert.var \\
      --var=var_d16.pth --vae=vae_ch160v4096z32.pth --out=DIR

writes DIR/var_d{depth}.msgpack and DIR/vae_ch160v4096z32.msgpack (flax
variables, `{'params': ...}`), each with a .json beside it whose 'module'
entry holds the constructor arguments of `var_nets.VAR` /
`var_vqvae.VQVAE`. Either flag may be given alone; the depth (16, 20, 24,
30) is read from the state dict.

Sources (paradigms.md §3.1): https://huggingface.co/FoundationVision/var
`var_d{16,20,24,30}.pth` (bare state dicts of `models.var.VAR`) and
`vae_ch160v4096z32.pth` (of `models.vqvae.VQVAE`).

Buffers the checkpoints carry and the Flax modules recompute are checked
for shape and dropped: `lvl_1L` [1, L], `attn_bias_for_masking`
[1, 1, L, L], `blocks.{i}.attn.zero_k_bias` [C] and the VQVAE's
`quantize.ema_vocab_hit_SV` [K, V]. Reshaped parameters: `pos_start`
[1, first_l, C] and `pos_1LC` [1, L, C] lose the batch axis,
`scale_mul_1H11` [1, H, 1, 1] becomes `scale_mul` [H], a shared-adaLN
`ada_gss` [1, 1, 6, C] becomes [6, C]. The VQVAE keeps taming's level
numbering (`decoder.up.{i}` is level i, i = 0 the full resolution, built
in reverse), the encoder's `down.{i}.downsample.conv` and the decoder's
`up.{i}.upsample.conv` become `down_{i}_downsample` / `up_{i}_upsample`,
and the four partially shared phi convs `quantize.quant_resi.qresi_ls.{k}`
become `quantize/phi_{k}`.
"""

import os
import sys

from absl import flags
import jax
import numpy as np

from adagen_jax import assets
from adagen_jax import cli
from adagen_jax import errors
from adagen_jax.generators import var_nets
from adagen_jax.generators import var_vqvae
from adagen_jax.generators.convert import common

# `vae_ch160v4096z32.pth`'s constructor arguments (models/__init__.py
# build_vae_var).
VAE_CH160V4096Z32 = dict(vocab_size=4096, z_channels=32, ch=160,
                         ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                         using_sa=True, using_mid_sa=True, quant_resi=0.5,
                         share_quant_resi=4,
                         patch_nums=var_vqvae.PATCH_NUMS, image_channels=3,
                         norm_groups=32)
PUBLISHED_DEPTHS = (16, 20, 24, 30)
VAE_FILE = 'vae_ch160v4096z32.msgpack'

_VAR_WHAT = 'VAR weights'
_VAE_WHAT = 'VAR VQVAE weights'
_HF = 'https://huggingface.co/FoundationVision/var/resolve/main'
_VAR_FIX = (f'download {_HF}/var_d16.pth (or var_d20/24/30.pth) and pass '
            '--var=PATH')
_VAE_FIX = f'download {_HF}/vae_ch160v4096z32.pth and pass --vae=PATH'


def published_var(depth: int) -> dict:
  """Constructor arguments of `var_nets.VAR` for `var_d{depth}.pth`."""
  return dict(num_classes=1000, vocab_size=4096, cvae=32, mlp_ratio=4.0,
              patch_nums=var_vqvae.PATCH_NUMS, shared_aln=False,
              attn_l2_norm=True, **var_nets.var_sizes(depth))


def var_file(depth: int) -> str:
  return f'var_d{depth}.msgpack'


def _bare(key: str, flax: str, torch_shape: common.Shape,
          flax_shape: common.Shape | None = None) -> common.Layer:
  """A bare parameter, reshaped to `flax_shape` (default: unchanged)."""
  shape = torch_shape if flax_shape is None else flax_shape
  return common.Layer(key, flax, {key: torch_shape},
                      lambda state, k: np.reshape(state[k], shape))


def var_layers(net: var_nets.VAR) -> list[common.Layer]:
  """The layers of `net`'s `models.var.VAR` counterpart."""
  c, v, h = net.width, net.vocab_size, net.num_heads
  hidden = round(c * net.mlp_ratio)
  layers = [
      common.linear_layer('word_embed', 'word_embed', net.cvae, c),
      common.embedding_layer('class_emb', 'class_emb', net.num_classes + 1, c),
      _bare('pos_start', 'pos_start', (1, net.first_l, c), (net.first_l, c)),
      _bare('pos_1LC', 'pos_1LC', (1, net.seq_len, c), (net.seq_len, c)),
      common.embedding_layer('lvl_embed', 'lvl_embed', len(net.patch_nums),
                             c)]
  if net.shared_aln:
    layers.append(common.linear_layer('shared_ada_lin.1', 'shared_ada_lin',
                                      c, 6 * c))
  for i in range(net.depth):
    t, f = f'blocks.{i}', f'blocks_{i}'
    if net.shared_aln:
      layers.append(_bare(f'{t}.ada_gss', f'{f}/ada_gss', (1, 1, 6, c),
                          (6, c)))
    else:
      layers.append(common.linear_layer(f'{t}.ada_lin.1', f'{f}/ada_lin', c,
                                        6 * c))
    layers += [
        common.linear_layer(f'{t}.attn.mat_qkv', f'{f}/attn/mat_qkv', c,
                            3 * c, bias=False),
        _bare(f'{t}.attn.q_bias', f'{f}/attn/q_bias', (c,)),
        _bare(f'{t}.attn.v_bias', f'{f}/attn/v_bias', (c,)),
        common.linear_layer(f'{t}.attn.proj', f'{f}/attn/proj', c, c),
        common.linear_layer(f'{t}.ffn.fc1', f'{f}/ffn/fc1', c, hidden),
        common.linear_layer(f'{t}.ffn.fc2', f'{f}/ffn/fc2', hidden, c)]
    if net.attn_l2_norm:
      layers.append(_bare(f'{t}.attn.scale_mul_1H11', f'{f}/attn/scale_mul',
                          (1, h, 1, 1), (h,)))
  return layers + [
      common.linear_layer('head_nm.ada_lin.1', 'head_nm/ada_lin', c, 2 * c),
      common.linear_layer('head', 'head', c, v)]


def var_buffers(net: var_nets.VAR) -> dict[str, common.Shape]:
  """{key: shape} of the buffers a `models.var.VAR` state dict carries."""
  seq = net.seq_len
  buffers = {'lvl_1L': (1, seq), 'attn_bias_for_masking': (1, 1, seq, seq)}
  buffers.update({f'blocks.{i}.attn.zero_k_bias': (net.width,)
                  for i in range(net.depth)})
  return buffers


def _res_block(t: str, f: str, c_in: int, c_out: int) -> list[common.Layer]:
  layers = [
      common.norm_layer(f'{t}.norm1', f'{f}/norm1', c_in),
      common.conv_layer(f'{t}.conv1', f'{f}/conv1', c_in, c_out, (3, 3)),
      common.norm_layer(f'{t}.norm2', f'{f}/norm2', c_out),
      common.conv_layer(f'{t}.conv2', f'{f}/conv2', c_out, c_out, (3, 3))]
  if c_in != c_out:
    layers.append(common.conv_layer(f'{t}.nin_shortcut', f'{f}/nin_shortcut',
                                    c_in, c_out, (1, 1)))
  return layers


def _attn_block(t: str, f: str, c: int) -> list[common.Layer]:
  return [common.norm_layer(f'{t}.norm', f'{f}/norm', c),
          common.conv_layer(f'{t}.qkv', f'{f}/qkv', c, 3 * c, (1, 1)),
          common.conv_layer(f'{t}.proj_out', f'{f}/proj_out', c, c, (1, 1))]


def _middle(t: str, f: str, c: int, attn: bool) -> list[common.Layer]:
  layers = _res_block(f'{t}.mid.block_1', f'{f}/mid_block_1', c, c)
  if attn:
    layers += _attn_block(f'{t}.mid.attn_1', f'{f}/mid_attn_1', c)
  return layers + _res_block(f'{t}.mid.block_2', f'{f}/mid_block_2', c, c)


def vae_layers(net: var_vqvae.VQVAE) -> list[common.Layer]:
  """The layers of `net`'s `models.vqvae.VQVAE` counterpart."""
  widths = [net.ch * m for m in net.ch_mult]
  last = len(widths) - 1
  z = net.z_channels
  layers = [common.conv_layer('encoder.conv_in', 'encoder/conv_in',
                              net.image_channels, net.ch, (3, 3))]
  c = net.ch
  for i, width in enumerate(widths):
    for j in range(net.num_res_blocks):
      t, f = f'encoder.down.{i}', f'encoder/down_{i}'
      layers += _res_block(f'{t}.block.{j}', f'{f}_block_{j}', c, width)
      c = width
      if i == last and net.using_sa:
        layers += _attn_block(f'{t}.attn.{j}', f'{f}_attn_{j}', c)
    if i != last:
      layers.append(common.conv_layer(f'encoder.down.{i}.downsample.conv',
                                      f'encoder/down_{i}_downsample', c, c,
                                      (3, 3)))
  layers += _middle('encoder', 'encoder', c, net.using_mid_sa) + [
      common.norm_layer('encoder.norm_out', 'encoder/norm_out', c),
      common.conv_layer('encoder.conv_out', 'encoder/conv_out', c, z, (3, 3)),
      common.conv_layer('decoder.conv_in', 'decoder/conv_in', z, c, (3, 3))]
  layers += _middle('decoder', 'decoder', c, net.using_mid_sa)
  for i in reversed(range(len(widths))):
    t, f = f'decoder.up.{i}', f'decoder/up_{i}'
    for j in range(net.num_res_blocks + 1):
      layers += _res_block(f'{t}.block.{j}', f'{f}_block_{j}', c, widths[i])
      c = widths[i]
      if i == last and net.using_sa:
        layers += _attn_block(f'{t}.attn.{j}', f'{f}_attn_{j}', c)
    if i != 0:
      layers.append(common.conv_layer(f'{t}.upsample.conv', f'{f}_upsample',
                                      c, c, (3, 3)))
  layers += [
      common.norm_layer('decoder.norm_out', 'decoder/norm_out', c),
      common.conv_layer('decoder.conv_out', 'decoder/conv_out', c,
                        net.image_channels, (3, 3)),
      common.conv_layer('quant_conv', 'quant_conv', z, z, (3, 3)),
      common.conv_layer('post_quant_conv', 'post_quant_conv', z, z, (3, 3)),
      common.embedding_layer('quantize.embedding', 'quantize/embedding',
                             net.vocab_size, z)]
  return layers + [
      common.conv_layer(f'quantize.quant_resi.qresi_ls.{k}',
                        f'quantize/phi_{k}', z, z, (3, 3))
      for k in range(net.share_quant_resi)]


def vae_buffers(net: var_vqvae.VQVAE) -> dict[str, common.Shape]:
  return {'quantize.ema_vocab_hit_SV': (len(net.patch_nums), net.vocab_size)}


def var_manifest(net: var_nets.VAR) -> dict[str, common.Shape]:
  """{torch key: shape} of a `models.var.VAR` state dict for `net`."""
  return {**common.manifest(var_layers(net)), **var_buffers(net)}


def vae_manifest(net: var_vqvae.VQVAE) -> dict[str, common.Shape]:
  """{torch key: shape} of a `models.vqvae.VQVAE` state dict for `net`."""
  return {**common.manifest(vae_layers(net)), **vae_buffers(net)}


def _convert(state, layers, buffers, what, fix) -> dict:
  common.check_manifest(state, {**common.manifest(layers), **buffers}, what,
                        fix)
  state = {k: v for k, v in state.items() if k not in buffers}
  return {'params': common.convert(state, layers, what, fix)}


def convert_var(state: common.StateDict, net: var_nets.VAR) -> dict:
  """`models.var.VAR` state dict -> `{'params': ...}` for `net`.

  Raises:
    UserError: missing, unexpected or misshaped keys.
  """
  return _convert(state, var_layers(net), var_buffers(net), _VAR_WHAT,
                  _VAR_FIX)


def convert_vae(state: common.StateDict, net: var_vqvae.VQVAE) -> dict:
  """`models.vqvae.VQVAE` state dict -> `{'params': ...}` for `net`.

  Raises:
    UserError: missing, unexpected or misshaped keys.
  """
  return _convert(state, vae_layers(net), vae_buffers(net), _VAE_WHAT,
                  _VAE_FIX)


def depth_of(state: common.StateDict) -> int:
  """The depth of a `var_d*.pth` state dict (its number of blocks)."""
  depth = len({k.split('.')[1] for k in state if k.startswith('blocks.')})
  if depth not in PUBLISHED_DEPTHS:
    published = '/'.join(map(str, PUBLISHED_DEPTHS))
    raise errors.UserError(f'{_VAR_WHAT} have {depth} blocks, not those of '
                           f'var_d{published}.pth; {_VAR_FIX}')
  return depth


def convert_files(out_dir: str, var: str | None = None,
                  vae: str | None = None, command: str = '') -> list[str]:
  """Converts the given published checkpoints into `out_dir`.

  Args:
    out_dir: output folder (created).
    var: path of var_d{16,20,24,30}.pth, or None.
    vae: path of vae_ch160v4096z32.pth, or None.
    command: the command line, recorded in the metadata.

  Returns:
    The msgpack files written.
  """
  if not (var or vae):
    raise errors.UserError('nothing to convert; pass --var=var_d16.pth '
                           'and/or --vae=vae_ch160v4096z32.pth')
  for path, what, fix in ((var, _VAR_WHAT, _VAR_FIX),
                          (vae, _VAE_WHAT, _VAE_FIX)):
    if path:  # Fail fast, before any slow work.
      errors.require_file(path, what, fix)
  os.makedirs(out_dir, exist_ok=True)
  jobs = []
  if var:
    jobs.append((var, _VAR_WHAT, _VAR_FIX, _var_job))
  if vae:
    jobs.append((vae, _VAE_WHAT, _VAE_FIX, _vae_job))
  written = []
  # One checkpoint at a time: VAR-d30 alone is 8 GB in float32.
  for path, what, fix, job in jobs:
    name, kwargs, net, variables, inputs = job(
        common.read_torch_state_dict(path, what, fix))
    common.check_module_layout(variables, net.init, jax.random.key(0),
                               *inputs)
    out = os.path.join(out_dir, name)
    num_params = sum(int(np.prod(v.shape))
                     for v in jax.tree.leaves(variables))
    assets.save_variables(out, variables, {
        'module': {k: list(v) if isinstance(v, tuple) else v
                   for k, v in kwargs.items()},
        'source': os.path.basename(path), 'num_params': num_params,
        'command': command})
    print(f'wrote {out} ({num_params} parameters)')
    written.append(out)
  return written


def _var_job(state):
  kwargs = published_var(depth_of(state))
  net = var_nets.VAR(**kwargs)
  return (var_file(net.depth), kwargs, net, convert_var(state, net),
          var_nets.init_inputs(net))


def _vae_job(state):
  net = var_vqvae.VQVAE(**VAE_CH160V4096Z32)
  return (VAE_FILE, VAE_CH160V4096Z32, net, convert_vae(state, net),
          (var_vqvae.init_inputs(net),))


def _main(argv):
  del argv
  f = flags.FLAGS
  command = ' '.join(['python -m adagen_jax.generators.convert.var'] +
                     sys.argv[1:])
  convert_files(f.out, var=f.var, vae=f.vae, command=command)


if __name__ == '__main__':
  # Flags are defined here, not at import, so importing the converters
  # never touches the global flag registry.
  flags.DEFINE_string('var', None, 'var_d{16,20,24,30}.pth (VAR state dict).')
  flags.DEFINE_string('vae', None, 'vae_ch160v4096z32.pth (VQVAE state dict).')
  flags.DEFINE_string('out', None, 'Output folder for the msgpack files.')
  flags.mark_flag_as_required('out')
  cli.run(_main)
