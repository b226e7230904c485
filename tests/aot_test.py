"""entropy_rl.aot: TPU slices by name, AOT compiles, and the program's report.

Compiles for abstract TPU devices on the CPU, which needs libtpu; the file is
skipped without it. Shapes stay small (each compile well under a few
seconds on two cores).
"""

from __future__ import annotations

import dataclasses
import json
import unittest

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from entropy_rl import aot

try:
  import libtpu  # pylint: disable=g-import-not-at-top,unused-import
except ImportError as e:
  raise unittest.SkipTest(
      "libtpu is not installed: no AOT compiles for TPU") from e

_MIB = 2**20
_GIB = 2**30


def _abstract(mesh, shape, spec=P(), dtype=jnp.bfloat16):
  return jax.ShapeDtypeStruct(shape, dtype,
                              sharding=NamedSharding(mesh, spec))


def _one_chip(name="v5e-1"):
  topo = aot.topology(name)
  return topo, aot.mesh_for(topo, {"data": 1})


def _compile_and_analyze(topo, fn, args, **kwargs):
  compiled = aot.compile_for(fn, args, **kwargs)
  return aot.analyze(compiled, chip=topo.chip, num_chips=topo.num_chips)


class TopologyTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("v5e_8", "v5e-8", "v5e", 8, (2, 4)),
      ("v5litepod_4", "v5litepod-4", "v5e", 4, (2, 2)),
      ("v5e_1", "v5e-1", "v5e", 1, (1, 1)),
      ("v6e_1", "v6e-1", "v6e", 1, (1, 1)),
      ("v6e_8", "v6e-8", "v6e", 8, (2, 4)),
      # Cloud names of v5p and v4 count TensorCores, two per chip.
      ("v5p_8", "v5p-8", "v5p", 4, (2, 2, 1)),
      ("v5p_64", "v5p-64", "v5p", 32, (2, 4, 4)),
      ("v4_8", "v4-8", "v4", 4, (2, 2, 1)),
      ("jax_v5e", "v5e:2x4", "v5e", 8, (2, 4)),
      ("jax_v5p", "v5p:2x2x1", "v5p", 4, (2, 2, 1)),
      ("jax_v5e_single", "v5e:1x1", "v5e", 1, (1, 1)),
  )
  def test_names(self, name, chip, num_chips, shape):
    topo = aot.topology(name)
    self.assertEqual(topo.chip.name, chip)
    self.assertEqual(topo.num_chips, num_chips)
    self.assertEqual(topo.num_devices, num_chips)  # One device per chip.
    self.assertEqual(topo.shape, shape)
    self.assertEqual(topo.device_kind, topo.chip.device_kind)
    self.assertIs(aot.chip_for_device_kind(topo.device_kind), topo.chip)

  def test_colab_runtimes_are_single_chips(self):
    self.assertEqual(set(aot.COLAB_RUNTIMES), {"v5e-1", "v6e-1"})
    for name in aot.COLAB_RUNTIMES:
      self.assertEqual(aot.topology(name).num_chips, 1)

  @parameterized.parameters("v7x-8", "v5e-3", "v5p-6", "v5e:2x2x1", "tpu",
                            "", "v4:2x2")
  def test_bad_names(self, name):
    with self.assertRaisesRegex(ValueError, r"v5e-8.*v5p:2x2x1"):
      aot.topology(name)

  def test_clocks(self):
    # peak / (2 * MXU MACs per cycle); v5e: 197e12 / (4*128*128*2).
    expected = {"v5e": 1.503e9, "v6e": 1.751e9, "v5p": 1.751e9,
                "v4": 1.049e9}
    for name, clock in expected.items():
      self.assertAlmostEqual(aot.CHIPS[name].clock_hz / clock, 1, places=3)

  def test_mesh_for(self):
    topo = aot.topology("v5e-8")
    mesh = aot.mesh_for(topo, {"data": 2, "fsdp": 4})
    self.assertEqual(dict(mesh.shape), {"data": 2, "fsdp": 4})
    self.assertEqual(set(mesh.axis_types), {jax.sharding.AxisType.Auto})
    mesh = aot.mesh_for(topo, (2, 2, 2))
    self.assertEqual(mesh.axis_names, aot.MESH_AXES)
    with self.assertRaisesRegex(ValueError, "multiply to 8"):
      aot.mesh_for(topo, {"data": 2, "fsdp": 2})
    with self.assertRaisesRegex(ValueError, "one name per size"):
      aot.mesh_for(topo, (8,))

  def test_local_cpu(self):
    info = aot.local()
    self.assertIsNone(info.chip)
    self.assertEqual(info.num_chips, len(jax.devices()))


