"""Maximum-entropy exploration: UCBVI-Ent and EntGame (Tiapkin et al. 2023).

"Fast Rates for Maximum Entropy Exploration", ICML 2023,
https://arxiv.org/abs/2303.08059 (spec §B6; official code
``d-tiapkin/max-entropy-exploration`` ``agents/ucbvi_ent.py``,
``agents/entgame.py``). Tabular, episodic (H steps, S states, A actions).

*UCBVI-Ent* (trajectory entropy): regularised optimistic VI with soft-max
backups on the empirical model P̂ and counts N(s, a)::

    R(s,a)   = H(P̂(·|s,a))
    b₁       = sqrt(β_conc / max(1,N))·v_max[h]
    b₂       = sqrt(β_ent1 / max(1,N)) + β_ent2 / max(1,N)
    Q_h      = R + b₁ + b₂ + γ P̂ V_{h+1}
    V_h      = min(v_max[h], log Σ_a exp Q_h),  π_h = softmax(Q_h)
    v_max[h] = log(SA) + γ v_max[h+1]
    β_conc = log(4SAH/δ) + log(4e·max(N,1)·(2N+1))
    β_ent1 = log(4SAH/δ) + log(max(N,1))²·log(2·max(N,1)·(N+1))
    β_ent2 = (S−1)·log(e(1 + N/(S−1))) + 1

*EntGame* (visitation entropy): a greedy sampler against
``r_t(s,a) = log(t + SA) − log(N(s,a) + n₀)`` with a UCB bonus
``c_b·v_max_scaled[h]·sqrt(β/max(1,N))``, β = log(4SAH/δ) +
(S−1)·log(e(1 + N/(S−1))), ``v_max_scaled = log(t + SA)·v_max``,
``v_max[h] = 1 + γ v_max[h+1]``, V_h = min(v_max_scaled[h], max_a Q_h).

b₁ scales with ``v_max[h]``, as in the spec and the official code
(``regularized_ucb_value_iteration``: ``vmax[hh] * bonus``). The variant
``bonus_vmax="next"`` scales it with ``v_max[h+1]`` instead (the range of
the estimated P̂·V_{h+1}; no concentration bonus at the last step); it is
not the reference's choice.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.classic.envs import TabularMDP

Array = jax.Array
BONUS_VMAX = ("h", "next")


def empirical_model(counts_sas: Array) -> tuple[Array, Array]:
  """(P̂ [S, A, S], N [S, A]); P̂ = 0 where N = 0."""
  n = counts_sas.sum(-1)
  return counts_sas / jnp.maximum(n, 1.0)[..., None], n


def transition_entropy(p_hat: Array) -> Array:
  """R(s, a) = −Σ_s' P̂ log P̂ (nats)."""
  return -jnp.sum(jnp.where(p_hat > 0, p_hat * jnp.log(
      jnp.where(p_hat > 0, p_hat, 1.0)), 0.0), -1)


def soft_backup(q: Array) -> tuple[Array, Array]:
  """(log Σ_a exp Q, softmax Q) over the last axis."""
  return jax.nn.logsumexp(q, -1), jax.nn.softmax(q, -1)


def entgame_reward(t, counts: Array, n0: float = 1.0) -> Array:
  """r_t(s, a) = log(t + SA) − log(N(s, a) + n₀)."""
  sa = counts.shape[-1] * counts.shape[-2]
  return jnp.log(t + sa) - jnp.log(counts + n0)


def ucbvi_ent_plan(counts_sas: Array, horizon: int, gamma: float = 1.0,
                   delta: float = 0.1, clip: bool = True,
                   bonus_vmax: str = "h") -> tuple[Array, Array]:
  """UCBVI-Ent planning (regularised optimistic VI, soft-max backups).

  Args:
    counts_sas: transition counts N(s, a, s') [S, A, S].
    horizon: H.
    gamma: γ.
    delta: δ of the confidence bonuses.
    clip: clip V_h at v_max[h].
    bonus_vmax: the scale of b₁: ``"h"`` (default; spec and reference code,
      v_max[h]) or ``"next"`` (v_max[h+1]).

  Returns:
    (π [H, S, A], V [H + 1, S]).
  """
  if bonus_vmax not in BONUS_VMAX:
    raise ValueError(f"ucbvi_ent_plan: bonus_vmax={bonus_vmax!r}; valid: "
                     f"{BONUS_VMAX}")
  S, A = counts_sas.shape[:2]
  p_hat, n = empirical_model(counts_sas)
  n1 = jnp.maximum(n, 1.0)
  R = transition_entropy(p_hat)
  log_term = math.log(4 * S * A * horizon / delta)
  b_conc = log_term + jnp.log(4 * math.e * n1 * (2 * n + 1))
  b_ent1 = log_term + jnp.log(n1) ** 2 * jnp.log(2 * n1 * (n + 1))
  b_ent2 = (S - 1) * jnp.log(math.e * (1 + n / max(S - 1, 1))) + 1
  b2 = jnp.sqrt(b_ent1 / n1) + b_ent2 / n1
  vmax = [0.0] * (horizon + 1)
  for h in reversed(range(horizon)):
    vmax[h] = math.log(S * A) + gamma * vmax[h + 1]
  vmax = jnp.asarray(vmax)

  def body(v_next, h):
    scale = vmax[h + 1] if bonus_vmax == "next" else vmax[h]
    b1 = jnp.sqrt(b_conc / n1) * scale
    q = R + b1 + b2 + gamma * p_hat @ v_next
    v, pi = soft_backup(q)
    if clip:
      v = jnp.minimum(vmax[h], v)
    return v, (v, pi)

  _, (vs, pis) = jax.lax.scan(body, jnp.zeros(S), jnp.arange(horizon),
                              reverse=True)
  return pis, jnp.concatenate([vs, jnp.zeros((1, S))], 0)


