"""Tiny pure-JAX networks and action distributions for the classic loops.

Parameters are plain pytrees (a list of ``(W [in, out], b [out])`` pairs), so
they vmap over seeds and hyperparameters without a module system. Ensembles
and twin critics are the same MLP with a leading axis on every leaf.

Distributions:

* :func:`tanh_gaussian_sample`: SAC's squashed Gaussian (B0),
  ``a = tanh(u)``, ``u ~ N(μ, σ)``, with per-dimension log-probs
  ``log N(u_i; μ_i, σ_i) − log(1 − tanh²u_i + 1e−6)`` (ACE weights them).
* :func:`truncated_normal_sample`: ERA's truncated normal on [−1, 1]
  (A5.2), reparameterised by the inverse CDF.
* :func:`categorical_*` / :func:`gaussian_*`: PPO / TRPO heads.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.scipy import special

Array = jax.Array
LOG_2PI_E_HALF = 0.5 * math.log(2 * math.pi * math.e)  # ½ log 2πe


def mlp_init(key: Array, sizes: Sequence[int], scale_last: float = 1.0):
  """Initialises an MLP (LeCun-normal hidden layers, scaled last layer)."""
  params = []
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    w = jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(1.0 / n_in)
    if i == len(sizes) - 2:
      w = w * scale_last
    params.append((w, jnp.zeros((n_out,))))
  return params


def mlp_apply(params, x: Array, act=jax.nn.relu) -> Array:
  """Applies an MLP; ``x`` [..., in] -> [..., out]."""
  for w, b in params[:-1]:
    x = act(x @ w + b)
  w, b = params[-1]
  return x @ w + b


def ensemble_init(key: Array, n: int, sizes: Sequence[int],
                  scale_last: float = 1.0):
  """``n`` independent MLPs stacked on a leading axis (twin Q, ensembles)."""
  return jax.vmap(lambda k: mlp_init(k, sizes, scale_last))(
      jax.random.split(key, n))


def ensemble_apply(params, x: Array, act=jax.nn.relu) -> Array:
  """[E, ..., out]: every member on the same input."""
  return jax.vmap(lambda p: mlp_apply(p, x, act))(params)


# --- SAC: tanh-squashed Gaussian -------------------------------------------

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def tanh_gaussian_sample(key: Array, mean: Array, log_std: Array):
  """Reparameterised squashed-Gaussian sample (SAC, Haarnoja et al. 2018).

  ``a = tanh(u)``, ``u = μ + σ·ξ``; per dimension
  ``log π_i = log N(u_i; μ_i, σ_i) − log(1 − tanh²(u_i) + 1e−6)``
  (action scale 1: actions live in [−1, 1]).

  Args:
    key: PRNG key.
    mean: [..., D].
    log_std: [..., D], clamped to [−20, 2].

  Returns:
    ``(a [..., D], logp_per_dim [..., D])``; ``log π = logp_per_dim.sum(-1)``.
  """
  log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
  std = jnp.exp(log_std)
  eps = jax.random.normal(key, mean.shape)
  u = mean + std * eps
  a = jnp.tanh(u)
  logn = -0.5 * eps ** 2 - log_std - 0.5 * math.log(2 * math.pi)
  return a, logn - jnp.log(1.0 - a ** 2 + 1e-6)


def tanh_gaussian_logp(mean: Array, log_std: Array, a: Array) -> Array:
  """Per-dimension log-density of a squashed-Gaussian action ``a``."""
  log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
  a = jnp.clip(a, -1 + 1e-6, 1 - 1e-6)
  u = jnp.arctanh(a)
  logn = (-0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std
          - 0.5 * math.log(2 * math.pi))
  return logn - jnp.log(1.0 - a ** 2 + 1e-6)


# --- ERA: truncated normal on [-1, 1] --------------------------------------


def _ndtr(x):
  return special.ndtr(x)


def truncated_normal_sample(key: Array, loc: Array, scale: Array,
                            low: float = -1.0, high: float = 1.0):
  """Reparameterised truncated-normal sample and its clipped log-prob.

  ``x = loc + σ·Φ⁻¹(Φ(α) + U·(Φ(β) − Φ(α)))``, α = (low − loc)/σ,
  β = (high − loc)/σ; ``log p = log N(x; loc, σ) − log(Φ(β) − Φ(α))``,
  clipped to [−20, 20] per dimension as in SAC-ERA's code.

  Returns:
    ``(x [..., D], logp_per_dim [..., D])``.
  """
  alpha = (low - loc) / scale
  beta = (high - loc) / scale
  ca, cb = _ndtr(alpha), _ndtr(beta)
  u = jax.random.uniform(key, loc.shape, minval=1e-6, maxval=1 - 1e-6)
  z = special.ndtri(jnp.clip(ca + u * (cb - ca), 1e-7, 1 - 1e-7))
  x = jnp.clip(loc + scale * z, low + 1e-6, high - 1e-6)
  return x, truncated_normal_logp(loc, scale, x, low, high)


def truncated_normal_logp(loc, scale, x, low=-1.0, high=1.0):
  """Per-dimension truncated-normal log-density, clipped to [−20, 20]."""
  alpha = (low - loc) / scale
  beta = (high - loc) / scale
  z = (x - loc) / scale
  logz = jnp.log(jnp.maximum(_ndtr(beta) - _ndtr(alpha), 1e-12))
  lp = -0.5 * z ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi) - logz
  return jnp.clip(lp, -20.0, 20.0)


# --- discrete / Gaussian heads for PPO and TRPO ----------------------------


def categorical_logp(logits: Array, a: Array) -> Array:
  logp = jax.nn.log_softmax(logits)
  return jnp.take_along_axis(logp, a[..., None].astype(jnp.int32), -1)[..., 0]


def categorical_entropy(logits: Array) -> Array:
  logp = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(logp) * logp, -1)


def categorical_kl(logits_p: Array, logits_q: Array) -> Array:
  """KL(p‖q) per row."""
  lp, lq = jax.nn.log_softmax(logits_p), jax.nn.log_softmax(logits_q)
  return jnp.sum(jnp.exp(lp) * (lp - lq), -1)


def gaussian_logp(mean: Array, log_std: Array, a: Array) -> Array:
  z = (a - mean) / jnp.exp(log_std)
  return jnp.sum(-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi), -1)


def gaussian_entropy(log_std: Array) -> Array:
  return jnp.sum(log_std + LOG_2PI_E_HALF, -1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> Array:
  """KL(N_p‖N_q) for diagonal Gaussians, summed over the last axis."""
  vp, vq = jnp.exp(2 * log_std_p), jnp.exp(2 * log_std_q)
  return jnp.sum(log_std_q - log_std_p + (vp + (mean_p - mean_q) ** 2)
                 / (2 * vq) - 0.5, -1)
