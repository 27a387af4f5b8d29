"""ImageNet at 256x256 through tfds.data_source + grain (no TensorFlow).

The dataset must be prepared once, in array_record format, in a separate
environment that has TensorFlow (launch/prepare_imagenet.sh):

  bash launch/prepare_imagenet.sh /path/to/ILSVRC2012_tars

Each process reads its own part of the split (`tfds.split_for_jax_process`)
and yields per-process batches; assemble global arrays with
`jax.make_array_from_process_local_data`. Preprocessing is ADM's
`center_crop_arr` (what AdaGen's real-image pipeline uses,
adagen_reference.md §3.3), then a random horizontal flip when training.
"""

import grain
import jax
import numpy as np
from PIL import Image

from adagen_jax import errors

NUM_CLASSES = 1000
_FIX = ('prepare it once with: bash launch/prepare_imagenet.sh '
        '/path/to/ILSVRC2012_tars (and set TFDS_DATA_DIR to its data dir)')


def center_crop(image: np.ndarray, size: int = 256) -> np.ndarray:
  """ADM center crop: uint8 [H, W, 3] -> uint8 [size, size, 3].

  Halves the image with a BOX filter while its short side is >= 2 * size
  (cheap anti-aliasing), resizes the short side to `size` with BICUBIC, then
  takes the central size x size square.
  """
  pil = Image.fromarray(image)
  while min(pil.size) >= 2 * size:
    pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
  scale = size / min(pil.size)
  pil = pil.resize(tuple(round(x * scale) for x in pil.size),
                   resample=Image.BICUBIC)
  arr = np.asarray(pil.convert('RGB'))
  top = (arr.shape[0] - size) // 2
  left = (arr.shape[1] - size) // 2
  return arr[top:top + size, left:left + size]


def _source(split: str, data_dir: str | None):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    # download=False: without it TFDS would try to build the dataset here,
    # which needs TensorFlow and the manually downloaded tars.
    return tfds.data_source('imagenet2012',
                            split=tfds.split_for_jax_process(split),
                            data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except
    # TFDS reports a missing or non-array_record dataset with several
    # exception types (NotImplementedError, AssertionError, ...).
    raise errors.UserError(
        f'imagenet2012 ({split}) is not readable in array_record format '
        f'under {data_dir or "$TFDS_DATA_DIR / ~/tensorflow_datasets"} '
        f'({type(e).__name__}); {_FIX}') from None


def make_dataset(split: str, global_batch: int, seed: int, *,
                 train: bool = True, image_size: int = 256,
                 data_dir: str | None = None) -> grain.MapDataset:
  """This process's batches of ImageNet, infinitely repeated if `train`.

  Args:
    split: TFDS split, e.g. 'train' or 'validation'.
    global_batch: images per step over all processes.
    seed: shuffle and flip seed (identical on all processes).
    train: shuffle + repeat + random flips; otherwise one ordered pass.
    image_size: output side (256 for the reference).
    data_dir: TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).

  Returns:
    A grain MapDataset of (images float32 [b, S, S, 3] in [0, 1],
    labels int32 [b]) with b = global_batch / jax.process_count(); a last
    incomplete batch is dropped.
  """
  if global_batch <= 0 or global_batch % jax.process_count():
    raise errors.UserError(f'global batch size {global_batch} must be a '
                           f'positive multiple of the {jax.process_count()} '
                           'processes.')
  ds = grain.MapDataset.source(_source(split, data_dir))
  if train:
    ds = ds.shuffle(seed=seed).repeat()  # reshuffled every epoch

  def crop(example):
    return (center_crop(example['image'], image_size),
            np.int32(example['label']))

  def flip(example, rng: np.random.Generator):
    image, label = example
    return (image[:, ::-1] if rng.random() < 0.5 else image), label

  ds = ds.map(crop)
  if train:
    ds = ds.random_map(flip, seed=seed)
  ds = ds.map(lambda ex: (ex[0].astype(np.float32) / 255.0, ex[1]))
  return ds.batch(global_batch // jax.process_count(), drop_remainder=True)
