"""Shared test helpers: batch factories and numeric assertions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er


def make_batch(logp, old_logp, advantages, mask, **kwargs) -> er.PolicyBatch:
  """A PolicyBatch from array-likes (float32; *_ids int32)."""
  conv = {}
  for k, v in kwargs.items():
    if v is None or isinstance(v, dict):
      conv[k] = v
    elif k.endswith("_ids"):
      conv[k] = jnp.asarray(v, jnp.int32)
    else:
      conv[k] = jnp.asarray(v, jnp.float32)
  f = lambda x: jnp.asarray(x, jnp.float32)
  return er.PolicyBatch(logp=f(logp), old_logp=f(old_logp),
                        advantages=f(advantages), mask=f(mask), **conv)


def random_batch(seed: int = 0, rows: int = 8, tokens: int = 16,
                 groups: int = 2, min_len: int = 1) -> er.PolicyBatch:
  """A random but realistic batch with ragged lengths and groups."""
  rng = np.random.default_rng(seed)
  lens = rng.integers(min_len, tokens + 1, size=rows)
  mask = (np.arange(tokens)[None] < lens[:, None]).astype(np.float32)
  logp = -np.log1p(np.exp(rng.normal(size=(rows, tokens))))
  old = logp + 0.1 * rng.normal(size=(rows, tokens))
  adv = np.repeat(rng.normal(size=(rows, 1)), tokens, 1) * mask
  ent = rng.uniform(0.0, 3.0, size=(rows, tokens))
  return make_batch(
      logp, old, adv, mask, entropy=ent, old_entropy=ent + 0.05,
      ref_logp=logp + 0.2 * rng.normal(size=(rows, tokens)),
      rewards=rng.integers(0, 2, size=rows).astype(np.float32),
      group_ids=np.arange(rows) % groups)


def loss_and_grads(batch: er.PolicyBatch, transform: er.EntropyTransform,
                   objective: er.Objective, state=None, rng=None, step=0,
                   **kwargs):
  """policy_loss value and its gradients w.r.t. (logp, entropy)."""
  state = transform.init(None) if state is None else state
  ent = batch.entropy if batch.entropy is not None else jnp.zeros_like(
      batch.logp)

  def f(logp, entropy):
    b = batch._replace(logp=logp, entropy=entropy if batch.entropy is not None
                       else None)
    loss, (new_state, metrics) = er.policy_loss(
        b, transform, state, objective=objective, rng=rng, step=step,
        **kwargs)
    return loss, (new_state, metrics)

  (loss, aux), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
      batch.logp, ent)
  return loss, grads, aux


def pad_batch(batch: er.PolicyBatch, extra_tokens: int, extra_rows: int = 0
              ) -> er.PolicyBatch:
  """Appends padded tokens (mask 0, garbage values) and padded rows."""

  def pad(x, name):
    if x is None or isinstance(x, dict):
      return x
    if x.ndim == 2:
      fill = 0 if name == "mask" else 7.0 if name != "segment_ids" else -1
      x = jnp.pad(x, ((0, 0), (0, extra_tokens)), constant_values=fill)
    if extra_rows:
      fill = 0 if name in ("mask", "group_ids") else 3.0
      widths = ((0, extra_rows),) + ((0, 0),) * (x.ndim - 1)
      x = jnp.pad(x, widths, constant_values=fill)
      if name == "group_ids":
        x = x.at[-extra_rows:].set(x.shape[0] - 1)
    return x

  return er.PolicyBatch(*[pad(v, k) for k, v in batch._asdict().items()])


def disable_most_optimizations():
  """Generator for a module fixture: XLA with most optimisations off.

  The classic-RL tests compile whole training loops that run for a few
  thousand steps; unoptimised XLA compiles them several times faster. Use as
  ``_fast_compile = pytest.fixture(autouse=True, scope="module")(
  test_utils.disable_most_optimizations)``.
  """
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def has_libtpu() -> bool:
  """Whether libtpu is installed (ahead-of-time compiles for TPU topologies
  from this CPU host need it)."""
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True
