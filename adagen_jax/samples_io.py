"""Sample files: .npz with `arr_0` uint8 [N, H, W, C] and `labels` int32 [N].

This is the ADM evaluator's convention (openai/guided-diffusion
evaluations/evaluator.py reads `arr_0`), so the same files feed
`python -m adagen_jax.evaluate` and external evaluators.
"""

import os
import zipfile

import numpy as np

from adagen_jax import errors

IMAGES_KEY = 'arr_0'
LABELS_KEY = 'labels'


def to_uint8(images) -> np.ndarray:
  """float [0, 1] -> uint8 round(x * 255) clipped; uint8 passes through."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  if images.dtype.kind != 'f':
    raise ValueError(f'Images must be uint8 or float in [0, 1], got '
                     f'{images.dtype}.')
  return np.clip(np.round(images.astype(np.float32) * 255.0), 0,
                 255).astype(np.uint8)


def save_samples(path: str, images, labels) -> str:
  """Writes samples atomically.

  Args:
    path: output .npz path (the folder is created).
    images: float [N, H, W, C] in [0, 1] or uint8 [N, H, W, C].
    labels: int [N] class ids.

  Returns:
    `path`.
  """
  images = to_uint8(images)
  labels = np.asarray(labels)
  if images.ndim != 4 or labels.shape != (images.shape[0],):
    raise ValueError(f'Need images [N, H, W, C] and labels [N], got '
                     f'{images.shape} and {labels.shape}.')
  if labels.dtype.kind not in 'iu':
    raise ValueError(f'Labels must be integers, got {labels.dtype}.')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'  # np.savez would append .npz to other names
  np.savez(tmp, **{IMAGES_KEY: images, LABELS_KEY: labels.astype(np.int32)})
  os.replace(tmp, path)
  return path


def load_samples(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads and validates a samples file.

  Returns:
    images: uint8 [N, H, W, C].
    labels: int32 [N].

  Raises:
    UserError: missing or unreadable file, missing keys, wrong dtypes/shapes.
  """
  fix = ('write it with adagen_jax.samples_io.save_samples (keys arr_0: '
         'uint8 [N, H, W, C], labels: int [N])')
  errors.require_file(path, 'samples file', fix)
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [k for k in (IMAGES_KEY, LABELS_KEY) if k not in data]
      if missing:
        raise errors.UserError(f'{path} lacks {", ".join(missing)} (has '
                               f'{", ".join(data.files) or "nothing"}); {fix}')
      images, labels = data[IMAGES_KEY], data[LABELS_KEY]
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise errors.UserError(f'cannot read {path} as .npz ({e}); {fix}'
                           ) from None
  if images.dtype != np.uint8 or images.ndim != 4:
    raise errors.UserError(f'{path}: arr_0 must be uint8 [N, H, W, C], got '
                           f'{images.dtype} {images.shape}; {fix}')
  if labels.dtype.kind not in 'iu' or labels.shape != (images.shape[0],):
    raise errors.UserError(f'{path}: labels must be int [{images.shape[0]}], '
                           f'got {labels.dtype} {labels.shape}; {fix}')
  return images, labels.astype(np.int32)
