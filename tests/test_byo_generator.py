"""Bring your own generator: examples/iterative_refiner.py end to end (CPU).

The user module is plugged in by its import path alone
(config.generator.name='examples.iterative_refiner'), trained with
`python -m adagen_jax.main` and sampled with `python -m adagen_jax.sample`,
as docs/ADDING_A_GENERATOR.md describes. Sizes are the smallest that still
run every piece: 2 PPO iterations of 16 trajectories, T=3, 16 exemplars per
class. Needs Fashion-MNIST (the generator's exemplars and the real data).
"""
import dataclasses
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax import generators
from adagen_jax import samples_io
from adagen_jax.rl import export
from adagen_jax.rl import rollout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python -m` runs from the repository root import `examples` from there; so
# does this process (pytest puts only tests/ on sys.path).
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

CONFIG = 'examples/iterative_refiner_config.py'
T = 3
GEN_FLAGS = ('--config.generator.exemplars=16',)
TRAIN_FLAGS = GEN_FLAGS + (
    '--config.policy.hidden=16', '--config.ppo.trajectories=16',
    '--config.ppo.rollout_batch=16', '--config.ppo.epochs=1',
    '--config.reward.d_batch=16', '--config.reward.mapping_layers=1',
    '--config.num_iterations=2', '--config.checkpoint_every=2',
    '--config.eval_every=0', '--config.final_eval_num=0',
    '--config.plots_every=0')


def _config() -> ml_collections.ConfigDict:
  """The experiment config the CLIs get from CONFIG:runlocal + GEN_FLAGS."""
  from examples import iterative_refiner_config  # pylint: disable=g-import-not-at-top
  c = iterative_refiner_config.get_config(f'runlocal,steps={T}')
  c.generator.exemplars = 16
  return c


def _cli(module: str, *args):
  return subprocess.run(
      [sys.executable, '-m', module, *args], cwd=ROOT, capture_output=True,
      text=True, timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


@pytest.fixture(scope='module')
def built():
  """(generator, params) through the registry, by module path."""
  return generators.build(_config().generator)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A policy trained by `python -m adagen_jax.main` on the example."""
  path = str(tmp_path_factory.mktemp('byo') / 'run')
  r = _cli('adagen_jax.main', f'--config={CONFIG}:runlocal,steps={T}',
           f'--workdir={path}', *TRAIN_FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  return path


def test_registry_builds_user_module_by_path(built):
  gen, params = built
  assert type(gen).__module__ == 'examples.iterative_refiner'
  assert gen.name == 'examples.iterative_refiner' and gen.num_steps == T
  assert gen.image_shape == (28, 28, 1) and gen.num_classes == 10
  chex.assert_shape(params['exemplars'], (10, 16, 784))
  ident = gen.identity()
  assert json.loads(json.dumps(ident)) == ident  # JSON-able
  assert ident['weights'] == 'fashion_mnist_train_first16'
  assert len(ident['weights_digest']) == 16
  # The heuristic residual reproduces the hand-crafted schedule.
  spec = gen.action_spec
  assert spec.names == ('ratio', 'temp')
  h = spec.heuristic(T)
  assert h.shape == (T, 2) and np.all(np.diff(h[:, 0]) > 0)
  np.testing.assert_allclose(h[:, 1], 1.0)


def test_rollout_shapes_and_noise_ladder(built):
  gen, params = built
  labels = jnp.arange(8, dtype=jnp.int32) % 10
  traj = jax.jit(lambda p, l, k: rollout.rollout(gen, p, l, k))(
      params, labels, jax.random.key(0))
  chex.assert_shape(traj.obs, (T, 8) + gen.obs_shape)
  chex.assert_shape(traj.actions, (T, 8, 2))
  chex.assert_shape(traj.images, (8, 28, 28, 1))
  assert np.all(np.isfinite(traj.obs)) and np.all(np.isfinite(traj.images))
  assert 0.0 <= float(traj.images.min()) and float(traj.images.max()) <= 1.0
  # No policy: the executed actions are the hand-crafted schedule.
  np.testing.assert_allclose(
      traj.actions, np.broadcast_to(gen.action_spec.heuristic(T)[:, None],
                                    (T, 8, 2)), rtol=1e-4)
  # obs[..., -2] is log sigma: it follows the Karras ladder to sigma_min.
  np.testing.assert_allclose(np.exp(traj.obs[-1, :, 0, -2]),
                             np.exp(traj.obs[0, :, 0, -2]) *
                             np.prod(1 - gen.action_spec.heuristic(T)[:-1, 0]),
                             rtol=1e-4)
  # The images are near (noisy copies of) their class's exemplars.
  ex = np.asarray(params['exemplars'])[np.asarray(labels)]  # [8, 16, 784]
  mse = np.mean((np.asarray(traj.images).reshape(8, 1, -1) - ex) ** 2, -1)
  assert np.all(mse.min(-1) < 0.02), mse.min(-1)


def test_train_export_and_sample_cli(built, workdir, tmp_path):
  gen, params = built
  with open(os.path.join(workdir, 'policy', 'policy.json')) as f:
    card = json.load(f)
  assert card['generator'] == gen.identity()
  assert card['notes']['iterations'] == 2
  # The export loads for the generator it was trained on, and it is a
  # trained policy: its actions are no longer the hand-crafted ones.
  act = export.load_policy(os.path.join(workdir, 'policy'), gen)
  labels = jnp.arange(8, dtype=jnp.int32) % 10
  run = jax.jit(lambda p, l, k, a: rollout.rollout(gen, p, l, k, a,
                                                   keep_obs=False),
                static_argnums=3)
  learned = run(params, labels, jax.random.key(1), act).actions
  hand = run(params, labels, jax.random.key(1), None).actions
  assert np.max(np.abs(np.asarray(learned) - np.asarray(hand))) > 1e-6
  # ... and is refused on another generator, or other exemplars.
  other = dataclasses.replace(gen, bandwidth=0.2)
  with pytest.raises(errors.UserError, match='was trained for'):
    export.load(os.path.join(workdir, 'policy'), other)
  other = dataclasses.replace(gen, weights_digest='0' * 16)
  with pytest.raises(errors.UserError, match='other weights'):
    export.load(os.path.join(workdir, 'policy'), other)

  out = str(tmp_path / 'refiner.npz')
  r = _cli('adagen_jax.sample', f'--config={CONFIG}:steps={T}', *GEN_FLAGS,
           f'--policy={workdir}/policy', '--num=12', '--batch=8',
           f'--out={out}')
  assert r.returncode == 0, r.stderr[-3000:]
  images, sample_labels = samples_io.load_samples(out)
  assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(sample_labels, np.arange(12) % 10)
  assert os.path.getsize(str(tmp_path / 'refiner.png')) > 0
  assert f'policy={workdir}/policy' in r.stdout


@pytest.mark.parametrize('name, why', [
    ('nope', "no module 'nope'"),
    ('examples.nope', "no module 'examples.nope'"),
    ('examples', "module 'examples' has no build"),
])
def test_unknown_name_is_one_line_user_error(name, why):
  with pytest.raises(errors.UserError) as e:
    generators.build(ml_collections.ConfigDict({'name': name}))
  msg = str(e.value)
  assert '\n' not in msg
  assert msg.startswith(f'config.generator.name={name!r} is not a paradigm '
                        '(maskgit, dit, sit, var, toy) nor an importable '
                        'module with build(gen_config)'), msg
  assert why in msg and 'examples.iterative_refiner' in msg