class AnalyzeTest(parameterized.TestCase):

  def test_memory_exact(self):
    topo = aot.topology("v5e-4")
    mesh = aot.mesh_for(topo, {"fsdp": 4})
    x = _abstract(mesh, (4096, 4096), P("fsdp", None))
    report = _compile_and_analyze(topo, lambda x: x.sum(), (x,), mesh=mesh)
    self.assertEqual(report.memory.argument_bytes, 8 * _MIB)  # 32 MiB / 4.
    m = report.memory
    self.assertEqual(m.total_bytes, m.argument_bytes + m.temp_bytes
                     + m.output_bytes - m.alias_bytes + m.generated_code_bytes)
    self.assertTrue(m.fits)
    self.assertEqual(m.hbm_bytes, 16 * _GIB)
    # The same program on a (fictional) 1 MiB chip does not fit.
    small = dataclasses.replace(topo.chip, hbm_bytes=_MIB)
    compiled = aot.compile_for(lambda x: x.sum(), (x,), mesh=mesh)
    tiny = aot.analyze(compiled, chip=small, num_chips=4)
    self.assertFalse(tiny.memory.fits)
    self.assertIn("DOES NOT FIT", tiny.describe())

  def test_does_not_fit(self):
    topo = aot.topology("v5e-4")
    mesh = aot.mesh_for(topo, {"fsdp": 4})
    per_chip = 20 * _GIB // 4  # float32 elements: 20 GiB per chip.
    x = _abstract(mesh, (4, per_chip), P("fsdp"), jnp.float32)
    with self.assertRaises(aot.DoesNotFit) as caught:
      aot.compile_for(lambda x: x.sum(), (x,), mesh=mesh)
    err = caught.exception
    self.assertIsInstance(err, RuntimeError)
    self.assertIn("RESOURCE_EXHAUSTED", err.compiler_message)
    # "... HLO temporaries (20.00G) exceeds available HBM (15.75G)."
    self.assertAlmostEqual(err.required_bytes / (20 * _GIB), 1, places=2)
    self.assertLess(err.available_bytes, 16 * _GIB)
    self.assertIn("does not fit", str(err))

  def test_fsdp_matmul_gathers_weights(self):
    topo = aot.topology("v5e-4")
    mesh = aot.mesh_for(topo, {"fsdp": 4})
    x = _abstract(mesh, (256, 1024), P("fsdp", None))
    w = _abstract(mesh, (1024, 2048), P("fsdp", None))  # Contracting dim.
    report = _compile_and_analyze(
        topo, lambda x, w: x @ w, (x, w), mesh=mesh,
        out_shardings=NamedSharding(mesh, P("fsdp", None)))
    gathers = [c for c in report.collectives if c.kind == "all-gather"]
    self.assertLen(gathers, 1)
    g = gathers[0]
    self.assertEqual((g.dtype, g.shape), ("bf16", (1024, 2048)))
    self.assertEqual(g.bytes, 1024 * 2048 * 2)
    self.assertEqual((g.group_size, g.count), (4, 1))
    self.assertEqual(g.moved_bytes, 3 / 4 * g.bytes)  # (n-1)/n * size.
    self.assertEqual(report.large_collectives(4 * _MIB), [g])
    self.assertEqual(report.large_collectives(4 * _MIB + 1), [])

  def test_data_parallel_gradient_all_reduces(self):
    topo = aot.topology("v5e-4")
    mesh = aot.mesh_for(topo, {"data": 4})
    w = _abstract(mesh, (1024, 1024), P())
    x = _abstract(mesh, (256, 1024), P("data", None))
    loss = lambda w, x: jnp.mean(jnp.square((x @ w).astype(jnp.float32)))
    report = _compile_and_analyze(topo, jax.grad(loss), (w, x), mesh=mesh)
    reduces = [c for c in report.collectives if c.kind == "all-reduce"]
    self.assertLen(reduces, 1)
    self.assertEqual(reduces[0].shape, (1024, 1024))
    self.assertEqual(reduces[0].group_size, 4)
    self.assertEqual(reduces[0].moved_bytes, 2 * 3 / 4 * reduces[0].bytes)
    totals = report.collective_totals["all-reduce"]
    self.assertEqual(totals["count"], 1)
    self.assertGreater(report.collective_seconds, 0)

  def test_collectives_in_scan_counted_per_iteration(self):
    topo = aot.topology("v5e-4")
    mesh = aot.mesh_for(topo, {"fsdp": 4})
    ws = _abstract(mesh, (6, 1024, 1024), P(None, "fsdp", None))
    x = _abstract(mesh, (256, 1024), P("fsdp", None))
    layers = lambda ws, x: jax.lax.scan(
        lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]
    report = _compile_and_analyze(topo, layers, (ws, x), mesh=mesh)
    (loop,) = report.loops
    self.assertEqual((loop.trip_count, loop.runs), (6, 6))
    self.assertIn(loop.source, ("condition", "backend_config"))
    gathers = [c for c in report.collectives if c.kind == "all-gather"]
    self.assertLen(gathers, 1)
    self.assertEqual(gathers[0].count, 6)
    self.assertEqual(gathers[0].bytes, 1024 * 1024 * 2)  # One layer.
    self.assertEqual(report.collective_totals["all-gather"]["count"], 6)
    self.assertTrue(report.cost_flops_loops_counted_once)

  def test_scan_estimate_is_trip_count_times_body(self):
    topo, mesh = _one_chip()
    n = 2048
    args = (_abstract(mesh, (), dtype=jnp.float32), _abstract(mesh, (n, n)),
            _abstract(mesh, (n, n)))

    def body(a, x, w):  # Depends on the carry: not hoisted out of the loop.
      return a + ((x + a.astype(x.dtype)) @ w).astype(jnp.float32).sum()

    def scan(length):
      return lambda a, x, w: jax.lax.scan(
          lambda c, _: (body(c, x, w), None), a, None, length=length)[0]

    one = _compile_and_analyze(topo, body, args)
    four = _compile_and_analyze(topo, scan(4), args)
    eight = _compile_and_analyze(topo, scan(8), args)
    # Same body: exactly twice the cycles (the loop has nothing outside).
    self.assertAlmostEqual(eight.compute_cycles / four.compute_cycles, 2,
                           delta=0.05)
    # The cost model charges the in-loop matmul ~1.19x the standalone one.
    self.assertBetween(eight.estimated_seconds / one.estimated_seconds,
                       8 * 0.75, 8 * 1.25)
    self.assertEqual(eight.loops[0].trip_count, 8)

  @parameterized.parameters("v5e:1x1", "v6e:1x1", "v5p:1x1x1", "v4:1x1x1")
  def test_large_matmul_near_peak(self, name):
    topo, mesh = _one_chip(name)
    n = 4096
    a = _abstract(mesh, (n, n))
    report = _compile_and_analyze(topo, lambda x, y: x @ y, (a, a))
    ideal = 2 * n**3 / topo.chip.peak_bf16_flops
    # Measured (libtpu 0.0.42.1): v5e 1.03, v6e 1.15, v5p 1.04, v4 1.14.
    self.assertBetween(report.compute_seconds / ideal, 0.95, 1.3)
    self.assertGreater(report.estimated_seconds, 0)  # Never negative.
    self.assertAlmostEqual(report.mfu(2 * n**3),
                           ideal / report.estimated_seconds)
    self.assertEqual(report.cost_flops, 2 * n**3)
    self.assertFalse(report.cost_flops_loops_counted_once)

  def test_data_dependent_loop_needs_override(self):
    topo, mesh = _one_chip()
    x = _abstract(mesh, (512, 512))

    def decode(x):
      cond = lambda s: (s[0] < 100) & (s[1].sum() < 1e6)
      body = lambda s: (s[0] + 1, jnp.tanh(s[1] @ s[1]))
      return jax.lax.while_loop(cond, body, (0, x))[1]

    compiled = aot.compile_for(decode, (x,))
    guessed = aot.analyze(compiled, chip=topo.chip, num_chips=1)
    (loop,) = guessed.loops
    self.assertEqual((loop.source, loop.trip_count), ("unknown", 1))
    self.assertTrue(any(loop.name in w for w in guessed.warnings))
    told = aot.analyze(compiled, chip=topo.chip, num_chips=1,
                       loop_trip_counts={loop.name: 10})
    self.assertEqual((told.loops[0].source, told.loops[0].runs),
                     ("override", 10))
    self.assertGreater(told.compute_cycles, 5 * guessed.compute_cycles)

  def test_report_json_and_describe(self):
    topo = aot.topology("v5e-4")
    mesh = aot.mesh_for(topo, {"data": 4})
    w = _abstract(mesh, (512, 512), P())
    x = _abstract(mesh, (64, 512), P("data", None))
    loss = lambda w, x: jnp.mean(jnp.square((x @ w).astype(jnp.float32)))
    report = _compile_and_analyze(topo, jax.grad(loss), (w, x), mesh=mesh)
    d = json.loads(json.dumps(report.to_dict()))
    self.assertEqual(d["chip"]["name"], "v5e")
    self.assertEqual(d["memory"]["total_bytes"], report.memory.total_bytes)
    self.assertEqual(d["collectives"][0]["kind"], "all-reduce")
    text = report.describe()
    for word in ("memory", "fits", "all-reduce", "estimate", "GHz"):
      self.assertIn(word, text)
    with self.assertRaisesRegex(ValueError, "chip must be a Chip"):
      aot.analyze(None, chip="v5e", num_chips=4)
    with self.assertRaisesRegex(ValueError, "num_chips"):
      aot.analyze(None, chip=topo.chip, num_chips=0)


