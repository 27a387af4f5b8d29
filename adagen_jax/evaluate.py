"""FD-FMNIST, precision/recall and label accuracy of Fashion-MNIST samples.

  python -m adagen_jax.evaluate --samples=samples.npz [--reference=fmnist-test]
      [--json]

`samples.npz` is what adagen_jax.samples_io.save_samples writes (`arr_0` uint8
[N, 28, 28, 1], `labels` int [N]). All metrics use the in-house FeatureNet
(adagen_jax/backbones/fmnist.py), never the reward backbone:

  FD-FMNIST   Fréchet distance between the 128-d embeddings of the samples
              (all N) and of the reference (10k images);
  precision,  improved precision/recall (k = 3) on the same embeddings, at
  recall      most 10k samples (a fixed random subset) against the reference;
  label acc.  fraction of samples the FeatureNet classifies as their label.

References: `fmnist-test` (the 10k test images) and `fmnist-train` (a fixed
10k subset of train, drawn with seed 0). In a training loop, build
`Evaluator.create(...)` once and call it on every batch of samples.
"""

import dataclasses
import functools
import json
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adagen_jax import cli
from adagen_jax import errors
from adagen_jax import progress
from adagen_jax import samples_io
from adagen_jax.backbones import fmnist as nets
from adagen_jax.data import fashion_mnist
from adagen_jax.metrics import fid
from adagen_jax.metrics import precision_recall

REFERENCES = ('fmnist-test', 'fmnist-train')
# Precision/recall compare at most this many samples with the reference.
PR_MAX = 10_000
_SUBSET_SEED = 0
_IMAGE_SHAPE = (28, 28, 1)


def reference_data(reference: str, data_dir: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(float32 [10000, 28, 28, 1] images in [0, 1], int32 [10000] labels)."""
  if reference == 'fmnist-test':
    return fashion_mnist.load('test', data_dir)
  if reference == 'fmnist-train':
    images, labels = fashion_mnist.load('train', data_dir)
    idx = _subset(images.shape[0], PR_MAX)
    return images[idx], labels[idx]
  raise errors.UserError(f'unknown reference {reference!r}; use one of '
                         f'{", ".join(REFERENCES)}.')


def _subset(n: int, size: int) -> np.ndarray:
  """Sorted fixed (seed 0) random subset of range(n) of min(n, size)."""
  if n <= size:
    return np.arange(n)
  rng = np.random.default_rng(_SUBSET_SEED)
  return np.sort(rng.choice(n, size, replace=False))


def _check_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != _IMAGE_SHAPE:
    raise errors.UserError(f'samples must be [N, 28, 28, 1] Fashion-MNIST '
                           f'images, got shape {images.shape}.')
  return images


def _as_unit_float(images) -> np.ndarray:
  """uint8 or float [0, 1] [N, 28, 28, 1] -> float32, quantised to 1/255.

  Floats are rounded to uint8 first so that evaluating samples in memory and
  evaluating the .npz written from them give the same numbers.
  """
  images = _check_images(images)
  if images.dtype != np.uint8 and images.dtype.kind != 'f':
    raise errors.UserError(f'samples must be uint8 or float in [0, 1], got '
                           f'{images.dtype}.')
  return samples_io.to_uint8(images).astype(np.float32) / 255.0


def check_samples(images, labels) -> int:
  """Validates [N, 28, 28, 1] images with int [N] labels; returns N >= 2."""
  n = _check_images(images).shape[0]
  labels = np.asarray(labels)
  if labels.shape != (n,) or labels.dtype.kind not in 'iu':
    raise errors.UserError(f'labels must be int [{n}], got {labels.dtype} '
                           f'{labels.shape}.')
  if n < 2:
    raise errors.UserError(f'need at least 2 samples for FD, got {n}.')
  return n


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluator:
  """Metrics against one reference set; build with `Evaluator.create`.

  Attributes:
    reference: 'fmnist-test' or 'fmnist-train'.
    module: the FeatureNet.
    variables: its variables.
    ref_features: float32 [M, D] embeddings of the reference images.
    ref_stats: (mu float64 [D], sigma float64 [D, D]) of `ref_features`.
    batch_size: images per feature-extraction call.
  """
  reference: str
  module: Any
  variables: Any
  ref_features: np.ndarray
  ref_stats: tuple[np.ndarray, np.ndarray]
  batch_size: int = 500

  @classmethod
  def create(cls, reference: str = 'fmnist-test',
             data_dir: str | None = None) -> 'Evaluator':
    """Loads the FeatureNet and embeds the reference (cached per process)."""
    return _create(reference, data_dir)

  @classmethod
  def from_images(cls, reference: str, module, variables, images,
                  batch_size: int = 500) -> 'Evaluator':
    """An evaluator against any reference images [M, 28, 28, 1]."""
    # On the device once, not at every feature-extraction call.
    variables = jax.device_put(variables)
    evaluator = cls(reference, module, variables, np.zeros((0,)),
                    (np.zeros(()), np.zeros(())), batch_size)
    ref_features, _ = evaluator.features(images, f'reference {reference}')
    return dataclasses.replace(evaluator, ref_features=ref_features,
                               ref_stats=fid.feature_stats(ref_features))

  def features(self, images, desc: str = 'samples'
              ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 or float [0, 1] [N, 28, 28, 1] -> (float32 [N, D], int32 [N]).

    Returns the embeddings and the predicted classes, computed in batches of
    `batch_size` (the last batch is padded so nothing recompiles); `desc`
    names the images in the progress lines.
    """
    images = _as_unit_float(images)
    n = images.shape[0]
    bar = progress.Progress(n, f'FeatureNet embeddings of {desc}')
    feats, preds = [], []
    for i in range(0, n, self.batch_size):
      chunk = images[i:i + self.batch_size]
      pad = self.batch_size - chunk.shape[0]
      chunk = np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))
      emb, pred = _embed(self.module, self.variables, chunk)
      feats.append(np.asarray(emb)[:self.batch_size - pad])
      preds.append(np.asarray(pred)[:self.batch_size - pad])
      bar.update(self.batch_size - pad)
    return np.concatenate(feats), np.concatenate(preds)

  def __call__(self, images, labels) -> dict[str, float]:
    """Metrics of N >= 2 samples with their int [N] class labels.

    Returns:
      {'fd': FD-FMNIST, 'precision', 'recall', 'label_acc', 'n': N}.
    """
    n = check_samples(images, labels)
    feats, preds = self.features(images)
    idx = _subset(n, PR_MAX)
    precision, recall = precision_recall.precision_recall(
        self.ref_features, feats[idx], k=3)
    return {
        'fd': fid.frechet_distance(*fid.feature_stats(feats), *self.ref_stats),
        'precision': precision,
        'recall': recall,
        'label_acc': float(np.mean(preds == labels)),
        'n': int(n),
    }


