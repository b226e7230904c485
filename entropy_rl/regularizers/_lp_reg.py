"""Lp-Reg: low-probability regularisation toward a min-p proxy policy.

A denoised proxy of the old policy keeps the tokens with ``p_v ≥ κ·p_max``
(min-p) and renormalises. On the lowest-probability negative-advantage tokens
that the proxy still considers plausible ("reasoning sparks"), the clipped
surrogate is replaced by the unclipped one and the policy is pulled toward the
proxy with a k3 KL term. Spec: ``methods_rlvr.md`` §8 (code:
CarlanLark/Lp-Reg-dev ``compute_policy_loss_lp_reg``).

Reference: Huang et al. 2025, "Low-probability Tokens Sustain Exploration in
Reinforcement Learning with Verifiable Reward",
https://arxiv.org/abs/2510.03222.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from entropy_rl.core import kl as kl_lib
from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import reductions
from entropy_rl.core import types

Array = types.Array
sg = jax.lax.stop_gradient
INF = math.inf
PROXY_FILL = -1e4  # logit of filtered tokens (the reference's minp_soft=False)


def proxy_reduction(kappa: float, relative: bool = True) -> types.RowReduction:
  """The min-p proxy reduction of the old-policy pass.

  A value (`entropy_rl.core.reductions.MinpLogp`): equal arguments give
  equal reductions, which two transforms may both declare under one name.
  """
  return reductions.minp_logp(kappa, fill=PROXY_FILL, relative=relative)


def _select_lowest(logp: Array, proxy: Array, pool: Array, frac: float,
                   k1_quirk: bool) -> Array:
  """Lp-Reg's selection on one side (𝒩 or 𝒫) of the scope.

  ``k = max(1, ⌊|pool|·frac⌋)`` lowest-ℓ tokens of the pool (none when
  ``frac = 0``, and none when ``k = 1`` under the reference quirk), then only
  those with ``ℓ < ℓᵖ``.
  """
  if frac == 0.0:
    return jnp.zeros(pool.shape, bool)
  k = jnp.maximum(jnp.floor(frac * jnp.sum(pool)), 1.0)
  if k1_quirk:
    k = jnp.where(k > 1.0, k, 0.0)
  lowest = ops.topk_mask(-logp, pool, k, ops.static_k_max(frac, pool.size))
  return lowest & (logp < proxy)


def lp_reg(kappa: float = 0.02, neg_fraction: float = 0.01,
           pos_fraction: float = 0.0, beta: float = 1.0, *,
           relative: bool = True, reference_k1_quirk: bool = True,
           stat_name: str = "minp_logp", term: str = "lp_reg"
           ) -> types.EntropyTransform:
  r"""Lp-Reg, per statistics scope.

  With ℓᵖ the proxy log-prob of the sampled token under the old policy
  (``batch.old_vocab_stats[stat_name]``, declared in ``needs.old_vocab``) and
  𝒩 (𝒫) the valid tokens with A < 0 (A > 0)::

      k⁻  = max(1, ⌊|𝒩|·ρ⁻⌋);  cand⁻ = the k⁻ tokens of 𝒩 with lowest sg(ℓ)
      sel⁻ = cand⁻ ∧ (sg(ℓ) < ℓᵖ)                   (likewise 𝒫 with ρ⁺)
      sel = sel⁻ ∨ sel⁺
      on sel:  ε_l = ε_h = c_dual = ∞   (surrogate −A·ρ)
      loss ← loss + agg(β·k3(ℓ, ℓᵖ)·sel),
      k3 = e^{ℓᵖ−ℓ} − (ℓᵖ − ℓ) − 1   (δ clamped to ±20, k3 to ±10)

  The condition ``ℓ < ℓᵖ`` excludes tokens the proxy filters out (ℓᵖ ≈ −1e4)
  and tokens whose probability the proxy would not raise. Under the
  reference code (``reference_k1_quirk=True``) ``k = 1`` selects nothing, so
  ρ⁻ = 0.01 needs at least 200 negative tokens per scope before anything is
  selected; ``reference_k1_quirk=False`` selects the single lowest token.
  ``neg_fraction = pos_fraction = 0`` is the identity.

  Pair with :func:`lp_reg_objective` (ε 1/9, no dual clip) as the reference
  recipe does: κ = 0.02, ρ⁻ = 0.01 (Qwen3-14B) / 0.005 (Qwen2.5-32B),
  ρ⁺ = 0, β = 1, token-mean, on-policy, statistics per micro-batch.

  Args:
    kappa: κ, the min-p threshold of the proxy (``minp_p_threshold``).
    neg_fraction: ρ⁻, fraction of negative-advantage tokens considered
      (``logp_neg_k_percent``, a fraction despite its name).
    pos_fraction: ρ⁺, the same for positive-advantage tokens.
    beta: β, the KL coefficient (``ppo_kl_coef``).
    relative: κ relative to p_max (default); False is the reference's
      ``regular_type="fixed"`` (p_v ≥ κ).
    reference_k1_quirk: reproduce the reference code's "k = 1 selects
      nothing".
    stat_name: key of the proxy log-prob in ``old_vocab_stats``.
    term: the loss-term name.

  Returns:
    An :class:`EntropyTransform` writing ``clip`` and loss term ``term``;
    metrics ``lp_reg_neg_frac`` / ``lp_reg_pos_frac`` (selected fraction of
    𝒩 / 𝒫) and ``lp_reg_frac`` (of all valid tokens).

  Examples:
    Lp-Reg reads the old policy's min-p proxy log-probabilities, declared as a
    vocabulary reduction of the old-policy pass:

    >>> from entropy_rl import regularizers
    >>> t = regularizers.lp_reg(kappa=0.02)
    >>> t.needs.old_vocab["minp_logp"]
    MinpLogp(kappa=0.02, fill=-10000.0, relative=True)
  """
  for name, v in (("neg_fraction", neg_fraction),
                  ("pos_fraction", pos_fraction)):
    if not 0.0 <= v <= 1.0:
      raise ValueError(f"lp_reg {name} must be in [0, 1], got {v}")
  if beta < 0:
    raise ValueError(f"lp_reg beta must be >= 0, got {beta}")
  reduction = proxy_reduction(float(kappa), bool(relative))
  neutral = neg_fraction == 0.0 and pos_fraction == 0.0

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    stats = batch.old_vocab_stats or {}
    if stat_name not in stats:
      raise ValueError(
          f"lp_reg needs old_vocab_stats[{stat_name!r}], the min-p proxy "
          f"log-prob of the old policy (compute it with "
          f"token_stats.stats_for_needs(..., needs, old=True))")
    valid = batch.mask > 0
    if neutral:
      zero = jnp.zeros((), jnp.float32)
      return ops.add_metrics(batch, lp_reg_neg_frac=zero, lp_reg_pos_frac=zero,
                             lp_reg_frac=zero), state
    proxy = sg(stats[stat_name])  # [B, T]
    lp = sg(batch.logp)
    neg, pos = valid & (batch.advantages < 0), valid & (batch.advantages > 0)
    sel_neg = _select_lowest(lp, proxy, neg, neg_fraction, reference_k1_quirk)
    sel_pos = _select_lowest(lp, proxy, pos, pos_fraction, reference_k1_quirk)
    sel = sel_neg | sel_pos  # [B, T] bool
    c = batch.clip
    clip = c._replace(eps_low=jnp.where(sel, INF, c.eps_low),
                      eps_high=jnp.where(sel, INF, c.eps_high),
                      dual_c=jnp.where(sel, INF, c.dual_c))
    # Unselected tokens compare ℓ with itself: k3 = 0 with a finite gradient.
    target = jnp.where(sel, proxy, lp)
    k3 = kl_lib.kl_estimate(batch.logp, target, "k3")
    batch = ops.add_loss_term(batch._replace(clip=clip), term,
                              beta * jnp.where(sel, k3, 0.0))
    batch = ops.add_metrics(
        batch,
        lp_reg_neg_frac=ops.masked_mean(sel_neg, neg),
        lp_reg_pos_frac=ops.masked_mean(sel_pos, pos),
        lp_reg_frac=ops.masked_mean(sel, valid))
    return batch, state

  return types.EntropyTransform(
      types.init_empty_state, update,
      needs=types.Needs(old_vocab={stat_name: reduction}))


def lp_reg_objective(eps_low: float = 1.0, eps_high: float = 9.0,
                     agg: str = "token-mean") -> objectives_lib.Objective:
  """The surrogate of the Lp-Reg recipe: PPO clip (1, 9), no dual clip, TM.

  ``clip_ratio_low = 1`` and ``clip_ratio_high = 9`` make the clip
  effectively inactive for the unselected tokens.

  Args:
    eps_low: ε_l.
    eps_high: ε_h.
    agg: aggregation mode.

  Returns:
    An :class:`~entropy_rl.Objective`.
  """
  return objectives_lib.ppo_clip(eps_low, eps_high, None, agg)._replace(
      name="lp_reg")
