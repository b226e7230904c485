"""Policy statistics of a rollout: one chunked pass from hidden states.

``response_stats`` runs the model over ``concat(prompt, response)`` and feeds
the hidden states that predict the response, with the LM head, to
:func:`entropy_rl.core.token_stats.stats_for_needs`: log-probs, entropies and
exactly the vocabulary reductions a transform declared, without [N, V]
logits. It is the RLVR layout's statistics pass
(:data:`entropy_rl.training.step.RLVR_LAYOUT`); the agents' interleaved
layout has its own (``entropy_rl.agents.sequence_stats``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from entropy_rl.core import token_stats as token_stats_lib
from entropy_rl.core import types as core_types
from entropy_rl.models import decoder as decoder_lib
from entropy_rl.training import types

Array = jax.Array
CORE_KEYS = token_stats_lib.CORE_KEYS


def sequence(prompt: Array, prompt_mask: Array, response: Array,
             response_mask: Array) -> tuple[Array, Array, Array]:
  """``(tokens, positions, mask)`` [B, P + N] of prompt + response."""
  tokens = jnp.concatenate([prompt, response], axis=1).astype(jnp.int32)
  mask = jnp.concatenate([prompt_mask.astype(bool), response_mask > 0], 1)
  return tokens, decoder_lib.positions_from_mask(mask), mask


def response_stats(fns: Any, params: Any, rollout: types.Rollout, *,
                   needs: core_types.Needs = core_types.Needs(),
                   old: bool = False, temperature: float = 1.0,
                   token_chunk: int = 1024, vocab_chunk: int = 4096,
                   compute_dtype: Any = None) -> dict[str, Array]:
  """Log-prob, entropy and declared reductions of each response token.

  Args:
    fns: model functions (``fns.hidden``, ``fns.head``).
    params: the parameters.
    rollout: a :class:`~entropy_rl.training.types.Rollout` (prompt and
      response fields are read).
    needs: the transform's declaration; ``needs.vocab`` (or
      ``needs.old_vocab`` when ``old``) reductions are computed.
    old: the old-policy pass (no gradient).
    temperature: τ of the sampler (logits are divided by it, as verl does).
    token_chunk, vocab_chunk, compute_dtype: see ``token_stats``.

  Returns:
    Dict of [B, N] arrays: ``logp``, ``entropy``, ``lse``, ``max_logit`` and
    one key per reduction (``name`` or ``name/suffix``).
  """
  p = rollout.prompt.shape[1]
  n = rollout.response.shape[1]
  if p < 1:
    raise ValueError(f"prompt must hold at least one token, got shape "
                     f"{tuple(rollout.prompt.shape)}")
  tokens, positions, mask = sequence(rollout.prompt, rollout.prompt_mask,
                                     rollout.response, rollout.response_mask)
  if old:
    params = jax.lax.stop_gradient(params)
  hidden, _ = fns.hidden(params, tokens, positions, mask, None)
  h = hidden[:, p - 1:p + n - 1]  # [B, N, D]
  return token_stats_lib.stats_for_needs(
      h, fns.head(params), rollout.response.astype(jnp.int32), needs, old=old,
      temperature=temperature, token_chunk=token_chunk,
      vocab_chunk=vocab_chunk, compute_dtype=compute_dtype)


def reductions_of(stats: dict[str, Array], names) -> dict[str, Array] | None:
  """The entries of ``stats`` produced by the named reductions."""
  names = tuple(names)
  if not names:
    return None
  return {k: v for k, v in stats.items() if k not in CORE_KEYS and any(
      k == nm or k.startswith(nm + "/") for nm in names)}


def map_rows(fn: Callable[[Any], Any], tree: Any, chunks: int) -> Any:
  """``fn`` over ``chunks`` equal row blocks of ``tree`` (``lax.map``), the
  results put back in row order: bounds the memory of a full-batch forward
  pass. ``fn`` must treat rows independently.

  Block c holds rows c, c + chunks, c + 2·chunks, ... (a strided split):
  a batch whose rows are sharded over devices keeps every block sharded
  the same way (a contiguous split would put the mapped axis on the
  devices, and each block on one device).
  """
  if chunks <= 1:
    return fn(tree)
  rows = jax.tree.leaves(tree)[0].shape[0]
  if rows % chunks:
    raise ValueError(f"{rows} rows do not split into {chunks} chunks")
  split = jax.tree.map(
      lambda x: jnp.swapaxes(
          x.reshape((rows // chunks, chunks) + x.shape[1:]), 0, 1), tree)
  out = jax.lax.map(fn, split)
  return jax.tree.map(
      lambda x: jnp.swapaxes(x, 0, 1).reshape((rows,) + x.shape[2:]), out)
