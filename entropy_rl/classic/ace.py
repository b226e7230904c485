"""ACE: causality-aware entropy and dormancy-guided reset (Ji et al., ICML 2024).

"ACE: Off-Policy Actor-Critic with Causality-Aware Entropy Regularization",
https://arxiv.org/abs/2402.14528 (spec §B2; official code
``utilis/causal_weight.py``, ``model/model.py``, ``model/algorithm.py``,
``model/dormant_utils.py``).

* Causal weights ``w = |A|·softmax(B)`` where ``B ∈ ℝ^{|A|}`` are the causal
  effects a_i → r; Σ w = |A| and w ≡ 1 is SAC. ``B`` is the row of r in the
  DirectLiNGAM adjacency matrix fitted on X = [s, a, r] (:func:`direct_lingam`,
  the paper's method and the default), or, behind the flag
  ``method="ols"``, a least-squares proxy (:func:`ols_causal_effects`).
* Weighted entropy: ``log π_w(a|s) = Σ_i w_i·[log N(u_i; μ_i, σ_i) −
  log(1 − tanh² u_i + 1e−6)]`` replaces log π in the critic target, actor
  loss and α loss (H̄ = −|A|); w is a constant.
* Gradient dormancy (``cal_dormant_grad``): over all linear layers of the
  policy, neuron j of a layer is dormant when
  ``‖∇W[:, j]‖ < 0.05 · mean_j ‖∇W[:, j]‖`` (rows of torch's [out, in]
  weights, columns of our [in, out] matrices); d = #dormant / #neurons.
* Soft reset (``perturb``) every ``reset_interval`` updates after 5000:
  ``θ ← f·θ + (1 − f)·θ_rand`` on the policy, the critic and the target critic
  (each with its own fresh init θ_rand), with ``f = clip(1 − d, 0.2, 0.9)``
  (``reset``) or ``f = clip(1.5 − exp(−8·(max w − min w)), 0.2, 0.9)``
  (``causal_reset``); the actor and critic optimiser states are reset.

DirectLiNGAM (Shimizu et al., JMLR 2011, with the pairwise likelihood-ratio
measure of Hyvärinen & Smith, JMLR 2013) is ported from causal-learn's
``DirectLiNGAM(measure="pwling")``, the implementation ACE imports:

1. Causal order: repeatedly pick the most exogenous remaining variable
   ``m = argmin_i Σ_{j≠i} min(0, Ĥ(x_j) + Ĥ(r_{i|j}) − Ĥ(x_i) − Ĥ(r_{j|i}))²``
   on standardised variables, where ``r_{i|j} = x_i − cov(x_i, x_j)/var(x_j)
   · x_j`` and Ĥ is the maximum-entropy approximation
   ``Ĥ(u) = ½(1 + log 2π) − k₁(E log cosh u − γ)² − k₂(E[u e^{−u²/2}])²``;
   then regress x_m out of every remaining variable.
2. Adjacency: each variable is regressed on its predecessors in the order by
   the adaptive lasso: OLS weights ``ŵ = |β_OLS|``, then ``LassoLarsIC(BIC)``
   on ``X·ŵ``; ``B[target, pred] = β_lasso·ŵ``.

PORT NOTE: sklearn's LARS path is replaced by coordinate-descent lasso on a
geometric grid of α (``n_alphas`` points from α_max to 1e−4·α_max, plus α = 0,
i.e. OLS), and the BIC ``RSS/σ̂² + log(n)·df`` (σ̂² from the full OLS fit, as
sklearn ≥ 1.1) is minimised over that grid instead of over the LARS knots.
Zero-variance columns (e.g. a constant observation) are handled with an ε in
the standardisation; they come first in the order and get no edges.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array
CAUSAL_METHODS = ("direct_lingam", "ols")
_EPS = 1e-12


def causal_weights(effects: Array) -> Array:
  """w = |A|·softmax(B) for effects B [|A|]; Σ w = |A|."""
  return effects.shape[-1] * jax.nn.softmax(effects, -1)


def ols_causal_effects(obs: Array, actions: Array, rewards: Array,
                       ridge: float = 1e-6) -> Array:
  """Least-squares proxy for LiNGAM's a → r effects (``method="ols"``).

  Regresses r on [s, a] with an intercept and returns the action
  coefficients. It ignores the causal direction: an action that is a *child*
  of r (or any variable correlated with r) gets a nonzero effect, where
  DirectLiNGAM puts it after r in the order and gives it none.

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


# --- DirectLiNGAM -------------------------------------------------------------


def maxent_entropy(u: Array) -> Array:
  """Hyvärinen's maximum-entropy approximation of H(u), over the last axis.

  ``Ĥ(u) = ½(1 + log 2π) − k₁(E[log cosh u] − γ)² − k₂(E[u·exp(−u²/2)])²``
  with k₁ = 79.047, k₂ = 7.4129, γ = 0.37457 (u standardised).
  """
  k1, k2, gamma = 79.047, 7.4129, 0.37457
  au = jnp.abs(u)
  logcosh = au + jnp.log1p(jnp.exp(-2.0 * au)) - math.log(2.0)
  return ((1.0 + math.log(2.0 * math.pi)) / 2.0
          - k1 * (jnp.mean(logcosh, -1) - gamma) ** 2
          - k2 * jnp.mean(u * jnp.exp(-u ** 2 / 2.0), -1) ** 2)


