"""PNG grids of samples."""

import math
import os

import numpy as np
from PIL import Image

from adagen_jax import samples_io


def make_grid(images, nrow: int | None = None, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
  """Tiles images row-major into one image.

  Args:
    images: float [N, H, W, C] in [0, 1] or uint8, C in {1, 3}.
    nrow: images per row (default ceil(sqrt(N))).
    padding: pixels between and around the tiles.
    pad_value: uint8 value of the padding (white by default, so the black
      Fashion-MNIST backgrounds stay apart).

  Returns:
    uint8 [rows * (H + p) + p, nrow * (W + p) + p, C].
  """
  images = samples_io.to_uint8(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or not images.size:
    raise ValueError(f'Need images [N>0, H, W, 1 or 3], got {images.shape}.')
  n, h, w, c = images.shape
  nrow = nrow or math.ceil(math.sqrt(n))
  rows = math.ceil(n / nrow)
  grid = np.full((rows * (h + padding) + padding,
                  nrow * (w + padding) + padding, c), pad_value, np.uint8)
  for i, image in enumerate(images):
    y = padding + (i // nrow) * (h + padding)
    x = padding + (i % nrow) * (w + padding)
    grid[y:y + h, x:x + w] = image
  return grid


def save_grid(path: str, images, nrow: int | None = None,
              upscale: int = 1) -> str:
  """Writes `make_grid(images, nrow)` as a PNG (atomically); returns path.

  Args:
    path: output .png path (the folder is created).
    images: float [N, H, W, C] in [0, 1] or uint8, C in {1, 3}.
    nrow: images per row (default ceil(sqrt(N))).
    upscale: integer nearest-neighbour magnification (28 px is tiny).
  """
  grid = make_grid(images, nrow)
  if upscale > 1:
    grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
  image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  image.save(tmp, format='PNG')
  os.replace(tmp, path)
  return path
