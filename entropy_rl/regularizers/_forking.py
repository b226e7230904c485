"""Forking-token filter ("80/20"): train only on the highest-entropy tokens.

In chain-of-thought rollouts only a minority of tokens have high entropy; they
act as forks between reasoning paths, and RLVR mostly changes the entropy of
those. Restricting the policy gradient to the top 20% tokens by entropy
matches full-token training on Qwen3-8B and beats it on larger models.

Reference: Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority
Tokens Drive Effective Reinforcement Learning for LLM Reasoning",
https://arxiv.org/abs/2506.01939 (code: Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR,
``get_global_entropy_top_mask`` and ``entropy_top_ratio``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

sg = jax.lax.stop_gradient
CEIL_SLACK = 0.9999  # the reference's ceil: int(N·r + 0.9999)


def forking_tokens(top_fraction: float = 0.2, *, renormalize: bool = False,
                   use_current_entropy: bool = False
                   ) -> types.EntropyTransform:
  r"""Keeps the surrogate of the top ``top_fraction`` tokens by entropy.

  Per statistics scope (the reference ranks the tokens of a micro-batch)::

      k   = max(1, ⌊N_valid·r + 0.9999⌋)         (≈ ⌈N_valid·r⌉)
      sel = top-k valid tokens by H
      weights ← weights · sel                    (renormalize=False)
      weights ← weights · sel · N_valid / k      (renormalize=True)

  Unselected tokens get weight 0 and keep their place in the aggregation's
  denominator. The reference instead drops them from the loss mask, so its
  token-mean loss is divided by k rather than N_valid, a gradient k/N_valid
  ≈ r times ours; ``renormalize=True`` rescales the kept tokens by
  N_valid/k to reproduce that exactly for ``token-mean`` (the recipe's
  mode; for the per-sequence modes it is the same rescaling of the scope,
  not the reference's per-row denominators). Loss terms (entropy bonus, KL)
  are not filtered, as in the reference. Static shapes: ``lax.top_k`` with
  the static bound ``⌊r·B·T⌋ + 1``. ``top_fraction = 1`` is the identity.

  The reference ranks the current forward's entropy (equal to the old one on
  the first mini-batch of an on-policy step); the default here is the
  old-policy entropy, so the selection does not move during the update.

  Args:
    top_fraction: r, the fraction of valid tokens kept (the reference's
      ``entropy_top_ratio``, 0.2 in the paper).
    renormalize: rescale the kept tokens by N_valid/k (the reference's
      token-mean normalisation).
    use_current_entropy: rank ``sg(batch.entropy)`` instead of
      ``batch.old_entropy`` (the reference code).

  Returns:
    An :class:`EntropyTransform` writing ``weights``; metrics
    ``forking_frac`` (kept fraction of valid tokens) and
    ``forking_entropy_threshold`` (smallest kept entropy, 0 if none).

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
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.forking_tokens(0.5)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['forking_frac']:.4f}")
    0.6000
    >>> print(f"{metrics['forking_entropy_threshold']:.4f}")
    1.2000
  """
  if not 0.0 < top_fraction <= 1.0:
    raise ValueError(f"forking_tokens top_fraction must be in (0, 1], got "
                     f"{top_fraction}")
  field = "entropy" if use_current_entropy else "old_entropy"

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    ent = getattr(batch, field)
    if ent is None:
      raise ValueError(f"forking_tokens needs batch.{field}")
    valid = batch.mask > 0
    if top_fraction == 1.0:
      any_valid = jnp.any(valid)
      threshold = jnp.where(any_valid, ops.masked_min(sg(ent), valid), 0.0)
      return ops.add_metrics(batch, forking_frac=any_valid.astype(jnp.float32),
                             forking_entropy_threshold=threshold), state
    ent = sg(ent)
    n_valid = jnp.sum(valid).astype(jnp.float32)
    k = jnp.maximum(jnp.floor(n_valid * top_fraction + CEIL_SLACK), 1.0)
    sel = ops.topk_mask(ent, valid, k,
                        ops.static_k_max(top_fraction, ent.size))  # [B, T]
    w = sel.astype(batch.weights.dtype)
    if renormalize:
      w = w * (n_valid / jnp.maximum(jnp.sum(sel), 1.0))
    batch = batch._replace(weights=batch.weights * w)
    threshold = jnp.where(jnp.any(sel), ops.masked_min(ent, sel), 0.0)
    return ops.add_metrics(batch, forking_frac=ops.masked_mean(sel, valid),
                           forking_entropy_threshold=threshold), state

  return types.EntropyTransform(types.init_empty_state, update,
                                needs=types.Needs(frozenset({field})))
