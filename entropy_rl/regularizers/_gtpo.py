"""GTPO and GRPO-S: entropy-weighted token and sequence reward shaping.

Within a group, reward is redistributed in proportion to entropy relative to
the other responses at the same position: correct responses reward their
high-entropy tokens, incorrect responses penalise their confident
(low-entropy) tokens more. Spec: ``methods_rlvr.md`` §6 (from a third-party
"paper-exact" implementation, textpolicy ``compute_gtpo_shaped_rewards``;
no official code; GRPO-S inferred).

Reference: Tan et al. 2025, "GTPO and GRPO-S: Token and Sequence-Level Reward
Shaping with Policy Entropy", https://arxiv.org/abs/2508.04349.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
NORMALIZATIONS = ("separate", "joint")


def _group_sum(x: Array, ids: Array, g: int) -> Array:
  """Per-row sum of ``x`` ([B] or [B, T]) over the row's group."""
  return jax.ops.segment_sum(x, ids, num_segments=g)[ids]


def gtpo_shaped_rewards(rewards: Array, entropy: Array, mask: Array,
                        group_ids: Array, *, alpha1: float = 1.0,
                        alpha2: float = 0.1, threshold: float = 0.5,
                        eps: float = 1e-8) -> tuple[Array, Array, Array]:
  """GTPO's token-level shaped rewards (paper Eq. 3 and 5).

  In each group, O⁺ = {R > threshold} and O⁻ the rest; a token is active
  where ``mask > 0``; ``d_t`` / ``h_t`` count the active O⁺ / O⁻ rows at
  position t::

      r̃⁺[i,t] = α₁·R_i + α₂ · H[i,t] / Σ_{k∈O⁺ active} H[k,t] · d_t
      r̃⁻[j,t] = −α₁ − α₂ · (1/H[j,t]) / Σ_{k∈O⁻ active} (1/H[k,t]) · h_t

  with ``1/H → 1/(H + ε)`` and the sums floored at ε (third-party code).
  With α₁ + α₂ = 1 and R = 1 on O⁺, Σ_{O⁺} r̃⁺ = d_t and Σ_{O⁻} r̃⁻ = −h_t.

  Args:
    rewards: [B] outcome rewards.
    entropy: [B, T] old-policy entropy (no gradient).
    mask: [B, T] valid tokens.
    group_ids: [B] int group ids (any values).
    alpha1: α₁.
    alpha2: α₂.
    threshold: success threshold on R.
    eps: ε.

  Returns:
    ``(r̃ [B, T], positive [B] bool)``: the shaped reward (r̃⁺ on O⁺ rows,
    r̃⁻ on O⁻ rows, 0 on padding) and the O⁺ indicator.
  """
  ids = adv_lib.dense_group_ids(group_ids)
  g = rewards.shape[0]
  r = rewards.astype(jnp.float32)
  h = jax.lax.stop_gradient(entropy).astype(jnp.float32)
  active = mask > 0
  pos = r > threshold  # [B]
  pos_act = active & pos[:, None]
  neg_act = active & ~pos[:, None]
  f32 = lambda x: x.astype(jnp.float32)
  d = _group_sum(f32(pos_act), ids, g)  # [B, T]
  n = _group_sum(f32(neg_act), ids, g)  # [B, T]
  h_pos = jnp.where(pos_act, h, 0.0)
  share_pos = h_pos / jnp.maximum(_group_sum(h_pos, ids, g), eps)
  inv = jnp.where(neg_act, 1.0 / (h + eps), 0.0)
  share_neg = inv / jnp.maximum(_group_sum(inv, ids, g), eps)
  r_pos = alpha1 * r[:, None] + alpha2 * share_pos * d
  r_neg = -alpha1 - alpha2 * share_neg * n
  shaped = jnp.where(pos_act, r_pos, jnp.where(neg_act, r_neg, 0.0))
  return shaped, pos


def _normalize(x: Array, sel: Array, ids: Array, g: int, eps: float
               ) -> Array:
  """(x − mean) / sqrt(var + ε) over the selected tokens of each group."""
  w = sel.astype(jnp.float32)
  xs = jnp.where(sel, x, 0.0)
  cnt = jnp.maximum(_group_sum(w.sum(-1), ids, g), 1.0)[:, None]  # [B, 1]
  mean = _group_sum(xs.sum(-1), ids, g)[:, None] / cnt
  dev = jnp.where(sel, x - mean, 0.0)
  var = _group_sum((dev ** 2).sum(-1), ids, g)[:, None] / cnt
  return dev / jnp.sqrt(var + eps)


