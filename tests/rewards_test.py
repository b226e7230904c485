"""DAPO reward shaping and dynamic sampling (spec §1.4)."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers
from entropy_rl.core import rewards
from tests import test_utils


class DapoTest(absltest.TestCase):

  def test_overlong_spec_values(self):
    lengths = jnp.array([16000, 16384, 18432, 20480])
    np.testing.assert_allclose(
        rewards.overlong_penalty(lengths, 20480, 4096), [0, 0, -0.5, -1.0],
        atol=1e-6)

  def test_overlong_bad_cache(self):
    with self.assertRaisesRegex(ValueError, "l_cache"):
      rewards.overlong_penalty(jnp.zeros(2), 10, 20)

  def test_dynamic_sampling_keeps_varied_groups(self):
    r = jnp.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], jnp.float32)
    g = jnp.repeat(jnp.arange(3), 4)
    keep = rewards.dynamic_sampling_mask(r, g)
    np.testing.assert_array_equal(keep, [0] * 4 + [1] * 4 + [0] * 4)
    # A singleton group is kept.
    np.testing.assert_array_equal(
        rewards.dynamic_sampling_mask(jnp.array([1.0]), jnp.array([0])), [1])

  def test_overlong_transform(self):
    b = test_utils.random_batch(0, rows=4, tokens=8)
    t = regularizers.overlong_reward_shaping(l_max=8, l_cache=4)
    b2, _, m = er.prepare_batch(b, t, t.init(None))
    lengths = np.asarray(b.mask.sum(-1))
    expected = np.minimum(-(lengths - 4) / 4, 0.0)
    np.testing.assert_allclose(b2.rewards - b.rewards, expected, rtol=1e-6)
    self.assertIn("overlong_frac", m)


if __name__ == "__main__":
  absltest.main()
