"""adagen_jax: adaptive generation policies (AdaGen) for iterative generators."""
import setuptools

setuptools.setup(
    name='adagen_jax',
    version='0.1.0',
    description=('Learned per-sample generation policies (AdaGen) for MaskGIT, '
                 'VAR, DiT and SiT in JAX/Flax.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['adagen_jax', 'adagen_jax.*']),
    package_data={'adagen_jax': ['assets/*.msgpack', 'assets/*.json',
                                 'assets/policies/**/*', 'assets/*.npz',
                                 'assets/tuned/*.json']},
    include_package_data=True,
    install_requires=[
        'jax>=0.10.2',
        'flax>=0.12.8',
        'optax>=0.2.5',
        'orbax-checkpoint>=0.12.8',
        'chex>=0.1.90',
        'ml_collections>=1.1.0',
        'clu>=0.0.12',
        'tensorflow-datasets>=4.9.9',
        'grain>=0.2.12',
        'array_record>=0.8.1',
        'etils[epath]',
        'absl-py',
        'numpy',
        'pillow',
        'matplotlib',
        'tensorboardX',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist', 'portpicker'],
        # Only for reading published PyTorch checkpoints (weights_only=True).
        'torch': ['torch>=2.4,<=2.14.1'],
        # Dataset preparation and clu's TensorBoard writers.
        'tf': ['tensorflow-cpu'],
        'gcs': ['gcsfs'],
    },
)
