"""Samples a generator with its hand-crafted schedule or a learned policy.

  python -m adagen_jax.sample --config=configs/fmnist_maskgit.py --steps=8 \
      --num=10000 --seed=0 --policy=heuristic --out=/tmp/samples.npz \
      [--batch=500]

Writes the .npz (`arr_0` uint8 [N, H, W, C], `labels` int32 [N]; evaluate it
with `python -m adagen_jax.evaluate --samples=...`) and a PNG grid of the
first samples next to it (FILE.png; one class per column). Labels are class
balanced: arange(N) % num_classes. `--policy` is one of
  heuristic    the config's hand-crafted schedule (the reference constants);
  tuned        the hand-crafted schedule with the constants of a grid
               search on FeatureNet (experiments/fmnist_table.py
               --stage=tune, a separate seed), shipped per generator and
               step count in adagen_jax/assets/tuned/;
  adagen, nonadaptive
               a shipped policy (the learned per-sample policy, or its
               learnable non-adaptive ablation);
  DIR          a policy export folder (python -m adagen_jax.main).

Every sample goes through adagen_jax.rl.rollout.rollout, the scan the RL
training uses, in batches of --batch (the last one padded, so nothing
recompiles); batch i draws from fold_in(key(seed), i).

Inference-time refinement (adagen_jax.rl.refine; each needs an exported
--policy, never 'heuristic'):
  --best_of=N        N candidates per sample, one kept by --best_of_rule:
                     by default (auto) the export's adversarial
                     discriminator where it has one, else the fitted
                     discriminator below;
    --best_of_rule=score
                     the largest score of the export's reward (its reward/
                     state: a discriminator, or the FD gain over fixed
                     reference samples, which makes FD worse with N);
    --best_of_rule=typical [--typical_percentile=25]
                     instead keeps the first candidate that is not an
                     outlier: its log-density in the reward backbone's last
                     feature set (a Gaussian of real training images) is
                     above that percentile of held-out real images'. Any
                     policy; on FD-reward policies it helps where the
                     largest score hurts (docs/RESULTS.md, "Refinement");
    --best_of_rule=discriminator
                     instead draws one candidate in proportion to
                     p_real / p_policy, from a linear discriminator of real
                     training images against 8000 samples of the policy on
                     the reward backbones' features, fitted before sampling.
                     Any policy; FD falls with N (docs/RESULTS.md);
  --lookahead=K      K candidate next states at --lookahead_steps (default
                     all but the last), the critic's best kept (MaskGIT, VAR);
    --lookahead_rule=discriminator
                     instead draws one by --best_of_rule=discriminator's
                     density ratio, on the image each candidate would
                     decode to now (the discriminator fitted on the policy
                     without lookahead);
  --lam=L [--fidelity_policy=PATH]
                     executes (1 - L) a_policy + L a_fidelity (default
                     fidelity policy: the export's fidelity/ folder).
It prints what the refinement costs per sample (generator transitions
relative to plain sampling).
"""

from __future__ import annotations

import functools
import os

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from adagen_jax import assets
from adagen_jax import cli
from adagen_jax import errors
from adagen_jax import generators
from adagen_jax import images as images_lib
from adagen_jax import progress
from adagen_jax import samples_io
from adagen_jax.parallel import mesh as mesh_lib
from adagen_jax.rl import rollout as rollout_lib

HEURISTIC = 'heuristic'
TUNED = 'tuned'
# The PNG grid: 10 rows of up to 10 columns; with class-balanced labels and
# at most 10 classes, column j shows class j.
_GRID_SIDE = 10