def gtpo_advantages(rewards: Array, entropy: Array, mask: Array,
                    group_ids: Array, *, alpha1: float = 1.0,
                    alpha2: float = 0.1, normalization: str = "joint",
                    threshold: float = 0.5, eps: float = 1e-8) -> Array:
  """GTPO token advantages from :func:`gtpo_shaped_rewards` (paper Eq. 6).

  * ``"joint"`` (default; the likely paper intent, INFERRED, spec §6 (c)):
    r̃⁺ is extended by 0 on O⁻ tokens and r̃⁻ by 0 on O⁺ tokens, each is
    normalised over all valid tokens of the group, and ``A = Â⁺ + Â⁻``.
    A group with R = (1, 1, 0, 0) and equal entropies gets A = +2 on the
    correct rows' tokens and −2 on the incorrect ones.
  * ``"separate"`` (the third-party code): O⁺ tokens are normalised by the
    mean and population std of all O⁺ shaped rewards of their group, O⁻
    tokens by those of O⁻ (``+ε`` inside the sqrt). This centring removes
    the correct-vs-incorrect signal; only the entropy shaping is left (the
    group above gets A = 0 on every token).

  Returns:
    [B, T] advantages, 0 on padding.
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"unknown GTPO normalization {normalization!r}; valid: "
                     f"{', '.join(NORMALIZATIONS)}")
  shaped, pos = gtpo_shaped_rewards(rewards, entropy, mask, group_ids,
                                    alpha1=alpha1, alpha2=alpha2,
                                    threshold=threshold, eps=eps)
  ids = adv_lib.dense_group_ids(group_ids)
  g = rewards.shape[0]
  active = mask > 0
  pos_act = active & pos[:, None]
  neg_act = active & ~pos[:, None]
  if normalization == "separate":
    return (_normalize(shaped, pos_act, ids, g, eps) +
            _normalize(shaped, neg_act, ids, g, eps))
  return (_normalize(jnp.where(pos_act, shaped, 0.0), active, ids, g, eps) +
          _normalize(jnp.where(neg_act, shaped, 0.0), active, ids, g, eps))


def grpo_s_shaped_rewards(rewards: Array, entropy: Array, mask: Array,
                          group_ids: Array, *, alpha1: float = 1.0,
                          alpha2: float = 0.1, threshold: float = 0.5,
                          eps: float = 1e-8) -> Array:
  """GRPO-S's sequence-level shaped rewards (INFERRED by analogy).

  With the mean valid-token entropy ``Ĥ_i`` of each row, ``d = |O⁺|`` and
  ``h = |O⁻|`` in the row's group::

      r̃⁺_i = α₁·R_i + α₂ · Ĥ_i / Σ_{k∈O⁺} Ĥ_k · d
      r̃⁻_j = −α₁ − α₂ · (1/Ĥ_j) / Σ_{k∈O⁻} (1/Ĥ_k) · h

  Returns:
    [B] shaped rewards.
  """
  ids = adv_lib.dense_group_ids(group_ids)
  g = rewards.shape[0]
  r = rewards.astype(jnp.float32)
  m = mask.astype(jnp.float32)
  h = jax.lax.stop_gradient(entropy).astype(jnp.float32)
  h_row = (jnp.where(m > 0, h, 0.0) * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)
  pos = r > threshold
  f32 = lambda x: x.astype(jnp.float32)
  d = _group_sum(f32(pos), ids, g)
  n = _group_sum(f32(~pos), ids, g)
  h_pos = jnp.where(pos, h_row, 0.0)
  share_pos = h_pos / jnp.maximum(_group_sum(h_pos, ids, g), eps)
  inv = jnp.where(pos, 0.0, 1.0 / (h_row + eps))
  share_neg = inv / jnp.maximum(_group_sum(inv, ids, g), eps)
  return jnp.where(pos, alpha1 * r + alpha2 * share_pos * d,
                   -alpha1 - alpha2 * share_neg * n)


def _shaping_transform(fn, name: str) -> types.EntropyTransform:
  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    ent = batch.old_entropy if batch.old_entropy is not None else batch.entropy
    if batch.rewards is None or batch.group_ids is None or ent is None:
      raise ValueError(f"{name} needs batch.rewards, batch.group_ids and "
                       "batch.old_entropy")
    adv, metrics = fn(batch, ent)
    m = batch.mask
    batch = ops.add_metrics(
        batch, adv_mean=ops.masked_mean(adv, m),
        adv_abs_mean=ops.masked_mean(jnp.abs(adv), m), **metrics)
    return batch._replace(advantages=jnp.where(m > 0, adv, 0.0)), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset({"rewards", "group_ids", "old_entropy"})))


def gtpo(alpha1: float = 1.0, alpha2: float = 0.1, *,
         normalization: str = "joint", threshold: float = 0.5,
         eps: float = 1e-8) -> types.EntropyTransform:
  r"""GTPO: entropy-shaped token-level advantages, a ``prepare`` transform.

  Writes :func:`gtpo_advantages` of ``(rewards, old_entropy, mask,
  group_ids)`` into ``batch.advantages`` [B, T]. The paper's loss is the PPO
  clip (ε = 0.2; its baseline was DAPO, so presumably 0.2/0.28) with a
  token-mean over all group tokens, e.g. ``objectives.ppo_clip()``.

  ``normalization`` picks the reading of Eq. 6 (see
  :func:`gtpo_advantages`): ``"joint"`` (default: centring over all group
  tokens, keeping the correct-vs-incorrect signal) or ``"separate"`` (the
  third-party code, whose per-set centring leaves only the entropy
  shaping). With α₂ = 0 the shaped reward is the uniform ±α₁.

  Args:
    alpha1: α₁ (paper experiments: 1.0).
    alpha2: α₂ (paper experiments: 0.1); α₁ + α₂ = 1 conserves reward.
    normalization: ``"joint"`` (default) or ``"separate"``.
    threshold: success threshold on R (O⁺ = R > threshold).
    eps: ε of the entropy divisions and of the std.

  Returns:
    An :class:`EntropyTransform`. Metrics: ``gtpo_reward_pos`` /
    ``gtpo_reward_neg`` (mean shaped reward of O⁺ / O⁻ tokens),
    ``gtpo_pos_frac`` (fraction of O⁺ rows), ``adv_mean``, ``adv_abs_mean``.
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"unknown GTPO normalization {normalization!r}; valid: "
                     f"{', '.join(NORMALIZATIONS)}")
  kw = dict(alpha1=alpha1, alpha2=alpha2, threshold=threshold, eps=eps)

  def fn(b, ent):
    shaped, pos = gtpo_shaped_rewards(b.rewards, ent, b.mask, b.group_ids,
                                      **kw)
    adv = gtpo_advantages(b.rewards, ent, b.mask, b.group_ids,
                          normalization=normalization, **kw)
    p = pos[:, None] & (b.mask > 0)
    nm = ~pos[:, None] & (b.mask > 0)
    return adv, dict(gtpo_reward_pos=ops.masked_mean(shaped, p),
                     gtpo_reward_neg=ops.masked_mean(shaped, nm),
                     gtpo_pos_frac=jnp.mean(pos.astype(jnp.float32)))

  return _shaping_transform(fn, "gtpo")


