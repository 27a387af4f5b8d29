"""Defaults shared by every AdaGen experiment config (configs/*.py).

A config file builds its `generator` section and calls `adagen_config`, which
adds the policy, PPO, reward, evaluation and bookkeeping sections with the
reference's values (adagen_reference.md §1-3) and applies the `:ARG` string:
`runlocal` shrinks everything for a laptop / CI, `key=value` pairs override.
"""

import ml_collections

from adagen_jax import errors


def parse_arg(arg: str | None) -> dict:
  """':runlocal,steps=4' -> {'runlocal': True, 'steps': '4'}."""
  out = {}
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    out[key.strip()] = value.strip() if value else True
  return out


def adagen_config(generator: ml_collections.ConfigDict,
                  arg: str | None = None,
                  overrides: dict | None = None) -> ml_collections.ConfigDict:
  """The full experiment config around a generator section.

  Args:
    generator: the `config.generator` section.
    arg: the `:ARG` string of --config=FILE:ARG.
    overrides: the experiment's own values ({'ppo': {'epochs': 3}, ...}),
      applied before `arg`, so `:runlocal` still shrinks the experiment.
  """
  args = parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.generator = generator
  if 'steps' in args:
    c.generator.steps = int(args['steps'])

  c.data = ml_collections.ConfigDict(dict(name='fashion_mnist', path=''))

  # Policy and critic: the reference's PolicyNet (hidden 512) or the
  # learnable non-adaptive table of the ablation.
  c.policy = ml_collections.ConfigDict(dict(
      kind='adaptive',  # 'adaptive' | 'nonadaptive'
      hidden=512,
      # Adaptive only: mean = per-step table + network (rl/policy.py
      # StepBiasPolicy), so it holds the non-adaptive policy; not in the
      # reference (whose published actors load with False).
      step_bias=False,
      # Where the per-step table starts (non-adaptive, or step_bias):
      # 'heuristic' (zeros: the reference constants) or 'tuned' (the shipped
      # tuned hand-crafted schedule, assets/tuned; the policy then has to
      # beat the best constant schedule the grid found, not only find it).
      table_init='heuristic',
      # Exploration std in pre-activation space: init, then minus decay_rate
      # at each of decay_steps iterations, floored (reference: 0.6, 0.3, 500).
      std_init=0.6, std_decay_rate=0.3, std_decay_steps=(500,), std_min=0.1,
  ))

  c.ppo = ml_collections.ConfigDict(dict(
      trajectories=4096,      # global, per iteration
      rollout_batch=512,      # global batch of one rollout call
      epochs=5,
      num_minibatches=1,      # 1 = full batch, as the reference
      # Gradient accumulation inside each step: the same update with
      # 1/micro_batches of the activations (fits MaskGIT-L's full batch on
      # one 80 GB GPU; benchmarks/compiled_programs.py).
      micro_batches=1,
      learning_rate=1e-5,
      # Adam rate of the per-step action tables (non-adaptive policy,
      # policy.step_bias); None: learning_rate (ppo.create_train_state).
      table_learning_rate=ml_collections.config_dict.placeholder(float),
      clip_eps=0.2,
      vf_coef=0.5,
      # G > 1: rollouts in groups of G trajectories from one initial noise
      # and label, the group's mean return as the advantage's baseline
      # instead of the critic (ppo.make_batch); 1: the reference.
      group_size=1,
      # Weight of KL(policy || the policy at iteration 0), a penalty on
      # every move away from where the run started (ppo.PPOConfig.kl_coef);
      # 0: none, as the reference.
      kl_coef=0.0,
      obs_dtype='bfloat16',   # stored rollout observations
  ))

  # Terminal reward (adagen_reference.md §3): the projected discriminator on
  # a frozen backbone that is never the evaluation network.
  c.reward = ml_collections.ConfigDict(dict(
      name='adversarial',     # 'adversarial' | 'fd' | 'static'
      # 'fmnist' (shipped DiscBackbone) | 'fmnist_contrast' (ContrastNet,
      # self-supervised; no classifier, so no static term) | 'fmnist_resnet'
      # (the same residual CNN trained with labels) | 'dino_vits16' |
      # 'featurenet_diagnostic'
      # (the evaluation network: a diagnostic of the RL machinery's ceiling,
      # rewards/DIAGNOSTIC_BACKBONE; never a result)
      backbone='fmnist',
      backbone_weights='',    # the DINO .pth for 'dino_vits16'
      loss='bce',             # 'bce' | 'hinge'
      d_steps=5,              # discriminator steps per PPO iteration
      d_batch=512,            # global real (and fake) images per D step
      # True: every D step rolls out fresh fakes from the updated policy (the
      # reference); False: D trains on this iteration's PPO rollouts, which
      # halves the cost of an iteration on small machines.
      fresh_fakes=True,
      lr=1e-4, b1=0.5, b2=0.999,
      p_crop=0.5,
      crop_size=28,           # backbone input side (224 for DINO)
      crop_pad=2,             # translate-crop padding for 28-pixel images
      mapping_layers=8,
      virtual_bs=8,
      # True: real images pass through the generator's tokenizer (encode,
      # decode) before the reward sees them, so the discriminator compares
      # like with like and cannot score the tokenizer's artefacts, which no
      # policy can remove. MaskGIT only; not in the reference.
      real_reconstructed=False,
      # FD reward: real batches folded into its statistics before the first
      # iteration (train.Trainer.warm_reward), so early rewards are not
      # scored against the covariance of a single batch.
      fd_init_batches=40,
      # FD reward: which of the backbone's feature sets it compares (0 = the
      # embedded tokens, k = block k's output, -1 = the last block). The
      # last block of a classifier keeps mostly what names the class; a
      # middle block keeps more of the texture and shape that FD measures
      # (docs/experiments/flow_T4_reward_backbones.md).
      feature_index=-1,
      # FD reward: > 0 compares the joint distribution of (features, class
      # label), each sample's one-hot label scaled by label_scale appended
      # to its features, so a sample drawn towards another class's features
      # is penalised. In feature units: ~0.5-1x sqrt(trace) of the real
      # features' covariance (DiscBackbone's last block: 22). 0 = marginal.
      label_scale=0.0,
      # adversarial / fd: plus static_weight x the reward backbone's
      # confidence in the target class, each standardised over the batch
      # (rewards.ConfidenceBonus; the paper adds an image-quality score to
      # its fidelity reward). 0 = the base reward alone.
      static_weight=0.0,
      # The classifier of that term: '' = the reward backbone; 'fmnist' =
      # DiscBackbone (needed with fmnist_contrast, which has no classifier).
      static_backbone='',
      # FD reward: further FD members 'backbone:feature_index,...' (e.g.
      # 'fmnist_resnet:-1'); the reward is then the mean of every member's
      # FD gain, each standardised over the batch (rewards.FDEnsemble), so
      # no single proxy's blind spot steers the policy. '' = one FD.
      ensemble='',
  ))

  c.num_iterations = 1000
  c.log_every = 1
  c.eval_every = 50           # iterations; 0 disables periodic evaluation
  c.eval_num = 5000           # samples of a periodic FD-FMNIST evaluation
  c.final_eval_num = 10000   # 0 skips it (evaluate offline instead)
  c.checkpoint_every = 10
  c.keep_checkpoints = 3
  c.plots_every = 50
  c.update_from_flattened_dict(_flatten(overrides or {}))

  if args.pop('cpu', False):
    c.update_from_flattened_dict(_flatten(CPU_RL))
  if args.pop('runlocal', False):
    c.policy.hidden = 64
    c.ppo.update(trajectories=256, rollout_batch=256, learning_rate=1e-4)
    c.reward.update(d_steps=1, d_batch=256, fresh_fakes=False)
    c.num_iterations = 4
    c.eval_every = 2
    c.eval_num = 1000
    c.final_eval_num = 2000
    c.checkpoint_every = 2
    c.plots_every = 2
  args.pop('steps', None)
  if args:
    raise errors.UserError(f'unknown config argument(s) {sorted(args)} after '
                           "':'; known: cpu, runlocal, steps=T")
  return c


