"""Generator registry: `build(config.generator) -> (generator, params)`.

Each paradigm module exposes `build(gen_config)`; the module is picked by
`gen_config.name`, big_vision style, so the RL code never imports a paradigm.
"""

import importlib

from adagen_jax import errors

PARADIGMS = ('maskgit', 'dit', 'sit', 'var', 'toy')


def build(gen_config):
  """Returns (generator, params) for `gen_config.name`."""
  if gen_config.name not in PARADIGMS:
    raise errors.UserError(
        f'config.generator.name={gen_config.name!r} is not a paradigm; use '
        f'one of {", ".join(PARADIGMS)}.')
  try:
    module = importlib.import_module(f'adagen_jax.generators.{gen_config.name}')
  except ModuleNotFoundError as e:
    raise errors.UserError(f'paradigm {gen_config.name!r} is not available in '
                           f'this version ({e.name} missing).') from None
  return module.build(gen_config)
