"""The `config.generator` sections of the shipped Fashion-MNIST generators.

One source of truth for the sizes and hand-crafted sampling constants of
adagen_jax/assets/fmnist_{maskgit,sit,dit,var}.*: the experiment configs
(configs/fmnist_*.py, the embedded default) sample them, and the pretrain
configs (configs/pretrain/) train networks of exactly these sizes.
"""

import ml_collections



def fmnist_maskgit_generator(steps: int = 8) -> ml_collections.ConfigDict:
  """The `config.generator` section of the shipped Fashion-MNIST MaskGIT."""
  return ml_collections.ConfigDict(dict(
      name='maskgit',
      weights='fmnist_maskgit',  # shipped asset (or .msgpack path[s])
      steps=steps,
      schedule='cosine',   # cosine | linear | muse | autonat (T=8)
      smoothing=0.8,
      temp_init=1.0,       # re-mask (Gumbel) temperature scale
      samp_temp_init=1.0,  # token sampling temperature
      cfg_init=1.0,        # guidance w at the end of the ramp
      image_size=28, image_channels=1, num_classes=10,
      # 14x14 tokens of 2x2 pixels (a 7x7 grid of 4x4 pixels cannot
      # reconstruct the strokes: FD 38 against 0.99 for this tokenizer),
      # read by the transformer as 7x7 cells of 2x2 ids (token_group=2),
      # so a step costs what a 7x7 grid does.
      tokens=14, codebook_size=512, token_group=2,
      width=128, depth=4, heads=4, mlp_ratio=4.0,
      tokenizer=dict(filters=32, channel_mult=(1, 2), num_res_blocks=1,
                     embedding_dim=16, norm_groups=32),
      # The guided forward 16 rows per device at a time (base.in_chunks):
      # on 2 cores the T=8 rollout of 256 runs 1.22x faster than with all
      # 512 rows at once (docs/RESULTS.md, Speed). Speed only: the same
      # samples.
      forward_rows=16,
  ))


def fmnist_flow_generator(paradigm: str, steps: int = 4
                          ) -> ml_collections.ConfigDict:
  """The `config.generator` section of the shipped Fashion-MNIST SiT / DiT.

  paradigm: 'sit' or 'dit'; steps: NFE. The sizes and sampling defaults are
  those configs/pretrain/fmnist_flow.py trains and records in
  adagen_jax/assets/fmnist_{paradigm}.json.
  """
  dit = paradigm == 'dit'
  return ml_collections.ConfigDict(dict(
      name=paradigm,
      weights=f'fmnist_{paradigm}',  # shipped asset (or a .msgpack path)
      decoder='pixels',              # pixel space: no VAE
      steps=steps,
      smoothing=0.4 if dit else 0.8,
      cfg_init=1.0 if dit else 1.5,
      solver='dpm2s',
      schedule='reference',
      t_start=0.9 if dit else 0.01,
      # DiT's data end: 0.001 (sigma 0.014, as SiT's 0.99 leaves 0.01), not
      # the latent model's 0.01, whose sigma 0.045 of noise stays in the
      # pixels (50 NFE: FD 16.3 -> 11.2 on seed 100 x 1000).
      t_end=0.001 if dit else None,
      cfg_channels=1,
      # What the network predicts: DiT's v (not the published eps, whose x0
      # error is ~10x at the start time in pixel space;
      # docs/experiments/dit_uniform_t_2026-12.md).
      output='v' if dit else 'velocity',
      model=dict(input_size=28, in_channels=1, patch_size=4, hidden_size=128,
                 depth=6, num_heads=4, mlp_ratio=4.0, num_classes=10,
                 learn_sigma=False),
      dtype='float32',
      # As the MaskGIT's: on 2 cores the 8-NFE rollout of 256 runs 1.14x
      # faster in chunks of 16 rows per device (docs/RESULTS.md, Speed).
      forward_rows=16,
      # DiT: the 2S correction assumes the learned stage point lies at
      # least 0.1 of the step from its start (factor <= 5). Without it one
      # of three 8-NFE training seeds put it next to the start for 96% of
      # samples (factor ~15) and ended at FD 54
      # (docs/experiments/dit_uniform_t_2026-12.md). The
      # hand-crafted grids and the other shipped policies stay below 5,
      # so their samples are unchanged.
      min_stage_ratio=0.1 if dit else 0.0,
  ))


def fmnist_var_generator() -> ml_collections.ConfigDict:
  """The `config.generator` section of the shipped Fashion-MNIST VAR.

  Sizes and the hand-crafted sampler are those configs/pretrain/
  fmnist_var.py trains and records in adagen_jax/assets/fmnist_var.json:
  one step per scale of (1, 2, 3, 4, 5, 7). Sized for the 2-core CPU (that
  config's docstring has the costs): width 128 with 4 heads of 32 keeps
  the transformer step at ~1.4 s of one core for 128 maps of 104 tokens
  (width 192 took 2.3 s), depth 6 spends the budget on a deeper net rather
  than on more steps of a shallower one; 512 codes (9 bits per token, not
  8) give the 7x7 latent more to reconstruct strokes with, at +5% of the
  transformer's cost (its head).
  """
  return ml_collections.ConfigDict(dict(
      name='var',
      steps=6,
      depth=6, width=128, num_heads=4, mlp_ratio=4.0, shared_aln=False,
      attn_l2_norm=True, num_classes=10, patch_nums=(1, 2, 3, 4, 5, 7),
      dtype='float32',
      vae=dict(vocab_size=512, z_channels=16, ch=32, ch_mult=(1, 2, 2),
               num_res_blocks=1, using_sa=False, using_mid_sa=False,
               quant_resi=0.5, share_quant_resi=4, image_channels=1,
               norm_groups=8),
      # VAR's published sampler; top-k at its fraction of the codebook
      # (900 of 4096 -> 112 of 512).
      cfg=1.5, top_k=112.0, top_p=0.96, samp_temp=1.0, smoothing=0.0,
      obs_side=7,
      var_weights='fmnist_var',        # shipped assets (or .msgpack paths)
      vae_weights='fmnist_var_vqvae',
  ))


FMNIST_GENERATORS = ('maskgit', 'sit', 'dit', 'var')


def fmnist_generator(name: str, steps: int) -> ml_collections.ConfigDict:
  """The section of shipped Fashion-MNIST generator `name` at `steps`.

  VAR has one step per scale, so `steps` does not apply to it.
  """
  if name == 'maskgit':
    return fmnist_maskgit_generator(steps)
  if name in ('sit', 'dit'):
    return fmnist_flow_generator(name, steps)
  if name == 'var':
    return fmnist_var_generator()
  raise ValueError(f'unknown Fashion-MNIST generator {name!r}; use one of '
                   f'{FMNIST_GENERATORS}.')
