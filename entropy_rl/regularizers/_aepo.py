"""AEPO: a REINFORCE regulariser on temperature-adjusted samples.

Instead of an entropy bonus, part of each batch is replaced by positive
samples drawn at a temperature chosen by a bang-bang controller on the
running entropy, with advantage 1: high temperature when the entropy is at or
below the target, low temperature (and half the samples) above it, so the
entropy settles near a target H*. Conceptually
``∇J = ∇J_GRPO + α·E_{o∼π^T}[∇log π(o|q)·R(q, o)]``. Spec:
``methods_rlvr.md`` §5 (code: 597358816/AEPO, EasyR1-based,
``ray_trainer.py::fit`` branch ``alg == "AEPO"``, ``_select_by_advantage``).

Reference: Wang et al. 2025, "Arbitrary Entropy Policy Optimization Breaks
The Exploration Bottleneck of Reinforcement Learning",
https://arxiv.org/abs/2510.08141 (code: https://github.com/597358816/AEPO).

One RL step (the train loop does steps 1-4; this module gives the pieces)::

    T_reg = state.temperature                      # temperature_processor()
    D = rollout(prompts, T=1); D.adv = GRPO        # grpo_advantages()
    R = rollout(prompts[:P//4], n=5, T=T_reg)
    sel = aepo_select(R.rewards, R.group_ids)      # A > 0.05, then A ≡ 1
    _, n_reg = aepo_controller(state.h_prev, H*, sel.sum())
    batch = aepo_assemble(D, R, n_reg, selected=sel)
    old pass at T = 1 on batch                     # old_logp, no correction
    batch, state, _ = prepare_batch(batch, aepo(...), state)   # controller
    loss = policy_loss(batch, ..., objective=aepo_objective())

In the trainer, :func:`aepo_rollout_hook` is these steps as a rollout hook
(``entropy_rl.core.rollout``), and :func:`aepo_rollout_advantages` the chain
member that makes the assembled advantages the batch's.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import combine
from entropy_rl.core import objectives
from entropy_rl.core import ops
from entropy_rl.core import rollout as rollout_lib
from entropy_rl.core import types

Array = types.Array
REG_KEY = "aepo_reg"  # batch.aux key: 1 on regulariser rows [B]
ADV_KEY = "aepo_adv"  # batch.aux key: per-row advantage of the batch [B]
_DICT_FIELDS = ("vocab_stats", "old_vocab_stats", "aux", "loss_terms",
                "metrics")


def aepo_controller(h_prev: Array | float, target: Array | float,
                    n_sel: Array | int, *, t_high: float = 1.2,
                    t_low: float = 0.8, n_max: int = 60
                    ) -> tuple[Array, Array]:
  """AEPO's bang-bang controller (traceable).

  ::

      Ĥ_prev ≤ H*:  T_reg = T_high,  n_reg = min(N_sel, N_max)
      Ĥ_prev > H*:  T_reg = T_low,   n_reg = ⌊min(N_sel, N_max) / 2⌋

  With ``n_max = 0`` no regulariser sample is used (GRPO).

  Args:
    h_prev: Ĥ_prev, the previous step's entropy proxy (0 at the first step).
    target: H*.
    n_sel: N_sel, the number of selected regulariser samples.
    t_high: T_high.
    t_low: T_low.
    n_max: N_max (``reinforce_sample_num``).

  Returns:
    ``(T_reg () float32, n_reg () int32)``.
  """
  high = jnp.asarray(h_prev, jnp.float32) <= jnp.asarray(target, jnp.float32)
  n = jnp.minimum(jnp.asarray(n_sel, jnp.int32), n_max)
  temperature = jnp.where(high, t_high, t_low).astype(jnp.float32)
  return temperature, jnp.where(high, n, n // 2).astype(jnp.int32)


def aepo_select(rewards: Array, group_ids: Array, *, threshold: float = 0.05,
                eps: float = 1e-6) -> Array:
  """The regulariser samples: GRPO advantage ``A_i > threshold`` (one-sided).

  Args:
    rewards: [B_r] rewards of the temperature-``T_reg`` samples.
    group_ids: [B_r] their prompt groups.
    threshold: selection threshold (0.05).
    eps: ε of the GRPO normalisation.

  Returns:
    [B_r] bool; ``N_sel = selected.sum()``. Selected samples get A ≡ 1 in
    :func:`aepo_assemble`.
  """
  return adv_lib.grpo(rewards, group_ids, eps=eps) > threshold


def aepo_assemble(batch_grpo: types.PolicyBatch, batch_reg: types.PolicyBatch,
                  n_reg: Array | int, *, selected: Array | None = None
                  ) -> types.PolicyBatch:
  """``concat(S[:n_reg], D[n_reg:])`` with static shapes.

  The selected regulariser rows (in order) replace the first ``n_reg`` rows
  of the GRPO batch, so the batch size stays B; their advantages become 1 on
  every valid token (A ≡ 1). Every field of the two batches is combined row
  by row (they must hold the same fields, with equal T); ``aux["aepo_reg"]``
  [B] marks the regulariser rows. ``n_reg`` may be traced; it must not
  exceed ``N_sel`` (the controller guarantees it) nor B.

  The old log-probs of the assembled batch are recomputed at T = 1, as in
  the reference (no correction for the sampling temperature).

  Args:
    batch_grpo: [B, T] GRPO batch (advantages already written).
    batch_reg: [B_r, T] regulariser candidates.
    n_reg: number of rows to replace.
    selected: [B_r] bool selection (:func:`aepo_select`); None means every
      row of ``batch_reg`` is selected.

  Returns:
    The [B, T] assembled batch.
  """
  b = batch_grpo.logp.shape[0]
  b_r = batch_reg.logp.shape[0]
  if batch_reg.logp.shape[1:] != batch_grpo.logp.shape[1:]:
    raise ValueError(f"batch_reg has logp shape {tuple(batch_reg.logp.shape)}"
                     f", expected T = {batch_grpo.logp.shape[1]} as batch_grpo")
  if selected is None:
    order = jnp.arange(b_r)
  else:
    order = jnp.argsort(~selected.astype(bool), stable=True)  # selected first
  src = order[jnp.minimum(jnp.arange(b), b_r - 1)]  # [B]
  use = jnp.arange(b) < n_reg  # [B]
  # Dict-valued fields: None and {} are the same (prepare_batch returns {}).
  dicts = lambda x: {k: dict(getattr(x, k) or {}) for k in _DICT_FIELDS}
  grpo = batch_grpo._replace(**dicts(batch_grpo))
  grpo = grpo._replace(aux={**grpo.aux, REG_KEY: jnp.zeros((b,), jnp.float32)})
  mask_r = jnp.asarray(batch_reg.mask, jnp.float32)
  reg = batch_reg._replace(**dicts(batch_reg))
  reg = reg._replace(
      advantages=jnp.broadcast_to(mask_r, batch_reg.logp.shape),
      aux={**reg.aux, REG_KEY: jnp.ones((b_r,), jnp.float32)})

  def pick(x_grpo, x_reg):
    x_reg = jnp.asarray(x_reg)
    if x_reg.ndim == 0:  # a scalar knob (e.g. a Clip field) is shared
      return x_grpo
    u = use.reshape((b,) + (1,) * (x_reg.ndim - 1))
    return jnp.where(u, x_reg[src].astype(jnp.asarray(x_grpo).dtype), x_grpo)

  try:
    return jax.tree.map(pick, grpo, reg)
  except ValueError as e:
    raise ValueError("batch_grpo and batch_reg must hold the same fields "
                     f"(None in both or arrays in both): {e}") from e


class AepoState(NamedTuple):
  h_prev: Array  # () f32 Ĥ of the last prepared batch (0 before the first)
  temperature: Array  # () f32 T_reg for the next regulariser rollout
  n_reg: Array  # () int32 regulariser rows in the last prepared batch
  count: Array  # () int32 controller updates


def entropy_proxy(logp: Array, mask: Array, rows_per_scope: int | None = None
                  ) -> Array:
  """AEPO's entropy proxy: the mean NLL ``−masked_mean(ℓ)`` of the samples.

  With ``rows_per_scope`` the mean is taken per chunk of rows (the
  reference's micro-batches) and then averaged over chunks.
  """
  if rows_per_scope is None:
    return -ops.masked_mean(logp, mask)
  rows = logp.shape[0]
  if rows_per_scope <= 0 or rows % rows_per_scope:
    raise ValueError(f"nll_scope={rows_per_scope} must be a positive divisor "
                     f"of the batch size {rows}")
  k = rows // rows_per_scope
  split = lambda x: x.reshape((k, rows_per_scope) + x.shape[1:])
  return jnp.mean(jax.vmap(lambda l, m: -ops.masked_mean(l, m))(
      split(logp), split(mask)))


def aepo(target_entropy: float = 0.5, t_high: float = 1.2, t_low: float = 0.8,
         n_max: int = 60, select_threshold: float = 0.05, *,
         nll_scope: int | None = None) -> types.EntropyTransform:
  r"""AEPO's controller as a transform (state only; the loss is unchanged).

  The controller state :class:`AepoState` is updated in ``prepare``, once per
  RL step, on the assembled step-k batch after its old-policy pass (T = 1)::

      Ĥ_k          = −masked_mean(ℓ°)     (mean NLL of the sampled tokens,
                                           per ``nll_scope`` rows, averaged)
      h_prev       ← Ĥ_k
      temperature  ← T_high if Ĥ_k ≤ H* else T_low   (for step k+1's rollout)
      n_reg        ← #rows with aux["aepo_reg"] = 1 in the step-k batch

  Step k+1 then samples its regulariser rows at ``state.temperature``
  (:func:`temperature_processor`) and takes
  ``n_reg = aepo_controller(state.h_prev, H*, N_sel, ...)[1]``. Before the
  first update ``h_prev = 0``, so step 1 uses T_high (as the reference).
  The proxy is the NLL of the *old* pass; the reference logs the NLL during
  the update (equal for the first micro-step of each mini-batch, and for a
  single on-policy update). ``update`` only reports metrics.

  The regulariser rows are the selected samples (:func:`aepo_select`,
  ``select_threshold``) put into the batch by :func:`aepo_assemble`; the
  loss is dual-clip PPO with token-mean (:func:`aepo_objective`).
  ``n_max = 0`` is GRPO.

  Reference defaults: H* = 0.5 (script; 0.75 in the README table),
  T = 1.2 / 0.8, N_max = 60, threshold 0.05, 1/4 of the prompts with n = 5
  samples each, clip 0.2/0.2, dual clip 3, TM per micro-batch.

  Args:
    target_entropy: H*, in nats of mean NLL.
    t_high: T_high.
    t_low: T_low.
    n_max: N_max.
    select_threshold: the selection threshold (kept for
      ``aepo_select(threshold=...)``; reported as a metric).
    nll_scope: rows per micro-batch of the proxy mean (None: whole batch).

  Returns:
    An :class:`EntropyTransform` with state :class:`AepoState`.

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
    ...     entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.aepo()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['aepo_temperature']:.4f}")
    0.8000
    >>> print(f"{metrics['aepo_n_reg']:.4f}")
    0.0000
  """
  if t_high <= 0 or t_low <= 0:
    raise ValueError(f"aepo: temperatures must be > 0, got t_high={t_high}, "
                     f"t_low={t_low}")
  if n_max < 0:
    raise ValueError(f"aepo: n_max must be >= 0, got {n_max}")

  def init(params=None):
    del params
    temperature, _ = aepo_controller(0.0, target_entropy, 0, t_high=t_high,
                                     t_low=t_low, n_max=n_max)
    return AepoState(jnp.zeros((), jnp.float32), temperature,
                     jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    h = entropy_proxy(batch.old_logp, batch.mask, nll_scope)
    temperature, _ = aepo_controller(h, target_entropy, 0, t_high=t_high,
                                     t_low=t_low, n_max=n_max)
    reg = (batch.aux or {}).get(REG_KEY)
    n_reg = (jnp.zeros((), jnp.int32) if reg is None else
             jnp.sum(reg > 0).astype(jnp.int32))
    batch = ops.add_metrics(batch, aepo_entropy_proxy=h,
                            aepo_temperature=temperature, aepo_n_reg=n_reg,
                            aepo_target=jnp.asarray(target_entropy))
    return batch, AepoState(h.astype(jnp.float32), temperature, n_reg,
                            state.count + 1)

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    reg = (batch.aux or {}).get(REG_KEY)
    frac = (jnp.zeros(()) if reg is None else
            jnp.mean((reg > 0).astype(jnp.float32)))
    batch = ops.add_metrics(batch, aepo_temperature=state.temperature,
                            aepo_h_prev=state.h_prev,
                            aepo_n_reg=state.n_reg, aepo_reg_frac=frac,
                            aepo_select_threshold=jnp.asarray(
                                select_threshold))
    return batch, state

  return types.EntropyTransform(init, update, prepare)


def aepo_objective(eps: float = 0.2, dual_c: float = 3.0
                   ) -> objectives.Objective:
  """AEPO's loss: dual-clip PPO (0.2/0.2, c = 3), token-mean (EasyR1)."""
  return objectives.ppo_clip(eps, eps, dual_c, "token-mean")._replace(
      name="aepo")


def temperature_processor() -> types.LogitsProcessor:
  """A sampler hook dividing logits by AEPO's temperature.

  ``apply(logits [B, V], params, *, rng, pos) = logits / T`` where ``params``
  is the temperature: a scalar, a per-row [B] array, or an
  :class:`AepoState` (its ``temperature``; e.g.
  ``get_state(state, "aepo")``). ``init()`` gives T = 1 (the identity).
  """

  def init():
    return jnp.ones((), jnp.float32)

  def apply(logits, params, *, rng=None, pos=None):
    del rng, pos
    t = jnp.asarray(getattr(params, "temperature", params), jnp.float32)
    if t.ndim == 1:
      t = t[:, None]
    return logits / t

  return types.LogitsProcessor(init, apply)


# ------------------------------------------------------------ rollout hook


def _member_state(transform_state: Any, state_name: str) -> AepoState:
  st = combine.get_state(transform_state, state_name)
  if st is None:
    raise ValueError(f"the AEPO rollout needs a chain member named "
                     f"{state_name!r} of kind 'aepo'")
  return st


def aepo_rollout_hook(member_kwargs: Mapping[str, Any] | None = None, *,
                      state_name: str = "aepo", prompt_fraction: float = 0.25,
                      eps: float = 1e-6) -> rollout_lib.RolloutHookSpec:
  """AEPO's batch (spec §5, steps 1-4) as a rollout hook.

  Each step: the main rollout D (T = 1, the loop's); an extra rollout R of
  the first ⌊P·``prompt_fraction``⌋ prompts (at least one) at the
  controller's temperature ``T_reg`` (:func:`temperature_processor` last,
  its parameter the ``state_name`` member's ``temperature``); GRPO
  advantages of D; the selection ``A > select_threshold`` of R
  (:func:`aepo_select`); ``n_reg`` from :func:`aepo_controller` and
  ``concat(R_sel[:n_reg], D[n_reg:])`` at the rollout level. Regulariser
  rows carry ``aux["aepo_reg"] = 1``; every row its advantage in
  ``aux["aepo_adv"]`` (D's GRPO advantage, computed before the
  replacement as in the reference; 1 on regulariser rows), which
  :func:`aepo_rollout_advantages` (``after_advantages``) writes into the
  batch. Metrics: ``aepo/n_sel``, ``aepo/n_reg_rows``,
  ``aepo/reg_temperature``, ``aepo/reg_reward``.

  Args:
    member_kwargs: the keyword arguments of the :func:`aepo` chain member
      (its controller settings; its defaults where absent), so the
      controller is declared once.
    state_name: the name of the :func:`aepo` member in the chain.
    prompt_fraction: the fraction of the prompts sampled again at T_reg.
    eps: ε of the GRPO normalisation.

  Returns:
    A :class:`~entropy_rl.core.rollout.RolloutHookSpec`; its batch replaces
    rows across groups (``mixes_groups``), so no group filter can wrap it.
  """
  bound = inspect.signature(aepo).bind(**dict(member_kwargs or {}))
  bound.apply_defaults()
  c = bound.arguments

  def build(ctx: rollout_lib.HookContext) -> rollout_lib.RolloutHook:
    b_reg = max(1, int(ctx.num_prompts * prompt_fraction))
    reg_fn = None
    if ctx.with_processors is not None:
      reg_fn = ctx.with_processors(
          (temperature_processor(),),
          lambda ts: (_member_state(ts, state_name).temperature,))

    def rollouts(state, prompts, key):
      d = ctx.rollout_fn(state.params, prompts, key, state.transform_state)
      sub = jax.tree.map(lambda x: x[:b_reg], prompts)
      r = reg_fn(state.params, sub, rollout_lib.fold_name(key, "aepo"),
                 state.transform_state)
      return d, r

    def finish(state, prompts, scored):
      d, r = scored
      st = _member_state(state.transform_state, state_name)
      rows, rows_r = d.response.shape[0], r.response.shape[0]
      sel = aepo_select(r.rewards, r.group_ids,
                        threshold=c["select_threshold"], eps=eps)
      n_sel = jnp.sum(sel).astype(jnp.int32)
      _, n_reg = aepo_controller(st.h_prev, c["target_entropy"], n_sel,
                                 t_high=c["t_high"], t_low=c["t_low"],
                                 n_max=c["n_max"])
      n_reg = jnp.minimum(n_reg, rows)
      order = jnp.argsort(~sel, stable=True)  # selected first, in order
      src = order[jnp.minimum(jnp.arange(rows), rows_r - 1)]
      use = jnp.arange(rows) < n_reg
      adv_d = adv_lib.grpo(d.rewards, d.group_ids, prompts.tokens.shape[0],
                           eps=eps)
      d2 = d._replace(aux={**(d.aux or {}),
                           REG_KEY: jnp.zeros((rows,), jnp.float32),
                           ADV_KEY: adv_d})
      r2 = r._replace(aux={**(r.aux or {}),
                           REG_KEY: jnp.ones((rows_r,), jnp.float32),
                           ADV_KEY: jnp.ones((rows_r,), jnp.float32)})

      def pick(xd, xr):
        u = use.reshape((rows,) + (1,) * (xd.ndim - 1))
        return jnp.where(u, jnp.take(xr, src, axis=0).astype(xd.dtype), xd)

      out = jax.tree.map(pick, d2, r2)
      m = {"aepo/n_sel": n_sel.astype(jnp.float32),
           "aepo/n_reg_rows": n_reg.astype(jnp.float32),
           "aepo/reg_temperature": st.temperature,
           "aepo/reg_reward": jnp.mean(r.rewards)}
      return out, m

    return rollout_lib.RolloutHook(rollouts, finish, None, "aepo")

  return rollout_lib.RolloutHookSpec(
      build, name="aepo",
      after_advantages=(("aepo_rollout_advantages",
                         aepo_rollout_advantages()),),
      mixes_groups=True)


def aepo_rollout_advantages() -> types.EntropyTransform:
  """Writes ``aux["aepo_adv"]`` (per row) as the advantages, if present.

  :func:`aepo_rollout_hook` computes the main batch's GRPO advantages before
  its first rows are replaced (as the reference) and A ≡ 1 for the
  regulariser rows; this member, placed after the advantage estimator,
  makes them the batch's advantages. Without the key it is the identity.
  """

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    adv = (batch.aux or {}).get(ADV_KEY)
    if adv is None:
      return batch, state
    return batch._replace(advantages=adv_lib.to_tokens(
        adv.astype(jnp.float32), batch.mask)), state

  return types.EntropyTransform(types.init_empty_state,
                                types.identity_update, prepare)
