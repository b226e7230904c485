"""HAPO, RENT, EM-RL, EM-FT, HAEPO, GRPO-λ, RiskPO, H-DPO: jit and padding.

For every method the full path of a train step is checked:
``transform.prepare`` (through ``prepare_batch``, when the method has one),
then ``policy_loss`` with the objective its spec section prescribes, its
value and its gradient with respect to ``logp`` and ``entropy``.

* jit == eager: the same numbers with and without ``jax.jit``.
* padding: appending padded tokens (mask 0, garbage in every per-token field)
  and padded rows (mask 0, garbage rewards and aux, in groups of their own)
  changes neither the loss nor the gradient on the real tokens, and the
  gradient on padded tokens is exactly 0.

One jitted function per method is built at import time; every hypothesis
example has the same two shapes (real and padded), so each function traces
twice in the whole file (checked by :func:`_assert_no_retrace`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er

from entropy_rl.regularizers import _entropy_min as entropy_min
from entropy_rl.regularizers import _grpo_lambda as grpo_lambda
from entropy_rl.regularizers import _haepo as haepo
from entropy_rl.regularizers import _hapo as hapo
from entropy_rl.regularizers import _hdpo as hdpo
from entropy_rl.regularizers import _riskpo as riskpo

ROWS, TOKENS = 8, 5  # real batch shape
PAD_ROWS, PAD_TOKENS = 4, 3  # appended padding
EXAMPLES = 12


class Method(NamedTuple):
  """A method's full path and how to build a realistic batch for it.

  Attributes:
    transform: the entropy transform.
    objective: the objective its spec prescribes.
    make: ``make(rng) -> PolicyBatch`` of shape [ROWS, TOKENS].
    pad_aux: per-row aux garbage for padded rows, ``(rng, n) -> dict``.
    row_scale: loss ratio padded/real caused by padded rows *by design*
      (1.0 except for the seq-mean-token-mean aggregation, see EM-FT).
  """
  transform: er.EntropyTransform
  objective: er.Objective
  make: Callable[[np.random.Generator], er.PolicyBatch]
  pad_aux: Callable[[np.random.Generator, int], dict[str, Any]] = (
      lambda rng, n: {})
  row_scale: float = 1.0


# ---------------------------------------------------------------- batches


def _lengths(rng, rows, tokens, short_first_of=None):
  """Ragged lengths in [1, tokens]; optionally every group's first row short.

  ``short_first_of``: [rows] group ids; the first row of each group is then
  shorter than ``tokens`` (see the HAPO fallback note).
  """
  lens = rng.integers(1, tokens + 1, size=rows)
  if short_first_of is not None:
    _, first = np.unique(short_first_of, return_index=True)
    lens[first] = rng.integers(1, tokens, size=first.size)
  return lens


def _base(rng, *, group_size=2, rewards="binary", ids=None,
          short_first=False, **extra):
  """Per-token fields of a realistic [ROWS, TOKENS] batch with groups."""
  groups = ROWS // group_size
  if ids is None:  # arbitrary, non-dense group ids
    labels = rng.choice(np.arange(-20, 40), size=groups, replace=False)
    ids = np.repeat(labels, group_size)
  lens = _lengths(rng, ROWS, TOKENS, ids if short_first else None)
  mask = (np.arange(TOKENS)[None] < lens[:, None]).astype(np.float32)
  shape = (ROWS, TOKENS)
  logp = -np.log1p(np.exp(rng.normal(size=shape)))
  ent = rng.uniform(0.01, 3.0, size=shape)
  if rewards == "binary":
    r = rng.integers(0, 2, size=ROWS).astype(np.float32)
  else:
    r = rng.normal(size=ROWS).astype(np.float32)
  # Masked positions of the real batch hold other values than the padded
  # batch will (see _pad), so they are padding too.
  fields = dict(
      logp=logp, old_logp=logp + 0.1 * rng.normal(size=shape),
      advantages=np.zeros(shape), mask=mask, entropy=ent,
      old_entropy=ent + 0.05 * rng.normal(size=shape),
      ref_logp=logp + 0.2 * rng.normal(size=shape), rewards=r,
      group_ids=ids)
  fields.update(extra)
  return _to_batch(fields)


def _to_batch(fields):
  conv = {}
  for k, v in fields.items():
    if k == "aux":
      conv[k] = {n: jnp.asarray(a) for n, a in v.items()}
    elif k.endswith("_ids"):
      conv[k] = jnp.asarray(v, jnp.int32)
    else:
      conv[k] = jnp.asarray(v, jnp.float32)
  return er.PolicyBatch(**conv)


_TOKEN = ("logp", "old_logp", "advantages", "entropy", "old_entropy",
          "ref_logp")


def _pad(batch: er.PolicyBatch, rng: np.random.Generator, method: Method,
         pad_rows: int = PAD_ROWS) -> er.PolicyBatch:
  """Appends PAD_TOKENS tokens and ``pad_rows`` rows of garbage (mask 0).

  Garbage also replaces the masked positions of the real rows. Padded rows
  get group ids of their own, below and above the real ids, so their dense
  ids land before and after the real groups.
  """
  rows, tokens = ROWS + pad_rows, TOKENS + PAD_TOKENS
  scale = rng.choice([1.0, 5.0, 100.0])
  mask = np.zeros((rows, tokens), np.float32)
  mask[:ROWS, :TOKENS] = np.asarray(batch.mask)
  out = {"mask": mask}
  for name in _TOKEN:
    x = getattr(batch, name)
    if x is None:
      continue
    g = scale * rng.normal(size=(rows, tokens)).astype(np.float32)
    g[:ROWS, :TOKENS] = np.where(mask[:ROWS, :TOKENS] > 0, np.asarray(x),
                                 g[:ROWS, :TOKENS])
    out[name] = g
  if batch.rewards is not None:
    out["rewards"] = np.concatenate(
        [np.asarray(batch.rewards), rng.normal(size=pad_rows) * scale])
  ids = np.asarray(batch.group_ids)
  half = pad_rows // 2
  pad_ids = np.concatenate([np.full(half, ids.min() - 1),
                            np.full(pad_rows - half, ids.max() + 1)])
  out["group_ids"] = np.concatenate([ids, pad_ids])
  if batch.aux is not None:
    extra = method.pad_aux(rng, pad_rows)
    out["aux"] = {k: np.concatenate([np.asarray(v), extra[k]])
                  for k, v in batch.aux.items()}
  return _to_batch(out)


def _bools(rng, n):
  return rng.integers(0, 2, size=n).astype(bool)


# ---------------------------------------------------------------- methods


def _hapo(fallback_checks_padding):
  # Spec §7 (e): ε_l = ε_h = 0.2, dual clip c = 10, token-mean. Real-valued
  # rewards reach the |A| ≥ 5 fallback now and then.
  return Method(
      hapo.hapo(fallback_checks_padding=fallback_checks_padding),
      er.ppo_clip(0.2, 0.2, 10.0),
      lambda rng: _base(rng, group_size=4, rewards="normal",
                        short_first=fallback_checks_padding))


def _rent():
  # Spec §13a: entropy_base 7, GRPO, ε = 0.2, token-mean.
  return Method(
      entropy_min.rent(entropy_base=7.0), er.ppo_clip(),
      lambda rng: _base(rng, aux={"answer_found": _bools(rng, ROWS)}),
      pad_aux=lambda rng, n: {"answer_found": _bools(rng, n)})


def _em_rl(variant):
  # Spec §13b: RLOO, ε = 0.2 without clip-higher, token-mean.
  return Method(entropy_min.em_rl(variant), er.ppo_clip(),
                lambda rng: _base(rng, group_size=4))


def _em_ft():
  # Spec §13b EM-FT: L = E_y (1/|y|) Σ_t H, i.e. seq-mean-token-mean. Spec §0
  # (aggregation modes): under SMTM an empty row contributes 0 and still
  # counts in the mean, so padded rows scale the loss by ROWS/(ROWS + PAD).
  return Method(entropy_min.em_ft(1.0), entropy_min.em_ft_objective(),
                _base, row_scale=ROWS / (ROWS + PAD_ROWS))


def _haepo():
  # Spec §14: Plackett-Luce return term, entropy bonus and k3 KL to the old
  # policy, zero surrogate (token-mean for the [B, T] terms).
  return Method(haepo.haepo(1.0, entropy_coef=0.1, kl_coef=0.5),
                haepo.haepo_objective(),
                lambda rng: _base(rng, group_size=4, rewards="normal"))


def _grpo_lambda():
  # Spec §15: GRPO-λ rewards then GRPO; λ = 0.5 so that the top-group cut
  # ceil(λ·#groups) depends on the number of groups counted.
  return Method(
      grpo_lambda.grpo_lambda(0.5, 0.6), er.ppo_clip(),
      lambda rng: _base(rng, group_size=2,
                        aux={"correct": _bools(rng, ROWS)}),
      pad_aux=lambda rng, n: {"correct": _bools(rng, n)})


RISK_GROUP, RISK_BUNDLE = 2, 2  # 4 rows per bundle: 2 real, 1 padded bundle
assert RISK_GROUP * RISK_BUNDLE == PAD_ROWS


def _riskpo(q_mode):
  # Spec §16: prompt-major rows, bundles of consecutive prompts, standard PPO
  # loss. Padded rows form a whole bundle of padded prompts at the end.
  ids = np.repeat(np.arange(ROWS // RISK_GROUP), RISK_GROUP)
  return Method(riskpo.riskpo(RISK_GROUP, RISK_BUNDLE, q_mode=q_mode),
                er.ppo_clip(), lambda rng: _base(rng, ids=ids))


def _hdpo():
  # Spec §17: pairs share a group id, aux['chosen'] marks y_w; zero
  # surrogate. The last group holds two chosen rows: malformed, skipped.
  chosen = np.array([1, 0, 0, 1, 1, 0, 1, 1], bool)
  return Method(hdpo.hdpo(0.1, 0.9), hdpo.hdpo_objective(),
                lambda rng: _base(rng, aux={"chosen": chosen}),
                pad_aux=lambda rng, n: {"chosen": np.arange(n) % 2 == 0})


METHODS = {
    "hapo": _hapo(False),
    "hapo_fallback_checks_padding": _hapo(True),
    "rent": _rent(),
    "em_rl_token": _em_rl("token"),
    "em_rl_sequence": _em_rl("sequence"),
    "em_ft": _em_ft(),
    "haepo": _haepo(),
    "grpo_lambda": _grpo_lambda(),
    "riskpo_batch": _riskpo("batch"),
    "riskpo_mix": _riskpo("mix"),
    "hdpo": _hdpo(),
}
_PARAMS = [(n, n) for n in METHODS]


# ---------------------------------------------------------------- the path

_TRACED: dict[str, list[tuple[int, ...]]] = {n: [] for n in METHODS}


def full_path(method: Method, batch: er.PolicyBatch) -> dict[str, Any]:
  """prepare_batch, then value and gradient of policy_loss in (ℓ, H)."""
  t = method.transform
  prepared, state, _ = er.prepare_batch(batch, t, t.init(None))

  def loss_fn(logp, entropy):
    b = prepared._replace(logp=logp, entropy=entropy)
    loss, (new_state, _) = er.policy_loss(b, t, state,
                                          objective=method.objective)
    return loss, new_state

  (loss, new_state), (g_logp, g_ent) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(batch.logp, batch.entropy)
  return dict(loss=loss, g_logp=g_logp, g_ent=g_ent,
              advantages=prepared.advantages, state=state,
              new_state=new_state)


def _jitted(name):
  method = METHODS[name]

  def fn(batch):
    _TRACED[name].append(batch.logp.shape)  # runs once per trace
    return full_path(method, batch)

  return jax.jit(fn)


_JIT = {n: _jitted(n) for n in METHODS}


def _assert_no_retrace(name):
  shapes = _TRACED[name]
  assert len(shapes) == len(set(shapes)), f"{name} retraced: {shapes}"


def _assert_tree_close(a, b, rtol, atol, msg=""):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb, f"{msg}: {ta} != {tb}"
  for i, (x, y) in enumerate(zip(la, lb)):
    np.testing.assert_allclose(np.asarray(x, np.float64),
                               np.asarray(y, np.float64), rtol=rtol,
                               atol=atol, err_msg=f"{msg} leaf {i}")


class JitEqualsEagerTest(parameterized.TestCase):

  @parameterized.named_parameters(*_PARAMS)
  def test_jit_equals_eager(self, name):
    method = METHODS[name]
    batch = method.make(np.random.default_rng(0))
    eager = full_path(method, batch)
    jitted = _JIT[name](batch)
    _assert_no_retrace(name)
    self.assertTrue(np.isfinite(float(eager["loss"])))
    # The loss depends on ℓ (or on H for EM-FT): not a vacuous comparison.
    g = eager["g_ent"] if name == "em_ft" else eager["g_logp"]
    self.assertGreater(float(jnp.abs(g).max()), 1e-4)
    _assert_tree_close(jitted, eager, rtol=1e-6, atol=1e-6, msg=name)


class PaddingTest(parameterized.TestCase):

  @parameterized.named_parameters(*_PARAMS)
  def test_padding_changes_nothing(self, name):
    method = METHODS[name]
    fn = _JIT[name]

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(seed=st.integers(0, 2**32 - 1))
    def check(seed):
      rng = np.random.default_rng(seed)
      batch = method.make(rng)
      padded = _pad(batch, rng, method)
      a, b = fn(batch), fn(padded)
      real = (slice(0, ROWS), slice(0, TOKENS))
      s = method.row_scale
      np.testing.assert_allclose(b["loss"], s * a["loss"], rtol=1e-5,
                                 atol=1e-6)
      m = np.asarray(padded.mask) > 0
      for g in ("g_logp", "g_ent"):
        np.testing.assert_allclose(np.asarray(b[g])[real], s * a[g],
                                   rtol=1e-5, atol=1e-6, err_msg=g)
        np.testing.assert_array_equal(np.asarray(b[g])[~m], 0.0, err_msg=g)
      mr = np.asarray(batch.mask) > 0
      np.testing.assert_allclose(np.asarray(b["advantages"])[real][mr],
                                 np.asarray(a["advantages"])[mr], rtol=1e-5,
                                 atol=1e-6)
      _assert_tree_close(b["state"], a["state"], 1e-5, 1e-6, "state")
      _assert_tree_close(b["new_state"], a["new_state"], 1e-5, 1e-6,
                         "new_state")

    check()
    _assert_no_retrace(name)


class RegressionTest(absltest.TestCase):
  """Hand-checked cases of the bugs the property tests found, and HAPO's
  documented dependence on the padded length."""

  def test_grpo_lambda_equal_correct_lengths_are_finite(self):
    # Top group: correct lengths (100, 100) and one incorrect. σ^c = 0 used
    # to give (L − μ)/σ = 0/0 = NaN; now σ = 1e-4 as for a single correct
    # response: R = 1 − 0.6·σ(0) = 0.7.
    r = grpo_lambda.grpo_lambda_rewards(
        jnp.array([1, 1, 0]), jnp.array([100, 100, 150]),
        jnp.array([0, 0, 0]), lam=0.2, alpha=0.6)
    np.testing.assert_allclose(r, [0.7, 0.7, 0.0], atol=1e-6)

  def test_grpo_lambda_padded_groups_are_not_ranked(self):
    # Two real groups, λ = 0.5: ceil(0.5·2) = 1 top group (group 1, acc 1).
    # Two padded groups (length 0, "correct") used to count: ceil(0.5·4) = 2
    # and a padded group outranked the real group 0.
    correct = jnp.array([1, 0, 1, 1, 1, 1, 1, 1])
    lengths = jnp.array([3, 4, 2, 4, 0, 0, 0, 0])
    ids = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    valid = lengths > 0
    r = grpo_lambda.grpo_lambda_rewards(correct, lengths, ids, lam=0.5,
                                        valid=valid)
    r_real = grpo_lambda.grpo_lambda_rewards(correct[:4], lengths[:4],
                                             ids[:4], lam=0.5)
    # Group 1: μ = 3, σ = 1 -> 1 − 0.6·σ(∓1) = 0.838635, 0.561365.
    np.testing.assert_allclose(r_real, [1, 0, 0.838635, 0.561365],
                               atol=1e-6)
    np.testing.assert_allclose(r[:4], r_real, atol=1e-7)

  def test_haepo_padded_rows_get_no_weight(self):
    # Spec §14 (f) case, S = (−1, −2), R̂ = (1, −1): J = 0.462117. A padded
    # group (S = 0, R̂ = 5) used to count in the mean over groups.
    s = jnp.array([-1.0, -2.0, 0.0, 0.0])
    r = jnp.array([1.0, -1.0, 5.0, 5.0])
    ids = jnp.array([0, 0, 1, 1])
    valid = jnp.array([True, True, False, False])
    j, g = jax.value_and_grad(haepo.plackett_luce_objective)(s, r, ids,
                                                             valid)
    np.testing.assert_allclose(j, 0.462117, atol=1e-6)
    np.testing.assert_allclose(g, [0.393224, -0.393224, 0, 0], atol=1e-6)

  def test_hdpo_padded_pair_is_skipped(self):
    # Spec §17 (f) pair (α = 1: 0.598139) plus a padded "pair" (one chosen,
    # one rejected, no tokens), which used to add log 2 to the mean.
    loss, n = hdpo.hdpo_loss(
        jnp.array([-10.0, -12.0, 0.0, 0.0]),
        jnp.array([-11.0, -11.0, 0.0, 0.0]), jnp.array([1, 0, 1, 0]),
        jnp.array([0, 0, 1, 1]), beta=0.1,
        valid=jnp.array([True, True, False, False]))
    np.testing.assert_allclose(loss, 0.598139, atol=1e-6)
    self.assertEqual(int(n), 1)

  def test_riskpo_tracker_ignores_padded_bundles(self):
    # Spec §16 (f) bundle: S = (2, 1, 1, 0). A padded bundle (S = (8, 8, 8,
    # 8) from garbage rewards) used to enter the tracker's quantiles.
    r = jnp.array([1, 0, 1, 0, 1, 1, 0, 0], jnp.float32)
    rows = lambda rr, lens: _to_batch(dict(
        logp=np.zeros((rr.shape[0], 2)), old_logp=np.zeros((rr.shape[0], 2)),
        advantages=np.zeros((rr.shape[0], 2)),
        mask=np.arange(2)[None] < np.asarray(lens)[:, None], rewards=rr))
    t = riskpo.riskpo(4, 2, q_mode="track")
    real = rows(r, [2] * 8)
    padded = rows(jnp.concatenate([r, jnp.full(8, 4.0)]), [2] * 8 + [0] * 8)
    prep = jax.jit(lambda b, s: er.prepare_batch(b, t, s))
    b0, s0, _ = prep(real, t.init(None))
    b1, s1, _ = prep(padded, t.init(None))
    # Empirical linear quantiles of (0, 1, 1, 2) at 0.2 and 0.8: 0.6, 1.4.
    # Levels 0.2 and 0.8 (indices 3, 15): F̂(0.6) = 1/4, F̂(1.4) = 3/4, so
    # one tracker step gives 0.6 + 0.1·(0.2 − 0.25), 1.4 + 0.1·(0.8 − 0.75).
    np.testing.assert_allclose(s0.quantiles[np.array([3, 15])],
                               [0.595, 1.405], atol=1e-6)
    np.testing.assert_allclose(s1.quantiles, s0.quantiles, atol=1e-6)
    np.testing.assert_allclose(b1.advantages[:8], b0.advantages, atol=1e-6)
    # A batch of padding only leaves the tracker as it was.
    _, s2, _ = prep(rows(jnp.ones(8), [0] * 8), s0)
    np.testing.assert_array_equal(s2.quantiles, s0.quantiles)

  def test_hapo_padding_check_depends_on_padded_length(self):
    """Documented, not a bug: spec §7 (c), token-level group average, step 3.

    The released code also tests the padded positions (value −μ/σ) for the
    |A| ≥ 5 fallback, so a group whose rows all have the full length T uses
    the token-level advantage, and the same group padded to T + 1 falls back
    to GRPO (``fallback_checks_padding=True``, the default). The property
    test for that setting therefore gives every group a row shorter than T.
    """
    r = jnp.array([1.0, 1.0, 1.0, 0.9])
    ids = jnp.zeros(4, jnp.int32)
    full = jnp.full(4, 3)
    a_full = hapo.token_level_group_advantage(r, full, ids, max_length=3)
    a_pad = hapo.token_level_group_advantage(r, full, ids, max_length=4)
    # μ = 0.975, σ = 0.043301 (population): A = (0.577350, ..., −1.732051);
    # |−μ/σ| = 22.5 ≥ 5 on the padded positions -> GRPO (σ unbiased 0.05).
    np.testing.assert_allclose(a_full, [0.57734, 0.57734, 0.57734, -1.73203],
                               atol=1e-4)
    np.testing.assert_allclose(a_pad, [0.5, 0.5, 0.5, -1.5], atol=1e-4)
    np.testing.assert_allclose(
        a_pad, er.core.advantages.grpo(r, ids), atol=1e-6)
    a_off = hapo.token_level_group_advantage(
        r, full, ids, max_length=4, fallback_checks_padding=False)
    np.testing.assert_allclose(a_off, a_full, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
