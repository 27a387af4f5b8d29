"""The sampling CLI on a tiny random MaskGIT (subprocesses, CPU)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adagen_jax import assets
from adagen_jax import samples_io
from adagen_jax.generators import maskgit

_CONFIG = '''
import ml_collections

def get_config():
  c = ml_collections.ConfigDict()
  c.generator = ml_collections.ConfigDict(dict(
      name='maskgit', weights={weights!r}, steps=4, schedule='cosine',
      smoothing=0.8, temp_init=1.0, samp_temp_init=1.0, cfg_init=1.0,
      image_size=8, image_channels=1, num_classes=3, tokens=4,
      codebook_size=8, width=16, depth=2, heads=2, mlp_ratio=2.0,
      tokenizer=dict(filters=4, channel_mult=(1, 2), num_res_blocks=1,
                     embedding_dim=4, norm_groups=32)))
  return c
'''


def _write_config(directory, weights) -> str:
  path = os.path.join(directory, f'cfg_{os.path.basename(weights)}.py')
  with open(path, 'w') as f:
    f.write(_CONFIG.format(weights=weights))
  return path


@pytest.fixture(scope='module')
def config_path(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('sample'))
  weights = os.path.join(directory, 'tiny.msgpack')
  cfg = _write_config(directory, weights)
  ns = {}
  exec(_CONFIG.format(weights=weights), ns)  # pylint: disable=exec-used
  tokenizer, transformer = maskgit.make_nets(ns['get_config']().generator)
  params = {
      'tokenizer': jax.jit(tokenizer.init)(
          jax.random.key(0), jnp.zeros((1, 8, 8, 1)))['params'],
      'transformer': jax.jit(transformer.init)(
          jax.random.key(1), jnp.zeros((1, 16), jnp.int32),
          jnp.zeros((1,), jnp.int32))['params'],
  }
  assets.save_variables(weights, params)
  return cfg


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'adagen_jax.sample', *args],
                        capture_output=True, text=True, env=env, timeout=300,
                        check=False)


def test_cli_writes_npz_and_png(config_path, tmp_path):
  out = str(tmp_path / 'samples.npz')
  res = _run(f'--config={config_path}', '--steps=2', '--num=14', '--seed=3',
             '--batch=8', f'--out={out}')
  assert res.returncode == 0, res.stderr[-2000:]
  images, labels = samples_io.load_samples(out)
  assert images.shape == (14, 8, 8, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, np.arange(14) % 3)
  assert os.path.getsize(str(tmp_path / 'samples.png')) > 0
  assert 'T=2' in res.stdout


def test_cli_bad_policy_is_one_line_exit_2(config_path, tmp_path):
  res = _run(f'--config={config_path}', '--num=4', '--policy=/no/such/dir',
             f'--out={tmp_path / "x.npz"}')
  assert res.returncode == 2
  lines = res.stderr.strip().splitlines()
  assert lines[-1].startswith('error: ') and '--policy=/no/such/dir' in (
      lines[-1])
  assert 'Traceback' not in res.stderr


def test_cli_missing_weights_is_one_line_exit_2(tmp_path):
  cfg = _write_config(str(tmp_path), str(tmp_path / 'nothing.msgpack'))
  res = _run(f'--config={cfg}', '--num=4', f'--out={tmp_path / "x.npz"}')
  assert res.returncode == 2
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'convert.maskgit' in last
  assert 'Traceback' not in res.stderr


def test_shipped_policy_loads_for_its_step_count_only(tmp_path):
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  from adagen_jax import errors  # pylint: disable=g-import-not-at-top
  from adagen_jax import generators  # pylint: disable=g-import-not-at-top
  from adagen_jax.rl import export  # pylint: disable=g-import-not-at-top
  gen, params_of_gen = generators.build(shipped.fmnist_maskgit_generator(8))
  agent, params, card = export.load('adagen', gen)
  assert card['num_steps'] == 8 and card['policy']['kind'] == 'adaptive'
  obs = jnp.zeros((2,) + tuple(gen.obs_shape))
  assert agent.mean(params, obs, jnp.int32(0)).shape == (2, 4)
  # Its reward (FD + a confidence bonus standardised over the batch) scores
  # a batch, not a sample: best-of-N by score is refused, the critic's
  # lookahead works; no fidelity policy (the blend's needs a main policy trained on
  # the adversarial reward).
  from adagen_jax.rl import refine  # pylint: disable=g-import-not-at-top
  from adagen_jax.rl import rewards  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.UserError, match='ConfidenceBonus depends on'):
    refine.load_refinement('adagen', gen, best_of=2)
  # Outlier rejection serves it: DiscBackbone's last block, real training
  # images (a slice: the default's 20 000 cost a minute of the suite).
  from adagen_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
  reals = fashion_mnist.load('train')[0][:512]
  refinement, variables = refine.load_refinement(
      'adagen', gen, best_of=2, best_of_rule='typical', reals=reals)
  assert refinement.best_of_rule == 'typical'
  assert variables['typical']['prec'].shape == (
      variables['typical']['mu'].shape * 2)
  # So does the fitted discriminator, on every feature set of both shipped
  # reward backbones (DiscBackbone and ContrastNet): the CLI's default rule
  # ('auto') for a policy without an adversarial reward.
  refinement, variables = refine.load_refinement(
      'adagen', gen, best_of=2, best_of_rule='auto',
      gen_params=params_of_gen, pilot=64, reals=reals)
  assert refinement.best_of_rule == 'discriminator'
  assert len(refinement.backbones) == 2
  feats = refine.feature_vector(refinement.backbones,
                                jnp.zeros((1, 28, 28, 1)))
  assert variables['discriminator']['w'].shape == (feats.shape[1],)
  refinement, _ = refine.load_refinement('adagen', gen, lookahead=2)
  assert refinement.lookahead == 2
  with pytest.raises(errors.UserError, match='no fidelity/'):
    refine.load_refinement('adagen', gen, lam=0.5)
  # The learnable non-adaptive ablation: one action vector per step, the
  # same for every sample whatever its features.
  agent, params, card = export.load('nonadaptive', gen)
  assert card['policy']['kind'] == 'nonadaptive'
  noise = jax.random.normal(jax.random.key(0), obs.shape)
  np.testing.assert_array_equal(agent.mean(params, obs, jnp.int32(3)),
                                agent.mean(params, noise, jnp.int32(3)))
  # Its reward carries the confidence bonus too.
  with pytest.raises(errors.UserError, match='ConfidenceBonus depends on'):
    refine.load_refinement('nonadaptive', gen, best_of=2)
  # T=4 ships both policies; T=16 ships none.
  gen4, _ = generators.build(shipped.fmnist_maskgit_generator(4))
  for name, kind in (('adagen', 'adaptive'), ('nonadaptive', 'nonadaptive')):
    _, _, card = export.load(name, gen4)
    assert card['num_steps'] == 4 and card['policy']['kind'] == kind
  # A policy copied without its reward state cannot score candidates.
  bare = tmp_path / 'bare'
  shutil.copytree(assets.asset_path('policies/fmnist_maskgit_T4_nonadaptive'),
                  bare, ignore=shutil.ignore_patterns('reward'))
  with pytest.raises(errors.UserError, match='without its reward'):
    refine.load_refinement(str(bare), gen4, best_of=2)
  # T=4's carries what best-of-N needs: its FD reward's state (scored over
  # fixed reference samples).
  refinement, variables = refine.load_refinement('adagen', gen4, best_of=2,
                                                 lookahead=2)
  assert sorted(variables) == ['policy', 'reward']
  assert isinstance(refinement.reward_model, rewards.FDReward)
  gen16, _ = generators.build(shipped.fmnist_maskgit_generator(16))
  for name in ('adagen', 'nonadaptive'):
    with pytest.raises(errors.UserError, match='no shipped'):
      export.load(name, gen16)


def test_a_policy_is_refused_on_retrained_weights_of_the_same_name(
    tmp_path, monkeypatch):
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  from adagen_jax import errors  # pylint: disable=g-import-not-at-top
  from adagen_jax import generators  # pylint: disable=g-import-not-at-top
  from adagen_jax.rl import export  # pylint: disable=g-import-not-at-top
  gen_config = shipped.fmnist_maskgit_generator(4)
  gen, params = generators.build(gen_config)
  assert export.load('adagen', gen)[2]['generator'] == json.loads(
      json.dumps(gen.identity()))
  # The same asset name, retrained: one weight moved.
  params = jax.tree.map(np.asarray, params)
  params['transformer']['context_embed'] = jax.tree.map(
      lambda x: x + 1, params['transformer']['context_embed'])
  shutil.copytree(assets.asset_path('policies/fmnist_maskgit_T4_adagen'),
                  tmp_path / 'policies/fmnist_maskgit_T4_adagen')
  assets.save_variables(str(tmp_path / 'fmnist_maskgit.msgpack'), params)
  monkeypatch.setattr(assets, 'ASSET_DIR', str(tmp_path))
  retrained, _ = generators.build(gen_config)
  assert retrained.weights == gen.weights
  assert retrained.weights_digest != gen.weights_digest
  with pytest.raises(errors.UserError, match='other weights .* retrain it'):
    export.load('adagen', retrained)


def test_tuned_applies_the_shipped_constants_of_its_weights_and_t(
    tmp_path, monkeypatch):
  from adagen_jax import errors  # pylint: disable=g-import-not-at-top
  from adagen_jax import sample  # pylint: disable=g-import-not-at-top
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  section = shipped.fmnist_maskgit_generator(4)
  with open(assets.tuned_schedule_path('fmnist_maskgit', 4)) as f:
    best = json.load(f)['best']
  assert any(section[k] != v for k, v in best.items())  # it changes something
  tuned = sample.tuned_section(section)
  assert {k: tuned[k] for k in best} == best
  assert tuned.steps == 4 and tuned.weights == section.weights
  # No tuned schedule at T=16; none for other weights of the same name.
  with pytest.raises(errors.UserError, match='no tuned schedule ships'):
    sample.tuned_section(shipped.fmnist_maskgit_generator(16))
  other = tmp_path / 'tuned' / 'fmnist_maskgit_T4.json'
  other.parent.mkdir()
  shutil.copy(assets.asset_path('fmnist_maskgit.msgpack'), tmp_path)
  other.write_text(json.dumps({'weights_digest': '0' * 16, 'best': best}))
  monkeypatch.setattr(assets, 'ASSET_DIR', str(tmp_path))
  with pytest.raises(errors.UserError, match='tuned on other weights'):
    sample.tuned_section(section)


def test_tuned_table_offset_reproduces_the_tuned_rollout():
  # The default run's 'tuned' row runs the tuned constants as a raw-action
  # offset on the hand-crafted generator (train.tuned_table); the images
  # must be those of the generator built with the tuned constants.
  from adagen_jax import generators  # pylint: disable=g-import-not-at-top
  from adagen_jax import sample  # pylint: disable=g-import-not-at-top
  from adagen_jax import train  # pylint: disable=g-import-not-at-top
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  from adagen_jax.rl import policy  # pylint: disable=g-import-not-at-top
  from adagen_jax.rl import rollout  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(
      {'generator': shipped.fmnist_maskgit_generator(4)})
  gen, params = generators.build(config.generator)
  tuned_gen, _ = generators.build(sample.tuned_section(config.generator))
  spec = train._tuned_spec(config, gen)  # pylint: disable=protected-access
  table = train.tuned_table(gen, spec)
  assert table.shape == (4, gen.action_spec.size)
  assert float(jnp.abs(table).max()) > 0.1
  labels, rng = jnp.arange(4, dtype=jnp.int32), jax.random.key(3)
  want = rollout.rollout(tuned_gen, params, labels, rng, keep_obs=False)
  got = rollout.rollout(gen, params, labels, rng, rollout.table_act(table),
                        keep_obs=False)
  np.testing.assert_allclose(got.actions, want.actions, atol=1e-5)
  np.testing.assert_array_equal(got.images, want.images)
  # policy.table_init=tuned: an untrained step-bias policy whose table starts
  # at the offset (its network's output is exactly 0) samples the same.
  agent = policy.make_agent(gen.action_spec.size, 4, hidden_size=16,
                            step_bias=True)
  agent_params = agent.init(jax.random.key(0), gen.obs_shape)
  agent_params = policy.set_table(agent_params, table)
  act = agent.make_act_fn(agent_params, jnp.float32(0.6), explore=False,
                          with_value=False)
  got = rollout.rollout(gen, params, labels, rng, act, keep_obs=False)
  np.testing.assert_allclose(got.actions, want.actions, atol=1e-5)
  plain = policy.make_agent(gen.action_spec.size, 4, hidden_size=16)
  with pytest.raises(ValueError, match='no per-step table'):
    policy.set_table(plain.init(jax.random.key(0), gen.obs_shape), table)
  # No tuned schedule ships at T=16: no 'tuned' row.
  config.generator = shipped.fmnist_maskgit_generator(16)
  assert train._tuned_spec(config, gen) is None  # pylint: disable=protected-access


def test_every_shipped_policy_loads_against_its_generator():
  """Each adagen_jax/assets/policies/fmnist_GEN_TSTEPS_KIND folder loads
  for the generator and step count its name says (the export records the
  generator's identity, so a stale asset fails here)."""
  import os  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  from adagen_jax import generators  # pylint: disable=g-import-not-at-top
  from adagen_jax.rl import export  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.dirname(export.__file__), '..', 'assets',
                      'policies')
  names = sorted(os.listdir(root))
  assert len(names) >= 12
  for name in names:
    m = re.fullmatch(r'fmnist_(\w+)_T(\d+)_(adagen|nonadaptive)', name)
    assert m, name
    gen, _ = generators.build(shipped.fmnist_generator(m[1], int(m[2])))
    agent, params, card = export.load(m[3], gen)
    assert card['num_steps'] == gen.num_steps, name
    obs = jnp.zeros((1,) + tuple(gen.obs_shape))
    assert agent.mean(params, obs, jnp.int32(0)).shape == (
        1, gen.action_spec.size), name


def test_every_shipped_tuned_schedule_matches_its_generator():
  """Each adagen_jax/assets/tuned/fmnist_GEN_TSTEPS.json was tuned on the
  shipped weights of its generator (a stale file fails here, not at a
  user's --policy=tuned)."""
  import os  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  from adagen_jax import sample  # pylint: disable=g-import-not-at-top
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  root = assets.asset_path('tuned')
  names = sorted(os.listdir(root))
  assert len(names) >= 9
  for name in names:
    m = re.fullmatch(r'fmnist_(\w+)_T(\d+)\.json', name)
    assert m, name
    section = shipped.fmnist_generator(m[1], int(m[2]))
    with open(os.path.join(root, name)) as f:
      best = json.load(f)['best']
    tuned = sample.tuned_section(section)  # raises on a digest mismatch
    assert {k: tuned[k] for k in best} == best, name