def grpo_s(alpha1: float = 1.0, alpha2: float = 0.1, *,
           normalize_std: bool = True, threshold: float = 0.5,
           eps: float = 1e-8, adv_eps: float = 1e-6
           ) -> types.EntropyTransform:
  r"""GRPO-S: entropy-shaped sequence rewards, then GRPO (``prepare``).

  ``A_i = grpo(r̃_i)`` with :func:`grpo_s_shaped_rewards` (group mean and
  unbiased std, ε = ``adv_eps``; ``normalize_std=False`` as Dr. GRPO),
  broadcast over the row's valid tokens. With α₁ = 1, α₂ = 0 and ±1 rewards
  r̃ = R, so the advantages are GRPO's exactly. (INFERRED from the paper's
  description; no code.)

  Args:
    alpha1: α₁.
    alpha2: α₂.
    normalize_std: divide by the group std.
    threshold: success threshold on R.
    eps: ε of the entropy divisions.
    adv_eps: ε of the GRPO normalisation.

  Returns:
    An :class:`EntropyTransform`. Metrics: ``grpo_s_reward_pos`` /
    ``grpo_s_reward_neg`` (mean shaped reward of O⁺ / O⁻ rows),
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
    ...     old_entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.grpo_s()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[ 0.7071  0.7071  0.7071]
     [-0.7071 -0.7071  0.    ]]
  """

  def fn(b, ent):
    shaped = grpo_s_shaped_rewards(b.rewards, ent, b.mask, b.group_ids,
                                   alpha1=alpha1, alpha2=alpha2,
                                   threshold=threshold, eps=eps)
    adv = adv_lib.grpo(shaped, b.group_ids, normalize_std=normalize_std,
                       eps=adv_eps)
    pos = b.rewards > threshold
    return adv_lib.to_tokens(adv, b.mask), dict(
        grpo_s_reward_pos=ops.masked_mean(shaped, pos),
        grpo_s_reward_neg=ops.masked_mean(shaped, ~pos))

  return _shaping_transform(fn, "grpo_s")
