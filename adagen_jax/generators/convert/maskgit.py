"""MaskGIT-L's PyTorch checkpoints -> Flax params of `maskgit_nets`.

  python -m adagen_jax.generators.convert.maskgit \\
      --uvit=MaskGIT-L.pth --vqgan=vqgan_jax_strongaug.ckpt --out=DIR

writes DIR/maskgit_l_uvit.msgpack ({'transformer': UViT params}) and
DIR/maskgit_l_vqgan.msgpack ({'tokenizer': VQGAN params}), the entries the
MaskGIT generator loads (--config.generator.weights=FILE,FILE), each with a
.json beside it whose 'module' entry holds the constructor arguments of
`maskgit_nets.UViT` / `maskgit_nets.VQGAN`, read off the checkpoint's shapes
(the UViT's head count, which the weights do not fix, is MaskGIT-L's 8).
Either flag may be given alone.

Sources (adagen_reference.md §4.4):
  MaskGIT-L.pth: https://huggingface.co/nzl-thu/MaskGIT-L/resolve/main/
    MaskGIT-L.pth, a bare UViT state dict.
  vqgan_jax_strongaug.ckpt: Google Drive 13S_unB87n6KKuuMdyMnyExW0G1kplTbP
    (LTH14/mage): the MaskGIT JAX tokenizer ported to taming-style keys,
    possibly nested under 'state_dict'.

Taming's level numbering, which the Flax names keep: `encoder.down.{i}` and
`decoder.up.{i}` are both indexed by resolution level, i = 0 the full
resolution with filters * channel_mult[0] channels. Taming builds the
decoder's ModuleList by inserting each new level at the front, so although
the decoder runs from the coarsest level (i = L - 1) down to i = 0, up.{i}
is level i, not the i-th level run; `Decoder` runs `reversed(range(L))` over
`up_{i}_block_{j}` the same way, so the map is i -> i. `up.{i}.upsample`
exists for i > 0 and runs after that level's blocks; `down.{i}.downsample`
is a parameter-free 2x2 average pool in this tokenizer, so it has no keys.
The middle has `num_res_blocks` ResBlocks named block_1, block_2 (taming
counts from 1), and the channel-changing ResBlocks' `nin_shortcut` is
[C_out, C_out, 1, 1]: it is applied to the block's output (the MaskGIT quirk).
"""

import functools
import os
import sys

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import assets
from adagen_jax import cli
from adagen_jax import errors
from adagen_jax.generators import maskgit_nets
from adagen_jax.generators.convert import common

# The published networks' constructor arguments (adagen_reference.md §4.1-2).
MASKGIT_L_UVIT = dict(codebook_size=1024, num_tokens=256, num_classes=1000,
                      width=768, depth=24, num_heads=8, mlp_ratio=4.0)
MASKGIT_VQGAN = dict(filters=128, channel_mult=(1, 1, 2, 2, 4),
                     num_res_blocks=2, embedding_dim=256, codebook_size=1024,
                     out_channels=3, norm_groups=32)

UVIT_FILE = 'maskgit_l_uvit.msgpack'
VQGAN_FILE = 'maskgit_l_vqgan.msgpack'

_UVIT_WHAT = 'MaskGIT-L UViT weights'
_UVIT_FIX = ('download https://huggingface.co/nzl-thu/MaskGIT-L/resolve/main/'
             'MaskGIT-L.pth and pass --uvit=PATH')
_VQGAN_WHAT = 'MaskGIT VQGAN weights'
_VQGAN_FIX = ('download vqgan_jax_strongaug.ckpt (Google Drive id '
              '13S_unB87n6KKuuMdyMnyExW0G1kplTbP, from LTH14/mage) and pass '
              '--vqgan=PATH')