class _FakeCompiled:
  """Enough of jax.stages.Compiled to analyze hand-written HLO."""

  def __init__(self, text):
    self._text = text

  def as_text(self):
    return self._text

  def memory_analysis(self):
    return _Stats()

  def cost_analysis(self):
    return {"flops": 1.0}


@dataclasses.dataclass
class _Stats:
  argument_size_in_bytes: int = 10
  output_size_in_bytes: int = 20
  alias_size_in_bytes: int = 5
  temp_size_in_bytes: int = 40
  generated_code_size_in_bytes: int = 1


# A known_trip_count loop (3) whose body holds an async all-gather pair,
# a fused computation with its own cycles, and a conditional (max branch);
# replica groups in the explicit, iota and mesh forms; a generic async
# all-reduce (start and done both name its computation); a Pallas kernel whose
# attributes span lines, one of them starting with "}".
# pylint: disable=line-too-long
_HLO = r"""HloModule fake, is_scheduled=true, num_partitions=8

%fused (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %n = f32[8]{0} negate(%p), backend_config={"estimated_cycles":"999"}
}

%cheap (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  ROOT %c1 = f32[8]{0} copy(%a), backend_config={"estimated_cycles":"10"}
}

%dear (b: f32[8]) -> f32[8] {
  %b = f32[8]{0} parameter(0)
  ROOT %c2 = f32[8]{0} copy(%b), backend_config={"estimated_cycles":"70"}
}

%wrapped (wp: f32[8]) -> f32[8] {
  %wp = f32[8]{0} parameter(0)
  ROOT %war = f32[8]{0} all-reduce(%wp), channel_id=7, replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%fused
}

%body (t: (s32[], f32[8])) -> (s32[], f32[8]) {
  %t = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %v = f32[8]{0} get-tuple-element(%t), index=1
  %ags = (f32[8]{0}, f32[64]{0}) all-gather-start(%v), channel_id=3, replica_groups=[1,8]<=[8], dimensions={0}
  %agd = f32[64]{0} all-gather-done(%ags)
  %f = f32[8]{0} fusion(%v), kind=kLoop, calls=%fused, backend_config={"estimated_cycles":"100"}
  %pr = pred[] constant(true)
  %k = f32[8]{0} conditional(%pr, %f, %f), true_computation=%cheap, false_computation=%dear
  %ar = f32[8]{0} all-reduce(%k), channel_id=4, replica_groups={{0,1},{2,3},{4,5},{6,7}}, to_apply=%fused
  %one = s32[] constant(1)
  %i2 = s32[] add(%i, %one), backend_config={"estimated_cycles":"1"}
  ROOT %r = (s32[], f32[8]{0}) tuple(%i2, %ar)
}

%cond (t2: (s32[], f32[8])) -> pred[] {
  %t2 = (s32[], f32[8]{0}) parameter(0)
  %i3 = s32[] get-tuple-element(%t2), index=0
  %lim = s32[] constant(1000)
  ROOT %lt = pred[] compare(%i3, %lim), direction=LT
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %zero = s32[] constant(0)
  %init = (s32[], f32[8]{0}) tuple(%zero, %x)
  %w = (s32[], f32[8]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %y = f32[8]{0} get-tuple-element(%w), index=1
  %kern = f32[16]{0} custom-call(%y), custom_call_target="tpu_custom_call", frontend_attributes={kernel_metadata={
"xprof_metadata":"{\"block_q\": 512, \"a}\": 1}"
}}, backend_config={"custom_call_config":{"body":"T}}(x"}}
  %as = ((f32[8]{0}), f32[8]{0}, s32[]) async-start(%y), calls=%wrapped
  %ad = f32[8]{0} async-done(%as), calls=%wrapped
  %cp = f32[8]{0} collective-permute(%y), channel_id=5, source_target_pairs={{0,1},{1,0}}
  ROOT %ag = f32[32]{0} all-gather(%cp), channel_id=6, replica_groups=mesh['x'=4,'y'=2] {'x'}, dimensions={0}, backend_config={"estimated_cycles":"5"}
}
"""
# pylint: enable=line-too-long


