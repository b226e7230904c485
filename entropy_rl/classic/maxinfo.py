"""MaxInfoRL: information gain as an auto-scaled extra entropy term.

Sukhija et al., "MaxInfoRL: Boosting exploration in reinforcement learning
through information gain maximization", https://arxiv.org/abs/2412.12098
(spec §B4; code ``maxinforl_torch/commons/maxinfo_sac.py``).

* An ensemble of E heads f_e(s, a) -> (s' − s, r) on normalised inputs and
  outputs; per sample ``IG(s, a) = mean_k mean_{o∈k} log(ε + Var_e[f_e])
  − log ε`` over the keys k = (next observation, reward) (unbiased variance
  over heads, ε = 1e−6), then a running normaliser. The ensemble's MSE is
  averaged the same way: per key, then over keys (:func:`ensemble_loss`).
* Total entropy ``𝓗(s, ã) = λ·IG(s, ã) − α·log π(ã|s)`` in the actor
  (IG differentiated through ã) and ``+ λ·IG(s', a')`` in the critic target.
* ``L_λ = E[log λ · sg(IG(s, ã_π) − IG(s, ã_π̄))]`` with π̄ a Polyak target
  actor: λ falls when the current policy already gains more information.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
IG_EPS = 1e-6


def information_gain(preds, eps: float = IG_EPS) -> Array:
  """IG from ensemble predictions, one array [E, ..., O_k] per predicted key.

  ``IG = mean_k mean_{o ∈ k} log(ε + Var_e f_e) − log ε`` with the unbiased
  (ddof 1) variance over heads: the mean over each key's output dims comes
  first, then the mean over keys (next observation, reward), as in the
  reference ``get_disagreement`` + ``agg_intrinsic_reward='mean'``. With
  O next-observation dims and one reward, the reward therefore weighs ½,
  not 1/(O + 1). Identical heads give 0.

  Args:
    preds: a pytree (tuple, dict) of arrays [E, ..., O_k], one leaf per key;
      a single array is one key.
    eps: ε.

  Returns:
    IG [...].
  """
  per_key = [jnp.mean(jnp.log(eps + jnp.var(p, axis=0, ddof=1)), -1)
             for p in jax.tree.leaves(preds)]
  return jnp.mean(jnp.stack(per_key), 0) - jnp.log(eps)


def ensemble_loss(preds, targets) -> Array:
  """The ensemble's MSE: mean over each key, then over keys.

  ``mean_k mean_{e, n, o ∈ k} (f_e − y)²``, as the reference (per-key
  ``loss[key]``, then ``stacked_losses.mean()``), so the reward weighs ½ like
  the next observation, whatever O.

  Args:
    preds: a pytree of arrays [E, N, O_k], one leaf per key.
    targets: the same pytree structure, arrays [N, O_k].

  Returns:
    A scalar.
  """
  per_key = jax.tree.map(lambda p, y: jnp.mean((p - y[None]) ** 2), preds,
                         targets)
  return jnp.mean(jnp.stack(jax.tree.leaves(per_key)))


class RunningNorm(NamedTuple):
  """Running mean / variance (Chan's parallel update)."""

  mean: Array
  var: Array
  count: Array


def running_norm_init(shape=()) -> RunningNorm:
  return RunningNorm(jnp.zeros(shape), jnp.ones(shape), jnp.array(1e-4))


def running_norm_update(stats: RunningNorm, x: Array) -> RunningNorm:
  """Merges a batch x [N, ...] into the statistics."""
  bm, bv, n = x.mean(0), x.var(0), x.shape[0]
  delta = bm - stats.mean
  tot = stats.count + n
  mean = stats.mean + delta * n / tot
  m2 = stats.var * stats.count + bv * n + delta ** 2 * stats.count * n / tot
  return RunningNorm(mean, m2 / tot, tot)


def normalize(stats: RunningNorm, x: Array) -> Array:
  return (x - stats.mean) / jnp.sqrt(stats.var + 1e-8)


def lambda_loss(log_lambda: Array, ig_pi: Array, ig_target: Array) -> Array:
  """L_λ = E[log λ · sg(IG_π − IG_π̄)]; ∂/∂log λ has the sign of the gap."""
  return jnp.mean(log_lambda * jax.lax.stop_gradient(ig_pi - ig_target))
