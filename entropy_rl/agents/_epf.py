"""ePF: entropic particle filtering for inference-time scaling.

Reference: "Entropic Particle Filtering for Exploration in Inference-Time
Scaling", https://arxiv.org/abs/2510.05825 (spec A8; its_hub ParticleGibbs
with entropic annealing).

N particles carry PRM log-weights ``w_i = logit(clip(score_i, 1e-7, 1 − 1e-7))``.
With ``p = softmax(w)``, ``ESS = 1/Σp²``, ``ρ = ESS/N`` and progress
``u = t/T_max``, if ``ρ < ρ_thr`` and ``u < u_early`` the resampling
distribution is tempered, ``softmax(w/T)``, with

* ``"ess"`` (default, the paper's β_t⁻¹): ``T = max(1, (1/ρ)(1 − u))``,
* ``"entropy"``: ``T = max(1, 1/(H_n + (1 − H_n)u))``, ``H_n = H(p)/log N``,
* ``"base"``: ``T = max(1, T_max_val − u)``;

otherwise T = 1 (plain particle filtering). T ≥ 1: annealing only flattens.
Look-ahead modulation is not implemented in the reference library either.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.core import types

Array = types.Array
METHODS = ("ess", "entropy", "base")


def prm_log_weights(scores: Array) -> Array:
  s = jnp.clip(scores, 1e-7, 1 - 1e-7)
  return jnp.log(s) - jnp.log1p(-s)


def effective_sample_size(log_weights: Array) -> Array:
  p = jax.nn.softmax(log_weights)
  return 1.0 / jnp.sum(p ** 2)


def annealing_temperature(log_weights: Array, step: Array, max_steps: int, *,
                          method: str = "ess", rho_threshold: float = 0.5,
                          early_fraction: float = 0.5,
                          max_temperature: float = 2.0) -> Array:
  """The resampling temperature T (see module docstring)."""
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
  n = log_weights.shape[-1]
  p = jax.nn.softmax(log_weights)
  rho = effective_sample_size(log_weights) / n
  u = jnp.asarray(step, jnp.float32) / max_steps
  if method == "ess":
    t = jnp.maximum(1.0, (1.0 / rho) * (1.0 - u))
  elif method == "entropy":
    h = -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0)) / jnp.log(n)
    t = jnp.maximum(1.0, 1.0 / (h + (1.0 - h) * u))
  else:
    t = jnp.maximum(1.0, max_temperature - u)
  return jnp.where((rho < rho_threshold) & (u < early_fraction), t, 1.0)


def resample(rng: types.PRNGKey, log_weights: Array, temperature: Array,
             num: int | None = None, *, systematic: bool = False) -> Array:
  """Indices [num] drawn from ``softmax(w/T)`` (multinomial or systematic)."""
  n = log_weights.shape[-1]
  num = n if num is None else num
  logits = log_weights / temperature
  if not systematic:
    return jax.random.categorical(rng, logits, shape=(num,))
  p = jax.nn.softmax(logits)
  cdf = jnp.cumsum(p)
  u = (jax.random.uniform(rng) + jnp.arange(num)) / num
  return jnp.minimum(jnp.searchsorted(cdf, u), n - 1)


class ParticleState(NamedTuple):
  particles: Any  # pytree with leading dim N
  log_weights: Array  # [N]
  stopped: Array  # [N] bool


def entropic_particle_filter(step_fn: Callable[..., tuple[Any, Array]],
                             score_fn: Callable[[Any], Array],
                             particles: Any, rng: types.PRNGKey, *,
                             num_steps: int, method: str = "ess",
                             rho_threshold: float = 0.5,
                             early_fraction: float = 0.5,
                             systematic: bool = False
                             ) -> tuple[ParticleState, Array]:
  """Particle filtering over reasoning steps with entropic annealing.

  Args:
    step_fn: ``step_fn(particles, rng) -> (particles', stopped [N])`` appends
      one step to every active particle (pure, jittable).
    score_fn: ``score_fn(particles) -> [N]`` PRM scores in (0, 1).
    particles: initial particle pytree (leading dim N).
    rng: PRNG key.
    num_steps: T_max.
    method: annealing method.
    rho_threshold: ρ_thr.
    early_fraction: u_early.
    systematic: systematic instead of multinomial resampling.

  Returns:
    ``(final ParticleState, temperatures [num_steps])``; the answer is the
    particle with the largest final weight.
  """
  n = jax.tree.leaves(particles)[0].shape[0]
  init = ParticleState(particles, jnp.zeros((n,)), jnp.zeros((n,), bool))

  def body(state, xs):
    t, key = xs
    k1, k2 = jax.random.split(key)
    new, stopped = step_fn(state.particles, k1)
    keep_old = state.stopped
    new = jax.tree.map(
        lambda a, b: jnp.where(keep_old.reshape((-1,) + (1,) * (a.ndim - 1)),
                               a, b), state.particles, new)
    w = jnp.where(keep_old, state.log_weights,
                  prm_log_weights(score_fn(new)))
    temp = annealing_temperature(w, t, num_steps, method=method,
                                 rho_threshold=rho_threshold,
                                 early_fraction=early_fraction)
    idx = resample(k2, w, temp, n, systematic=systematic)
    pick = lambda x: x[idx]
    out = ParticleState(jax.tree.map(pick, new), w[idx],
                        (stopped | keep_old)[idx])
    return out, temp

  keys = jax.random.split(rng, num_steps)
  return jax.lax.scan(body, init, (jnp.arange(1, num_steps + 1), keys))