# An async all-gather as XLA:TPU splits it: its start fusion (flags -1) in
# ENTRY, a continuation (flags 2..8: part of the same transfer, same
# channel) inside another loop's body that runs 4 times.
_HLO_CONTINUATION = r"""HloModule cont, is_scheduled=true, num_partitions=8

%acf_start (p0: f32[8]) -> f32[64] {
  %p0 = f32[8]{0} parameter(0)
  ROOT %g0 = f32[64]{0} all-gather(%p0), channel_id=1, replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}, backend_config={"async_collective_fusion_config":{"flag_start":"-1","flag_end":"-1"}}
}

%acf_part (p1: f32[8]) -> f32[64] {
  %p1 = f32[8]{0} parameter(0)
  ROOT %g1 = f32[64]{0} all-gather(%p1), channel_id=1, replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}, backend_config={"async_collective_fusion_config":{"flag_start":"2","flag_end":"8"}}
}

%body (t: (s32[], f32[8])) -> (s32[], f32[8]) {
  %t = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %v = f32[8]{0} get-tuple-element(%t), index=1
  %part = f32[64]{0} fusion(%v), kind=kCustom, calls=%acf_part
  %one = s32[] constant(1)
  %i2 = s32[] add(%i, %one)
  ROOT %r = (s32[], f32[8]{0}) tuple(%i2, %v)
}

%cond (t2: (s32[], f32[8])) -> pred[] {
  %t2 = (s32[], f32[8]{0}) parameter(0)
  %i3 = s32[] get-tuple-element(%t2), index=0
  %lim = s32[] constant(4)
  ROOT %lt = pred[] compare(%i3, %lim), direction=LT
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %start = f32[64]{0} fusion(%x), kind=kCustom, calls=%acf_start
  %zero = s32[] constant(0)
  %init = (s32[], f32[8]{0}) tuple(%zero, %x)
  %w = (s32[], f32[8]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"4"}}
  ROOT %y = f32[8]{0} get-tuple-element(%w), index=1
}
"""