@functools.partial(jax.jit, static_argnums=0)
def _embed(module, variables, images):
  """float32 [B, 28, 28, 1] -> (float32 [B, D], int32 [B] argmax class)."""
  emb, logits = module.apply(variables, images, train=False)
  return emb, jnp.argmax(logits, -1).astype(jnp.int32)


@functools.lru_cache(maxsize=4)
def _create(reference: str, data_dir: str | None) -> Evaluator:
  images, _ = reference_data(reference, data_dir)
  module, variables = nets.load_feature_net()
  return Evaluator.from_images(reference, module, variables, images)


def format_metrics(metrics: dict[str, float]) -> str:
  """The CLI's human-readable block, one metric per line."""
  return '\n'.join([
      f'FD-FMNIST: {metrics["fd"]:.4f}',
      f'precision: {metrics["precision"]:.4f}',
      f'recall: {metrics["recall"]:.4f}',
      f'label accuracy: {metrics["label_acc"]:.4f}',
      f'N: {metrics["n"]}',
  ])


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments {argv[1:]}; use --samples=')
  flag = flags.FLAGS
  if not flag.samples:
    raise errors.UserError('--samples=FILE.npz is required (write it with '
                           'adagen_jax.samples_io.save_samples).')
  images, labels = samples_io.load_samples(flag.samples)
  check_samples(images, labels)  # before the reference's features
  evaluator = Evaluator.create(flag.reference, flag.data_dir or None)
  metrics = evaluator(images, labels)
  if flag.json:
    print(json.dumps({'reference': flag.reference, **metrics}))
  else:
    print(format_metrics(metrics))


if __name__ == '__main__':
  # Flags live here, not at import time: the training code imports this
  # module as a library and must not inherit these flags.
  flags.DEFINE_string('samples', None, '.npz with arr_0 (uint8 NHWC) and '
                      'labels (int).')
  flags.DEFINE_enum('reference', 'fmnist-test', REFERENCES,
                    'Reference set.')
  flags.DEFINE_bool('json', False, 'Print one JSON object instead of lines.')
  flags.DEFINE_string('data_dir', None, 'Fashion-MNIST IDX folder (default: '
                      'search, see adagen_jax.data.fashion_mnist).')
  cli.run(main)
