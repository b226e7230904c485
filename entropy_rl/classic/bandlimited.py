"""Band-limited SAC: a low-pass-filtered target critic (RECONSTRUCTED).

"Band-limited Soft Actor Critic" (Campo et al., 2020,
https://arxiv.org/abs/2006.11431). Spec §B3 is reconstructed from the
abstract only; no code was found. The reading implemented here convolves the
target critic with a kernel k over its action argument::

    Q̄_bl(s', a') = Σ_m w_m · min_j Q̄_j(s', clip(a' + δ_m, −1, 1)),  Σ w_m = 1
    y            = r + γ(1 − d)·(Q̄_bl(s', a') − α·log π(a'|s'))

with δ ~ N(0, σ_bl² I). Two kernels: ``"sigma_points"`` (default,
deterministic: ±σ√D along each axis, weights 1/(2D); exact for polynomials of
degree ≤ 3, so a linear critic is unchanged and −‖a‖² becomes −‖a‖² − Dσ²) and
``"mc"`` (M Monte-Carlo draws). σ_bl = 0 gives SAC. Kernel width and sample
count are UNVERIFIED choices; the paper's additive-noise robustness variant
is not implemented.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array
KERNELS = ("sigma_points", "mc")


def kernel_nodes(action_dim: int, sigma, kind: str = "sigma_points",
                 key: Array | None = None, num_samples: int = 8):
  """Offsets δ [M, D] and weights w [M] of the smoothing kernel."""
  if kind == "sigma_points":
    eye = jnp.eye(action_dim) * math.sqrt(action_dim)
    nodes = jnp.concatenate([eye, -eye], 0) * sigma
    return nodes, jnp.full((2 * action_dim,), 1.0 / (2 * action_dim))
  if kind == "mc":
    if key is None:
      raise ValueError("kind='mc' needs a key")
    nodes = sigma * jax.random.normal(key, (num_samples, action_dim))
    return nodes, jnp.full((num_samples,), 1.0 / num_samples)
  raise ValueError(f"unknown kernel {kind!r}; valid: {KERNELS}")


def band_limited_q(q_fn, obs: Array, action: Array, sigma,
                   kind: str = "sigma_points", key: Array | None = None,
                   num_samples: int = 8, clip: bool = True) -> Array:
  """Q̄_bl(s, a) = Σ_m w_m·q_fn(s, clip(a + δ_m)).

  Args:
    q_fn: ``q_fn(obs [..., S], action [..., D]) -> [...]`` (e.g. the min over
      the twin target critics).
    obs: [..., S].
    action: [..., D].
    sigma: kernel width σ_bl (0: no smoothing).
    kind: ``"sigma_points"`` or ``"mc"``.
    key: PRNG key for ``"mc"``.
    num_samples: M for ``"mc"``.
    clip: clip perturbed actions to [−1, 1].

  Returns:
    [...] smoothed values.
  """
  nodes, w = kernel_nodes(action.shape[-1], sigma, kind, key, num_samples)

  def one(delta):
    a = action + delta
    if clip:
      a = jnp.clip(a, -1.0, 1.0)
    return q_fn(obs, a)

  vals = jax.vmap(one)(nodes)  # [M, ...]
  return jnp.tensordot(w, vals, 1)
