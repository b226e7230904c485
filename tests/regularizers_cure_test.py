"""CURE (spec §11) with a deterministic fake sampler."""

from typing import Any, NamedTuple

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import rollout as rollout_lib
from entropy_rl.regularizers import _cure as cure


VOCAB = 50


class _Out(NamedTuple):
  tokens: jax.Array
  mask: jax.Array
  logp: jax.Array
  entropy: jax.Array


def fake_sample(new_tokens=5):
  """Next token = (last token + 1) mod VOCAB, entropy = token value."""

  def sample_fn(prompt_tokens, prompt_mask, rng, num_samples):
    del prompt_mask, rng
    last = jnp.repeat(prompt_tokens[:, -1], num_samples)
    toks = (last[:, None] + 1 + jnp.arange(new_tokens)[None]) % VOCAB
    r = toks.shape[0]
    return _Out(toks.astype(jnp.int32), jnp.ones((r, new_tokens), bool),
                jnp.zeros((r, new_tokens)), toks.astype(jnp.float32))

  return sample_fn


class SelectTest(absltest.TestCase):

  def test_spec_case_uniform_over_top2_skipping_position_0(self):
    ent = jnp.array([[5.0, 0.1, 3.0, 2.5, 0.2]])
    picks = [int(cure.select_critical_positions(
        ent, jnp.ones((1, 5)), jnp.ones((1, 5), bool), jax.random.key(s),
        top_k=2)[0]) for s in range(200)]
    self.assertEqual(set(picks), {2, 3})
    self.assertBetween(np.mean(np.array(picks) == 2), 0.38, 0.62)

  def test_no_eligible_position_gives_zero(self):
    t = cure.select_critical_positions(
        jnp.ones((2, 4)), jnp.ones((2, 4)), jnp.zeros((2, 4), bool),
        jax.random.key(0))
    np.testing.assert_array_equal(t, [0, 0])

  def test_branch_prompt_is_left_padded_prefix(self):
    pt = jnp.array([[0, 7, 8]])
    pm = jnp.array([[0, 1, 1]], bool)
    toks, mask = cure.branch_prompts(pt, pm, jnp.array([[1, 2, 3, 4]]),
                                     jnp.array([2]))
    np.testing.assert_array_equal(toks, [[0, 0, 0, 7, 8, 1, 2]])
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 1, 1, 1]])


class RolloutTest(absltest.TestCase):

  def test_groups_and_continuations(self):
    pt = jnp.array([[0, 3], [4, 10]])
    pm = jnp.array([[0, 1], [1, 1]], bool)
    out = cure.cure_rollout(fake_sample(), pt, pm, jax.random.key(0), n1=2,
                            n2=3, top_k=2)
    self.assertEqual(out.tokens.shape, (2 * 2 * (1 + 3), 5))
    # Group size n1(1 + n2) = 8 for each prompt.
    np.testing.assert_array_equal(np.bincount(np.asarray(out.group_ids)),
                                  [8, 8])
    # A branch continues from the prefix y[:t*]: its first token follows the
    # last prefix token (the fake's rule), i.e. it re-generates y[t*].
    first = out.tokens[:4]
    for row in range(4):
      t = int(out.t_star[row])
      self.assertGreater(t, 0)
      branches = out.tokens[4 + 3 * row: 4 + 3 * (row + 1)]
      np.testing.assert_array_equal(branches[:, 0],
                                    jnp.full(3, first[row, t]))
    self.assertEqual(int(out.is_branch.sum()), 12)

  def test_n2_zero_is_plain_sampling(self):
    pt = jnp.array([[1, 2]])
    out = cure.cure_rollout(fake_sample(), pt, jnp.ones((1, 2), bool),
                            jax.random.key(1), n1=4, n2=0)
    ref = fake_sample()(pt, jnp.ones((1, 2), bool), None, 4)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    self.assertEqual(out.tokens.shape[0], 4)


class _State(NamedTuple):
  params: Any = None
  transform_state: Any = None


class HookTest(absltest.TestCase):

  def test_hook_rows_are_the_rollout_with_branch_marks(self):
    pt = jnp.array([[0, 3], [4, 10]])
    pm = jnp.array([[0, 1], [1, 1]], bool)
    fake = fake_sample()
    spec = cure.cure_rollout_hook(n2=3, top_k=2, eligible=None)
    self.assertEqual(spec.rows_per_prompt(2), 8)
    hook = spec.build(rollout_lib.HookContext(
        sample_fn=lambda prm, t, m, k, n, ts: fake(t, m, k, n),
        num_samples=2, pad_id=0))
    self.assertIsNone(hook.reward_view)  # reward on the continuation
    class Prompts(NamedTuple):
      tokens: Any
      mask: Any

    key = jax.random.key(0)
    (ro,) = hook.rollouts(_State(), Prompts(pt, pm), key)
    want = cure.cure_rollout(fake, pt, pm, key, n1=2, n2=3, top_k=2)
    np.testing.assert_array_equal(ro.response, want.tokens)
    np.testing.assert_array_equal(ro.group_ids, want.group_ids)
    np.testing.assert_array_equal(
        ro.aux[cure.PREFIX_KEY],
        np.concatenate([np.zeros(4), np.repeat(want.t_star, 3)]))
    np.testing.assert_array_equal(ro.aux[cure.BRANCH_KEY],
                                  np.repeat([0.0, 1.0], [4, 12]))
    rewards = jnp.arange(16, dtype=jnp.float32)
    out, m = hook.finish(_State(), Prompts(pt, pm),
                         (ro._replace(rewards=rewards),))
    self.assertIs(out.rewards, rewards)
    # Mean reward of the 12 branch rows 4..15: 9.5.
    self.assertAlmostEqual(float(m["cure/branch_reward"]), 9.5)
    self.assertAlmostEqual(float(m["cure/prefix_len"]),
                           float(np.mean(want.t_star)))

  def test_settings_are_checked(self):
    with self.assertRaisesRegex(ValueError, "reward_on"):
      cure.cure_rollout_hook(reward_on="prefix")
    with self.assertRaisesRegex(ValueError, "eligibility rule"):
      cure.eligible_table(None, "short")
    # A rule without a tokenizer filters nothing.
    spec = cure.cure_rollout_hook(eligible="multichar", reward_on="full")
    hook = spec.build(rollout_lib.HookContext())
    self.assertIs(hook.reward_view, cure.full_response_view)


if __name__ == "__main__":
  absltest.main()