class HloParsingTest(absltest.TestCase):

  def test_async_collective_continuations_count_once(self):
    chip = aot.CHIPS["v5e"]
    report = aot.analyze(_FakeCompiled(_HLO_CONTINUATION), chip=chip,
                         num_chips=8)
    (gather,) = report.collectives
    self.assertEqual((gather.name, gather.count, gather.bytes),
                     ("g0", 1, 256))
    self.assertAlmostEqual(report.collective_seconds,
                           7 / 8 * 256 / chip.ici_bandwidth)
    # Without a start in the program, the pieces are all there is.
    orphan = _HLO_CONTINUATION.replace(
        "  %start = f32[64]{0} fusion(%x), kind=kCustom, calls=%acf_start\n",
        "")
    (piece,) = aot.analyze(_FakeCompiled(orphan), chip=chip,
                           num_chips=8).collectives
    self.assertEqual((piece.name, piece.count), ("g1", 4))

  def test_fake_module(self):
    chip = aot.CHIPS["v5e"]
    report = aot.analyze(_FakeCompiled(_HLO), chip=chip, num_chips=8)
    # Body: fusion 100 (not its body's 999) + max(10, 70) + add 1 = 171.
    self.assertEqual(report.compute_cycles, 3 * 171 + 5)
    (loop,) = report.loops
    self.assertEqual((loop.trip_count, loop.source), (3, "backend_config"))
    by_name = {c.name: c for c in report.collectives}
    self.assertEqual(set(by_name), {"ags", "ar", "cp", "ag", "war"})
    self.assertEqual((by_name["war"].count, by_name["war"].group_size),
                     (1, 8))
    self.assertEqual((by_name["ags"].shape, by_name["ags"].count,
                      by_name["ags"].group_size), ((64,), 3, 8))
    self.assertEqual((by_name["ar"].group_size, by_name["ar"].count), (2, 3))
    self.assertEqual(by_name["ag"].group_size, 4)
    self.assertEqual(by_name["cp"].moved_bytes, 32)
    self.assertEqual(report.memory.total_bytes, 10 + 40 + 20 - 5 + 1)
    (kernel,) = report.kernels
    self.assertEqual((kernel.name, kernel.runs, kernel.bytes),
                     ("kern", 1, 64 + 32))
    self.assertEqual(report.estimated_seconds,
                     report.compute_seconds + report.kernel_seconds
                     + report.collective_seconds)
    # The condition's constant (1000) loses to XLA's known_trip_count, and
    # an override beats both.
    told = aot.analyze(_FakeCompiled(_HLO), chip=chip, num_chips=8,
                       loop_trip_counts={"w": 2})
    self.assertEqual(told.compute_cycles, 2 * 171 + 5)

  def test_trip_count_from_condition(self):
    text = _HLO.replace(', backend_config={"known_trip_count":{"n":"3"}}',
                        "")
    report = aot.analyze(_FakeCompiled(text), chip=aot.CHIPS["v5e"],
                         num_chips=8)
    self.assertEqual((report.loops[0].trip_count, report.loops[0].source),
                     (1000, "condition"))


if __name__ == "__main__":
  absltest.main()