def _define_flags():
  """The CLI's flags; defined only when run as a program, so importing this
  module as a library (generate, generate_with) adds no global flags."""
  config_flags.DEFINE_config_file('config', None,
                                  'Experiment config (configs/*.py).',
                                  lock_config=False)
  flags.DEFINE_integer('steps', None, "T; default: the config's.")
  flags.DEFINE_integer('num', 10000, 'Number of samples.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_string('policy', HEURISTIC, "'heuristic', 'tuned', a "
                      'shipped policy name (adagen, nonadaptive) or a policy '
                      'export folder.')
  flags.DEFINE_string('out', None, 'Output .npz path.')
  flags.DEFINE_integer('batch', 500, 'Samples per rollout call.')
  flags.DEFINE_integer('best_of', 1, "N candidates per sample; the export's "
                       'reward (discriminator or FD gain) keeps one.')
  flags.DEFINE_enum('best_of_rule', 'auto',
                    ['auto', 'score', 'typical', 'discriminator'],
                    "Which candidate --best_of keeps: 'score', the largest "
                    "reward score; 'typical', the first that is not an "
                    "outlier of real images in the reward backbone's "
                    "features; 'discriminator', a draw by a real/policy "
                    'density ratio fitted on a pilot set of the policy '
                    "(the last two: any policy); 'auto', score for a policy "
                    'trained on the adversarial reward, else discriminator.')
  flags.DEFINE_float('typical_percentile', 25.0, "--best_of_rule=typical's "
                     "threshold: this percentile of real images' "
                     'log-densities.')
  flags.DEFINE_integer('lookahead', 1, 'K candidate next states; the '
                       "export's critic keeps one.")
  flags.DEFINE_enum('lookahead_rule', 'critic', ['critic', 'discriminator'],
                    "Which candidate --lookahead keeps: 'critic', the "
                    "largest value of the export's critic; "
                    "'discriminator', a draw by --best_of_rule="
                    "discriminator's density ratio (any policy).")
  flags.DEFINE_list('lookahead_steps', None, 'Steps t of the lookahead '
                    '(default: all but the last), e.g. 0,1,2.')
  flags.DEFINE_float('lam', None, 'Blend weight in [0, 1] of '
                     '--fidelity_policy.')
  flags.DEFINE_string('fidelity_policy', None, 'Fidelity policy export of '
                      "the --lam blend (default: the --policy export's "
                      'fidelity/ folder).')


def tuned_section(gen_config):
  """`gen_config` with the shipped tuned constants for its weights and T."""
  generator, _ = generators.build(gen_config)
  best = assets.tuned_constants(generator.identity(), int(gen_config.steps))
  out = ml_collections.ConfigDict(gen_config.to_dict())
  out.update(best)
  return out


def make_act_fn(policy: str, generator) -> rollout_lib.ActFn | None:
  """None for the heuristic schedule, else the exported policy's ActFn."""
  if policy in (HEURISTIC, TUNED):  # TUNED: set in the generator section
    return None
  # Imported here: the policy machinery (orbax, the policy network) is not
  # needed to sample a schedule.
  # pylint: disable-next=g-import-not-at-top
  from adagen_jax.rl import export
  return export.load_policy(policy, generator)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _rollout_images(generator, params, labels, rng, act_fn):
  traj = rollout_lib.rollout(generator, params, labels, rng, act_fn,
                             keep_obs=False)
  return traj.images


@functools.partial(jax.jit, static_argnums=0)
def _refined_images(refinement, variables, params, labels, rng):
  return refinement.sample(variables, params, labels, rng)[0]


def class_balanced_labels(num: int, num_classes: int) -> np.ndarray:
  return (np.arange(num) % num_classes).astype(np.int32)


