"""Entropy bonus and the adaptive (target-entropy) entropy coefficient.

* :func:`entropy_bonus`: ``loss ← loss − c_H · agg(H_θ, m)`` with gradient
  through the current full-vocabulary entropy (verl ``entropy_coeff``;
  Williams & Peng 1991; Mnih et al. 2016, https://arxiv.org/abs/1602.01783).
* :func:`adaptive_entropy`: the same term with a coefficient carried in
  state and moved toward a target entropy once per RL step,
  ``c ← clip(c + lr · (H* − H̄_old), c_min, c_max)`` (additive, Skywork-OR1
  style, https://arxiv.org/abs/2505.22312) or, with ``mode="log"``, SAC's
  dual update in log space ``log c ← log c + lr · (H* − H̄_old)``
  (Haarnoja et al. 2018, https://arxiv.org/abs/1812.05905).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
ADAPTIVE_MODES = ("additive", "log")


def entropy_bonus(coef: float | Callable[[Array], Array] = 0.0, *,
                  term: str = "entropy_bonus") -> types.EntropyTransform:
  """Entropy bonus ``−c_H · H_θ`` as a [B, T] loss term.

  The term is aggregated like the surrogate (the objective's mode), with
  gradient through ``batch.entropy``. Coefficient 0 is the identity.

  Args:
    coef: c_H, a float or a schedule ``step -> c_H`` (e.g. an optax schedule).
    term: the loss-term name.

  Returns:
    An :class:`EntropyTransform` reading ``batch.entropy``.

  Examples:
    The term is ``−c`` times the objective's aggregate of H (GRPO: the mean over
    rows of the per-row token mean, ``(3.5/3 + 2.3/2)/2 = 1.1583``).

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.entropy_bonus(0.01)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['terms/entropy_bonus']:.4f}")
    -0.0116
  """

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, extra
    if batch.entropy is None:
      raise ValueError("entropy_bonus needs batch.entropy (current policy)")
    c = coef(step) if callable(coef) else coef
    batch = ops.add_loss_term(batch, term, -c * batch.entropy)
    return ops.add_metrics(batch, entropy_coef=jnp.asarray(c)), state

  return types.EntropyTransform(types.init_empty_state, update,
                                needs=types.Needs(frozenset({"entropy"})))


class AdaptiveEntropyState(NamedTuple):
  coef: Array  # () float32, the current c_H
  count: Array  # () int32, number of controller updates


def adaptive_entropy(target: float, *, init_coef: float = 0.0,
                     lr: float = 0.005, min_coef: float = 0.0,
                     max_coef: float = 0.05, mode: str = "additive",
                     term: str = "adaptive_entropy"
                     ) -> types.EntropyTransform:
  """Entropy bonus whose coefficient is driven toward a target entropy.

  ``prepare`` (once per RL step, on the rollout batch) measures the old
  policy's token-mean entropy H̄ and moves the coefficient::

      additive: c ← clip(c + lr · (H* − H̄), c_min, c_max)
      log:      c ← clip(exp(log c + lr · (H* − H̄)), c_min, c_max)

  ``update`` adds ``−c · H_θ`` like :func:`entropy_bonus`. With
  ``lr = 0`` and ``init_coef = 0`` it is the identity.

  Args:
    target: H*, the target token entropy (nats).
    init_coef: the initial coefficient.
    lr: controller step size.
    min_coef: lower clamp.
    max_coef: upper clamp.
    mode: ``"additive"`` or ``"log"``.
    term: loss-term name.

  Returns:
    An :class:`EntropyTransform` with state :class:`AdaptiveEntropyState`.

  Examples:
    The mean entropy of the valid tokens, 1.16, is above the target 1.0, so the coefficient falls by
    ``lr · 0.16``: ``0.01 − 0.005 · 0.16``.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.adaptive_entropy(target=1.0, init_coef=0.01)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{prep['entropy_coef']:.4f}")
    0.0092
  """
  if mode not in ADAPTIVE_MODES:
    raise ValueError(f"unknown adaptive_entropy mode {mode!r}; valid modes "
                     f"are {', '.join(ADAPTIVE_MODES)}")
  if min_coef > max_coef:
    raise ValueError(f"min_coef={min_coef} > max_coef={max_coef}")
  if mode == "log" and init_coef <= 0:
    raise ValueError("mode='log' needs init_coef > 0")

  def init(params=None):
    del params
    return AdaptiveEntropyState(jnp.asarray(init_coef, jnp.float32),
                                jnp.zeros((), jnp.int32))

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    ent = batch.old_entropy if batch.old_entropy is not None else batch.entropy
    if ent is None:
      raise ValueError("adaptive_entropy needs batch.old_entropy")
    h = ops.masked_mean(ent, batch.mask)
    if mode == "additive":
      c = state.coef + lr * (target - h)
    else:
      c = jnp.exp(jnp.log(state.coef) + lr * (target - h))
    c = jnp.clip(c, min_coef, max_coef)
    batch = ops.add_metrics(batch, entropy_coef=c, entropy_gap=target - h)
    return batch, AdaptiveEntropyState(c.astype(jnp.float32), state.count + 1)

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.entropy is None:
      raise ValueError("adaptive_entropy needs batch.entropy")
    batch = ops.add_loss_term(batch, term, -state.coef * batch.entropy)
    return ops.add_metrics(batch, entropy_coef=state.coef), state

  return types.EntropyTransform(init, update, prepare,
                                types.Needs(frozenset({"entropy"})))
