"""Entropy minimisation: RENT, EM-FT and EM-RL.

* RENT (Prabhudesai et al. 2025, "Maximizing Confidence Alone Improves
  Reasoning", https://arxiv.org/abs/2505.22660): the reward is the negative
  mean token entropy of the response, ``R_i = −(1/L_i) Σ_t H°[i,t]``, then
  GRPO advantages.
* EM-FT / EM-RL / EM-INF (Agarwal et al. 2025, "The Unreasonable
  Effectiveness of Entropy Minimization in LLM Reasoning",
  https://arxiv.org/abs/2505.15134): EM-FT minimises the token entropy of the
  model's own samples, ``L = E_y (1/|y|) Σ_t H(π_θ(·|x, y_<t))`` (a loss term
  with the zero objective); EM-RL uses ``R_i = −mean_t H°`` (token variant) or
  ``R_i = mean_t ℓ°`` (sequence variant) with RLOO advantages. EM-INF is a
  sampling method (``entropy_rl.sampling``).
"""

from __future__ import annotations

import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import combine
from entropy_rl.core import objectives
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
VARIANTS = ("token", "sequence")


def entropy_rewards(old_entropy: Array, old_logp: Array, mask: Array, *,
                    variant: str = "token",
                    answer_found: Array | None = None,
                    entropy_base: float | None = None,
                    zero_for_answers: bool = False) -> Array:
  """Per-row self-certainty rewards [B].

  Args:
    old_entropy: [B, T] H° of the old policy.
    old_logp: [B, T] ℓ°.
    mask: [B, T].
    variant: ``"token"``: −mean_t H°; ``"sequence"``: mean_t ℓ°.
    answer_found: optional [B] bool (RENT's format option).
    entropy_base: with ``answer_found``, rows without an answer get
      ``−entropy_base`` (RENT ``base_format``).
    zero_for_answers: RENT's ``set_entropy_zero``: rows with an answer get 0.

  Returns:
    [B] rewards.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; valid: {VARIANTS}")
  m = mask.astype(jnp.float32)
  n = jnp.maximum(m.sum(-1), 1.0)
  src = -old_entropy if variant == "token" else old_logp
  r = jnp.sum(jnp.where(m > 0, src, 0.0), -1) / n
  if answer_found is not None:
    found = answer_found.astype(bool)
    if zero_for_answers:
      r = jnp.where(found, 0.0, r)
    if entropy_base is not None:
      r = jnp.where(found, r, -entropy_base)
  return r


def _reward_transform(variant, entropy_base, zero_for_answers, name):
  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    found = (batch.aux or {}).get("answer_found")
    if entropy_base is not None and found is None:
      raise ValueError(f"{name} with entropy_base needs "
                       "batch.aux['answer_found']")
    if variant == "token" and batch.old_entropy is None:
      raise ValueError(f"{name} needs batch.old_entropy")
    r = entropy_rewards(batch.old_entropy, batch.old_logp, batch.mask,
                        variant=variant, answer_found=found,
                        entropy_base=entropy_base,
                        zero_for_answers=zero_for_answers)
    batch = ops.add_metrics(batch, self_certainty_reward=jnp.mean(r))
    return batch._replace(rewards=r), state

  fields = {"group_ids"} | ({"old_entropy"} if variant == "token" else set())
  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset(fields)))


def rent(*, entropy_base: float | None = None, zero_for_answers: bool = False,
         normalize_std: bool = True) -> types.EntropyTransform:
  """RENT: negative mean entropy as the only reward, then GRPO advantages.

  Args:
    entropy_base: if set, rows with ``aux['answer_found'] == False`` get
      ``−entropy_base`` (the code's ``base_format``; 7.0 in its configs).
    zero_for_answers: the code's ``set_entropy_zero`` flag.
    normalize_std: GRPO's std normalisation.

  Returns:
    A ``prepare`` transform writing rewards and advantages.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     old_entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.rent()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[-0.707 -0.707 -0.707]
     [ 0.707  0.707  0.   ]]
  """
  return combine.chain(
      _reward_transform("token", entropy_base, zero_for_answers, "rent"),
      adv_lib.grpo_advantages(normalize_std=normalize_std))


def em_rl(variant: str = "token") -> types.EntropyTransform:
  """EM-RL: negative entropy (or mean ℓ°) as reward, with RLOO advantages.

  The authors' runs keep verl's ``entropy_coeff = 0.001`` on; add
  ``entropy_bonus(0.001)`` to reproduce them.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     old_entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.em_rl()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{prep['self_certainty_reward']:.4f}")
    -1.1583
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[-0.0167 -0.0167 -0.0167]
     [ 0.0167  0.0167  0.    ]]
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; valid: {VARIANTS}")
  return combine.chain(_reward_transform(variant, None, False, "em_rl"),
                       adv_lib.rloo_advantages())


def em_ft(coef: float = 1.0, *, term: str = "entropy_min"
          ) -> types.EntropyTransform:
  """EM-FT: minimise ``coef · H_θ`` on the model's own samples.

  Use with :func:`em_ft_objective` (zero surrogate, sequence-mean
  aggregation, ``(1/|y|) Σ_t`` as in the paper). ``coef = 0`` is the identity.

  Examples:
    The term is the objective's aggregate of H (GRPO: the mean over rows of the
    per-row token mean, ``(3.5/3 + 2.3/2)/2 = 1.1583``).

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.em_ft()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['terms/entropy_min']:.4f}")
    1.1583
  """

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.entropy is None:
      raise ValueError("em_ft needs batch.entropy")
    return ops.add_loss_term(batch, term, coef * batch.entropy), state

  return types.EntropyTransform(types.init_empty_state, update,
                                needs=types.Needs(frozenset({"entropy"})))


def em_ft_objective() -> objectives.Objective:
  """The zero surrogate with ``seq-mean-token-mean`` aggregation (EM-FT)."""
  return objectives.none("seq-mean-token-mean")
