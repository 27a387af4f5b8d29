"""Shared pieces of the PyTorch -> Flax checkpoint converters.

A converter lists its network's layers as `Layer`s (torch key prefix, flax
path, expected torch shapes from the network's sizes, layout change); the
union of their shapes is the manifest a state dict is checked against before
anything is converted. The layout changes (paradigms.md §6):

  torch                              flax
  Linear.weight [out, in]            Dense.kernel [in, out]
  ConvNd.weight [out, in, *k]        Conv.kernel [*k, in, out]
  LayerNorm/GroupNorm weight, bias   scale, bias
  Embedding.weight [n, d]            Embed.embedding [n, d]

State dicts are plain `{name: np.ndarray}` so tests can build synthetic ones
with the published names and shapes; torch is only needed to read a file.
"""

from typing import Any, Callable, Mapping, NamedTuple, Sequence

from flax import traverse_util
import jax
import numpy as np

from adagen_jax import errors

Shape = tuple[int, ...]
StateDict = Mapping[str, np.ndarray]


def read_torch_state_dict(path: str, what: str, fix: str,
                          wrappers: Sequence[str] = ('state_dict', 'model')
                          ) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint into {name: float32/int numpy array}.

  Args:
    path: a `.pth`/`.ckpt` file written by `torch.save`.
    what: what the file is, for error messages ("MaskGIT-L UViT weights").
    fix: the command or step that gets a correct file, for error messages.
    wrappers: keys under which a training script may have nested the state
      dict (Lightning's 'state_dict', 'model'); the first present is used.

  Returns:
    The state dict with tensors as numpy arrays (floating ones as float32).

  Raises:
    UserError: missing file, torch not installed, unreadable file.
  """
  errors.require_file(path, what, fix)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError(f'reading {what} needs PyTorch; pip install '
                           'torch') from None
  try:
    # weights_only: never run pickled code from a downloaded file.
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [''])[0][:120]
    raise errors.UserError(
        f'{what} at {path} could not be read as a tensor-only PyTorch '
        f'checkpoint ({type(e).__name__}: {first_line}); {fix}') from None
  for key in wrappers:
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]
      break
  if not isinstance(obj, Mapping):
    raise errors.UserError(f'{what} at {path} holds a {type(obj).__name__}, '
                           f'not a state dict; {fix}')
  out = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise errors.UserError(f'{what} at {path}: entry {name!r} is a '
                             f'{type(value).__name__}, not a tensor; {fix}')
    value = value.detach().cpu()
    out[name] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def check_manifest(state: StateDict, manifest: Mapping[str, Shape], what: str,
                   fix: str, show: int = 3):
  """Raises one UserError naming missing, unexpected and misshaped keys.

  Args:
    state: {torch key: array}.
    manifest: {torch key: expected shape}.
    what: what the state dict is, for the message.
    fix: how to get a correct file, for the message.
    show: how many keys of each kind to name.
  """
  missing = [k for k in manifest if k not in state]
  unexpected = [k for k in state if k not in manifest]
  misshaped = [f'{k} {list(np.shape(state[k]))} != {list(shape)}'
               for k, shape in manifest.items()
               if k in state and tuple(np.shape(state[k])) != tuple(shape)]
  problems = []
  for label, keys in (('missing', missing), ('unexpected', unexpected),
                      ('wrong shape', misshaped)):
    if keys:
      more = f', ... {len(keys) - show} more' if len(keys) > show else ''
      problems.append(f'{len(keys)} {label} ({", ".join(keys[:show])}{more})')
  if problems:
    raise errors.UserError(f'{what} do not match the expected layout: '
                           f'{"; ".join(problems)}; {fix}')


def drop(state: StateDict, suffixes: Sequence[str]) -> dict[str, np.ndarray]:
  """`state` without the keys ending in any of `suffixes` (unused buffers)."""
  return {k: v for k, v in state.items() if not k.endswith(tuple(suffixes))}


# Layout changes: the torch layer at `prefix` in `state` -> its flax params.
# A bias is taken when the state dict has one (the manifest decided that).


def linear(state: StateDict, prefix: str) -> dict[str, np.ndarray]:
  """Linear -> nn.Dense params."""
  return _with_bias(state, prefix, {'kernel': state[f'{prefix}.weight'].T})


def conv(state: StateDict, prefix: str) -> dict[str, np.ndarray]:
  """Conv1d/2d/3d -> nn.Conv params (O, I, *k -> *k, I, O)."""
  w = state[f'{prefix}.weight']
  kernel = np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))
  return _with_bias(state, prefix, {'kernel': kernel})


def norm(state: StateDict, prefix: str) -> dict[str, np.ndarray]:
  """LayerNorm/GroupNorm -> nn.LayerNorm/nn.GroupNorm params."""
  return {'scale': state[f'{prefix}.weight'], 'bias': state[f'{prefix}.bias']}


def embedding(state: StateDict, prefix: str) -> dict[str, np.ndarray]:
  """Embedding -> nn.Embed params."""
  return {'embedding': state[f'{prefix}.weight']}


def _with_bias(state, prefix, params):
  if f'{prefix}.bias' in state:
    params['bias'] = state[f'{prefix}.bias']
  return params


class Layer(NamedTuple):
  """One torch layer: its keys and shapes, where and how it lands in flax.

  Attributes:
    torch: prefix of its torch keys ('in_blocks.0.attn.qkv').
    flax: '/'-joined path of its flax params ('in_blocks_0/attn/qkv').
    shapes: {torch key: shape}, its part of the manifest.
    convert: (state, torch) -> flax params (a dict, or one array for a
      bare parameter).
  """
  torch: str
  flax: str
  shapes: dict[str, Shape]
  convert: Callable[[StateDict, str], Any]


def linear_layer(torch: str, flax: str, d_in: int, d_out: int,
                 bias: bool = True) -> Layer:
  shapes = {f'{torch}.weight': (d_out, d_in)}
  if bias:
    shapes[f'{torch}.bias'] = (d_out,)
  return Layer(torch, flax, shapes, linear)


def conv_layer(torch: str, flax: str, c_in: int, c_out: int, kernel: Shape,
               bias: bool = True) -> Layer:
  shapes = {f'{torch}.weight': (c_out, c_in) + tuple(kernel)}
  if bias:
    shapes[f'{torch}.bias'] = (c_out,)
  return Layer(torch, flax, shapes, conv)


def norm_layer(torch: str, flax: str, channels: int) -> Layer:
  """LayerNorm or GroupNorm with affine parameters."""
  return Layer(torch, flax, {f'{torch}.weight': (channels,),
                             f'{torch}.bias': (channels,)}, norm)


def embedding_layer(torch: str, flax: str, num: int, dim: int) -> Layer:
  return Layer(torch, flax, {f'{torch}.weight': (num, dim)}, embedding)


def manifest(layers: Sequence[Layer]) -> dict[str, Shape]:
  """{torch key: shape} of every layer."""
  return {k: v for layer in layers for k, v in layer.shapes.items()}


def convert(state: StateDict, layers: Sequence[Layer], what: str, fix: str
            ) -> dict[str, Any]:
  """Checks `state` against the layers' manifest, returns nested flax params.

  Raises:
    UserError: missing, unexpected or misshaped keys (see check_manifest).
  """
  check_manifest(state, manifest(layers), what, fix)
  flat = {}
  for layer in layers:
    params = layer.convert(state, layer.torch)
    if isinstance(params, Mapping):
      flat.update({f'{layer.flax}/{k}': v for k, v in params.items()})
    else:
      flat[layer.flax] = params
  return traverse_util.unflatten_dict(flat, sep='/')


def placeholder_state(manifest: Mapping[str, Shape]) -> dict[str, np.ndarray]:
  """A state dict of zero-stride float32 arrays with the manifest's shapes.

  Costs no memory, so a converter can be run at full size (e.g. MaskGIT-L)
  to check the layout it produces without real weights.
  """
  zero = np.zeros((), np.float32)
  return {k: np.broadcast_to(zero, shape) for k, shape in manifest.items()}


def flat_shapes(tree: Any) -> dict[str, Shape]:
  """{'a/b/kernel': shape} of a nested dict of arrays or ShapeDtypeStructs."""
  return {k: tuple(v.shape)
          for k, v in traverse_util.flatten_dict(tree, sep='/').items()}


def check_module_layout(variables: Any, init_fn: Callable[..., Any],
                        *init_args):
  """Raises ValueError unless `variables` has exactly the init's layout.

  `jax.eval_shape(init_fn, *init_args)` gives the module's layout without
  computing anything, so this is cheap even for a large network. A
  difference is a converter bug (the manifest check already vetted the
  input), hence not a UserError.
  """
  want = flat_shapes(jax.eval_shape(init_fn, *init_args))
  got = flat_shapes(variables)
  diff = sorted(k for k in want.keys() | got.keys()
                if want.get(k) != got.get(k))
  if diff:
    raise ValueError('converted parameters differ from the module at '
                     + ', '.join(f'{k}: {got.get(k)} vs {want.get(k)}'
                                 for k in diff[:5]))
