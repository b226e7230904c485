"""CURE (spec §11) with a deterministic fake sampler."""

import importlib
from typing import NamedTuple

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

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


if __name__ == "__main__":
  absltest.main()