def generate_with(generator, params, num: int, seed: int,
                  act_fn: rollout_lib.ActFn | None = None, batch: int = 500,
                  refinement=None) -> tuple[np.ndarray, np.ndarray]:
  """`num` class-balanced samples of a built generator.

  `refinement`: (Refinement, variables) from refine.load_refinement, used
  instead of `act_fn`.

  Returns:
    images: float32 [num, H, W, C] in [0, 1].
    labels: int32 [num].
  """
  if num < 1 or batch < 1:
    raise errors.UserError(f'--num={num} and --batch={batch} must be '
                           'positive.')
  labels = class_balanced_labels(num, generator.num_classes)
  # Each batch is split over this process's devices (e.g. JAX_NUM_CPU_DEVICES
  # =2 on 2 cores: 1.3-1.5x faster, adagen_jax/cli.py), so it is rounded up
  # to split evenly.
  mesh = mesh_lib.local_mesh()
  shards = mesh.devices.size
  batch = -(-min(batch, num) // shards) * shards
  repl, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)
  params = jax.device_put(params, repl)
  if refinement is not None:
    refinement = (refinement[0], jax.device_put(refinement[1], repl))
  key = jax.random.key(seed)
  out = []
  bar = progress.Progress(num, f'sample T={generator.num_steps}')
  for i, start in enumerate(range(0, num, batch)):
    chunk = labels[start:start + batch]
    padded = jax.device_put(np.pad(chunk, (0, batch - chunk.shape[0])),
                            data)
    rng = jax.random.fold_in(key, i)
    if refinement is None:
      images = _rollout_images(generator, params, padded, rng, act_fn)
    else:
      images = _refined_images(refinement[0], refinement[1], params, padded,
                               rng)
    out.append(np.asarray(images)[:chunk.shape[0]])
    bar.update(chunk.shape[0])
  return np.concatenate(out), labels


def generate(config, num: int, seed: int,
             act_fn: rollout_lib.ActFn | None = None, batch: int = 500
             ) -> tuple[np.ndarray, np.ndarray]:
  """Builds `config.generator` and returns `generate_with(...)`."""
  generator, params = generators.build(config.generator)
  return generate_with(generator, params, num, seed, act_fn, batch)


def save(out: str, images: np.ndarray, labels: np.ndarray,
         num_classes: int) -> tuple[str, str]:
  """Writes the .npz and the PNG grid beside it; returns both paths."""
  samples_io.save_samples(out, images, labels)
  ncol = min(num_classes, _GRID_SIDE, images.shape[0])
  png = images_lib.save_grid(os.path.splitext(out)[0] + '.png',
                             images[:_GRID_SIDE * ncol], nrow=ncol, upscale=2)
  return out, png


def _refinement(f, generator, params):
  """(Refinement, variables) when a refinement flag is set, else None."""
  if (f.best_of == 1 and f.lookahead == 1 and f.lookahead_steps is None and
      f.lam is None and f.fidelity_policy is None):
    return None
  from adagen_jax.rl import refine  # pylint: disable=g-import-not-at-top
  steps = f.lookahead_steps
  try:
    steps = None if steps is None else [int(s) for s in steps]
  except ValueError:
    raise errors.UserError(f'--lookahead_steps={",".join(steps)} must be '
                           'integers, e.g. --lookahead_steps=0,1,2') from None
  return refine.load_refinement(
      f.policy, generator, best_of=f.best_of, lookahead=f.lookahead,
      lookahead_steps=steps, lam=f.lam, fidelity_policy=f.fidelity_policy,
      best_of_rule=f.best_of_rule, typical_percentile=f.typical_percentile,
      gen_params=params, lookahead_rule=f.lookahead_rule)


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config
  if config is None:
    raise errors.UserError('--config is required, e.g. '
                           '--config=configs/fmnist_maskgit.py')
  if not f.out:
    raise errors.UserError('--out is required, e.g. --out=/tmp/samples.npz')
  if f.steps is not None:
    config.generator.steps = f.steps
  if f.policy == TUNED:
    config.generator = tuned_section(config.generator)
  generator, params = generators.build(config.generator)
  act_fn, refinement = None, _refinement(f, generator, params)
  if refinement is None:
    act_fn = make_act_fn(f.policy, generator)
  else:
    print(refinement[0].describe())
  images, labels = generate_with(generator, params, f.num, f.seed, act_fn,
                                 f.batch, refinement)
  npz, png = save(f.out, images, labels, generator.num_classes)
  logging.info('wrote %s and %s', npz, png)
  print(f'wrote {npz} ({images.shape[0]} samples, '
        f'T={config.generator.steps}, policy={f.policy}) and {png}')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
