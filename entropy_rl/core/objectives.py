"""Policy-gradient objectives: the clipped surrogate, presets and aggregation.

An :class:`Objective` turns a filled :class:`PolicyBatch` into an unweighted
per-token loss [B, T]; :func:`entropy_rl.policy_loss` multiplies it by the
stop-gradient weights and aggregates it with :func:`aggregate`.

References:
  PPO: Schulman et al. 2017, https://arxiv.org/abs/1707.06347.
  Dual clip: Ye et al. 2020, https://arxiv.org/abs/1912.09729.
  GRPO: Shao et al. 2024, https://arxiv.org/abs/2402.03300.
  Dr. GRPO: Liu et al. 2025, https://arxiv.org/abs/2503.20783.
  DAPO: Yu et al. 2025, https://arxiv.org/abs/2503.14476.
  GSPO: Zheng et al. 2025, https://arxiv.org/abs/2507.18071.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.core import types

Array = types.Array
Clip = types.Clip
PolicyBatch = types.PolicyBatch
sg = jax.lax.stop_gradient
INF = math.inf

AGGREGATION_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)
SMTSN_VARIANTS = ("verl", "mean")
LOG_RATIO_CLAMP = 20.0


def check_agg_mode(mode: str) -> None:
  if mode not in AGGREGATION_MODES:
    raise ValueError(f"unknown aggregation mode {mode!r}; valid modes are "
                     f"{', '.join(AGGREGATION_MODES)}")


def aggregate(x: Array, mask: Array, mode: str = "token-mean",
              l_max: int | None = None, smtsn: str = "verl") -> Array:
  """Aggregates a per-token matrix over one statistics scope (verl agg_loss).

  * ``token-mean``: Σ x·m / (Σ m + 1e-8).
  * ``seq-mean-token-mean``: mean_i [Σ_t x·m / Σ_t m]; empty rows give 0 and
    count in the mean (SIREN's fork; plain verl would give NaN).
  * ``seq-mean-token-sum``: mean_i Σ_t x·m.
  * ``seq-mean-token-sum-norm`` (Dr. GRPO): with ``smtsn="verl"`` (verl 0.4,
    STEER fork) Σ x·m / L_max; with ``smtsn="mean"`` (SIREN fork, Dr. GRPO's
    intended 1/(G·L_max)) mean_i Σ_t x·m / L_max.

  Args:
    x: [B, T] per-token values.
    mask: [B, T] 1 on valid tokens.
    mode: one of :data:`AGGREGATION_MODES`.
    l_max: generation budget L_max for the ``-norm`` mode (default T).
    smtsn: ``"verl"`` or ``"mean"``, the ``-norm`` variant.

  Returns:
    A scalar.
  """
  check_agg_mode(mode)
  mask = mask.astype(x.dtype)
  xm = jnp.where(mask > 0, x, 0.0) * mask
  if mode == "token-mean":
    return xm.sum() / (mask.sum() + 1e-8)
  if mode == "seq-mean-token-mean":
    n = mask.sum(-1)
    return jnp.mean(jnp.where(n > 0, xm.sum(-1) / jnp.maximum(n, 1.0), 0.0))
  if mode == "seq-mean-token-sum":
    return jnp.mean(xm.sum(-1))
  norm = float(l_max if l_max is not None else x.shape[-1])
  if smtsn == "verl":
    return xm.sum() / norm
  if smtsn == "mean":
    return jnp.mean(xm.sum(-1)) / norm
  raise ValueError(f"unknown smtsn variant {smtsn!r}; valid: {SMTSN_VARIANTS}")


def _finite(x, fill):
  return jnp.where(jnp.isfinite(x), x, fill)


def clipped_surrogate(advantages: Array, logp: Array, old_logp: Array,
                      clip: Clip) -> tuple[Array, dict[str, Array]]:
  """Per-token clipped surrogate loss, see :class:`Clip` for the formula.

  Infinite ``eps`` / ``dual_c`` are legal (no clip, no dual clip): finite
  stand-ins keep the unselected ``where`` branches NaN-free in the backward
  pass.

  Args:
    advantages: [B, T].
    logp: [B, T] current log-probs (differentiable).
    old_logp: [B, T] behaviour log-probs.
    clip: a :class:`Clip` whose fields broadcast to [B, T].

  Returns:
    ``(loss [B, T], indicators)`` where indicators holds float [B, T] masks
    ``clipped_low``, ``clipped_high``, ``dual_clipped``.
  """
  log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  one = ratio / sg(ratio)  # value 1, d/dlogp = 1
  lo_b = 1.0 - clip.eps_low
  hi_b = 1.0 + clip.eps_high
  lo = (advantages < 0) & (ratio < lo_b)
  hi = (advantages > 0) & (ratio > hi_b)
  r_lo = _finite(lo_b, 0.0) * (clip.value_low + clip.grad_low * (one - 1.0))
  r_hi = _finite(hi_b, 0.0) * (clip.value_high + clip.grad_high * (one - 1.0))
  r = jnp.where(lo, r_lo, jnp.where(hi, r_hi, ratio))
  loss = -advantages * r
  dual_c = jnp.asarray(clip.dual_c, loss.dtype)
  bound = -_finite(dual_c, 0.0) * advantages
  use_dual = (advantages < 0) & jnp.isfinite(dual_c) & (bound < loss)
  loss = jnp.where(use_dual, bound, loss)
  f = lambda b: b.astype(loss.dtype)
  return loss, dict(clipped_low=f(lo), clipped_high=f(hi),
                    dual_clipped=f(use_dual))


class Objective(NamedTuple):
  """A policy-gradient objective.

  Attributes:
    token_loss: ``token_loss(batch) -> (loss [B, T], indicators)``, the
      unweighted per-token loss; indicators are float [B, T] masks reported as
      token-mean fractions.
    clip: default :class:`Clip` that ``policy_loss`` broadcasts into the batch.
    agg: aggregation mode (see :func:`aggregate`).
    l_max: L_max of the ``seq-mean-token-sum-norm`` mode.
    smtsn: variant of the ``-norm`` mode (``"verl"`` or ``"mean"``).
    honours: knobs a transform may set (``"weights"``, ``"clip"``).
    name: a label for metrics and errors.
  """

  token_loss: Callable[[PolicyBatch], tuple[Array, dict[str, Array]]]
  clip: Clip = Clip()
  agg: str = "token-mean"
  l_max: int | None = None
  smtsn: str = "verl"
  honours: frozenset[str] = frozenset({"weights", "clip"})
  name: str = "objective"


def _ppo_token_loss(b: PolicyBatch):
  return clipped_surrogate(b.advantages, b.logp, b.old_logp, b.clip)


def ppo_clip(eps_low: float = 0.2, eps_high: float | None = None,
             dual_c: float | None = None, agg: str = "token-mean",
             l_max: int | None = None, smtsn: str = "verl") -> Objective:
  """PPO clipped surrogate with clip-higher and dual clip.

  ``ℓ_t = max(−A·ρ, −A·clip(ρ, 1−ε_l, 1+ε_h))``, and for A < 0
  ``ℓ_t ← min(ℓ_t, −c·A)``.

  Args:
    eps_low: ε_l (``inf`` disables the lower clip).
    eps_high: ε_h (default ε_l; ``> ε_l`` is DAPO's clip-higher).
    dual_c: dual-clip constant c (None or ``inf``: off; verl's default is 3).
    agg: aggregation mode.
    l_max: L_max for ``seq-mean-token-sum-norm``.
    smtsn: variant of ``seq-mean-token-sum-norm``.

  Returns:
    An :class:`Objective`.
  """
  check_agg_mode(agg)
  clip = Clip(eps_low=eps_low,
              eps_high=eps_low if eps_high is None else eps_high,
              dual_c=INF if dual_c is None else dual_c)
  return Objective(_ppo_token_loss, clip, agg, l_max, smtsn, name="ppo_clip")


def grpo(eps: float = 0.2, agg: str = "seq-mean-token-mean",
         dual_c: float | None = None) -> Objective:
  """GRPO's surrogate (DeepSeekMath): PPO clip 0.2, sequence-mean aggregation.

  Use with :func:`entropy_rl.advantages.grpo` advantages and, as in the paper,
  a k3 :func:`entropy_rl.kl_penalty` (β = 0.04) if a reference is used.
  """
  return ppo_clip(eps, eps, dual_c, agg)._replace(name="grpo")


def dr_grpo(eps: float = 0.2, l_max: int | None = None,
            smtsn: str = "mean") -> Objective:
  """Dr. GRPO: PPO clip with the constant normaliser 1/(G·L_max).

  Pair with ``advantages.grpo(..., normalize_std=False)``.
  """
  return ppo_clip(eps, eps, None, "seq-mean-token-sum-norm", l_max,
                  smtsn)._replace(name="dr_grpo")


def dapo(eps_low: float = 0.2, eps_high: float = 0.28,
         dual_c: float | None = 10.0) -> Objective:
  """DAPO's surrogate: clip-higher (0.2 / 0.28), dual clip 10, token-mean.

  The rest of DAPO lives in :mod:`entropy_rl.core.rewards`
  (:func:`overlong_penalty`, :func:`dynamic_sampling_mask`).
  """
  return ppo_clip(eps_low, eps_high, dual_c, "token-mean")._replace(
      name="dapo")


def gspo(eps_low: float = 3e-4, eps_high: float = 4e-4,
         agg: str = "seq-mean-token-mean") -> Objective:
  """GSPO: a sequence-level importance ratio.

  ``s_i = exp(mean_t (ℓ − ℓ°))`` over the row's valid tokens, carried on each
  token as ``s_i,t = sg(s_i)·π_t/sg(π_t)`` (GSPO-token, equal to GSPO for a
  sequence-level advantage), then ``max(−A·s, −A·clip(s, 1−ε_l, 1+ε_h))``.
  Per-token clip knobs are not honoured; weights are.
  """
  check_agg_mode(agg)

  def token_loss(b: PolicyBatch):
    m = b.mask
    n = jnp.maximum(m.sum(-1, keepdims=True), 1.0)
    seq_log_ratio = (jnp.where(m > 0, b.logp - b.old_logp, 0.0) * m).sum(
        -1, keepdims=True) / n
    seq_log_ratio = jnp.clip(seq_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    s = sg(jnp.exp(seq_log_ratio)) * jnp.exp(b.logp - sg(b.logp))
    a = b.advantages
    clipped = jnp.clip(s, 1 - eps_low, 1 + eps_high)
    loss = jnp.maximum(-a * s, -a * clipped)
    was_clipped = ((-a * clipped) > (-a * s)).astype(loss.dtype)
    return loss, dict(clipped_seq=was_clipped)

  clip = Clip(eps_low, eps_high)
  return Objective(token_loss, clip, agg, honours=frozenset({"weights"}),
                   name="gspo")


def reinforce(agg: str = "token-mean") -> Objective:
  """REINFORCE: ``ℓ_t = −A·ρ`` (gradient −A·∇ℓ on-policy), no clipping."""
  check_agg_mode(agg)

  def token_loss(b: PolicyBatch):
    ratio = jnp.exp(jnp.clip(b.logp - b.old_logp, -LOG_RATIO_CLAMP,
                             LOG_RATIO_CLAMP))
    return -b.advantages * ratio, {}

  return Objective(token_loss, Clip(INF, INF), agg,
                   honours=frozenset({"weights"}), name="reinforce")


def none(agg: str = "token-mean") -> Objective:
  """A zero surrogate, for term-only methods (EM-FT, HAEPO, H-DPO)."""
  check_agg_mode(agg)

  def token_loss(b: PolicyBatch):
    return jnp.zeros_like(b.logp), {}

  return Objective(token_loss, Clip(INF, INF), agg,
                   honours=frozenset({"weights", "clip"}), name="none")
