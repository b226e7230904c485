"""CE-GPPO: gradient-preserving clipping with two coefficients.

PPO's clip discards the gradient of tokens outside the trust region. CE-GPPO
keeps a bounded, scaled gradient for them: β₁ on the "negative advantage, low
ratio" side (pushes toward exploitation) and β₂ on the "positive advantage,
high ratio" side (pushes toward exploration). Spec: ``methods_rlvr.md`` §9
(code: Kwai-Klear/CE-GPPO ``compute_gppo_loss_general_beta``).

Reference: Su et al. 2025, "CE-GPPO: Controlling Entropy via
Gradient-Preserving Clipping Policy Optimization in Reinforcement Learning",
https://arxiv.org/abs/2509.20712.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import types

sg = jax.lax.stop_gradient


def ce_gppo(beta_low: float = 0.75, beta_high: float = 1.0, *,
            reference_values: bool = True) -> types.EntropyTransform:
  r"""CE-GPPO's gradient-preserving clip, through the :class:`Clip` fields.

  With ``low = (ρ < 1 − ε_l) ∧ (A < 0)`` and ``high = (ρ > 1 + ε_h) ∧ (A > 0)``
  the per-token loss is::

      low:   −β₁·(1 − ε_l)·(ρ/sg(ρ))·A
      high:  −β₂·(1 + ε_h)·(ρ/sg(ρ))·A
      else:  −ρ·A,            then min(·, −c·A) for A < 0 (dual clip)

  i.e. ``grad_low = value_low = β₁`` and ``grad_high = value_high = β₂``: the
  forward value of a clipped token is ``−β(1 ± ε)A`` and its gradient with
  respect to ℓ is ``−β(1 ± ε)A`` (0 in PPO). With ``reference_values=False``
  only the gradient is scaled and clipped tokens keep PPO's value
  ``−(1 ± ε)A``; ``ce_gppo(0, 0, reference_values=False)`` is then the
  identity (with the reference values, β = 0 has PPO's gradients but zero
  values on clipped tokens).

  The transform overwrites the four fields for every token (ε and the dual
  clip stay the objective's). Reference recipe (:func:`ce_gppo_objective`):
  β₁ = 0.75 (7B) / 0.5 (1.5B), β₂ = 1, ε = 0.2, dual clip 10, token-mean.

  Args:
    beta_low: β₁, the coefficient of the low-ratio, negative-advantage side.
    beta_high: β₂, the coefficient of the high-ratio, positive-advantage side.
    reference_values: also set the forward value to β (the reference); False
      keeps PPO's forward value.

  Returns:
    An :class:`EntropyTransform` writing ``clip``; metrics
    ``ce_gppo_low_frac`` and ``ce_gppo_high_frac`` (fractions of valid tokens
    whose clipped gradient is preserved).

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
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.ce_gppo(0.75, 1.0)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['ce_gppo_low_frac']:.4f}")
    0.2000
    >>> print(f"{metrics['ce_gppo_high_frac']:.4f}")
    0.2000
  """
  if beta_low < 0 or beta_high < 0:
    raise ValueError(f"ce_gppo needs beta_low, beta_high >= 0, got "
                     f"beta_low={beta_low}, beta_high={beta_high}")

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    c = batch.clip
    full = lambda x, v: jnp.full_like(x, v)
    c = c._replace(grad_low=full(c.grad_low, beta_low),
                   grad_high=full(c.grad_high, beta_high))
    if reference_values:
      c = c._replace(value_low=full(c.value_low, beta_low),
                     value_high=full(c.value_high, beta_high))
    ratio = jnp.exp(jnp.clip(sg(batch.logp) - batch.old_logp,
                             -objectives_lib.LOG_RATIO_CLAMP,
                             objectives_lib.LOG_RATIO_CLAMP))
    a = batch.advantages
    low = (a < 0) & (ratio < 1.0 - c.eps_low)
    high = (a > 0) & (ratio > 1.0 + c.eps_high)
    batch = ops.add_metrics(batch,
                            ce_gppo_low_frac=ops.masked_mean(low, batch.mask),
                            ce_gppo_high_frac=ops.masked_mean(high, batch.mask))
    return batch._replace(clip=c), state

  return types.EntropyTransform(types.init_empty_state, update)


def ce_gppo_objective(eps: float = 0.2, dual_c: float | None = 10.0,
                      agg: str = "token-mean") -> objectives_lib.Objective:
  """The surrogate of the CE-GPPO recipe: PPO clip ε, dual clip 10, TM.

  Args:
    eps: ε_l = ε_h.
    dual_c: the dual-clip constant (None: off).
    agg: aggregation mode.

  Returns:
    An :class:`~entropy_rl.Objective`.
  """
  return objectives_lib.ppo_clip(eps, eps, dual_c, agg)._replace(
      name="ce_gppo")