def causal_order(x: Array) -> Array:
  """DirectLiNGAM's causal order (pairwise likelihood-ratio measure).

  Args:
    x: [N, p] samples.

  Returns:
    [p] int: variable indices from the most exogenous to the most
    downstream (ties go to the smaller index, like ``np.argmax``).
  """
  x = jnp.asarray(x)
  n, p = x.shape
  eye = jnp.eye(p, dtype=bool)

  def body(k, c):
    xr, remaining, order = c
    xc = xr - xr.mean(0)
    xs = xc / jnp.maximum(xc.std(0), _EPS)  # [N, p] standardised
    xt = xs.T  # [p, N]
    # r_{i|j} = x_i − cov(x_i, x_j)/var(x_j)·x_j (np.cov ddof 1, np.var ddof 0)
    cov = xt @ xs / (n - 1)
    var = jnp.mean(xt ** 2, -1)
    coef = cov / jnp.maximum(var, _EPS)[None, :]
    r = xt[:, None, :] - coef[:, :, None] * xt[None, :, :]  # [i, j, N]
    r = r / jnp.maximum(r.std(-1), _EPS)[..., None]
    h_x = maxent_entropy(xt)  # [p]
    h_r = maxent_entropy(r)  # [p, p]: h_r[i, j] = Ĥ(r_{i|j})
    diff = (h_x[None, :] + h_r) - (h_x[:, None] + h_r.T)
    pair = remaining[:, None] & remaining[None, :] & ~eye
    score = jnp.sum(jnp.where(pair, jnp.minimum(0.0, diff) ** 2, 0.0), 1)
    m = jnp.argmin(jnp.where(remaining, score, jnp.inf))
    # regress x_m out of the other remaining (raw, not standardised) columns
    xm = xc[:, m]
    b = (xc.T @ xm / (n - 1)) / jnp.maximum(jnp.mean(xm ** 2), _EPS)
    upd = remaining & (jnp.arange(p) != m)
    xr = jnp.where(upd[None, :], xr - b[None, :] * xr[:, m][:, None], xr)
    return xr, remaining.at[m].set(False), order.at[k].set(m)

  init = (x, jnp.ones((p,), bool), jnp.zeros((p,), jnp.int32))
  return jax.lax.fori_loop(0, p, body, init)[2]


def _lasso_cd(gram, corr, alpha, beta0, sweeps):
  """min_β ½βᵀGβ − cᵀβ + α‖β‖₁ by cyclic coordinate descent (warm start)."""
  p = gram.shape[0]
  diag = jnp.diag(gram)

  def sweep(_, beta):
    for j in range(p):
      rho = corr[j] - gram[j] @ beta + diag[j] * beta[j]
      bj = jnp.sign(rho) * jnp.maximum(jnp.abs(rho) - alpha, 0.0)
      beta = beta.at[j].set(jnp.where(diag[j] > _EPS,
                                      bj / jnp.maximum(diag[j], _EPS), 0.0))
    return beta

  return jax.lax.fori_loop(0, sweeps, sweep, beta0)


def adaptive_lasso(x: Array, predictors: Array, target, n_alphas: int = 48,
                   sweeps: int = 60, gamma: float = 1.0) -> Array:
  """causal-learn's ``predict_adaptive_lasso`` with a masked predictor set.

  ``ŵ = |β_OLS(x_target ~ x_pred)|^γ``; ``β = LassoLarsIC(BIC)(x_pred·ŵ,
  x_target)``; returns ``β·ŵ`` (intercepts fitted, as sklearn's defaults).

  Args:
    x: [N, p] samples.
    predictors: [p] bool mask of the regressors (target excluded).
    target: index of the regressand.
    n_alphas: size of the α grid (see the module's port note).
    sweeps: coordinate-descent sweeps per α.
    gamma: the adaptive-lasso exponent.

  Returns:
    [p] coefficients, zero outside ``predictors``.
  """
  # A NumPy x indexed by a traced ``target`` (direct_lingam's vmap) fails.
  x, predictors = jnp.asarray(x), jnp.asarray(predictors)
  n, p = x.shape
  m = predictors.astype(x.dtype)
  xc = (x - x.mean(0)) * m
  y = x[:, target]
  yc = y - y.mean()
  ols = jnp.linalg.lstsq(xc, yc)[0] * m
  w = jnp.abs(ols) ** gamma
  z = xc * w
  gram, corr = z.T @ z / n, z.T @ yc / n
  alpha_max = jnp.max(jnp.abs(corr))
  alphas = alpha_max * jnp.logspace(0.0, -4.0, n_alphas)

  def path(beta, a):
    beta = _lasso_cd(gram, corr, a, beta, sweeps)
    return beta, beta

  _, betas = jax.lax.scan(path, jnp.zeros((p,), x.dtype), alphas)
  beta_ols = jnp.linalg.lstsq(z, yc)[0] * m
  betas = jnp.concatenate([betas, beta_ols[None]], 0)  # [K, p]
  rss = jnp.sum((yc[None, :] - betas @ z.T) ** 2, -1)
  dof = n - jnp.sum(m) - 1.0
  sigma2 = jnp.maximum(rss[-1] / jnp.maximum(dof, 1.0), _EPS)
  df = jnp.sum(jnp.abs(betas) > jnp.finfo(x.dtype).eps, -1)
  bic = rss / sigma2 + math.log(n) * df
  return betas[jnp.argmin(bic)] * w


