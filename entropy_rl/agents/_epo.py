"""EPO: entropy-regularised policy optimisation for multi-turn LLM agents.

Reference: Xu et al. 2025, "EPO: Entropy-regularized Policy Optimization for
LLM Agents Reinforcement Learning", https://arxiv.org/abs/2509.22576
(spec A1; WujiangXu/EPO).

Loss (layout L1: one row per turn, ``segment_ids`` = the turn index)::

    L = L_PG − λ_H · ( agg(H_θ) − c_s · β_k · L_smooth )

The per-turn reference ``H̄_t`` is the cumulative mean (or a sliding window)
of the per-turn rollout entropies of all iterations so far, kept in state and
updated in ``prepare``. The corridor penalty, for a token in turn t:

* ``variant="code"`` (the released code): ``m = 0`` inside
  ``κ_l·H̄_t < H < κ_r·H̄_t`` (strict), α outside; ``L_smooth = agg(m)``.
  ``m`` is piecewise constant in H, so this term adds a constant and **no
  gradient** (faithfully reproduced).
* ``variant="paper"`` (default; the authors' stated hinge, exact form
  unverified): ``α·([κ_l·sg(H̄_t) − H]₊ + [H − κ_r·sg(H̄_t)]₊)``, differentiable.

The phase weight ``β_k`` (``phase_weight``) decays over the trainer epoch k;
the turn gate applies smoothing to a scope only if some row has
``turn ≥ gate_turn`` (the code's threshold is always 25 because of a config
key typo; ``gate_turn=None`` disables the gate). History alignment:
``history_alignment="turn"`` (default, the recommended fix) averages by turn
index; ``"left_pad"`` reproduces the code's left-padding misalignment.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
VARIANTS = ("paper", "code")
ALIGNMENTS = ("turn", "left_pad")
MASK_MODES = ("token", "sequence")
sg = jax.lax.stop_gradient


def phase_weight(k: Array | int, num_epochs: int = 150, lambda_s: float = 2.0,
                 gamma: float = 3.0) -> Array:
  """β_k: ``1 − 0.2(1 − e^{−λ_s k/K_h})`` for k ≤ K_h, else
  ``0.8·e^{−γ(k − K_h)/(K − K_h)}`` (discontinuous at K_h = ⌊K/2⌋)."""
  k = jnp.clip(jnp.asarray(k, jnp.float32), 0, num_epochs)
  kh = num_epochs // 2
  early = 1.0 - 0.2 * (1.0 - jnp.exp(-lambda_s * k / kh))
  late = 0.8 * jnp.exp(-gamma * (k - kh) / (num_epochs - kh))
  return jnp.where(k <= kh, early, late)


def per_turn_entropy(entropy: Array, mask: Array, turn_ids: Array,
                     max_turns: int) -> tuple[Array, Array]:
  """Mean token entropy of each turn index over the batch.

  Args:
    entropy: [B, T].
    mask: [B, T].
    turn_ids: [B, T] int turn index of each token (−1 = not agent text).
    max_turns: static number of turns.

  Returns:
    ``(mean [max_turns], present [max_turns] bool)``.
  """
  valid = (mask > 0) & (turn_ids >= 0) & (turn_ids < max_turns)
  ids = jnp.where(valid, turn_ids, 0).ravel()
  w = valid.astype(jnp.float32).ravel()
  s = jax.ops.segment_sum(entropy.ravel() * w, ids, num_segments=max_turns)
  n = jax.ops.segment_sum(w, ids, num_segments=max_turns)
  return s / jnp.maximum(n, 1.0), n > 0


class EntropyHistory(NamedTuple):
  """Per-turn history: cumulative sums or a ring buffer of iterations."""
  total: Array  # [max_turns] Σ over iterations of h_t
  count: Array  # [max_turns] number of iterations that contributed
  window: Array  # [W, max_turns] last W iterations (sliding-window variant)
  window_valid: Array  # [W, max_turns] bool
  cursor: Array  # () int32


def init_history(max_turns: int, window: int = 1) -> EntropyHistory:
  z = jnp.zeros((max_turns,), jnp.float32)
  return EntropyHistory(z, z, jnp.zeros((window, max_turns), jnp.float32),
                        jnp.zeros((window, max_turns), bool),
                        jnp.zeros((), jnp.int32))


def update_history(history: EntropyHistory, h: Array, present: Array, *,
                   alignment: str = "turn") -> EntropyHistory:
  """Adds one iteration's per-turn entropies ``h [max_turns]``.

  ``alignment="left_pad"`` reproduces the code: the present turns are
  left-padded with zeros to ``max_turns`` (a shift for short iterations) and
  every slot counts.
  """
  if alignment not in ALIGNMENTS:
    raise ValueError(f"unknown alignment {alignment!r}; valid: "
                     f"{', '.join(ALIGNMENTS)}")
  t = h.shape[0]
  if alignment == "left_pad":
    n = present.sum()
    src = jnp.arange(t) - (t - n)
    h = jnp.where(src >= 0, h[jnp.clip(src, 0, t - 1)], 0.0)
    present = jnp.ones_like(present)
  p = present.astype(jnp.float32)
  w = history.window.shape[0]
  slot = history.cursor % w
  return EntropyHistory(
      history.total + h * p, history.count + p,
      history.window.at[slot].set(h), history.window_valid.at[slot].set(
          present), history.cursor + 1)


def history_reference(history: EntropyHistory, *, sliding: bool = False
                      ) -> tuple[Array, Array]:
  """H̄_t [max_turns] and whether it exists."""
  if sliding:
    v = history.window_valid.astype(jnp.float32)
    n = v.sum(0)
    return (history.window * v).sum(0) / jnp.maximum(n, 1.0), n > 0
  return history.total / jnp.maximum(history.count, 1.0), history.count > 0


def corridor_penalty(entropy: Array, reference: Array, *, kappa_low: float,
                     kappa_high: float, alpha: float,
                     variant: str = "paper") -> Array:
  """Per-token corridor penalty m (see module docstring)."""
  lo = kappa_low * sg(reference)
  hi = kappa_high * sg(reference)
  if variant == "code":
    inside = (entropy > lo) & (entropy < hi)
    return sg(jnp.where(inside, 0.0, alpha))
  if variant == "paper":
    hi_f = jnp.where(jnp.isfinite(hi), hi, 0.0)
    over = jnp.where(jnp.isfinite(hi), jax.nn.relu(entropy - hi_f), 0.0)
    return alpha * (jax.nn.relu(lo - entropy) + over)
  raise ValueError(f"unknown EPO variant {variant!r}; valid: "
                   f"{', '.join(VARIANTS)}")


class EPOState(NamedTuple):
  history: EntropyHistory
  epoch: Array  # () int32, trainer iterations seen by prepare


def epo(entropy_coef: float = 0.001, smooth_coef: float = 1.0, *,
        max_turns: int = 50, kappa_low: float = 0.0, kappa_high: float = 2.0,
        alpha: float = 0.1, variant: str = "paper",
        use_phase_weight: bool = True, num_epochs: int = 150,
        gamma: float = 3.0, gate_turn: int | None = 25,
        history_alignment: str = "turn", sliding_window: int | None = None,
        mask_mode: str = "token", term: str = "epo"
        ) -> types.EntropyTransform:
  """EPO's entropy term and per-turn corridor smoothing.

  Args:
    entropy_coef: λ_H (0: identity).
    smooth_coef: c_s.
    max_turns: static number of turns of the history.
    kappa_low: κ_l (paper runs: 0).
    kappa_high: κ_r (paper runs: 2).
    alpha: α, the out-of-range penalty.
    variant: ``"paper"`` (hinge, differentiable) or ``"code"``.
    use_phase_weight: multiply by β_k.
    num_epochs: K of the β schedule.
    gamma: γ of the β schedule.
    gate_turn: smoothing only in scopes with a turn ≥ this (None: always).
    history_alignment: ``"turn"`` or ``"left_pad"`` (the code's bug).
    sliding_window: average the last W iterations instead of all.
    mask_mode: ``"token"`` or ``"sequence"`` (row-mean entropy; the code
      takes the unmasked mean over the padded length, a quirk not ported:
      the masked mean is used).
    term: loss-term name prefix.

  Returns:
    An :class:`EntropyTransform`; needs ``entropy``, ``old_entropy`` and
    ``segment_ids`` (turn index per token).
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown EPO variant {variant!r}; valid: "
                     f"{', '.join(VARIANTS)}")
  if mask_mode not in MASK_MODES:
    raise ValueError(f"unknown mask_mode {mask_mode!r}; valid: "
                     f"{', '.join(MASK_MODES)}")
  if history_alignment not in ALIGNMENTS:
    raise ValueError(f"unknown alignment {history_alignment!r}; valid: "
                     f"{', '.join(ALIGNMENTS)}")

  def init(params=None):
    del params
    return EPOState(init_history(max_turns, sliding_window or 1),
                    jnp.zeros((), jnp.int32))

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    h, present = per_turn_entropy(batch.old_entropy, batch.mask,
                                  batch.segment_ids, max_turns)
    hist = update_history(state.history, h, present,
                          alignment=history_alignment)
    return ops.add_metrics(batch, epo_turn0_entropy=h[0]), EPOState(
        hist, state.epoch + 1)

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if entropy_coef == 0.0:
      return batch, state
    ent = batch.entropy
    batch = ops.add_loss_term(batch, f"{term}_entropy", -entropy_coef * ent)
    if smooth_coef == 0.0:
      return batch, state
    ref, exists = history_reference(state.history,
                                    sliding=sliding_window is not None)
    turns = jnp.clip(batch.segment_ids, 0, max_turns - 1)
    ref_tok = ref[turns]  # [B, T]
    x = ent
    if mask_mode == "sequence":
      n = jnp.maximum(batch.mask.sum(-1, keepdims=True), 1.0)
      x = jnp.broadcast_to((ent * batch.mask).sum(-1, keepdims=True) / n,
                           ent.shape)
    m = corridor_penalty(x, ref_tok, kappa_low=kappa_low,
                         kappa_high=kappa_high, alpha=alpha, variant=variant)
    m = jnp.where(exists[turns] & (batch.segment_ids >= 0), m, 0.0)
    if gate_turn is not None:
      on = jnp.any((batch.segment_ids >= gate_turn) & (batch.mask > 0))
      m = jnp.where(on, m, 0.0)
    beta = phase_weight(state.epoch, num_epochs, gamma=gamma) if (
        use_phase_weight) else 1.0
    weight = entropy_coef * smooth_coef * beta
    batch = ops.add_loss_term(batch, f"{term}_smooth", weight * m)
    return ops.add_metrics(batch, epo_beta=jnp.asarray(beta),
                           epo_out_of_band=ops.masked_mean(
                               (m > 0).astype(jnp.float32), batch.mask)), state

  return types.EntropyTransform(
      init, update, prepare,
      types.Needs(frozenset({"entropy", "old_entropy", "segment_ids"})))


