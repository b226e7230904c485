"""Entropy-SGD as an optax gradient transformation (Chaudhari et al. 2017).

"Entropy-SGD: Biasing Gradient Descent Into Wide Valleys", ICLR 2017,
https://arxiv.org/abs/1611.01838 (spec §B13; code ``ucla-vision/entropy-sgd``
``python/optim.py``). It descends on the negative local entropy
−F(x) = −log ∫ exp(−f(x') − (γ/2)‖x − x'‖²) dx', whose gradient is
γ·(x − E[x']) under the Gibbs measure, estimated by L SGLD steps from x_c::

    g'  = ∇f_batch(x') − γ_t (x_c − x') + (ε / sqrt(0.5 η'))·ξ,  ξ ~ N(0, I)
    x'  ← x' − η' g'          (optionally with inner Nesterov momentum)
    μ   ← β₁ μ + (1 − β₁) x'
    outer gradient = x_c − μ  (not multiplied by γ, as in the code)
    γ_t = γ₀ (1 + γ₁)^t

:func:`scale_by_local_entropy` produces ``x_c − μ`` (or passes the incoming
gradient through when L = 0); :func:`entropy_sgd` chains it with
``optax.sgd(lr, momentum=0.9, nesterov=True)``. The inner loop needs fresh
minibatch gradients: pass ``grad_fn(params, key) -> grads`` as a keyword
extra argument of ``update`` (``optax.chain`` forwards it).

FLAG (code vs paper): the official script never advances the scoping
counter t (γ constant) and defaults to L = 0 (plain SGD). We default to the
paper: ``advance_scoping=True``, and L = 20 in :func:`entropy_sgd`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


class LocalEntropyState(NamedTuple):
  rng: Array
  count: Array  # scoping counter t
  inner_mom: Any  # inner Nesterov momentum buffer


def scale_by_local_entropy(num_inner: int = 20, inner_lr: float = 0.1,
                           gamma: float = 1e-4, scoping: float = 1e-3,
                           noise: float = 1e-4, ema: float = 0.75,
                           inner_momentum: float = 0.0,
                           weight_decay: float = 0.0,
                           advance_scoping: bool = True, seed: int = 0
                           ) -> optax.GradientTransformationExtraArgs:
  """The Entropy-SGD gradient ``x_c − μ`` (see module docstring).

  Args:
    num_inner: L, SGLD steps (0: identity on the incoming gradient).
    inner_lr: η'.
    gamma: γ₀.
    scoping: γ₁ (γ_t = γ₀(1 + γ₁)^t).
    noise: ε (Langevin noise scale).
    ema: β₁ for μ.
    inner_momentum: inner Nesterov momentum (0: none).
    weight_decay: inner weight decay.
    advance_scoping: increment t each outer step (paper; the code does not).
    seed: PRNG seed for the Langevin noise.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` takes
    ``params`` and the keyword ``grad_fn(params, key) -> grads``.
  """

  def init_fn(params):
    return LocalEntropyState(jax.random.PRNGKey(seed),
                             jnp.zeros((), jnp.int32),
                             jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra):
    del extra
    if num_inner == 0:
      return updates, state
    if params is None or grad_fn is None:
      raise ValueError("scale_by_local_entropy with num_inner > 0 needs "
                       "params and the keyword grad_fn(params, key)")
    g_t = gamma * (1.0 + scoping) ** state.count.astype(jnp.float32)
    rng, key = jax.random.split(state.rng)
    xc = params

    def inner(c, k):
      xp, mu, mom = c
      kg, kn = jax.random.split(k)
      g = grad_fn(xp, kg)
      leaves, tdef = jax.tree.flatten(xp)
      noises = jax.random.split(kn, len(leaves))
      xi = tdef.unflatten([jax.random.normal(n, l.shape, l.dtype)
                           for n, l in zip(noises, leaves)])
      g = jax.tree.map(
          lambda g, x, c, z: g + weight_decay * x - g_t * (c - x)
          + noise / math.sqrt(0.5 * inner_lr) * z, g, xp, xc, xi)
      if inner_momentum:
        mom = jax.tree.map(lambda m, g: inner_momentum * m + g, mom, g)
        g = jax.tree.map(lambda g, m: g + inner_momentum * m, g, mom)
      xp = jax.tree.map(lambda x, g: x - inner_lr * g, xp, g)
      mu = jax.tree.map(lambda m, x: ema * m + (1 - ema) * x, mu, xp)
      return (xp, mu, mom), None

    (_, mu, mom), _ = jax.lax.scan(inner, (xc, xc, state.inner_mom),
                                   jax.random.split(key, num_inner))
    out = jax.tree.map(lambda c, m: c - m, xc, mu)
    count = state.count + (1 if advance_scoping else 0)
    return out, LocalEntropyState(rng, count, mom)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def entropy_sgd(learning_rate: float = 0.01, momentum: float = 0.9,
                nesterov: bool = True, weight_decay: float = 0.0,
                **kwargs) -> optax.GradientTransformationExtraArgs:
  """Entropy-SGD: local-entropy gradient then SGD with Nesterov momentum.

  ``kwargs`` go to :func:`scale_by_local_entropy` (default L = 20).
  """
  kwargs.setdefault("num_inner", 20)
  parts = [scale_by_local_entropy(**kwargs)]
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(learning_rate, momentum=momentum or None,
                         nesterov=nesterov))
  return optax.chain(*parts)
