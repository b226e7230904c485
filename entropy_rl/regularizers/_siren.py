"""SIREN: selective, self-anchored entropy regularisation.

The entropy is regularised only over (i) the top-p nucleus of each next-token
distribution and (ii) the highest-entropy positions of each response, and the
squared deviation of that entropy from its value at the start of training is
penalised (instead of maximising it). Spec: ``methods_rlvr.md`` §4 (code:
Linn3a/siren ``dp_actor.py`` ``efficient_top_p_sampling``,
``mask_by_quantile``, ``update_policy``; ``ray_trainer.py`` for the anchor).

Reference: "Rethinking Entropy Regularization in Large Reasoning Models"
(2025), https://arxiv.org/abs/2509.25133 (code:
https://github.com/Linn3a/siren).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.core import objectives
from entropy_rl.core import ops
from entropy_rl.core import reductions
from entropy_rl.core import types

Array = types.Array
sg = jax.lax.stop_gradient
STAT = "nucleus_entropy"  # key of the nucleus entropy in (old_)vocab_stats


def peak_entropy_mask(h: Array, mask: Array, mask_ratio: float, *,
                      double_mask: bool = False) -> tuple[Array, Array]:
  """SIREN's per-sequence peak-entropy mask.

  ``τ_i = quantile_{mask_ratio}(h[i, valid])`` (linear interpolation along T
  over the row's valid tokens) and ``M[i, t] = 1[h[i, t] > τ_i] · m[i, t]``.
  Rows without valid tokens get an empty mask.

  ``double_mask=True`` reproduces the reference code, which applies the
  mask a second time to the already-zeroed vector ``h' = h·M``:
  ``τ'_i = quantile(h'[i, valid])``, ``M' = 1[h' > τ'_i]``. For h ≥ 0 (an
  entropy) the two agree exactly, ties included (every kept value is
  positive and above the interpolated τ', which lies between 0 and the
  smallest kept value); they differ only for a signed statistic.

  Args:
    h: [B, T] per-token statistic (no gradient is taken through the mask).
    mask: [B, T] 1 on valid tokens.
    mask_ratio: the quantile level in [0, 1] (SIREN: 0.8, the top 20%).
    double_mask: apply the reference's second pass.

  Returns:
    ``(M [B, T] float32, τ [B] float32)``; τ is NaN for an empty row.
  """
  valid = mask > 0
  h = sg(h)

  def once(x):
    tau = jnp.nanquantile(jnp.where(valid, x, jnp.nan), mask_ratio, axis=-1,
                          keepdims=True)  # [B, 1]
    return (x > tau) & valid, tau[:, 0]

  sel, tau = once(h)
  if double_mask:
    sel, tau = once(jnp.where(sel, h, 0.0))
  return sel.astype(jnp.float32), tau


def peak_entropy(h: Array, mask: Array, mask_ratio: float, *,
                 double_mask: bool = False) -> tuple[Array, Array]:
  """``H̄ = SMTM(h, M)`` over the peak-entropy mask, with gradient through h.

  Rows with an empty mask contribute 0 and still count in the mean (SIREN's
  ``agg_loss`` fork).

  Returns:
    ``(H̄ scalar, M [B, T])``.
  """
  sel, _ = peak_entropy_mask(h, mask, mask_ratio, double_mask=double_mask)
  return objectives.aggregate(h, sel, "seq-mean-token-mean"), sel


class SirenState(NamedTuple):
  anchor: Array  # () float32, H_anchor
  ready: Array  # () bool, the anchor has been set


def siren(coef: float = 0.005, p_top: float = 0.8, mask_ratio: float = 0.8,
          *, double_mask: bool = False,
          reduction: types.VocabReduction | None = None,
          term: str = "siren") -> types.EntropyTransform:
  r"""SIREN's self-anchored regulariser ``λ·(H̄ − H_anchor)²`` (scalar term).

  Per token, ``Hᵖ`` is the entropy of the renormalised nucleus: the ranks
  before the one whose cumulative probability crosses ``p_top`` (that token
  is excluded; Hᵖ = 0 when p_max ≥ p_top), computed inside the chunked
  statistics pass by :func:`entropy_rl.core.reductions.nucleus_entropy` and
  read from ``batch.vocab_stats["nucleus_entropy"]`` (current policy, with
  gradient) and ``batch.old_vocab_stats["nucleus_entropy"]`` (old pass).
  Then::

      M[i,t]   = 1[Hᵖ[i,t] > quantile_{mask_ratio}(Hᵖ[i, valid])]   (per row)
      H̄        = SMTM(Hᵖ, M)          (empty rows give 0 and count)
      loss    += λ · (H̄ − H_anchor)²

  ``prepare`` sets ``H_anchor`` once, on the first RL step, from the old
  pass over the whole rollout batch (``SMTM(Hᵖ_old, M_old)``) and keeps it
  fixed afterwards. ``update`` computes H̄ per statistics scope (the
  reference's micro-batch); before an anchor exists the term is 0. The
  gradient is ``2λ(H̄ − H_anchor)·∂H̄/∂Hᵖ``, so entropy is pulled back
  toward its anchor from either side. ``coef = 0`` is the identity.

  The PG part of SIREN is Dr. GRPO (advantages without std:
  ``advantages.grpo_advantages(normalize_std=False)``) with the SIREN
  ``seq-mean-token-sum-norm`` variant: :func:`siren_objective`.

  Reference defaults: λ = 0.005, p_top = 0.8, mask_ratio = 0.8 (top 20%);
  the code streams the top 10,000 logits (``reduction=
  reductions.nucleus_entropy_topk(p_top, 10000)`` reproduces that).
  Deviation: the reference does not intersect its mask with the response
  mask (padding positions above τ count); here M ⊆ valid tokens.

  Args:
    coef: λ.
    p_top: nucleus mass.
    mask_ratio: per-row quantile level of the peak-entropy mask.
    double_mask: apply the mask twice as the reference code does (see
      :func:`peak_entropy_mask`).
    reduction: the vocabulary reduction giving Hᵖ (default: the exact
      bisection :func:`~entropy_rl.core.reductions.nucleus_entropy`).
    term: loss-term name.

  Returns:
    An :class:`EntropyTransform` with state :class:`SirenState`, declaring
    ``nucleus_entropy`` as a current and an old vocabulary reduction.

  Examples:
    The nucleus entropy is a vocabulary reduction the statistics pass computes
    for the current and the old policy; equal settings are one reduction:

    >>> from entropy_rl import regularizers
    >>> t = regularizers.siren(0.005, p_top=0.8)
    >>> t.needs.vocab["nucleus_entropy"]
    NucleusEntropy(p_top=0.8, iters=40)
    >>> t.needs.vocab == regularizers.siren(0.01, p_top=0.8).needs.vocab
    True
  """
  if not 0.0 <= mask_ratio <= 1.0:
    raise ValueError(f"siren: mask_ratio must be in [0, 1], got {mask_ratio}")
  if reduction is None:
    reduction = reductions.nucleus_entropy(p_top)

  def init(params=None):
    del params
    return SirenState(jnp.zeros((), jnp.float32), jnp.zeros((), bool))

  def _stat(stats, which):
    if not stats or STAT not in stats:
      raise ValueError(f"siren needs batch.{which}[{STAT!r}]; compute it with "
                       "token_stats(reductions=transform.needs...)")
    return stats[STAT]

  def _exact_frac(stats, mask):
    exact = (stats or {}).get(f"{STAT}/exact")
    if exact is None:
      return {}
    return {"siren_exact_frac": ops.masked_mean(exact.astype(jnp.float32),
                                                mask)}

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    h_old = _stat(batch.old_vocab_stats, "old_vocab_stats")
    h_bar, _ = peak_entropy(sg(h_old), batch.mask, mask_ratio,
                            double_mask=double_mask)
    anchor = jnp.where(state.ready, state.anchor, h_bar).astype(jnp.float32)
    batch = ops.add_metrics(batch, siren_anchor=anchor,
                            siren_old_entropy=h_bar)
    return batch, SirenState(anchor, jnp.ones((), bool))

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    h = _stat(batch.vocab_stats, "vocab_stats")
    h_bar, sel = peak_entropy(h, batch.mask, mask_ratio,
                              double_mask=double_mask)
    gap = h_bar - state.anchor
    ready = state.ready.astype(jnp.float32)
    batch = ops.add_loss_term(batch, term, coef * ready * gap ** 2)
    batch = ops.add_metrics(
        batch, siren_entropy=h_bar, siren_anchor=state.anchor,
        siren_gap=gap * ready,
        siren_selected_frac=ops.masked_mean(sel, batch.mask),
        siren_nucleus_entropy=ops.masked_mean(sg(h), batch.mask),
        **_exact_frac(batch.vocab_stats, batch.mask))
    return batch, state

  return types.EntropyTransform(
      init, update, prepare,
      types.Needs(vocab={STAT: reduction}, old_vocab={STAT: reduction}))


def siren_objective(l_max: int | None = None, eps: float = 0.2
                    ) -> objectives.Objective:
  """SIREN's PG loss: Dr. GRPO, ``mean_i Σ_t ℓ·m / L_max`` (SIREN's SMTSN).

  Vanilla PPO clip (ε = 0.2/0.2: the yaml defaults override the script's
  0.28 in the reference's dp_actor), no dual clip, no KL. Pair it with
  ``advantages.grpo_advantages(normalize_std=False)`` and :func:`siren`.

  Args:
    l_max: the generation budget L_max (``max_response_length``; default T).
    eps: clip ε.

  Returns:
    An :class:`~entropy_rl.core.objectives.Objective`.
  """
  return objectives.dr_grpo(eps, l_max, smtsn="mean")._replace(name="siren")