def _flatten(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def use_imagenet(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ImageNet data and the reference's reward backbone (DINO ViT-S/16)."""
  c.data.name = 'imagenet2012'
  c.reward.update(backbone='dino_vits16',
                  backbone_weights='weights/dino_deitsmall16_pretrain.pth',
                  crop_size=224, crop_pad=0)
  return c


# The RL settings of a 2-core CPU run (adagen_jax/configs/default.py says
# why); shared by the embedded default and the Fashion-MNIST configs.
CPU_RL = dict(
    policy=dict(hidden=64, std_decay_steps=(40,)),
    ppo=dict(trajectories=256, rollout_batch=256, learning_rate=3e-4,
             obs_dtype='float32'),
    reward=dict(d_steps=1, d_batch=256, fresh_fakes=False, mapping_layers=2),
    num_iterations=60, eval_every=0, final_eval_num=5000,
    checkpoint_every=10, plots_every=20)

# The 2-core CPU recipe that moves the schedule within CPU_RL's budget
# (docs/experiments/issue19_diagnostics.md): the FD reward on the reward
# backbone, which ranks samples as the evaluation does where the
# adversarial reward does not, and a per-step action table beside the
# policy network at its own Adam rate: 60 iterations at PPO's 3e-4 move an
# action by at most ~0.1 raw units, at 0.03 by whole units.
CPU_FD_TABLE = {**CPU_RL, 'reward.name': 'fd', 'policy.step_bias': True,
                'ppo.table_learning_rate': 0.03}

# CPU_FD_TABLE started at the shipped tuned schedule (a local optimum of
# the constants, chosen by FeatureNet's FD on sampling seed 100, never an
# evaluation seed), with rollouts in groups of 4 from one noise and the
# group's mean reward as the advantage's baseline, the table at a third of
# the rate (so it refines the optimum rather than leaving it), and the FD
# on DiscBackbone's block 3, whose action gradient agrees best with the
# evaluation's (docs/RESULTS.md, "Fashion-MNIST MaskGIT: AdaGen at T=4
# and T=8"). The MaskGIT's from-tuned recipe and the embedded default's.
CPU_FD_FROM_TUNED = {**CPU_FD_TABLE, 'ppo.group_size': 4,
                     'policy.table_init': 'tuned',
                     'ppo.table_learning_rate': 0.01,
                     'reward.feature_index': 3}

# CPU_FD_TABLE with the reward that moves the flows' schedules furthest
# (docs/experiments/flow_T4_reward_backbones.md): FD on the first feature
# set of ContrastNet (self-supervised, full resolution: DiscBackbone's FD
# ranks samples like FeatureNet but pushes the actions elsewhere). The
# DiT's recipe.
CPU_FD_CONTRAST = {**CPU_FD_TABLE, 'reward.backbone': 'fmnist_contrast',
                   'reward.feature_index': 0}

# The same plus DiscBackbone's class confidence at equal weight: on the
# SiT, ContrastNet's FD alone lowers guidance until label accuracy falls by
# 0.03; the confidence term keeps it within 0.02 and lowers FD further. On
# the DiT it costs diversity (recall) and FD. The SiT's and the default's.
CPU_FD_CONTRAST_CONF = {**CPU_FD_CONTRAST, 'reward.static_weight': 1.0,
                        'reward.static_backbone': 'fmnist'}
