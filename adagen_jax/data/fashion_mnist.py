"""Fashion-MNIST, read from its IDX files (no TensorFlow, no download).

Where the data is looked for, in order (the first one that is *set* decides,
so a wrong explicit path is an error rather than a silent fallback):

  1. the `path` argument (e.g. a `--config.data_dir` value);
  2. $ADAGEN_DATA_DIR;
  3. /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist);
  4. a prepared TFDS `fashion_mnist` in array_record format under
     $TFDS_DATA_DIR (or TFDS's default), read with `tfds.data_source`.

IDX files may be gzipped (`*-ubyte.gz`) or plain (`*-ubyte`).
"""

import functools
import gzip
import os
from typing import Iterator

import jax
import numpy as np

from adagen_jax import errors

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
SPLITS = ('train', 'test')
NUM_CLASSES = 10
_FILES = {  # split -> (images, labels) IDX base names
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), #dims.
_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801
_TFDS_PREFIX = 'tfds:'
_FIX = ('apt-get update && apt-get install -y dataset-fashion-mnist '
        '(or set ADAGEN_DATA_DIR=/dir/with/idx)')


def _idx_file(directory: str, base: str) -> str | None:
  for name in (base + '.gz', base):
    if os.path.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  return None


def _has_idx(directory: str) -> bool:
  return all(_idx_file(directory, base) for pair in _FILES.values()
             for base in pair)


def _tfds_dir() -> str | None:
  """The TFDS data dir (root) holding an array_record fashion_mnist."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder('fashion_mnist',
                           data_dir=os.environ.get('TFDS_DATA_DIR'))
    if (builder.is_prepared() and builder.info.file_format ==
        tfds.core.FileFormat.ARRAY_RECORD):
      return str(builder.data_dir_root)
  except Exception:  # pylint: disable=broad-except
    # TFDS is only a last resort; any failure means "not there".
    pass
  return None


def find_dir(path: str | None = None) -> str:
  """Returns the directory with the IDX files (or 'tfds:<TFDS data dir>').

  Raises:
    UserError: the data is nowhere, or an explicitly named place lacks it.
  """
  for what, directory in (('path', path),
                          ('$ADAGEN_DATA_DIR',
                           os.environ.get('ADAGEN_DATA_DIR'))):
    if directory:
      if not _has_idx(directory):
        raise errors.UserError(
            f'Fashion-MNIST IDX files ({", ".join(_FILES["train"])}, ...) '
            f'not found in {directory} ({what}); {_FIX}')
      return directory
  if _has_idx(DEBIAN_DIR):
    return DEBIAN_DIR
  tfds_dir = _tfds_dir()
  if tfds_dir:
    return _TFDS_PREFIX + tfds_dir
  raise errors.UserError(f'Fashion-MNIST not found (looked in '
                         f'$ADAGEN_DATA_DIR, {DEBIAN_DIR}, TFDS); {_FIX}')


def _read_idx(path: str, magic: int) -> np.ndarray:
  """Reads one IDX file of unsigned bytes; returns uint8 [N, ...]."""
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise errors.UserError(f'cannot read {path} ({e}); {_FIX}') from None
  ndim = magic & 0xff
  header = 4 * (1 + ndim)
  if len(data) < header or int.from_bytes(data[:4], 'big') != magic:
    raise errors.UserError(f'{path} is not an IDX file of the expected kind '
                           f'(bad magic number); {_FIX}')
  shape = tuple(int.from_bytes(data[4 * i:4 * i + 4], 'big')
                for i in range(1, ndim + 1))
  if len(data) - header != np.prod(shape):
    raise errors.UserError(f'{path} is truncated or corrupt ({len(data)} '
                           f'bytes for shape {shape}); {_FIX}')
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _load_idx(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  images_base, labels_base = _FILES[split]
  images = _read_idx(_idx_file(directory, images_base), _MAGIC_IMAGES)
  labels = _read_idx(_idx_file(directory, labels_base), _MAGIC_LABELS)
  if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
    raise errors.UserError(
        f'Fashion-MNIST {split} files in {directory} disagree: images '
        f'{images.shape}, labels {labels.shape}; {_FIX}')
  return images[..., None], labels


def _load_tfds(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """A prepared TFDS fashion_mnist -> (uint8 [N, 28, 28, 1], int [N])."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds.data_source('fashion_mnist', split=split, data_dir=data_dir,
                            download=False)
  examples = [source[i] for i in range(len(source))]
  images = np.stack([e['image'] for e in examples]).astype(np.uint8)
  labels = np.array([e['label'] for e in examples])
  return images.reshape(-1, 28, 28, 1), labels


@functools.lru_cache(maxsize=4)
def _load_cached(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  if directory.startswith(_TFDS_PREFIX):
    images, labels = _load_tfds(directory[len(_TFDS_PREFIX):], split)
  else:
    images, labels = _load_idx(directory, split)
  if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
    raise errors.UserError(f'Fashion-MNIST {split} labels outside 0..9 in '
                           f'{directory}; {_FIX}')
  images = images.astype(np.float32) / 255.0
  labels = labels.astype(np.int32)
  # The arrays are shared by every caller of this cache: make them read-only.
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def load(split: str, path: str | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split (cached per process; the arrays are read-only).

  Args:
    split: 'train' (60k) or 'test' (10k).
    path: optional directory with the IDX files (see the module docstring).

  Returns:
    images: float32 [N, 28, 28, 1] in [0, 1].
    labels: int32 [N] in 0..9.
  """
  if split not in SPLITS:
    raise errors.UserError(f'Fashion-MNIST split must be one of {SPLITS}, '
                           f'got {split!r}.')
  return _load_cached(find_dir(path), split)


def batches(images: np.ndarray, labels: np.ndarray, global_batch: int,
            seed: int, process_index: int | None = None,
            process_count: int | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Infinite iterator over this process's slice of shuffled global batches.

  The data is read as a stream of epoch-wise permutations drawn from `seed`
  (identical on every process), cut into global batches of `global_batch`
  examples; a batch may straddle two epochs, so nothing is dropped. Process i
  gets rows [i * b, (i + 1) * b) of each global batch, b = global_batch /
  process_count, the layout `jax.make_array_from_process_local_data` expects.

  Args:
    images: [N, ...] array (any dtype).
    labels: [N] array.
    global_batch: examples per step over all processes.
    seed: shuffling seed.
    process_index: defaults to jax.process_index().
    process_count: defaults to jax.process_count().

  Yields:
    (images [b, ...], labels [b]) numpy arrays.
  """
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if global_batch <= 0 or global_batch % process_count:
    raise errors.UserError(f'global batch size {global_batch} must be a '
                           f'positive multiple of the {process_count} '
                           'processes.')
  n = images.shape[0]
  if n == 0 or labels.shape[0] != n:
    raise ValueError(f'Need N > 0 images and N labels, got {images.shape}, '
                     f'{labels.shape}.')
  local = global_batch // process_count
  lo = process_index * local
  epoch, stream = 0, np.zeros((0,), np.int64)
  while True:
    while stream.shape[0] < global_batch:
      perm = np.random.default_rng((seed, epoch)).permutation(n)
      stream = np.concatenate([stream, perm])
      epoch += 1
    idx = stream[lo:lo + local]
    stream = stream[global_batch:]
    yield images[idx], labels[idx]
