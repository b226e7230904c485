"""Pre-flight (entropy_rl.training.preflight, experiments/preflight.py): the
tiny config's programs compiled for a 4-chip TPU v5e slice from this CPU
host, and a program that does not fit."""

import json
import os
import runpy
import subprocess
import sys
import tempfile

from absl.testing import absltest

import jax

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_libtpu() -> bool:
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def _config(**overrides):
  from experiments.configs import grpo  # pylint: disable=g-import-not-at-top
  from entropy_rl import builders  # pylint: disable=g-import-not-at-top
  c = grpo.get_config("tiny")
  builders.deep_update(c, overrides)
  return c


@absltest.skipUnless(_has_libtpu(), "libtpu is not installed")
class PreflightTest(absltest.TestCase):

  def test_tiny_config_on_a_v5e_2x2(self):
    """The suite's pre-flight: both programs of grpo.py:tiny compile for
    v5e:2x2, fit, and report memory, collectives and estimates."""
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "pf.json")
      proc = subprocess.run(
          [sys.executable, "-m", "experiments.preflight",
           "--config=experiments/configs/grpo.py:tiny", "--topology=v5e:2x2",
           "--mesh=data:2,fsdp:2", f"--json={out}"],
          cwd=_ROOT, capture_output=True, text=True, timeout=600,
          env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      with open(out, encoding="utf-8") as f:
        res = json.load(f)
    self.assertIn("mesh data=2 fsdp=2 tensor=1", proc.stdout)
    self.assertIn("fits", proc.stdout)
    self.assertIn("est. ", proc.stdout)
    for name in ("train", "rollout"):
      r = res[name]
      self.assertTrue(r["fits"])
      mem = r["report"]["memory"]
      self.assertGreater(mem["total_bytes"], 0)
      self.assertLess(mem["total_bytes"], mem["hbm_bytes"])
      self.assertGreater(r["estimated_seconds"], 0)
      self.assertGreater(r["tokens_per_second"], 0)
      self.assertEqual(r["flags"], [])
    train = res["train"]
    # 512 rows x 13 tokens; the parameters and Adam's moments are split
    # over fsdp (2) for the matrices: less than the whole on each chip.
    self.assertEqual(train["rows"], 512)
    self.assertGreater(train["optimizer_bytes"], train["params_bytes"])
    kinds = set(train["report"]["collective_totals"])
    self.assertTrue(kinds & {"all-gather", "reduce-scatter", "all-reduce"})
    # The rollout gathers the weights once, not per decode step: no
    # collective runs more often than once per program.
    counts = [c["count"] for c in res["rollout"]["report"]["collectives"]]
    self.assertLessEqual(max(counts, default=1), 1)

  def test_does_not_fit(self):
    """A train step of 2,048 rows x 4,104 tokens does not fit a v5e chip:
    the pre-flight says so, with the compiler's figures."""
    from entropy_rl import aot  # pylint: disable=g-import-not-at-top
    from entropy_rl import builders  # pylint: disable=g-import-not-at-top
    from entropy_rl.training import preflight  # pylint: disable=g-import-not-at-top
    c = _config(data={"prompts_per_step": 256},
                sampling={"max_new_tokens": 4096})
    exp = builders.build_experiment(c, abstract=True)
    topo = aot.topology("v5e-1")
    mesh = aot.mesh_for(topo, {"data": 1, "fsdp": 1, "tensor": 1})
    res = preflight.preflight(exp, topo, mesh, programs=("train",),
                              find_batch=False)
    r = res["train"]
    self.assertFalse(r.fits)
    self.assertIsNone(r.report)
    self.assertEqual(r.rows, 2048)
    self.assertRegex(r.error, r"does not fit in device memory: needs "
                     r"[0-9.]+ GiB, has 15.75 GiB")
    text = preflight.describe(res, topo, mesh)
    self.assertIn("DOES NOT FIT", text)

  def test_largest_fitting_bisects_real_compiles(self):
    """``largest_fitting`` on a program whose memory is known: rows of
    4 MiB (a float32 [rows, 2^20] array and its double) fit a 15.75 GiB
    v5e chip up to ~1,300 rows; the search lands within its resolution."""
    from entropy_rl import aot  # pylint: disable=g-import-not-at-top
    from entropy_rl.training import preflight  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    topo = aot.topology("v5e-1")
    mesh = aot.mesh_for(topo, {"data": 1, "fsdp": 1, "tensor": 1})

    def build(rows):
      arg = jax.ShapeDtypeStruct((rows, 1 << 20), jnp.float32,
                                 sharding=jax.sharding.NamedSharding(
                                     mesh, jax.P()))
      return preflight.Program(
          name="rollout", fn=lambda x: (x * 2.0, x + 1.0), args=(arg,),
          out_shardings=None, donate_argnums=(), model_flops=1.0,
          kernel_flops=0.0, tokens=rows, rows=rows)

    got = preflight.largest_fitting(build, topo, mesh, start=4096, unit=64)
    # args + two outputs: 12 MiB per row.
    want = int(15.75 * 1024 / 12)
    self.assertLessEqual(got, want)
    self.assertGreaterEqual(got, want * (1 - 1 / 8))
    self.assertEqual(got % 64, 0)
    self.assertTrue(preflight.run_program(build(got), topo, mesh).fits)
    self.assertFalse(preflight.run_program(build(4096), topo, mesh).fits)

  def test_every_rlvr_config_builds_its_programs_for_tpu(self):
    """Every RLVR config's RL update and rollout trace and lower for a
    v5e:2x2 FSDP mesh from abstract parameters (method-specific inputs
    included: GRPO-λ reads ``aux["correct"]``, CURE's rows, ...); the tiny
    size, the same code paths as ``:0.5b``."""
    from entropy_rl import aot  # pylint: disable=g-import-not-at-top
    from entropy_rl import builders  # pylint: disable=g-import-not-at-top
    from entropy_rl.training import preflight  # pylint: disable=g-import-not-at-top
    topo = aot.topology("v5e:2x2")
    mesh = aot.mesh_for(topo, {"data": 1, "fsdp": 4, "tensor": 1})
    folder = os.path.join(_ROOT, "experiments", "configs")
    names = sorted(
        f[:-3] for f in os.listdir(folder)
        if f.endswith(".py") and f != "base.py"
        and not f.startswith(("_", "agent_", "classic_", "study_")))
    self.assertGreaterEqual(len(names), 25)
    for name in names:
      with self.subTest(name):
        cfg = runpy.run_path(os.path.join(folder, name + ".py"))[
            "get_config"]("tiny")
        _, variant = builders.variants(cfg)[0]
        exp = builders.build_experiment(variant, abstract=True)
        with jax.set_mesh(mesh):
          for build in (preflight.train_program, preflight.rollout_program):
            prog = build(exp, mesh)
            lowered = jax.jit(prog.fn, out_shardings=prog.out_shardings,
                              donate_argnums=prog.donate_argnums).lower(
                                  *prog.args)
            self.assertIn("func.func public @main", lowered.as_text())

  def test_mesh_flag(self):
    from experiments import preflight as cli  # pylint: disable=g-import-not-at-top
    self.assertEqual(cli.parse_mesh("fsdp:8", (-1, 1, 1)), (1, 8, 1))
    self.assertEqual(cli.parse_mesh("data:2,fsdp:4", (-1, 1, 1)), (2, 4, 1))
    self.assertEqual(cli.parse_mesh("", (-1, 1, 1)), (-1, 1, 1))
    with self.assertRaisesRegex(ValueError, "axis:size"):
      cli.parse_mesh("model:8", (-1, 1, 1))


if __name__ == "__main__":
  absltest.main()
