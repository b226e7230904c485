"""The core of entropy_rl: batch type, transforms, objectives, statistics.

The core imports only jax, numpy, optax and chex.
"""

__all__ = ()
