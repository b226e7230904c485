"""QAE: quantile advantage estimation.

The group baseline is the group's K-quantile reward instead of its mean. For
binary rewards this is a two-regime gate: on hard prompts (success rate
p ≤ 1 − K) only the rare successes are reinforced, on easy prompts only the
remaining failures are penalised, and most responses get A = 0. Spec:
``methods_rlvr.md`` §10 (third-party code plus the abstract; the quantile
definition, the std and K = 0.4 are inferred).

Reference: Wu et al. 2025, "Quantile Advantage Estimation for Entropy-Safe
Reasoning", https://arxiv.org/abs/2509.22611.
"""

from __future__ import annotations

import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import ops
from entropy_rl.core import types


def qae(k: float = 0.4, *, normalize_std: bool = True,
        eps: float = 1e-6) -> types.EntropyTransform:
  r"""A ``prepare`` transform writing QAE advantages.

  Per group G of size n ≥ 2, with the lower empirical quantile
  ``Q_K = inf{r : F̂_G(r) ≥ K}``
  (:func:`~entropy_rl.core.advantages.quantile_baseline`)::

      A_i = (R_i − Q_K) / (σ_G + ε)      (σ_G: unbiased group std, as GRPO)

  broadcast over the row's valid tokens (``normalize_std=False`` drops the
  division, as Dr. GRPO). A singleton group keeps ``A_i = R_i`` (verl).
  For binary rewards with success rate p, ``Q_K = 0`` if p ≤ 1 − K, else 1.
  Replacing ``Q_K`` by the group mean gives GRPO.

  Args:
    k: the quantile level K in (0, 1] (0.4 in the third-party code).
    normalize_std: divide by σ_G + ε.
    eps: ε.

  Returns:
    An :class:`EntropyTransform` reading ``rewards`` and ``group_ids`` and
    writing ``advantages`` [B, T] in ``prepare``. Metrics: ``qae_zero_frac``
    (fraction of rows with A = 0), ``qae_baseline`` (mean Q_K over rows),
    ``adv_mean``, ``adv_abs_mean``.

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
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.qae(k=0.4)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[1.4142 1.4142 1.4142]
     [0.     0.     0.    ]]
  """
  baseline = adv_lib.quantile_baseline(k)

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.rewards is None or batch.group_ids is None:
      raise ValueError("qae needs batch.rewards and batch.group_ids")
    r, g = batch.rewards, batch.group_ids
    adv = adv_lib.grpo(r, g, normalize_std=normalize_std, eps=eps,
                       baseline=baseline)  # [B]
    tok = adv_lib.to_tokens(adv, batch.mask)  # [B, T]
    batch = ops.add_metrics(
        batch, qae_zero_frac=jnp.mean((adv == 0).astype(jnp.float32)),
        qae_baseline=jnp.mean(baseline(r, g, r.shape[0])),
        adv_mean=ops.masked_mean(tok, batch.mask),
        adv_abs_mean=ops.masked_mean(jnp.abs(tok), batch.mask))
    return batch._replace(advantages=tok), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset({"rewards", "group_ids"})))
