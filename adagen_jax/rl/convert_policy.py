"""AdaGen's published policy files -> PolicyNet variables.

The AdaGen release ships each policy as a bare PyTorch state dict of the actor
(adagen_reference.md §2, "Checkpoint"), loaded there with strict=True:

  x_embedder.{weight,bias}            Linear(C_feat, hid); absent if equal
  t_embedder.mlp.{0,2}.{weight,bias}  Linear(256, hid), Linear(hid, hid)
  adaLN{1,2,3}.adaLN_modulation.1.*   Linear(hid, 2 hid | 4 hid | 2 hid)
  dw_conv.{weight,bias}               depthwise Conv2d k3 s2 (hid, 1, 3, 3)
  pw_conv.{weight,bias}               Conv2d k1 (hid / 4, hid, 1, 1)
  linear{1,2,3}.{weight,bias}         -> 2 hid, -> hid, -> A

with hid = 512 in every release (22 tensors, 11,876,484 numbers for
C_feat = 768 and A = 4).

C_feat comes from x_embedder.weight.shape[1] (768 MaskGIT-L, 1152 DiT/SiT-XL,
1024 VAR-d16, 1920 VAR-d30), the action count from linear3.weight.shape[0].
Outputs are in the order of the release config's `action_keys`; the
generator's ActionSpec must list its actions in that order.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from adagen_jax import errors
from adagen_jax.rl import policy as policy_lib

_FIX = ('pass an AdaGen policy .pth (a bare actor state dict, e.g. '
        'policy_maskgit.pth from the LeapLabTHU/AdaGen release)')


def policy_manifest(c_feat: int, out_size: int, hidden_size: int = 512,
                    map_size: int = 16) -> dict[str, tuple[int, ...]]:
  """Expected torch key -> shape of an actor on a map_size^2-token input."""
  hid = hidden_size
  conv_side = (map_size + 1) // 2  # stride 2, padding 1, kernel 3
  man = {}
  if c_feat != hid:
    man.update({'x_embedder.weight': (hid, c_feat), 'x_embedder.bias': (hid,)})
  man.update({
      't_embedder.mlp.0.weight': (hid, 256), 't_embedder.mlp.0.bias': (hid,),
      't_embedder.mlp.2.weight': (hid, hid), 't_embedder.mlp.2.bias': (hid,),
  })
  for i, dim in ((1, hid), (2, 2 * hid), (3, hid)):
    man[f'adaLN{i}.adaLN_modulation.1.weight'] = (2 * dim, hid)
    man[f'adaLN{i}.adaLN_modulation.1.bias'] = (2 * dim,)
  man.update({
      'dw_conv.weight': (hid, 1, 3, 3), 'dw_conv.bias': (hid,),
      'pw_conv.weight': (hid // 4, hid, 1, 1), 'pw_conv.bias': (hid // 4,),
      'linear1.weight': (2 * hid, hid // 4 * conv_side ** 2),
      'linear1.bias': (2 * hid,),
      'linear2.weight': (hid, 2 * hid), 'linear2.bias': (hid,),
      'linear3.weight': (out_size, hid), 'linear3.bias': (out_size,),
  })
  return man


def _infer_sizes(sd: Mapping[str, np.ndarray]) -> tuple[int, int, int, int]:
  """(c_feat, out_size, hidden_size, map_size) from a state dict."""
  for key in ('linear3.weight', 'linear2.weight', 'linear1.weight'):
    if key not in sd:
      raise errors.UserError(f'policy state dict has no {key!r}; {_FIX}')
  out_size, hid = sd['linear3.weight'].shape
  c_feat = sd['x_embedder.weight'].shape[1] if 'x_embedder.weight' in sd \
      else hid
  conv_side = math.isqrt(sd['linear1.weight'].shape[1] // max(hid // 4, 1))
  return int(c_feat), int(out_size), int(hid), int(2 * conv_side)


def convert_policy_state_dict(
    state_dict: Mapping[str, np.ndarray]
) -> tuple[policy_lib.PolicyNet, dict]:
  """Torch actor state dict (name -> array) -> (PolicyNet, variables).

  Raises:
    UserError on missing or unexpected keys, or wrong shapes.
  """
  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  c_feat, out_size, hid, map_size = _infer_sizes(sd)
  man = policy_manifest(c_feat, out_size, hid, map_size)
  missing = sorted(set(man) - set(sd))
  unexpected = sorted(set(sd) - set(man))
  if missing or unexpected:
    raise errors.UserError(
        f'policy state dict does not match the AdaGen actor: missing '
        f'{missing}, unexpected {unexpected}; {_FIX}')
  bad = [f'{k} {sd[k].shape} != {man[k]}' for k in man
         if tuple(sd[k].shape) != man[k]]
  if bad:
    raise errors.UserError(f'policy state dict has wrong shapes: '
                           f'{"; ".join(bad)}; {_FIX}')

  def dense(name):
    return {'kernel': sd[name + '.weight'].T, 'bias': sd[name + '.bias']}

  params = {
      't_embedder': {'mlp_0': dense('t_embedder.mlp.0'),
                     'mlp_2': dense('t_embedder.mlp.2')},
      # OIHW -> HWIO; the depthwise kernel (C, 1, 3, 3) becomes (3, 3, 1, C).
      'dw_conv': {'kernel': sd['dw_conv.weight'].transpose(2, 3, 1, 0),
                  'bias': sd['dw_conv.bias']},
      'pw_conv': {'kernel': sd['pw_conv.weight'].transpose(2, 3, 1, 0),
                  'bias': sd['pw_conv.bias']},
  }
  if c_feat != hid:
    params['x_embedder'] = dense('x_embedder')
  for i in (1, 2, 3):
    params[f'adaLN{i}'] = {
        'adaLN_modulation': dense(f'adaLN{i}.adaLN_modulation.1')}
    params[f'linear{i}'] = dense(f'linear{i}')
  return (policy_lib.PolicyNet(out_size=out_size, hidden_size=hid),
          {'params': params})


def load_adagen_policy(path: str) -> tuple[policy_lib.PolicyNet, dict]:
  """Reads an AdaGen policy .pth -> (PolicyNet, variables).

  The input features must be [B, map_size^2, C_feat] (16 x 16 = 256 tokens
  for every released policy).
  """
  errors.require_file(path, 'AdaGen policy file', _FIX)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError(
        'reading a PyTorch policy needs torch; pip install -e ".[torch]"'
    ) from None
  try:
    sd = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(f'cannot read {path} as a PyTorch state dict '
                           f'({type(e).__name__}); {_FIX}') from None
  if not isinstance(sd, Mapping):
    raise errors.UserError(f'{path} holds a {type(sd).__name__}, not a '
                           f'state dict; {_FIX}')
  return convert_policy_state_dict(
      {k: v.float().numpy() for k, v in sd.items()})
