"""adagen_jax: learned adaptive generation policies for iterative generators."""

__version__ = '0.1.0'
