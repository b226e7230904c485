"""RiskPO: mixed value-at-risk objective on bundled scores.

Reference: Ren et al. 2025, "RiskPO: Risk-based Policy Optimization via
Verifiable Reward for LLM Post-Training", https://arxiv.org/abs/2510.00911
(spec §16; the authors' verl fork).

Rows are laid out prompt-major with a fixed group size n (``[P·n]``, the n
responses of prompt 0, then of prompt 1, ...). ``B`` consecutive prompts form
a bundle; "paper" j of a bundle is the j-th response of each of its prompts,
scored ``S_j = Σ_q R_{q,j}``. With the bundle's linear-interpolation
quantiles ``q_d = Q_α(S)``, ``q_u = Q_β(S)``::

    g_R = [(S − q_d)⁺ − (S − q_u)⁺ (+ (q_d − q_u) if natural_baseline)] / (β − α + ε)
    g_C = −(q_d − S)⁺ / (α + ε)
    a_j = (w·g_C + g_R) / (w + 1)       [/ (std_unbiased(S) + ε) if std_norm]

and the paper advantage is split over its responses ("sum-mean"):
``δ_i = R_i − mean(R_{q(i)})``; ``A_i = a_j·δ_i / Σ_{i∈j} δ_i`` if
``|Σ δ| > 1e-6``, else ``a_j / |j|``.

The quantile tracker (state) follows ``q_a ← q_a + η(a − F̂(q_a))`` on the
paper scores for a ∈ {0.05, ..., 0.95}, leaving out papers whose rows are all
padding (mask 0). ``q_mode`` picks the quantiles used:
``"batch"`` (what the released code effectively uses, the default),
``"track"`` (the tracked values) or ``"mix"`` (their mean).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
Q_MODES = ("batch", "track", "mix")
TRACK_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
EPS = 1e-6


def _quantile(s: Array, q: float) -> Array:
  """torch.quantile (linear) along the last axis."""
  return jnp.quantile(s, q, axis=-1, method="linear")


def riskpo_paper_advantages(scores: Array, q_d: Array, q_u: Array, *,
                            alpha: float, beta: float, w_mix: float,
                            std_norm: bool = True,
                            natural_baseline: bool = False) -> Array:
  """Paper advantages a [nb, n] from scores S [nb, n] and q_d, q_u [nb]."""
  n = scores.shape[-1]
  qd, qu = q_d[:, None], q_u[:, None]
  g_r = jax.nn.relu(scores - qd) - jax.nn.relu(scores - qu)
  if natural_baseline:
    g_r = g_r + (qd - qu)
  g_r = g_r / (beta - alpha + EPS)
  g_c = -jax.nn.relu(qd - scores) / (alpha + EPS)
  a = (w_mix * g_c + g_r) / (w_mix + 1.0)
  if std_norm:
    if n > 1:
      sd = jnp.std(scores, axis=-1, ddof=1, keepdims=True)
    else:
      sd = jnp.ones_like(scores)
    a = a / (sd + EPS)
  return a


def riskpo_advantages(rewards: Array, *, group_size: int, bundle_size: int,
                      alpha: float = 0.2, beta: float = 0.8,
                      w_mix: float = 1.5, std_norm: bool = True,
                      natural_baseline: bool = False,
                      quantiles: tuple[Array, Array] | None = None
                      ) -> tuple[Array, Array]:
  """Per-response RiskPO advantages [P·n] and the paper scores [nb, n].

  Args:
    rewards: [P·n] prompt-major rewards.
    group_size: n, responses per prompt (static).
    bundle_size: B, prompts per bundle (static; must divide P).
    alpha: α (``quantile_down``).
    beta: β (``quantile_up``).
    w_mix: w, the CVaR weight.
    std_norm: divide by the unbiased std of the bundle's scores.
    natural_baseline: add ``q_d − q_u`` to the range-VaR part.
    quantiles: optional ``(q_d [nb], q_u [nb])`` overriding batch quantiles.
  """
  total = rewards.shape[0]
  if total % group_size:
    raise ValueError(f"{total} rows are not a multiple of group_size="
                     f"{group_size}")
  prompts = total // group_size
  if prompts % bundle_size:
    raise ValueError(f"{prompts} prompts are not a multiple of bundle_size="
                     f"{bundle_size}")
  nb = prompts // bundle_size
  r = rewards.astype(jnp.float32).reshape(nb, bundle_size, group_size)
  scores = r.sum(1)  # [nb, n]
  if quantiles is None:
    if group_size > 1:
      q_d, q_u = _quantile(scores, alpha), _quantile(scores, beta)
    else:
      q_d = q_u = scores[:, 0]
  else:
    q_d, q_u = quantiles
  a = riskpo_paper_advantages(scores, q_d, q_u, alpha=alpha, beta=beta,
                              w_mix=w_mix, std_norm=std_norm,
                              natural_baseline=natural_baseline)  # [nb, n]
  delta = r - r.mean(-1, keepdims=True)  # [nb, B, n]
  dsum = delta.sum(1, keepdims=True)  # [nb, 1, n]
  big = jnp.abs(dsum) > 1e-6
  share = jnp.where(big, delta / jnp.where(big, dsum, 1.0),
                    1.0 / bundle_size)
  adv = a[:, None, :] * share
  return adv.reshape(total), scores


class RiskPOState(NamedTuple):
  quantiles: Array  # [19] tracked quantiles at TRACK_LEVELS
  ready: Array  # () bool, initialised from the first batch


def _level_index(x: float) -> int:
  idx = int(np.argmin(np.abs(np.asarray(TRACK_LEVELS) - x)))
  if abs(TRACK_LEVELS[idx] - x) > 1e-6:
    raise ValueError(f"tracked quantiles exist at {TRACK_LEVELS}; got {x}")
  return idx


def riskpo(group_size: int, bundle_size: int = 5, *, alpha: float = 0.2,
           beta: float = 0.8, w_mix: float = 1.5, std_norm: bool = True,
           natural_baseline: bool = False, q_mode: str = "batch",
           tracker_lr: float = 0.1) -> types.EntropyTransform:
  """RiskPO advantages as a ``prepare`` transform with a quantile tracker.

  Args:
    group_size: n, responses per prompt (rows must be prompt-major).
    bundle_size: B, prompts per bundle.
    alpha: α.
    beta: β.
    w_mix: w.
    std_norm: std normalisation of the paper advantages.
    natural_baseline: see :func:`riskpo_advantages`.
    q_mode: ``"batch"``, ``"track"`` or ``"mix"`` (see module).
    tracker_lr: η_q.

  Returns:
    An :class:`EntropyTransform` with :class:`RiskPOState`.

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
    >>> t = regularizers.riskpo(group_size=2, bundle_size=1)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[ 0.5657  0.5657  0.5657]
     [-0.8485 -0.8485  0.    ]]
  """
  if q_mode not in Q_MODES:
    raise ValueError(f"unknown q_mode {q_mode!r}; valid: {', '.join(Q_MODES)}")
  if not 0.0 < alpha < beta < 1.0:
    raise ValueError(f"need 0 < alpha < beta < 1, got {alpha}, {beta}")
  levels = jnp.asarray(TRACK_LEVELS, jnp.float32)
  if q_mode != "batch":
    i_d, i_u = _level_index(alpha), _level_index(beta)

  def init(params=None):
    del params
    return RiskPOState(jnp.zeros((len(TRACK_LEVELS),), jnp.float32),
                       jnp.zeros((), bool))

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.rewards is None:
      raise ValueError("riskpo needs batch.rewards")
    _, scores = riskpo_advantages(
        batch.rewards, group_size=group_size, bundle_size=bundle_size,
        alpha=alpha, beta=beta, w_mix=w_mix, std_norm=std_norm,
        natural_baseline=natural_baseline)
    flat = scores.ravel()
    # Papers whose rows are all padding (no valid token) are left out of the
    # tracker: padding a batch with whole bundles changes nothing.
    nb = scores.shape[0]
    has_tokens = batch.mask.sum(-1) > 0  # [P·n]
    paper_ok = has_tokens.reshape(nb, bundle_size, group_size).any(1).ravel()
    any_ok = paper_ok.any()
    empirical = ops.masked_quantiles(flat, paper_ok, TRACK_LEVELS)
    empirical = jnp.where(any_ok, empirical, state.quantiles)
    tracked = jnp.where(state.ready, state.quantiles, empirical)
    quantiles = None
    if q_mode != "batch":
      t_d = jnp.full((nb,), tracked[i_d])
      t_u = jnp.full((nb,), tracked[i_u])
      if q_mode == "mix":
        b_d, b_u = _quantile(scores, alpha), _quantile(scores, beta)
        t_d, t_u = 0.5 * (t_d + b_d), 0.5 * (t_u + b_u)
      quantiles = (t_d, t_u)
    adv, _ = riskpo_advantages(
        batch.rewards, group_size=group_size, bundle_size=bundle_size,
        alpha=alpha, beta=beta, w_mix=w_mix, std_norm=std_norm,
        natural_baseline=natural_baseline, quantiles=quantiles)
    below = (flat[None, :] <= tracked[:, None]).astype(jnp.float32)
    cdf = jnp.sum(below * paper_ok, -1) / jnp.maximum(paper_ok.sum(), 1)
    new_q = jnp.where(any_ok, tracked + tracker_lr * (levels - cdf),
                      state.quantiles)
    tok = adv_lib.to_tokens(adv, batch.mask)
    batch = ops.add_metrics(batch, riskpo_adv_abs=jnp.mean(jnp.abs(adv)),
                            riskpo_q_d=jnp.mean(tracked[0]))
    return batch._replace(advantages=tok), RiskPOState(
        new_q, state.ready | any_ok)

  return types.EntropyTransform(init, types.identity_update, prepare,
                                types.Needs(frozenset({"rewards"})))
