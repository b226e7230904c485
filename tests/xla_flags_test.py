"""entropy_rl.xla_flags: version gating, never overriding the user, opt-out."""

import os
import subprocess
import sys

from absl.testing import absltest

from entropy_rl import xla_flags

_YNN = "--xla_cpu_experimental_ynn_fusion_type="


class RecommendedFlagsTest(absltest.TestCase):

  def test_only_for_measured_jaxlib_versions(self):
    self.assertEqual(xla_flags.recommended_flags("0.10.2"), (_YNN,))
    self.assertEqual(xla_flags.recommended_flags("0.9.1"), ())
    self.assertEqual(xla_flags.recommended_flags("0.11.0"), ())

  def test_appends_after_the_users_flags(self):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    added = xla_flags.apply_recommended_flags(env, "0.10.2")
    self.assertEqual(added, (_YNN,))
    self.assertEqual(env["XLA_FLAGS"],
                     "--xla_force_host_platform_device_count=8 " + _YNN)

  def test_sets_flags_when_there_were_none(self):
    env = {}
    xla_flags.apply_recommended_flags(env, "0.10.2")
    self.assertEqual(env["XLA_FLAGS"], _YNN)

  def test_never_overrides_a_flag_the_user_set(self):
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot"
    env = {"XLA_FLAGS": mine}
    self.assertEqual(xla_flags.apply_recommended_flags(env, "0.10.2"), ())
    self.assertEqual(env["XLA_FLAGS"], mine)

  def test_opt_out_and_unknown_version_leave_the_environment_alone(self):
    env = {"ENTROPY_RL_XLA_DEFAULTS": "0"}
    self.assertEqual(xla_flags.apply_recommended_flags(env, "0.10.2"), ())
    self.assertNotIn("XLA_FLAGS", env)
    env = {}
    self.assertEqual(xla_flags.apply_recommended_flags(env, "0.11.0"), ())
    self.assertNotIn("XLA_FLAGS", env)

  def test_installed_jaxlib_accepts_them_and_they_take_effect(self):
    """XLA aborts on unknown flags: compile a matmul under the recommended
    flags in a fresh process; with them it must not be a YNNPACK fusion."""
    code = (
        "import os, jax, jax.numpy as jnp\n"
        "from entropy_rl import xla_flags\n"
        "print('ADDED', xla_flags.apply_recommended_flags())\n"
        "x = jnp.ones((64, 64))\n"
        "txt = jax.jit(lambda a: a @ a).lower(x).compile().as_text()\n"
        "print('YNN', 'ynn_fusion' in txt)\n"
        "print('SUM', float((x @ x).sum()))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "ENTROPY_RL_XLA_DEFAULTS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    self.assertIn("SUM 262144.0", out)
    if xla_flags.recommended_flags():
      self.assertIn("YNN False", out)
    else:  # Another jaxlib: nothing is set, whatever its GEMMs are.
      self.assertIn("ADDED ()", out)


if __name__ == "__main__":
  absltest.main()
