"""MOSS: a mixture of surprises for unsupervised RL (Zhao et al., NeurIPS 2022).

"A Mixture of Surprises for Unsupervised Reinforcement Learning",
https://arxiv.org/abs/2210.06702 (spec §B8; code ``LeapLabTHU/MOSS``
``core/intrinsic/multimodal_cic.py``, ``core/calculations/losses.py``).
One skill-conditioned policy; in explore mode (0) it maximises a particle
state-entropy reward, in control mode (1) it minimises it::

    d_ij = ‖φ(s_i) − φ(s'_j)‖₂   over the whole (mode-0-first) batch
    D_i  = the k smallest d_ij;  running (μ, v) over all b·k distances (Chan)
    x    = max((D − μ)/v − c, 0);  r_i = log(1 + mean_k x)
    r_i ← −r_i  for control-mode rows

FLAG (code quirk kept): the running statistic stored as "std" is a
*variance* and is used directly as the divisor (``std_is_var=True``; set False
for the evident intent, division by the standard deviation).

This module holds the pieces: :func:`moss_reward` takes embeddings,
:func:`cpc_loss` is CIC's contrastive skill loss and :func:`skill_schedule`
gives the mode and skill vectors of an episode. The full agent (CIC
representation + DDPG with n-step returns, one jitted ``lax.scan``) is
:mod:`entropy_rl.classic.moss_agent`.
"""

from __future__ import annotations

from typing import NamedTuple

import math

import jax
import jax.numpy as jnp

Array = jax.Array


class KnnStats(NamedTuple):
  mean: Array
  var: Array  # the code's "std" (a variance)
  count: Array


def knn_stats_init() -> KnnStats:
  return KnnStats(jnp.zeros(()), jnp.ones(()), jnp.array(1e-4))


def knn_distances(source: Array, target: Array, k: int) -> Array:
  """The k smallest ‖source_i − target_j‖ per row: [N, k] (ascending)."""
  d = jnp.linalg.norm(source[:, None, :] - target[None, :, :], axis=-1)
  return -jax.lax.top_k(-d, k)[0]


def update_stats(stats: KnnStats, x: Array) -> KnnStats:
  """Chan's parallel update with all entries of x."""
  x = x.reshape(-1)
  bm, bv, n = x.mean(), x.var(), x.shape[0]
  delta = bm - stats.mean
  tot = stats.count + n
  mean = stats.mean + delta * n / tot
  m2 = stats.var * stats.count + bv * n + delta ** 2 * stats.count * n / tot
  return KnnStats(mean, m2 / tot, tot)


def particle_entropy_reward(source: Array, target: Array, stats: KnnStats,
                            k: int = 16, clip: float = 5e-4,
                            std_is_var: bool = True
                            ) -> tuple[Array, KnnStats]:
  """APT/CIC particle reward with running normalisation; returns (r [N], stats)."""
  d = knn_distances(source, target, k)
  stats = update_stats(stats, d)
  div = stats.var if std_is_var else jnp.sqrt(stats.var)
  x = jnp.maximum((d - stats.mean) / div - clip, 0.0)
  return jnp.log(1.0 + x.mean(-1)), stats


def moss_reward(source: Array, target: Array, mode: Array, stats: KnnStats,
                k: int = 16, clip: float = 5e-4, std_is_var: bool = True
                ) -> tuple[Array, KnnStats]:
  """MOSS: the particle reward, negated on control rows (mode == 1).

  Args:
    source: [N, e] embeddings φ(s) (mode-0 rows first, as collated by MOSS).
    target: [N, e] embeddings φ(s').
    mode: [N] 0 = explore, 1 = control.
    stats: running k-NN statistics.

  Returns:
    (r [N], new stats).
  """
  r, stats = particle_entropy_reward(source, target, stats, k, clip,
                                     std_is_var)
  return jnp.where(mode == 1, -r, r), stats


def skill_schedule(key: Array, episode_len: int, skill_dim: int = 32,
                   partitions: int = 2, skill_every: int = 50
                   ) -> tuple[Array, Array]:
  """Per-step mode [T] and skill [T, skill_dim] of one episode.

  The episode is split into ``partitions`` chunks (mode = chunk index mod 2);
  mode 0 skills are [U(0,1)^{d/2}, 0], mode 1 skills [0, U(0,1)^{d/2}],
  resampled every ``skill_every`` steps.
  """
  t = jnp.arange(episode_len)
  mode = ((t * partitions) // episode_len) % 2
  n_draw = -(-episode_len // skill_every)
  u = jax.random.uniform(key, (n_draw, skill_dim // 2))
  u = u[t // skill_every]
  z = jnp.zeros_like(u)
  skill = jnp.where(mode[:, None] == 0, jnp.concatenate([u, z], -1),
                    jnp.concatenate([z, u], -1))
  return mode, skill


def _l2_normalize(x: Array) -> Array:
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def cpc_logits(query: Array, key: Array, temperature: float = 0.5) -> Array:
  """[N, N] cosine similarities / T; positive pairs on the diagonal."""
  return _l2_normalize(query) @ _l2_normalize(key).T / temperature


def cpc_loss(query: Array, key: Array, temperature: float = 0.5) -> Array:
  """CIC's contrastive skill loss (Laskin et al. 2022, as in MOSS's code).

  With unit vectors q_i = skill_net(z_i) and k_i = pred(φ(s_i), φ(s'_i))::

      pos_i = exp(q_i·k_i / T)
      neg_i = max(Σ_j exp(q_i·k_j / T) − e^{1/T}, 1e−6)
      L     = mean_i −log(pos_i / (neg_i + 1e−6))

  (the code subtracts the largest possible self-similarity e^{1/T} from the
  row sum rather than the positive term itself.)

  Args:
    query: [N, c] skill projections.
    key: [N, c] transition projections.
    temperature: T (0.5).

  Returns:
    The scalar loss.
  """
  q, k = _l2_normalize(query), _l2_normalize(key)
  sim = jnp.exp(q @ k.T / temperature)
  neg = jnp.maximum(sim.sum(-1) - math.exp(1.0 / temperature), 1e-6)
  pos = jnp.exp(jnp.sum(q * k, -1) / temperature)
  return jnp.mean(-jnp.log(pos / (neg + 1e-6)))