def entgame_plan(counts_sas: Array, t, horizon: int, key: Array,
                 gamma: float = 1.0, delta: float = 0.1, n0: float = 1.0,
                 bonus_scale: float = 1.0, clip: bool = True
                 ) -> tuple[Array, Array]:
  """EntGame's greedy sampler; returns (π [H, S, A] one-hot, V [H + 1, S])."""
  S, A = counts_sas.shape[:2]
  p_hat, n = empirical_model(counts_sas)
  n1 = jnp.maximum(n, 1.0)
  r = entgame_reward(t, n, n0)
  beta = (math.log(4 * S * A * horizon / delta)
          + (S - 1) * jnp.log(math.e * (1 + n / max(S - 1, 1))))
  vmax = [0.0] * (horizon + 1)
  for h in reversed(range(horizon)):
    vmax[h] = 1.0 + gamma * vmax[h + 1]
  vmax = jnp.asarray(vmax) * jnp.log(t + S * A)
  ties = 1e-6 * jax.random.uniform(key, (horizon, S, A))

  def body(v_next, h):
    q = r + bonus_scale * vmax[h] * jnp.sqrt(beta / n1) + gamma * p_hat @ v_next
    v = q.max(-1)
    if clip:
      v = jnp.minimum(vmax[h], v)
    pi = jax.nn.one_hot(jnp.argmax(q + ties[h], -1), A)
    return v, (v, pi)

  _, (vs, pis) = jax.lax.scan(body, jnp.zeros(S), jnp.arange(horizon),
                              reverse=True)
  return pis, jnp.concatenate([vs, jnp.zeros((1, S))], 0)


class ExplorationState(NamedTuple):
  counts_sas: Array  # [S, A, S]
  visits: Array  # [S] state visitation counts
  t: Array  # samples so far


def run_exploration(mdp: TabularMDP, algo: str, num_episodes: int, key: Array,
                    **kwargs) -> tuple[ExplorationState, Array]:
  """Reward-free episodic exploration of a known-size MDP.

  Args:
    mdp: the environment (its P is only sampled).
    algo: ``"ucbvi_ent"``, ``"entgame"`` or ``"random"``.
    num_episodes: episodes of ``mdp.horizon`` steps each.
    key: PRNG key.
    **kwargs: forwarded to the planner.

  Returns:
    (final state, visitation entropy of the empirical state distribution
    after each episode [num_episodes]).
  """
  if algo not in ("ucbvi_ent", "entgame", "random"):
    raise ValueError(f"unknown algo {algo!r}")
  S, A, H = mdp.num_states, mdp.num_actions, mdp.horizon
  mu0 = mdp.mu0 if mdp.mu0 is not None else jnp.full((S,), 1.0 / S)

  def episode(st, k):
    kp, k0, kr = jax.random.split(k, 3)
    if algo == "ucbvi_ent":
      pis, _ = ucbvi_ent_plan(st.counts_sas, H, **kwargs)
    elif algo == "entgame":
      pis, _ = entgame_plan(st.counts_sas, st.t, H, kp, **kwargs)
    else:
      pis = jnp.full((H, S, A), 1.0 / A)
    s0 = jax.random.choice(k0, S, p=mu0)

    def step(c, x):
      s, counts, visits = c
      h, kk = x
      ka, ks = jax.random.split(kk)
      a = jax.random.choice(ka, A, p=pis[h, s])
      s2 = jax.random.choice(ks, S, p=mdp.P[s, a])
      return (s2, counts.at[s, a, s2].add(1.0), visits.at[s].add(1.0)), None

    (_, counts, visits), _ = jax.lax.scan(
        step, (s0, st.counts_sas, st.visits),
        (jnp.arange(H), jax.random.split(kr, H)))
    st = ExplorationState(counts, visits, st.t + H)
    d = visits / visits.sum()
    ent = -jnp.sum(jnp.where(d > 0, d * jnp.log(jnp.where(d > 0, d, 1.0)),
                             0.0))
    return st, ent

  st0 = ExplorationState(jnp.zeros((S, A, S)), jnp.zeros(S), jnp.zeros(()))
  return jax.lax.scan(episode, st0, jax.random.split(key, num_episodes))
