"""Best-of-both-worlds policy optimisation (Dann, Wei, Zimmert, 2023).

"Best of Both Worlds Policy Optimization", ICML 2023,
https://arxiv.org/abs/2302.09408. Spec §B11, abstract only: the generic
per-state FTRL forms are derived; the paper's exact bonuses B_t and learning
rates are UNVERIFIED (bonus 0 and η_t = η₀/√t here, behind arguments)::

    π_t(·|s) = argmin_{p ∈ Δ} ⟨p, L_t(s, ·)⟩ + Ψ_t(p),  L_t = Σ_{τ<t}(Q̂_τ − B_τ)
    Shannon    Ψ = (1/η)Σ p log p   ->  p ∝ exp(−η L)
    Tsallis-½  Ψ = −(2/η)Σ √p       ->  p(a) = 1/(η(L(a) + ν))²
    log-barrier Ψ = −(1/η)Σ log p   ->  p(a) = 1/(η(L(a) + ν))

ν is the unique normaliser with L + ν > 0 and Σ p = 1, found by bisection
plus Newton steps (fixed iteration counts: jit-able). Here losses are
ℓ = −Q (rewards), with Q̂_τ = Q^{π_τ} computed exactly from known P.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.classic import tabular
from entropy_rl.classic.envs import TabularMDP

Array = jax.Array
REGULARIZERS = ("shannon", "tsallis", "logbarrier")


def _power(reg):
  return 2.0 if reg == "tsallis" else 1.0


def ftrl_normalizer(L: Array, eta, reg: str, iters: int = 80) -> Array:
  """ν [...] such that Σ_a 1/(η(L + ν))^k = 1 (k = 2 Tsallis, 1 log-barrier)."""
  k = _power(reg)
  A = L.shape[-1]
  lmin = L.min(-1)
  lo = -lmin + 1e-12
  hi = -lmin + A ** (1.0 / k) / eta
  f = lambda nu: jnp.sum((eta * (L + nu[..., None])) ** (-k), -1) - 1.0

  def bisect(c, _):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    big = f(mid) > 0  # sum too large: ν must grow
    return (jnp.where(big, mid, lo), jnp.where(big, hi, mid)), None

  (lo, hi), _ = jax.lax.scan(bisect, (lo, hi), None, iters)
  nu = 0.5 * (lo + hi)

  def newton(nu, _):
    x = eta * (L + nu[..., None])
    val = jnp.sum(x ** (-k), -1) - 1.0
    der = jnp.sum(-k * eta * x ** (-k - 1), -1)
    new = nu - val / der
    return jnp.where(new > -lmin, new, nu), None

  nu, _ = jax.lax.scan(newton, nu, None, 5)
  return nu


def ftrl_policy(L: Array, eta, reg: str = "shannon") -> Array:
  """The FTRL distribution over the last axis of cumulative losses L."""
  if reg == "shannon":
    return jax.nn.softmax(-eta * L, -1)
  if reg not in REGULARIZERS:
    raise ValueError(f"unknown regulariser {reg!r}; valid: {REGULARIZERS}")
  nu = ftrl_normalizer(L, eta, reg)
  p = (eta * (L + nu[..., None])) ** (-_power(reg))
  return p / p.sum(-1, keepdims=True)


def bobw_po(mdp: TabularMDP, num_iters: int, reg: str = "tsallis",
            eta0: float = 1.0, bonus: Array | None = None
            ) -> tuple[Array, Array]:
  """Full-information FTRL policy optimisation on a known MDP.

  Each iteration evaluates Q^{π_t} exactly, accumulates L ← L + (−Q − B),
  and plays π_{t+1}(·|s) = FTRL(L(s, ·), η_t = η₀/√(t + 1)).

  Returns:
    (final π [S, A], expected return of π_t per iteration [num_iters]).
  """
  S, A = mdp.num_states, mdp.num_actions
  B = jnp.zeros((S, A)) if bonus is None else bonus

  def body(c, t):
    L, pi = c
    _, q = tabular.policy_evaluation(mdp, pi)
    L = L + (-q - B)
    eta = eta0 / jnp.sqrt(t + 1.0)
    pi_new = ftrl_policy(L, eta, reg)
    return (L, pi_new), tabular.expected_return(mdp, pi)

  (_, pi), rets = jax.lax.scan(
      body, (jnp.zeros((S, A)), jnp.full((S, A), 1.0 / A)),
      jnp.arange(num_iters, dtype=jnp.float32))
  return pi, rets
