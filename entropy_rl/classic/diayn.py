"""DIAYN: Diversity is All You Need (Eysenbach et al., 2018), MI part.

https://arxiv.org/abs/1802.06070 (spec §B5; official ``sac/algos/diayn.py``).
Skills z ~ p(z) = 1/K are sampled once per episode and appended to the
observation; the task reward is replaced by::

    r_z(s) = log q_φ(z|s) − log(p(z) + ε) = log_softmax(D_φ(s))[z] − log(1/K + ε)

recomputed at every critic update from the current discriminator (so it is a
pure function of the replayed observations), on the current observation s
(``disc_on="s"``, the official code) or on s' (``"s_next"``, common
re-implementations). The discriminator minimises the cross-entropy
−E[log q_φ(z|s)]. The policy is SAC with a fixed entropy scale (0.1).
Deviation: our SAC is the twin-Q variant, not the 2018 V-network SAC.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array
DIAYN_EPS = 1e-6
DISC_ON = ("s", "s_next")


def pseudo_reward(logits: Array, skill: Array, num_skills: int,
                  eps: float = DIAYN_EPS) -> Array:
  """r_z = log_softmax(logits)[z] − log(1/K + ε); ≤ log K.

  Args:
    logits: [..., K] discriminator logits.
    skill: [...] int skill index.
    num_skills: K.
    eps: ε inside the log prior.
  """
  logq = jax.nn.log_softmax(logits, -1)
  lz = jnp.take_along_axis(logq, skill[..., None].astype(jnp.int32), -1)
  return lz[..., 0] - math.log(1.0 / num_skills + eps)


def discriminator_loss(logits: Array, skill: Array) -> Array:
  """Batch-mean cross-entropy −E[log q_φ(z|s)]."""
  logq = jax.nn.log_softmax(logits, -1)
  return -jnp.mean(jnp.take_along_axis(
      logq, skill[..., None].astype(jnp.int32), -1))


def discriminator_accuracy(logits: Array, skill: Array) -> Array:
  return jnp.mean((jnp.argmax(logits, -1) == skill).astype(jnp.float32))
