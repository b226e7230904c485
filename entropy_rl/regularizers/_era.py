"""ERA for LLMs: entropy-regularising activation on the loss log-probs.

Reference: "ERA: Entropy Regularizing Activation", https://arxiv.org/abs/2510.08549
(spec A5.1; nothingbutbut/era ``ERA-LLM``).

Instead of an entropy loss, rows whose sampled policy is too confident or too
uncertain are trained through a sharpened or flattened proxy of the logits.
Per response i with L_i valid tokens, ``Ĥ_i`` is the mean of its
``k_i = max(1, ⌊0.2·L_i⌋)`` largest token entropies (unmodified logits)::

    A_i > 0 and Ĥ_i < ω_low   →  log π'(y) = log_softmax(κ·z)[y]
    A_i > 0 and Ĥ_i > ω_high  →  log π'(y) = log_softmax(z/κ)[y]
    otherwise                  →  log π'(y) = log_softmax(z)[y]

applied to the current **and** old log-probs (the ratio is ERA-to-ERA);
``topk=True`` renormalises over the 20 largest logits of z'. Sampling keeps
softmax(z). The row choice is made from the old-policy entropies so that the
current and old passes agree (the contract's rule; the released code decides
each pass from its own forward). Optional ``adv_scale`` multiplies A by 1/κ
(sharpened rows) or κ (flattened rows). Pair with :func:`era_objective`
(clip 1.0/1.0, dual clip 10, token-mean). κ = 1 is the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import objectives
from entropy_rl.core import ops
from entropy_rl.core import reductions
from entropy_rl.core import types

Array = types.Array
SHARP, FLAT = "era_sharp", "era_flat"
sg = jax.lax.stop_gradient


def top_fraction_entropy(entropy: Array, mask: Array,
                         fraction: float = 0.2) -> Array:
  """Ĥ_i: mean of the ``max(1, ⌊fraction·L_i⌋)`` largest valid entropies [B]."""
  m = mask > 0
  lengths = m.sum(-1)
  k = jnp.maximum(jnp.floor(fraction * lengths), 1.0)
  ranked = -jnp.sort(-jnp.where(m, entropy, -jnp.inf), axis=-1)
  take = jnp.arange(entropy.shape[-1])[None, :] < k[:, None]
  s = jnp.sum(jnp.where(take & jnp.isfinite(ranked), ranked, 0.0), -1)
  return jnp.where(lengths > 0, s / k, 0.0)


def era_row_choice(row_adv: Array, h_hat: Array, *, omega_low: float,
                   omega_high: float) -> tuple[Array, Array]:
  """(sharpen [B], flatten [B]) booleans."""
  pos = row_adv > 0
  return pos & (h_hat < omega_low), pos & (h_hat > omega_high)


def era_llm(kappa: float = 2.0, omega_low: float = 0.45,
            omega_high: float = 3.0, *, topk: bool = True, k: int = 20,
            adv_scale: bool = False, top_fraction: float = 0.2
            ) -> types.EntropyTransform:
  """ERA for LLMs (see module docstring).

  Declares the vocabulary reductions it reads (current and old):
  ``era_sharp`` = log-softmax(κz)[y] and ``era_flat`` = log-softmax(z/κ)[y]
  (their top-k renormalised forms with ``topk=True``).

  Examples:
    >>> from entropy_rl import regularizers
    >>> t = regularizers.era_llm(kappa=2.0, k=20)
    >>> sorted(t.needs.vocab)
    ['era_base', 'era_flat', 'era_sharp']
    >>> t.needs.vocab["era_sharp"]
    TopkLogp(k=20, kappa=2.0, fill=-10000.0)
  """
  if kappa <= 0:
    raise ValueError(f"kappa must be > 0, got {kappa}")
  if topk:
    reds = {SHARP: reductions.topk_logp(k, kappa),
            FLAT: reductions.topk_logp(k, 1.0 / kappa)}
    base_red = {"era_base": reductions.topk_logp(k, 1.0)}
  else:
    reds = {SHARP: reductions.scaled_logp(kappa),
            FLAT: reductions.scaled_logp(1.0 / kappa)}
    base_red = {}
  all_reds = {**reds, **base_red}

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if kappa == 1.0 and not topk:
      return batch, state
    row_adv = batch.advantages[:, 0]
    h_hat = top_fraction_entropy(batch.old_entropy, batch.mask, top_fraction)
    sharp, flat = era_row_choice(row_adv, h_hat, omega_low=omega_low,
                                 omega_high=omega_high)
    cur, old = batch.vocab_stats, batch.old_vocab_stats
    base_cur = cur["era_base"] if topk else batch.logp
    base_old = old["era_base"] if topk else batch.old_logp
    pick = lambda s, f, b: jnp.where(sharp[:, None], s,
                                     jnp.where(flat[:, None], f, b))
    logp = pick(cur[SHARP], cur[FLAT], base_cur)
    old_logp = sg(pick(old[SHARP], old[FLAT], base_old))
    adv = batch.advantages
    if adv_scale:
      adv = jnp.where(sharp[:, None], adv / kappa,
                      jnp.where(flat[:, None], adv * kappa, adv))
    batch = batch._replace(logp=logp, old_logp=old_logp, advantages=adv)
    return ops.add_metrics(batch, era_sharp_frac=jnp.mean(sharp),
                           era_flat_frac=jnp.mean(flat),
                           era_row_entropy=jnp.mean(h_hat)), state

  return types.EntropyTransform(
      types.init_empty_state, update,
      needs=types.Needs(frozenset({"old_entropy"}), all_reds, all_reds))


def era_objective() -> objectives.Objective:
  """ERA-LLM's surrogate: clip 1.0/1.0 (ratio in [0, 2]), dual clip 10, TM."""
  return objectives.ppo_clip(1.0, 1.0, dual_c=10.0)
