"""EGSW: entropy-guided sequence weighting.

Reference: "Entropy-Guided Sequence Weighting for Efficient Exploration in
RL-Based LLM Fine-Tuning", https://arxiv.org/abs/2503.22456 (spec §12; no code
was released, the weight formula is from the paper's summary).

Step-wise weights, normalised over the members j of a group that are active
at the same step t::

    w_raw[i,t] = exp((A[i,t] + α·H°[i,t]) / P)
    w[i,t]     = n_t · w_raw[i,t] / Σ_{j∈G(i), m[j,t]=1} w_raw[j,t]

``n_t`` (the number of active members) rescales the softmax so that uniform
weights are 1 and the GRPO mean over the group becomes the paper's weighted
sum (``rescale=True``, the default; ``False`` gives the raw softmax of the
summary).

Trajectory-wise (``mode="trajectory"``): **one weight per sequence**, the
paper's "temperature-scaled softmax weighting over sequences" with the
sequence-mean entropy H̄_i and the sequence advantage Ā_i (spec §12 (c))::

    w_i = n_G · exp((Ā_i + α·H̄_i)/P) / Σ_{j∈G(i)} exp((Ā_j + α·H̄_j)/P)

normalised once over the group's sequences (n_G: sequences with a valid
token) and put on every token of sequence i, so a row's weight does not
change when a shorter row of its group ends. No author code was released,
so there is no other reading to keep. Weights are stop-gradient and
multiply the surrogate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
EGSW_MODES = ("step", "trajectory")


def egsw_weights(advantages: Array, entropy: Array, mask: Array,
                 group_ids: Array, *, alpha: float, temperature: float,
                 mode: str = "step", rescale: bool = True) -> Array:
  """EGSW weights [B, T] (0 on padding); see the module docstring."""
  if mode not in EGSW_MODES:
    raise ValueError(f"unknown EGSW mode {mode!r}; valid: "
                     f"{', '.join(EGSW_MODES)}")
  m = mask.astype(jnp.float32)
  ids = adv_lib.dense_group_ids(group_ids)
  g = ids.shape[0]
  if mode == "trajectory":
    # One softmax over the group's sequences: a [B, 1] problem.
    n = m.sum(-1, keepdims=True)
    h = (entropy * m).sum(-1, keepdims=True) / jnp.maximum(n, 1.0)
    a = (advantages * m).sum(-1, keepdims=True) / jnp.maximum(n, 1.0)
    w = egsw_weights(a, h, (n > 0).astype(jnp.float32), group_ids,
                     alpha=alpha, temperature=temperature, mode="step",
                     rescale=rescale)
    return jnp.where(m > 0, w, 0.0)
  score = (advantages + alpha * entropy) / temperature
  score = jnp.where(m > 0, score, -jnp.inf)
  top = jax.ops.segment_max(score, ids, num_segments=g)  # [G, T]
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  e = jnp.where(m > 0, jnp.exp(score - top[ids]), 0.0)
  denom = jax.ops.segment_sum(e, ids, num_segments=g)[ids]
  count = jax.ops.segment_sum(m, ids, num_segments=g)[ids]
  w = e / jnp.maximum(denom, 1e-30)
  if rescale:
    w = w * count
  return jnp.where(m > 0, w, 0.0)


def egsw(alpha: float = 0.5, temperature: float = 1.0, *,
         mode: str = "step", rescale: bool = True) -> types.EntropyTransform:
  """Entropy-guided sequence weighting (Vanlioglu 2025).

  Args:
    alpha: α, the entropy bonus inside the weight (0 and ``temperature=inf``
      is the identity).
    temperature: P, the softmax temperature.
    mode: ``"step"`` (per token position, normalised over the group members
      active at that position) or ``"trajectory"`` (one weight per
      sequence, normalised over the group's sequences; see the module).
    rescale: multiply by the number of active group members (see module).

  Returns:
    An :class:`EntropyTransform` writing ``weights`` from ``advantages``,
    ``old_entropy`` and ``group_ids``.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     old_entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.egsw()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['egsw_w_mean']:.4f}")
    1.0000
    >>> print(f"{metrics['egsw_w_max']:.4f}")
    1.7283
  """
  if mode not in EGSW_MODES:
    raise ValueError(f"unknown EGSW mode {mode!r}; valid: "
                     f"{', '.join(EGSW_MODES)}")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if math.isinf(temperature) and alpha == 0.0:
      return batch, state
    h = batch.old_entropy
    w = egsw_weights(batch.advantages, h, batch.mask, batch.group_ids,
                     alpha=alpha, temperature=temperature, mode=mode,
                     rescale=rescale)
    w = jax.lax.stop_gradient(w)
    batch = batch._replace(weights=batch.weights * w)
    return ops.add_metrics(batch, egsw_w_mean=ops.masked_mean(w, batch.mask),
                           egsw_w_max=ops.masked_max(w, batch.mask)), state

  return types.EntropyTransform(
      types.init_empty_state, update,
      needs=types.Needs(frozenset({"old_entropy", "group_ids"})))
