"""entropy_rl: policy optimisation with explicit control of policy entropy."""

import setuptools

_VERSION = "0.1.0"

INSTALL_REQUIRES = [
    "jax>=0.10.0",
    "flax>=0.12.0",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11.0",
    "grain>=0.2.10",
    "sentencepiece>=0.2.0",
    "chex>=0.1.90",
    "ml-collections>=1.0.0",
    "absl-py>=2.1.0",
    "numpy>=1.26",
    "safetensors>=0.4",
    "gguf>=0.10.0",
    "tokenizers>=0.20",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
]

# libtpu (through jax's own "tpu" extra, which pins the libtpu release built
# for the installed jax) lets a CPU-only machine compile programs for named
# TPU slices: experiments/preflight.py and tests/aot_test.py.
_TPU = ["jax[tpu]"]

EXTRAS = {
    "tpu": _TPU,
    "test": _TPU + [
        "pytest>=8.0",
        "pytest-xdist>=3.5",
        "pytest-timeout>=2.3",
        "hypothesis>=6.100",
        # CPU build of torch; the project's machines keep this wheel on disk.
        "torch==2.13.0",
        "transformers>=4.50",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        "reasoning-gym>=0.1.20",
        "math-verify>=0.7",
        "gymnax>=1.0.1",
    ],
    "bench": [
        "torch==2.13.0",
        "transformers>=4.50",
    ],
    "colab": [
        "matplotlib>=3.8",
        "reasoning-gym>=0.1.20",
        "math-verify>=0.7",
        "gymnax>=1.0.1",
    ],
    "tasks": [
        "reasoning-gym>=0.1.20",
        "math-verify>=0.7",
    ],
}

setuptools.setup(
    name="entropy_rl",
    version=_VERSION,
    description=("Composable entropy-control methods for policy optimisation "
                 "in JAX/Flax."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["entropy_rl", "entropy_rl.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
