"""Generator registry: `build(config.generator) -> (generator, params)`.

Each paradigm module exposes `build(gen_config)`; the module is picked by
`gen_config.name`, big_vision style, so the RL code never imports a paradigm.

`gen_config.name` is either a built-in paradigm (PARADIGMS, modules of this
package) or the import path of a user's module that exposes the same
`build(gen_config) -> (generator, params)`, e.g. 'examples.iterative_refiner'
(docs/ADDING_A_GENERATOR.md). A user module must be importable by the
process, e.g. run from the folder that holds it, or installed / on
PYTHONPATH; nothing in this package has to change to add one.
"""

import importlib

import jax

from adagen_jax import errors

PARADIGMS = ('maskgit', 'dit', 'sit', 'var', 'toy')


def _unknown(name: str, why: str) -> errors.UserError:
  return errors.UserError(
      f'config.generator.name={name!r} is not a paradigm '
      f'({", ".join(PARADIGMS)}) nor an importable module with '
      f'build(gen_config) ({why}); use a paradigm or a module path such as '
      'examples.iterative_refiner (docs/ADDING_A_GENERATOR.md).')


def _user_module(name: str):
  """The user's module `name`, or a one-line UserError saying why not."""
  try:
    module = importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name and (name == e.name or name.startswith(e.name + '.')):
      raise _unknown(name, f'no module {e.name!r}') from None
    # The module exists but one of its own imports is missing.
    raise errors.UserError(
        f'config.generator.name={name!r}: the module imports {e.name!r}, '
        'which is not installed.') from None
  except (ImportError, ValueError, TypeError) as e:  # e.g. name='.x'
    raise _unknown(name, f'{type(e).__name__}: {e}') from None
  if not callable(getattr(module, 'build', None)):
    raise _unknown(name, f'module {name!r} has no build')
  return module


def build(gen_config):
  """Returns (generator, params) for `gen_config.name`."""
  name = gen_config.name
  if name not in PARADIGMS:
    if not isinstance(name, str) or not name.strip():
      raise _unknown(name, 'empty' if isinstance(name, str) else 'not text')
    return _user_module(name).build(gen_config)
  try:
    module = importlib.import_module(f'adagen_jax.generators.{name}')
  except ModuleNotFoundError as e:
    raise errors.UserError(f'paradigm {name!r} is not available in '
                           f'this version ({e.name} missing).') from None
  return module.build(gen_config)


def build_abstract(gen_config):
  """(generator, params as jax.ShapeDtypeStruct), reading no weight file.

  The parameters are the shapes of a random initialisation traced by
  `jax.eval_shape`: nothing is allocated, so a laptop can lower and compile
  a full-size program (`jit(f).lower(...).compile()`) and read XLA's cost
  and memory analysis before any weights are downloaded
  (benchmarks/compiled_programs.py). Needs a paradigm that accepts
  `random_init` (all built-in ones but the toy).
  """
  gen_config = gen_config.copy_and_resolve_references()
  gen_config.random_init = True
  built = {}

  def init():
    built['generator'], params = build(gen_config)
    return params

  params = jax.eval_shape(init)
  return built['generator'], params
