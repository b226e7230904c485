"""KL to a reference policy: k1/k2/k3/abs estimators, loss term and reward.

With δ = ℓʳ − ℓ per sampled token (verl ``kl_penalty``):

* k1 (``"kl"``): ℓ − ℓʳ = −δ
* ``"abs"``: |ℓ − ℓʳ|
* k2 (``"mse"``): ½(ℓ − ℓʳ)²
* k3 (``"low_var_kl"``): e^δ − δ − 1, δ clamped to [−20, 20], result to
  [−10, 10].

Reference: Schulman, "Approximating KL Divergence" (2020),
http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array

_ALIASES = {"k1": "kl", "kl": "kl", "abs": "abs", "k2": "mse", "mse": "mse",
            "k3": "low_var_kl", "low_var_kl": "low_var_kl"}
ESTIMATORS = tuple(sorted(_ALIASES))


def _canonical(estimator: str) -> str:
  if estimator not in _ALIASES:
    raise ValueError(f"unknown KL estimator {estimator!r}; valid estimators "
                     f"are {', '.join(ESTIMATORS)}")
  return _ALIASES[estimator]


def kl_estimate(logp: Array, ref_logp: Array, estimator: str = "k3") -> Array:
  """Per-token KL estimate between the current and reference policy.

  Args:
    logp: [B, T] ℓ (current).
    ref_logp: [B, T] ℓʳ (reference).
    estimator: ``k1``/``kl``, ``abs``, ``k2``/``mse``, ``k3``/``low_var_kl``.

  Returns:
    [B, T] estimates.
  """
  kind = _canonical(estimator)
  diff = logp - ref_logp
  if kind == "kl":
    return diff
  if kind == "abs":
    return jnp.abs(diff)
  if kind == "mse":
    return 0.5 * diff ** 2
  delta = jnp.clip(ref_logp - logp, -20.0, 20.0)
  return jnp.clip(jnp.exp(delta) - delta - 1.0, -10.0, 10.0)


def kl_penalty(coef: float | Callable[[Array], Array] = 0.001,
               estimator: str = "k3", *, term: str = "kl"
               ) -> types.EntropyTransform:
  """Adds ``β · agg(k(ℓ, ℓʳ))`` to the loss (GRPO-style ``use_kl_loss``).

  Args:
    coef: β, a float or a schedule ``step -> β``.
    estimator: see :func:`kl_estimate`.
    term: the loss-term name.

  Returns:
    An :class:`EntropyTransform` reading ``batch.ref_logp``.

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
    ...     ref_logp=jnp.log(jnp.array([[0.4, 0.9, 0.5], [0.3, 0.6, 1.0]])),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.kl_penalty(0.1)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['kl_mean']:.4f}")
    0.0547
    >>> print(f"{metrics['terms/kl']:.4f}")
    0.0053
  """
  _canonical(estimator)

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, extra
    if batch.ref_logp is None:
      raise ValueError("kl_penalty needs batch.ref_logp")
    c = coef(step) if callable(coef) else coef
    k = kl_estimate(batch.logp, batch.ref_logp, estimator)
    batch = ops.add_loss_term(batch, term, c * k)
    return ops.add_metrics(batch, **{f"{term}_mean": ops.masked_mean(
        k, batch.mask)}), state

  return types.EntropyTransform(types.init_empty_state, update,
                                needs=types.Needs(frozenset({"ref_logp"})))


def kl_reward(token_rewards: Array, old_logp: Array, ref_logp: Array,
              mask: Array, coef: float, estimator: str = "k1") -> Array:
  """PPO-style KL in the reward: ``r_t ← r_t − β·k(ℓ°, ℓʳ)`` per token.

  Returns:
    [B, T] shaped token rewards (0 on padding).
  """
  k = kl_estimate(old_logp, ref_logp, estimator)
  return jnp.where(mask > 0, token_rewards - coef * k, 0.0)


def kl_in_reward(coef: float = 0.001, estimator: str = "k1"
                 ) -> types.EntropyTransform:
  """A ``prepare`` transform: ``R_i ← R_i − β·Σ_t k(ℓ°, ℓʳ)·m`` per row.

  The outcome-reward form of :func:`kl_reward` (the sum of the per-token
  penalties), to run before an outcome advantage transform.

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
    ...     ref_logp=jnp.log(jnp.array([[0.4, 0.9, 0.5], [0.3, 0.6, 1.0]])),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.kl_in_reward(0.1)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{prep['kl_reward_penalty']:.4f}")
    -0.0255
  """
  _canonical(estimator)

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.ref_logp is None or batch.rewards is None:
      raise ValueError("kl_in_reward needs batch.ref_logp and batch.rewards")
    k = kl_estimate(batch.old_logp, batch.ref_logp, estimator)
    penalty = coef * jnp.sum(jnp.where(batch.mask > 0, k, 0.0), -1)
    batch = ops.add_metrics(batch, kl_reward_penalty=jnp.mean(penalty))
    return batch._replace(rewards=batch.rewards - penalty), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset({"ref_logp", "rewards"})))
