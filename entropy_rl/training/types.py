"""Train state and the batches a train step consumes.

The state is a NamedTuple created once (``init_train_state``) and threaded
through pure steps; every array in it is checkpointed. Per-step random keys
are ``fold_in(state.rng, state.step)`` (big_vision), so a resumed run draws
exactly the keys an uninterrupted run would.
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.core import rollout as core_rollout
from entropy_rl.core import types as core_types

Array = jax.Array
Params = Any


class TrainState(NamedTuple):
  """Everything a train step reads and writes.

  Attributes:
    step: () int32, RL updates (or SFT steps) applied so far.
    params: the policy parameters (any pytree, e.g. an ``nnx.State``).
    opt_state: the optax state.
    transform_state: the entropy transform's state (``transform.init``).
    rng: uint32[2] base key; step keys are ``fold_in(rng, step)``.
    nonfinite_steps: () int32, optimizer steps skipped because the loss or
      a gradient was not finite.
    ref_params: frozen reference parameters for a KL term (None without).
  """
  step: Array
  params: Params
  opt_state: optax.OptState
  transform_state: Any
  rng: Array
  nonfinite_steps: Array
  ref_params: Params | None = None


def init_train_state(params: Params, optimizer: optax.GradientTransformation,
                     transform: core_types.EntropyTransform | None = None,
                     rng: Array | int = 0, *,
                     ref_params: Params | None = None) -> TrainState:
  """A fresh state: step 0, ``optimizer.init``, ``transform.init``.

  Args:
    params: the initial parameters.
    optimizer: the optax transformation.
    transform: the entropy transform (None: empty state).
    rng: a uint32[2] key or an int seed.
    ref_params: reference parameters for KL terms (kept frozen).

  Returns:
    A :class:`TrainState`; works under ``jax.eval_shape``.
  """
  if isinstance(rng, int):
    rng = jax.random.PRNGKey(rng)
  tstate = () if transform is None else transform.init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), transform_state=tstate,
                    rng=jnp.asarray(rng, jnp.uint32),
                    nonfinite_steps=jnp.zeros((), jnp.int32),
                    ref_params=ref_params)


def tag(name: str) -> int:
  """A stable 31-bit integer for a name (crc32), for ``fold_in``."""
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


def step_key(state: TrainState, name: str) -> Array:
  """``fold_in(fold_in(rng, step), crc32(name))``: the key of one use in one
  step (``"rollout"``, ``"prepare"``, ``"loss"``, ``"shuffle"`` ...)."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                            tag(name))


# The rollout batch lives in the core beside the rollout-hook protocol
# (``entropy_rl.core.rollout``), so rollout-side methods can build it without
# importing training; this is the same class.
Rollout = core_rollout.Rollout


class SFTBatch(NamedTuple):
  """A supervised batch: cross-entropy on the tokens with ``loss_mask``.

  Attributes:
    tokens: [B, S] int32 (prompt + solution + end, padded).
    mask: [B, S] bool, real tokens (attention).
    loss_mask: [B, S] float32, 1 on tokens whose prediction is trained
      (the solution and its end token); position 0 is never a target.
  """
  tokens: Array
  mask: Array
  loss_mask: Array
