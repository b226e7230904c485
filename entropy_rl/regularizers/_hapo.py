"""HAPO: heterogeneous adaptive policy optimisation.

Reference: "Rethinking Entropy Regulation in RLVR: HAPO",
starriver030515/HAPO (spec §7; the authors' verl fork and patched vLLM
sampler). A normalised entropy score ĥ ∈ [−1, 1] per token drives

* the sampling temperature ``T_t = T₀(1 + τ·ĥ)`` (rollout side:
  ``entropy_rl.sampling`` with the statistics this transform keeps in state),
* asymmetric adaptive clipping: ĥ ≤ 0: ``ε_l' = ε_l(1 − α_c ĥ)``; ĥ > 0:
  ``ε_h' = ε_h(1 + α_c ĥ)``,
* differential advantage redistribution, ``A_ent = A(1 + βĥ)`` with the band
  ``1 − ε_l'/2 < ρ < 1 + ε_h'/2``: ĥ > 0 keeps A in band and uses A_ent out
  of it; ĥ ≤ 0 the reverse,
* and a token-level group advantage (length-weighted group mean and std).

The entropy score over valid tokens: ``e = log max(H, 1e-8)``, the pivot q is
the element at sorted index ``round(π_q (N − 1))`` of e, ``h = (e − q)/s``
with ``s = sqrt(max(mean (e − q)², 1e-8))``, ``P = max(max_{h>0} h, 1e-8)``,
``N = min(min_{h<0} h, −1e-8)``; intended ``ĥ = h/P`` (h > 0), ``h/|N|``
(h ≤ 0). The released code computes ``h·(1/N)`` for h ≤ 0, which makes ĥ ≥ 0
for low-entropy tokens too (an apparent sign error): ``sign_mode="released"``
reproduces it; the default follows the paper.

The rollout side reads this transform: :func:`hapo_sampler_params` turns its
state into the parameters of the sampler's adaptive temperature
(``entropy_rl.sampling.hapo_temperature``), and :func:`hapo_sampler_kwargs`
gives that processor the settings it shares with the transform
(``sign_mode``), from the same keyword arguments as :func:`hapo`.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
SIGN_MODES = ("intended", "released")
sg = jax.lax.stop_gradient


class EntropyScoreStats(NamedTuple):
  """The normalisation of ĥ: pivot q, scale s, 1/P and 1/N."""
  q: Array
  s: Array
  inv_p: Array
  inv_n: Array


def entropy_score_stats(entropy: Array, mask: Array,
                        pivot: float = 0.8) -> EntropyScoreStats:
  """(q, s, 1/P, 1/N) over the valid tokens (see module docstring)."""
  valid = mask > 0
  e = jnp.log(jnp.maximum(entropy, 1e-8))
  flat = jnp.where(valid, e, jnp.inf).ravel()
  n = jnp.sum(valid)
  idx = jnp.round(pivot * (n - 1).astype(jnp.float32)).astype(jnp.int32)
  q = jnp.sort(flat)[jnp.clip(idx, 0, flat.size - 1)]
  q = jnp.where(n > 0, q, 0.0)
  s = jnp.sqrt(jnp.maximum(ops.masked_mean((e - q) ** 2, valid), 1e-8))
  h = (e - q) / s
  p_max = jnp.maximum(jnp.max(jnp.where(valid & (h > 0), h, -jnp.inf)), 1e-8)
  n_min = jnp.minimum(jnp.min(jnp.where(valid & (h < 0), h, jnp.inf)), -1e-8)
  return EntropyScoreStats(q, s, 1.0 / p_max, 1.0 / n_min)


def entropy_score(entropy: Array, stats: EntropyScoreStats, *,
                  sign_mode: str = "intended", eps: float = 0.0) -> Array:
  """ĥ from entropies and normalisation stats, clamped to [−1, 1].

  ``eps`` is added to s (the sampler uses 1e-6 and H floored at 1e-6).
  """
  if sign_mode not in SIGN_MODES:
    raise ValueError(f"unknown sign_mode {sign_mode!r}; valid: "
                     f"{', '.join(SIGN_MODES)}")
  e = jnp.log(jnp.maximum(entropy, 1e-8))
  h = (e - stats.q) / (stats.s + eps)
  if sign_mode == "intended":
    neg = h * -stats.inv_n  # h / |N|
  else:
    neg = h * stats.inv_n  # the released h · (1/N): ≥ 0
  return jnp.clip(jnp.where(h > 0, h * stats.inv_p, neg), -1.0, 1.0)


def token_level_group_advantage(rewards: Array, lengths: Array,
                                group_ids: Array, *,
                                normalize_std: bool = True,
                                fallback_threshold: float = 5.0,
                                fallback_checks_padding: bool = True,
                                max_length: int | None = None) -> Array:
  """HAPO's token-level group average with GRPO fallback, [B].

  ``μ = Σ L_i R_i / Σ L_i``, ``σ = sqrt(Σ L_i (R_i − μ)² / Σ L_i)``,
  ``A_i = (R_i − μ)/(σ + 1e-6)``. If any ``|A| ≥ fallback_threshold`` in a
  group (the code also tests padded positions, whose value is −μ/σ, when
  ``fallback_checks_padding`` and a row is shorter than ``max_length``) the
  whole group falls back to the GRPO advantage.
  """
  ids = adv_lib.dense_group_ids(group_ids)
  g = ids.shape[0]
  r = rewards.astype(jnp.float32)
  ln = lengths.astype(jnp.float32)
  sl = jax.ops.segment_sum(ln, ids, num_segments=g)
  mu = jax.ops.segment_sum(ln * r, ids, num_segments=g) / jnp.maximum(sl, 1e-8)
  var = jax.ops.segment_sum(ln * (r - mu[ids]) ** 2, ids,
                            num_segments=g) / jnp.maximum(sl, 1e-8)
  sd = jnp.sqrt(var)
  centred = r - mu[ids]
  a = centred / (sd[ids] + 1e-6) if normalize_std else centred
  big = jnp.abs(a) >= fallback_threshold
  if fallback_checks_padding and max_length is not None:
    pad_value = -mu[ids] / (sd[ids] + 1e-6) if normalize_std else -mu[ids]
    big = big | ((ln < max_length) & (jnp.abs(pad_value) >= fallback_threshold))
  fallback = jax.ops.segment_max(big.astype(jnp.int32), ids,
                                 num_segments=g)[ids] > 0
  grpo = adv_lib.grpo(r, group_ids, normalize_std=normalize_std)
  return jnp.where(fallback, grpo, a)


def adaptive_clip(eps_low: Array, eps_high: Array, h_hat: Array,
                  clip_alpha: float) -> tuple[Array, Array]:
  """Asymmetric adaptive clip bounds (ε_l', ε_h')."""
  low = jnp.where(h_hat <= 0, eps_low * (1.0 - clip_alpha * h_hat), eps_low)
  high = jnp.where(h_hat > 0, eps_high * (1.0 + clip_alpha * h_hat), eps_high)
  return low, high


def redistribute(advantages: Array, ratio: Array, h_hat: Array,
                 eps_low: Array, eps_high: Array, beta: float) -> Array:
  """Differential advantage redistribution (no gradient)."""
  a_ent = advantages * (1.0 + beta * h_hat)
  band = (ratio > 1.0 - eps_low / 2) & (ratio < 1.0 + eps_high / 2)
  return jnp.where(h_hat > 0, jnp.where(band, advantages, a_ent),
                   jnp.where(band, a_ent, advantages))


class HapoState(NamedTuple):
  sampler_stats: EntropyScoreStats  # from the last rollout's old entropies
  ready: Array  # () bool; False until the first prepare (sampler uses T₀)


def hapo(pivot: float = 0.8, clip_alpha: float = 1.0, adv_beta: float = 1.0,
         *, sign_mode: str = "intended", token_level_advantage: bool = True,
         normalize_std: bool = True, fallback_checks_padding: bool = True
         ) -> types.EntropyTransform:
  """HAPO's training side (advantage, clip, redistribution) + sampler stats.

  ``prepare`` writes the token-level group advantage (or GRPO's with
  ``token_level_advantage=False``) and stores the old-entropy normalisation
  in state for the next rollout's adaptive temperature. ``update`` scores the
  current (stop-gradient) entropy per scope and sets per-token clip bounds and
  redistributed advantages. ``clip_alpha = adv_beta = 0`` leaves the surrogate
  unchanged.

  Args:
    pivot: π_q, the entropy pivot quantile.
    clip_alpha: α_c.
    adv_beta: β.
    sign_mode: ``"intended"`` (paper) or ``"released"`` (the code's sign).
    token_level_advantage: use the token-level group average.
    normalize_std: divide by the group std.
    fallback_checks_padding: reproduce the code's padded-position check.

  Returns:
    An :class:`EntropyTransform` with :class:`HapoState`.

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
    ...     entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     old_entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.hapo()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[ 0.8165  0.8165  0.8165]
     [-1.2247 -1.2247  0.    ]]
  """
  if sign_mode not in SIGN_MODES:
    raise ValueError(f"unknown sign_mode {sign_mode!r}; valid: "
                     f"{', '.join(SIGN_MODES)}")

  def init(params=None):
    del params
    z = jnp.zeros((), jnp.float32)
    return HapoState(EntropyScoreStats(z, jnp.ones((), jnp.float32), z, z),
                     jnp.zeros((), bool))

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.rewards is None or batch.group_ids is None:
      raise ValueError("hapo needs batch.rewards and batch.group_ids")
    lengths = batch.mask.sum(-1)
    if token_level_advantage:
      a = token_level_group_advantage(
          batch.rewards, lengths, batch.group_ids,
          normalize_std=normalize_std,
          fallback_checks_padding=fallback_checks_padding,
          max_length=batch.mask.shape[-1])
    else:
      a = adv_lib.grpo(batch.rewards, batch.group_ids,
                       normalize_std=normalize_std)
    stats = state.sampler_stats
    if batch.old_entropy is not None:
      stats = entropy_score_stats(batch.old_entropy, batch.mask, pivot)
    batch = batch._replace(advantages=adv_lib.to_tokens(a, batch.mask))
    return batch, HapoState(stats, jnp.ones((), bool))

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.entropy is None:
      raise ValueError("hapo needs batch.entropy")
    if clip_alpha == 0.0 and adv_beta == 0.0:
      return batch, state
    ent = sg(batch.entropy)
    stats = entropy_score_stats(ent, batch.mask, pivot)
    h_hat = entropy_score(ent, stats, sign_mode=sign_mode)
    clip = batch.clip
    eps_low, eps_high = adaptive_clip(clip.eps_low, clip.eps_high, h_hat,
                                      clip_alpha)
    ratio = jnp.exp(jnp.clip(sg(batch.logp) - batch.old_logp, -20.0, 20.0))
    adv = sg(redistribute(batch.advantages, ratio, h_hat, eps_low, eps_high,
                          adv_beta))
    batch = batch._replace(advantages=adv, clip=clip._replace(
        eps_low=eps_low, eps_high=eps_high))
    return ops.add_metrics(
        batch, hapo_h_mean=ops.masked_mean(h_hat, batch.mask),
        hapo_pos_frac=ops.masked_mean((h_hat > 0).astype(jnp.float32),
                                      batch.mask),
        hapo_eps_high_mean=ops.masked_mean(eps_high, batch.mask),
        hapo_eps_low_mean=ops.masked_mean(eps_low, batch.mask)), state

  return types.EntropyTransform(init, update, prepare,
                                types.Needs(frozenset({"entropy", "rewards",
                                                       "group_ids"})))


def hapo_sampler_kwargs(**hapo_kwargs: Any) -> dict[str, Any]:
  """The adaptive temperature's settings shared with :func:`hapo`.

  Args:
    **hapo_kwargs: the keyword arguments of the :func:`hapo` chain member
      (its defaults where absent; unknown names raise ``TypeError``).

  Returns:
    ``{"sign_mode": ...}``: keyword arguments of
    ``entropy_rl.sampling.hapo_temperature``, so the sampler scores ĥ with
    the transform's sign.
  """
  bound = inspect.signature(hapo).bind(**hapo_kwargs)
  bound.apply_defaults()
  return {"sign_mode": bound.arguments["sign_mode"]}


def hapo_sampler_params(state: HapoState, defaults: Mapping[str, Array]
                        ) -> dict[str, Array]:
  """The adaptive temperature's parameters from the transform's state.

  Args:
    state: the :func:`hapo` member's :class:`HapoState`.
    defaults: the processor's ``init()`` (``q``, ``s``, ``inv_p``, ``inv_n``,
      ``t0``, ``tau``).

  Returns:
    ``defaults`` with the entropy normalisation stored at the last
    ``prepare`` (before the first one, ``ready`` is False and the defaults
    stay: ĥ = 0, T = T₀).
  """
  stats = state.sampler_stats
  pick = lambda new, old: jnp.where(state.ready, new, old)  # noqa: E731
  return {**defaults, "q": pick(stats.q, defaults["q"]),
          "s": pick(stats.s, defaults["s"]),
          "inv_p": pick(stats.inv_p, defaults["inv_p"]),
          "inv_n": pick(stats.inv_n, defaults["inv_n"])}