def direct_lingam(x: Array, **lasso_kw) -> tuple[Array, Array]:
  """DirectLiNGAM: causal order and adjacency matrix of a linear SEM.

  ``x = B x + e`` with non-Gaussian independent e and B strictly lower
  triangular in the causal order (Shimizu et al., JMLR 2011,
  https://jmlr.org/papers/v12/shimizu11a.html).

  Args:
    x: [N, p] samples (rows are observations); a jax or NumPy array (NumPy
      input is converted with ``jnp.asarray``, so float64 becomes float32
      unless x64 is enabled).
    **lasso_kw: forwarded to :func:`adaptive_lasso`.

  Returns:
    ``(B [p, p], order [p])``: ``B[i, j]`` is the direct effect x_j → x_i.
  """
  x = jnp.asarray(x)
  p = x.shape[1]
  order = causal_order(x)
  pos = jnp.zeros((p,), jnp.int32).at[order].set(jnp.arange(p))

  def row(t):
    return adaptive_lasso(x, pos < pos[t], t, **lasso_kw)

  return jax.vmap(row)(jnp.arange(p)), order


def causal_effects(obs: Array, actions: Array, rewards: Array,
                   method: str = "direct_lingam") -> Array:
  """B [|A|]: the effects a_i → r that ACE's weights are built from.

  Args:
    obs: [N, S].
    actions: [N, A].
    rewards: [N].
    method: ``"direct_lingam"`` (the paper: row r of DirectLiNGAM's B on
      X = [s, a, r], action columns) or ``"ols"`` (the least-squares proxy).

  Returns:
    [A] effects.
  """
  if method == "ols":
    return ols_causal_effects(obs, actions, rewards)
  if method != "direct_lingam":
    raise ValueError(f"unknown causal method {method!r}; valid: "
                     f"{CAUSAL_METHODS}")
  s, a = obs.shape[1], actions.shape[1]
  x = jnp.concatenate([obs, actions, rewards[:, None]], -1)
  order = causal_order(x)
  p = x.shape[1]
  pos = jnp.zeros((p,), jnp.int32).at[order].set(jnp.arange(p))
  row = adaptive_lasso(x, pos < pos[p - 1], p - 1)
  return row[s:s + a]


# --- weighted log-prob, dormancy, reset ----------------------------------------


def weighted_logp(logp_per_dim: Array, w: Array) -> Array:
  """log π_w = Σ_i w_i·logp_i ([..., A] -> [...]); w has no gradient."""
  return jnp.sum(jax.lax.stop_gradient(w) * logp_per_dim, -1)


def dormant_counts(grads, threshold: float = 0.05) -> tuple[Array, int]:
  """(#gradient-dormant neurons, #neurons) over all layers of an MLP.

  ``grads`` is a list of ``(∇W [in, out], ∇b)`` pairs; neuron j of a layer is
  dormant when ‖∇W[:, j]‖ < threshold × mean_j ‖∇W[:, j]‖ (ACE's
  ``cal_dormant_grad``, percentage 0.05).
  """
  dormant, total = jnp.zeros(()), 0
  for gw, _ in grads:
    norms = jnp.linalg.norm(gw, axis=0)
    dormant = dormant + jnp.sum(norms < threshold * jnp.mean(norms))
    total += norms.shape[0]
  return dormant, total


def dormant_ratio(grads, threshold: float = 0.05) -> Array:
  """Gradient-dormant ratio d = #dormant / #neurons (see :func:`dormant_counts`).
  """
  dormant, total = dormant_counts(grads, threshold)
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


def reset_networks(key: Array, f, actor, critic, critic_target, init_actor,
                   init_critic):
  """ACE's ``perturb`` on policy, critic and target critic.

  Each network is shrunk towards its own fresh initialisation:
  ``θ ← f·θ + (1 − f)·θ_rand`` (``init_actor(key)`` / ``init_critic(key)``
  give θ_rand).

  Returns:
    ``(actor, critic, critic_target)``.
  """
  ka, kc, kt = jax.random.split(key, 3)
  return (soft_reset(actor, init_actor(ka), f),
          soft_reset(critic, init_critic(kc), f),
          soft_reset(critic_target, init_critic(kt), f))