def uvit_layers(net: maskgit_nets.UViT) -> list[common.Layer]:
  """The layers of `net`'s published PyTorch counterpart, in key order."""
  c, hidden = net.width, int(net.width * net.mlp_ratio)
  vocab = net.codebook_size + 1  # + [MASK]
  layers = []
  for name, num, positions in (('token_emb', vocab, net.num_tokens),
                               ('context_embed', net.num_classes + 1, 1)):
    layers += [
        common.embedding_layer(f'{name}.word_embeddings',
                               f'{name}/word_embeddings', num, c),
        common.embedding_layer(f'{name}.position_embeddings',
                               f'{name}/position_embeddings', positions, c),
        common.norm_layer(f'{name}.LayerNorm', f'{name}/LayerNorm', c)]
  half = range(net.depth // 2)
  blocks = ([(f'in_blocks.{i}', f'in_blocks_{i}') for i in half] +
            [('mid_block', 'mid_block')] +
            [(f'out_blocks.{i}', f'out_blocks_{i}') for i in half])
  for t, f in blocks:
    if t.startswith('out_blocks'):
      layers.append(common.linear_layer(f'{t}.skip_linear', f'{f}/skip_linear',
                                        2 * c, c))
    layers += [
        common.norm_layer(f'{t}.norm1', f'{f}/norm1', c),
        common.linear_layer(f'{t}.attn.qkv', f'{f}/attn/qkv', c, 3 * c,
                            bias=False),
        common.linear_layer(f'{t}.attn.proj', f'{f}/attn/proj', c, c),
        common.norm_layer(f'{t}.norm2', f'{f}/norm2', c),
        common.linear_layer(f'{t}.mlp.fc1', f'{f}/mlp/fc1', c, hidden),
        common.linear_layer(f'{t}.mlp.fc2', f'{f}/mlp/fc2', hidden, c)]
  return layers + [
      common.norm_layer('norm', 'norm', c),
      common.linear_layer('mlm_layer.fc', 'mlm_layer/fc', c, c),
      common.norm_layer('mlm_layer.ln', 'mlm_layer/ln', c),
      # A bare [1, 1, V] parameter, broadcast over [B, L, V] logits.
      common.Layer('mlm_layer.bias', 'mlm_layer/bias',
                   {'mlm_layer.bias': (1, 1, vocab)},
                   lambda state, key: state[key].reshape(-1))]


def _res_block(t: str, f: str, c_in: int, c_out: int) -> list[common.Layer]:
  layers = [
      common.norm_layer(f'{t}.norm1', f'{f}/norm1', c_in),
      common.conv_layer(f'{t}.conv1', f'{f}/conv1', c_in, c_out, (3, 3),
                        bias=False),
      common.norm_layer(f'{t}.norm2', f'{f}/norm2', c_out),
      common.conv_layer(f'{t}.conv2', f'{f}/conv2', c_out, c_out, (3, 3),
                        bias=False)]
  if c_in != c_out:
    # Applied to the block output, hence C_out -> C_out.
    layers.append(common.conv_layer(f'{t}.nin_shortcut', f'{f}/nin_shortcut',
                                    c_out, c_out, (1, 1), bias=False))
  return layers


def vqgan_layers(net: maskgit_nets.VQGAN) -> list[common.Layer]:
  """The layers of the taming-keys port of `net` (see the module doc)."""
  widths = [net.filters * m for m in net.channel_mult]
  num_blocks = range(net.num_res_blocks)
  # Images in and out have the same channels.
  layers = [common.conv_layer('encoder.conv_in', 'encoder/conv_in',
                              net.out_channels, net.filters, (3, 3),
                              bias=False)]
  c = net.filters
  for i, width in enumerate(widths):
    for j in num_blocks:
      layers += _res_block(f'encoder.down.{i}.block.{j}',
                           f'encoder/down_{i}_block_{j}', c, width)
      c = width
  for k in num_blocks:
    layers += _res_block(f'encoder.mid.block_{k + 1}',
                         f'encoder/mid_block_{k + 1}', c, c)
  layers += [
      common.norm_layer('encoder.norm_out', 'encoder/norm_out', c),
      common.conv_layer('encoder.conv_out', 'encoder/conv_out', c,
                        net.embedding_dim, (1, 1)),
      common.conv_layer('decoder.conv_in', 'decoder/conv_in',
                        net.embedding_dim, c, (3, 3))]
  for k in num_blocks:
    layers += _res_block(f'decoder.mid.block_{k + 1}',
                         f'decoder/mid_block_{k + 1}', c, c)
  for i in reversed(range(len(widths))):
    for j in num_blocks:
      layers += _res_block(f'decoder.up.{i}.block.{j}',
                           f'decoder/up_{i}_block_{j}', c, widths[i])
      c = widths[i]
    if i > 0:
      layers.append(common.conv_layer(f'decoder.up.{i}.upsample.conv',
                                      f'decoder/up_{i}_upsample_conv', c, c,
                                      (3, 3)))
  return layers + [
      common.norm_layer('decoder.norm_out', 'decoder/norm_out', c),
      common.conv_layer('decoder.conv_out', 'decoder/conv_out', c,
                        net.out_channels, (3, 3)),
      # VectorQuantizer's codebook is a bare parameter named 'embedding'.
      common.embedding_layer('quantize.embedding', 'quantize',
                             net.codebook_size, net.embedding_dim)]


def uvit_manifest(net: maskgit_nets.UViT) -> dict[str, common.Shape]:
  """{torch key: shape} that convert_uvit accepts for `net`'s sizes."""
  return common.manifest(uvit_layers(net))


def vqgan_manifest(net: maskgit_nets.VQGAN) -> dict[str, common.Shape]:
  """{torch key: shape} that convert_vqgan accepts for `net`'s sizes."""
  return common.manifest(vqgan_layers(net))


def convert_uvit(state: common.StateDict, net: maskgit_nets.UViT) -> dict:
  """UViT state dict -> the params of `net` (the tree under 'params').

  Args:
    state: {torch key: array}; `*.position_ids` buffers (some BertEmbeddings
      versions save them) are dropped.
    net: the Flax module whose sizes the state dict must have.

  Raises:
    UserError: missing, unexpected or misshaped keys.
  """
  state = common.drop(state, ('.position_ids',))
  return common.convert(state, uvit_layers(net), _UVIT_WHAT, _UVIT_FIX)


def convert_vqgan(state: common.StateDict, net: maskgit_nets.VQGAN) -> dict:
  """Taming-keys VQGAN state dict -> the params of `net`.

  Raises:
    UserError: missing, unexpected or misshaped keys.
  """
  return common.convert(state, vqgan_layers(net), _VQGAN_WHAT, _VQGAN_FIX)


def _shape(state: common.StateDict, key: str, what: str, fix: str
           ) -> tuple[int, ...]:
  if key not in state:
    raise errors.UserError(f'{what} have no {key}, so their sizes are '
                           f'unknown; {fix}')
  return np.shape(state[key])


def _count(state: common.StateDict, pattern: str) -> int:
  """How many n = 0, 1, ... have pattern.format(n) in `state`."""
  n = 0
  while pattern.format(n) in state:
    n += 1
  return n


def uvit_config(state: common.StateDict,
                num_heads: int | None = None) -> dict:
  """`maskgit_nets.UViT` arguments read off a state dict's shapes.

  The head count is not in the weights: it is MaskGIT-L's 8 for a state
  dict of MaskGIT-L's width and depth, and must be given for any other
  (a guess would convert "successfully" and then sample garbage).
  """
  def shape(key):
    return _shape(state, key, _UVIT_WHAT, _UVIT_FIX)
  vocab, width = shape('token_emb.word_embeddings.weight')
  depth = 2 * _count(state, 'in_blocks.{}.norm1.weight')
  if num_heads is None:
    published = (MASKGIT_L_UVIT['width'], MASKGIT_L_UVIT['depth'])
    if (width, depth) != published:
      raise errors.UserError(
          f'{_UVIT_WHAT} have width {width} and depth {depth}, not '
          f"MaskGIT-L's {published}, and the head count is not in the "
          'weights; pass --num_heads=H (the heads the UViT was trained with).')
    num_heads = MASKGIT_L_UVIT['num_heads']
  if width % num_heads:
    raise errors.UserError(f'--num_heads={num_heads} does not divide the '
                           f'width {width} of {_UVIT_WHAT}; pass the heads '
                           'the UViT was trained with.')
  return dict(
      codebook_size=vocab - 1,
      num_tokens=shape('token_emb.position_embeddings.weight')[0],
      num_classes=shape('context_embed.word_embeddings.weight')[0] - 1,
      width=width, depth=depth, num_heads=num_heads,
      mlp_ratio=shape('mid_block.mlp.fc1.weight')[0] / width)


def vqgan_config(state: common.StateDict,
                 norm_groups: int | None = None) -> dict:
  """`maskgit_nets.VQGAN` arguments read off a state dict's shapes.

  GroupNorm's group count is not in the weights: it is the published
  VQGAN's 32 for a state dict of its sizes, and must be given otherwise.
  """
  def shape(key):
    return _shape(state, key, _VQGAN_WHAT, _VQGAN_FIX)
  filters, channels = shape('encoder.conv_in.weight')[:2]
  levels = _count(state, 'encoder.down.{}.block.0.conv1.weight')
  codebook_size, embedding_dim = shape('quantize.embedding.weight')
  sizes = dict(
      filters=filters,
      channel_mult=tuple(
          shape(f'encoder.down.{i}.block.0.conv1.weight')[0] // filters
          for i in range(levels)),
      num_res_blocks=_count(state, 'encoder.down.0.block.{}.conv1.weight'),
      embedding_dim=embedding_dim, codebook_size=codebook_size,
      out_channels=channels)
  if norm_groups is None:
    published = {k: MASKGIT_VQGAN[k] for k in sizes}
    if sizes != published:
      raise errors.UserError(
          f'{_VQGAN_WHAT} have filters {filters} and channel_mult '
          f"{sizes['channel_mult']}, not the published VQGAN's, and the "
          'GroupNorm group count is not in the weights; pass '
          '--norm_groups=G (the groups the VQGAN was trained with).')
    norm_groups = MASKGIT_VQGAN['norm_groups']
  if filters % norm_groups:
    raise errors.UserError(f'--norm_groups={norm_groups} does not divide '
                           f'the {filters} filters of {_VQGAN_WHAT}; pass '
                           'the groups the VQGAN was trained with.')
  return dict(sizes, norm_groups=norm_groups)


def uvit_init_args(net: maskgit_nets.UViT) -> tuple:
  """Arguments of `net.init` (shapes only matter)."""
  return (jax.random.key(0), jnp.zeros((1, net.num_tokens), jnp.int32),
          jnp.zeros((1,), jnp.int32))


def vqgan_init_args(net: maskgit_nets.VQGAN) -> tuple:
  """Arguments of `net.init`: the smallest image the encoder can take."""
  size = 2 ** (len(net.channel_mult) - 1)
  return (jax.random.key(0),
          jnp.zeros((1, size, size, net.out_channels), jnp.float32))


def convert_files(out_dir: str, uvit: str | None = None,
                  vqgan: str | None = None, command: str = '',
                  num_heads: int | None = None,
                  norm_groups: int | None = None) -> list[str]:
  """Converts the given published checkpoints into `out_dir`.

  The networks' sizes are read off the checkpoints (MaskGIT-L's for the
  published files), so the same command converts smaller test files.

  Args:
    out_dir: output folder (created).
    uvit: path of MaskGIT-L.pth, or None.
    vqgan: path of vqgan_jax_strongaug.ckpt, or None.
    command: the command line, recorded in the metadata.
    num_heads: the UViT's attention heads; None for MaskGIT-L's size only.
    norm_groups: the VQGAN's GroupNorm groups; None for the published
      size only.

  Returns:
    The msgpack files written.

  Raises:
    UserError: nothing to convert, a missing or unreadable file, keys or
      shapes that do not fit the network.
  """
  jobs = []
  if uvit:
    jobs.append((uvit, _UVIT_WHAT, _UVIT_FIX, UVIT_FILE, 'transformer',
                 maskgit_nets.UViT,
                 functools.partial(uvit_config, num_heads=num_heads),
                 convert_uvit,
                 uvit_init_args))
  if vqgan:
    jobs.append((vqgan, _VQGAN_WHAT, _VQGAN_FIX, VQGAN_FILE, 'tokenizer',
                 maskgit_nets.VQGAN,
                 functools.partial(vqgan_config, norm_groups=norm_groups),
                 convert_vqgan,
                 vqgan_init_args))
  if not jobs:
    raise errors.UserError('nothing to convert; pass --uvit=MaskGIT-L.pth '
                           'and/or --vqgan=vqgan_jax_strongaug.ckpt')
  for path, what, fix, *_ in jobs:  # Fail fast, before any slow work.
    errors.require_file(path, what, fix)
  # Every size is settled (or refused) before anything is written.
  states = [common.read_torch_state_dict(path, what, fix)
            for path, what, fix, *_ in jobs]
  sizes = [job[6](state) for job, state in zip(jobs, states)]
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for job, state, kwargs in zip(jobs, states, sizes):
    path, _, _, name, entry, cls, _, convert, init_args = job
    net = cls(**kwargs)
    params = convert(state, net)
    common.check_module_layout({'params': params}, net.init,
                               *init_args(net))
    num_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    out = os.path.join(out_dir, name)
    assets.save_variables(out, {entry: params}, {
        'module': kwargs, 'source': os.path.basename(path),
        'num_params': num_params, 'command': command})
    print(f'wrote {out}: {cls.__name__}({kwargs}), {num_params} parameters')
    written.append(out)
  return written


def _main(argv):
  del argv
  f = flags.FLAGS
  command = ' '.join(['python -m adagen_jax.generators.convert.maskgit'] +
                     sys.argv[1:])
  convert_files(f.out, uvit=f.uvit, vqgan=f.vqgan, command=command,
                num_heads=f.num_heads, norm_groups=f.norm_groups)


if __name__ == '__main__':
  # Flags are defined here, not at import, so importing the converters
  # never touches the global flag registry.
  flags.DEFINE_string('uvit', None, 'MaskGIT-L.pth (UViT state dict).')
  flags.DEFINE_string('vqgan', None, 'vqgan_jax_strongaug.ckpt (MAGE).')
  flags.DEFINE_integer('num_heads', None, 'UViT attention heads; required '
                       "unless the UViT has MaskGIT-L's size.")
  flags.DEFINE_integer('norm_groups', None, 'VQGAN GroupNorm groups; '
                       'required unless the VQGAN has the published size.')
  flags.DEFINE_string('out', None, 'Output folder for the msgpack files.')
  flags.mark_flag_as_required('out')
  cli.run(_main)
