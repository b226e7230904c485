"""EMPG: entropy-modulated policy gradients for multi-turn agents.

Reference: Wang et al. 2025, "Harnessing Uncertainty: Entropy-Modulated
Policy Gradients for Long-Horizon LLM Agents",
https://arxiv.org/abs/2509.09265 (spec A2; steps 1-4 from the project-page
pseudocode, 5-6 from a third-party re-implementation citing Eq. 7-8).

Over the steps j (agent turns) of the batch, with step entropies H_j (old
policy, mean over the step's tokens)::

    Ĥ_j = (H_j − min H) / (max H − min H + ε)
    g_j = exp(−k Ĥ_j) / (mean_j' exp(−k Ĥ_j') + ε)        (batch mean 1)
    f_j = exp(−k_f Ĥ_j)                                   (future clarity)
    A^mod_j = g_j · A_i(j) + ζ · f_{j+1} · 1[j+1 in the same trajectory]
    A^final_j = A^mod_j − mean_j' A^mod_j'

Both layouts are supported through (``traj_ids``, ``segment_ids``): a step is
the pair (trajectory, turn). The compounding bug of the third-party L2 code
(multiplying the whole advantage tensor by each g_j) is not ported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array


def empg_step_advantages(step_entropy: Array, step_adv: Array,
                         step_valid: Array, next_index: Array, *,
                         k: float = 1.0, k_f: float = 1.0, zeta: float = 0.1,
                         eps: float = 1e-8) -> Array:
  """EMPG over a flat list of steps [M].

  Args:
    step_entropy: [M] H_j.
    step_adv: [M] outcome advantage of the step's trajectory A_i(j).
    step_valid: [M] bool, real steps.
    next_index: [M] int index of the next step of the same trajectory, −1
      if none.
    k: k.
    k_f: k_f.
    zeta: ζ.
    eps: ε.

  Returns:
    [M] A^final (0 on invalid steps).
  """
  v = step_valid
  h_min = ops.masked_min(step_entropy, v)
  h_max = ops.masked_max(step_entropy, v)
  h_min = jnp.where(jnp.isfinite(h_min), h_min, 0.0)
  h_max = jnp.where(jnp.isfinite(h_max), h_max, 0.0)
  h_hat = (step_entropy - h_min) / (h_max - h_min + eps)
  e = jnp.exp(-k * h_hat)
  g = e / (ops.masked_mean(e, v) + eps)
  f = jnp.exp(-k_f * h_hat)
  has_next = (next_index >= 0) & v
  f_next = jnp.where(has_next, f[jnp.clip(next_index, 0)], 0.0)
  has_next = has_next & step_valid[jnp.clip(next_index, 0)]
  a_mod = g * step_adv + zeta * jnp.where(has_next, f_next, 0.0)
  return jnp.where(v, a_mod - ops.masked_mean(a_mod, v), 0.0)


def empg_token_advantages(advantages: Array, old_entropy: Array, mask: Array,
                          segment_ids: Array, traj_ids: Array | None, *,
                          max_turns: int, k: float = 1.0, k_f: float = 1.0,
                          zeta: float = 0.1) -> Array:
  """EMPG on a token batch [B, T] in either layout.

  Steps are (trajectory, turn) pairs: ``traj_ids`` [B] (None: one row per
  trajectory, layout L2) and ``segment_ids`` [B, T] turn indices (−1 off
  agent text). The step advantage is the mean token advantage of the step.

  Returns:
    [B, T] modulated advantages (0 off the steps).
  """
  b, _ = mask.shape
  tids = jnp.arange(b, dtype=jnp.int32) if traj_ids is None else traj_ids
  # Dense trajectory ids in [0, B).
  _, tdense = jnp.unique(tids, size=b, return_inverse=True)
  tdense = tdense.reshape(b).astype(jnp.int32)
  valid = (mask > 0) & (segment_ids >= 0) & (segment_ids < max_turns)
  step = jnp.where(valid, tdense[:, None] * max_turns + segment_ids, 0)
  m = b * max_turns
  w = valid.astype(jnp.float32)
  cnt = jax.ops.segment_sum(w.ravel(), step.ravel(), num_segments=m)
  h = jax.ops.segment_sum((old_entropy * w).ravel(), step.ravel(),
                          num_segments=m) / jnp.maximum(cnt, 1.0)
  a = jax.ops.segment_sum((advantages * w).ravel(), step.ravel(),
                          num_segments=m) / jnp.maximum(cnt, 1.0)
  present = cnt > 0
  idx = jnp.arange(m)
  nxt = idx + 1
  same_traj = (nxt % max_turns) != 0
  nxt = jnp.where(same_traj & present[jnp.clip(nxt, 0, m - 1)], nxt, -1)
  final = empg_step_advantages(h, a, present, nxt, k=k, k_f=k_f, zeta=zeta)
  return jnp.where(valid, final[step], 0.0)


def empg(k: float = 1.0, k_f: float = 1.0, zeta: float = 0.1, *,
         max_turns: int = 64) -> types.EntropyTransform:
  """EMPG as a ``prepare`` transform on advantages (after GRPO/DAPO's).

  Reads ``old_entropy``, ``segment_ids`` and (layout L1) ``traj_ids``.
  """

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    adv = empg_token_advantages(
        batch.advantages, batch.old_entropy, batch.mask, batch.segment_ids,
        batch.traj_ids, max_turns=max_turns, k=k, k_f=k_f, zeta=zeta)
    batch = ops.add_metrics(batch, empg_adv_abs=ops.masked_mean(
        jnp.abs(adv), batch.mask))
    return batch._replace(advantages=adv), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset({"old_entropy", "segment_ids"})))
