"""Worked examples of user code plugged into adagen_jax (not installed).

Run from the repository root so `python -m adagen_jax.main` can import them
(`config.generator.name='examples.iterative_refiner'`).
"""
