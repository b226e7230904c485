"""ACE: causality-aware entropy and dormancy-guided reset (Ji et al., ICML 2024).

"ACE: Off-Policy Actor-Critic with Causality-Aware Entropy Regularization",
https://arxiv.org/abs/2402.14528 (spec §B2; official code
``utilis/causal_weight.py``, ``model/model.py``, ``model/algorithm.py``).

* Causal weights ``w = |A|·softmax(B)`` where ``B ∈ ℝ^{|A|}`` are the causal
  effects a_i → r; Σ w = |A| and w ≡ 1 is SAC.
* Weighted entropy: ``log π_w(a|s) = Σ_i w_i·[log N(u_i; μ_i, σ_i) −
  log(1 − tanh² u_i + 1e−6)]`` replaces log π in the critic target, actor
  loss and α loss (H̄ = −|A|); w is a constant.
* Gradient dormancy d: the fraction of neurons (rows of torch Linear weights,
  columns of our [in, out] matrices) whose gradient norm is below
  0.05 × the layer mean. Soft reset ``θ ← f·θ + (1 − f)·θ_rand`` with
  ``f = clip(1 − d, 0.2, 0.9)`` (``causal_reset``:
  ``f = clip(1.5 − exp(−8·(max w − min w)), 0.2, 0.9)``); optimiser states are
  reset too.

FLAG (code vs. port): the paper fits DirectLiNGAM on [s, a, r]. No LiNGAM
exists in JAX here; :func:`ols_causal_effects` is a least-squares proxy
(regression of r on [s, a]; the coefficients of a are taken as B), which
the spec accepts only when flagged. It agrees with LiNGAM's B for linear
Gaussian-free SEMs where the actions are parents of r.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def causal_weights(effects: Array) -> Array:
  """w = |A|·softmax(B) for effects B [|A|]; Σ w = |A|."""
  return effects.shape[-1] * jax.nn.softmax(effects, -1)


def ols_causal_effects(obs: Array, actions: Array, rewards: Array,
                       ridge: float = 1e-6) -> Array:
  """Least-squares proxy for LiNGAM's a → r effects (FLAGGED, see module).

  Args:
    obs: [N, S].
    actions: [N, A].
    rewards: [N].
    ridge: Tikhonov term for a well-posed solve.

  Returns:
    B [A]: the coefficients of the actions in r ≈ c + s·β_s + a·β_a.
  """
  x = jnp.concatenate([obs, actions, jnp.ones_like(rewards)[:, None]], -1)
  xm = x - jnp.concatenate([x[:, :-1].mean(0), jnp.zeros((1,))])
  gram = xm.T @ xm + ridge * jnp.eye(x.shape[1])
  coef = jnp.linalg.solve(gram, xm.T @ (rewards - rewards.mean()))
  s = obs.shape[1]
  return coef[s:s + actions.shape[1]]


def weighted_logp(logp_per_dim: Array, w: Array) -> Array:
  """log π_w = Σ_i w_i·logp_i ([..., A] -> [...]); w has no gradient."""
  return jnp.sum(jax.lax.stop_gradient(w) * logp_per_dim, -1)


def dormant_ratio(grads, threshold: float = 0.05) -> Array:
  """Gradient-dormant ratio over all weight matrices of an MLP.

  ``grads`` is a list of ``(W [in, out], b)`` gradients; a neuron j is dormant
  when ‖∇W[:, j]‖ < threshold × mean_j ‖∇W[:, j]‖.
  """
  dormant, total = 0.0, 0
  for gw, _ in grads:
    norms = jnp.linalg.norm(gw, axis=0)
    dormant = dormant + jnp.sum(norms < threshold * jnp.mean(norms))
    total += norms.shape[0]
  return dormant / total


def reset_factor(dormant: Array, f_min: float = 0.2,
                 f_max: float = 0.9) -> Array:
  """f = clip(1 − d, 0.2, 0.9) (ACE's ``reset`` variant)."""
  return jnp.clip(1.0 - dormant, f_min, f_max)


def causal_reset_factor(w: Array, f_min: float = 0.2,
                        f_max: float = 0.9) -> Array:
  """f = clip(1.5 − exp(−8·(max w − min w)), 0.2, 0.9) (``causal_reset``)."""
  return jnp.clip(1.5 - jnp.exp(-8.0 * (w.max() - w.min())), f_min, f_max)


def soft_reset(params, fresh, f):
  """θ ← f·θ + (1 − f)·θ_rand on every leaf (f = 1: identity, 0: fresh)."""
  return jax.tree.map(lambda p, r: f * p + (1.0 - f) * r, params, fresh)
