"""entropy_rl.parallel: meshes, rules, and sharded == single-device steps.

Runs on the 8 fake CPU devices of tests/conftest.py.
"""

from absl.testing import absltest
from absl.testing import parameterized
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

import entropy_rl as er
from entropy_rl import models
from entropy_rl import parallel
from entropy_rl import regularizers
from entropy_rl.training import step as step_lib
from entropy_rl.training import types


def setUpModule():
  # Faster compiles; every test compares programs compiled in the same mode.
  global _OPT
  _OPT = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)


def tearDownModule():
  jax.config.update("jax_disable_most_optimizations", _OPT)


def _model():
  cfg = models.DecoderConfig.tiny(vocab_size=64, hidden_size=32, num_layers=1,
                                  num_heads=4, num_kv_heads=2,
                                  intermediate_size=64)
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  fns, params = models.as_functions(model)
  return fns, params, models.logical_axes(model)


def _rollout(rows=16, p=4, n=5, seed=0):
  rng = np.random.default_rng(seed)
  pm = np.ones((rows, p), bool)
  pm[::3, :2] = False
  lens = rng.integers(1, n + 1, size=(rows, 1))
  return types.Rollout(
      prompt=jnp.asarray(rng.integers(4, 64, (rows, p)), jnp.int32),
      prompt_mask=jnp.asarray(pm),
      response=jnp.asarray(rng.integers(4, 64, (rows, n)), jnp.int32),
      response_mask=jnp.asarray((np.arange(n)[None] < lens), jnp.float32),
      logp=jnp.full((rows, n), -3.0, jnp.float32),
      entropy=jnp.full((rows, n), 2.0, jnp.float32),
      rewards=jnp.asarray(rng.integers(0, 2, rows), jnp.float32),
      group_ids=jnp.repeat(jnp.arange(rows // 4, dtype=jnp.int32), 4))


class MeshTest(parameterized.TestCase):

  @parameterized.parameters(
      ((-1, 1, 1), (8, 1, 1)), ((2, -1, 1), (2, 4, 1)),
      ((2, 2, 2), (2, 2, 2)), ({"fsdp": 2, "data": -1}, (4, 2, 1)))
  def test_resolve(self, shape, want):
    self.assertEqual(parallel.resolve_mesh_shape(shape, 8), want)

  @parameterized.parameters(((3, -1, 1),), ((-1, -1, 1),), ((2, 2, 1),),
                            ((1, 1),), ({"model": 2},))
  def test_resolve_rejects(self, shape):
    with self.assertRaises(ValueError):
      parallel.resolve_mesh_shape(shape, 8)

  def test_make_mesh_auto_axes(self):
    mesh = parallel.make_mesh((2, 2, 2))
    self.assertEqual(mesh.axis_names, parallel.MESH_AXES)
    self.assertTrue(all(t == jax.sharding.AxisType.Auto
                        for t in mesh.axis_types))
    self.assertIn("data=2 fsdp=2 tensor=2", parallel.describe(mesh))

  def test_logical_rules(self):
    mesh = parallel.make_mesh((2, 2, 2))
    spec = parallel.logical_to_spec(("embed", "mlp"), shape=(32, 64),
                                    mesh=mesh)
    self.assertEqual(spec, P("fsdp", "tensor"))
    # "vocab" and "heads" both want tensor: the second gets nothing.
    self.assertEqual(parallel.logical_to_spec(("vocab", "heads")),
                     P("tensor", None))
    # 7 rows do not divide by fsdp=2: replicated.
    self.assertEqual(parallel.logical_to_spec(("embed", "mlp"), shape=(7, 64),
                                              mesh=mesh), P(None, "tensor"))
    # size-1 axes are dropped.
    mesh1 = parallel.make_mesh((8, 1, 1))
    self.assertEqual(parallel.logical_to_spec(("embed", "mlp"),
                                              shape=(32, 64), mesh=mesh1),
                     P(None, None))

  def test_path_rules(self):
    mesh = parallel.make_mesh((2, 2, 2))
    params = {"layer": {"q_proj": jnp.zeros((4, 8)), "scale": jnp.zeros(8)},
              "embed": jnp.zeros((16, 4))}
    specs = parallel.param_specs(params, mesh=mesh)
    self.assertEqual(specs["layer"]["q_proj"], P("fsdp", "tensor"))
    self.assertEqual(specs["layer"]["scale"], P(None))
    self.assertEqual(specs["embed"], P("tensor", "fsdp"))

  def test_batch_spec(self):
    mesh = parallel.make_mesh((2, 2, 2))
    self.assertEqual(parallel.batch_spec((8, 3), mesh), P(("data", "fsdp")))
    self.assertEqual(parallel.batch_spec((6, 3), mesh), P())
    self.assertEqual(parallel.batch_spec((), mesh), P())
    x = parallel.shard_batch({"a": np.zeros((8, 3), np.float32)}, mesh)
    self.assertEqual(x["a"].sharding.spec, P(("data", "fsdp")))

  def test_initialize_distributed_single_host_is_noop(self):
    self.assertFalse(parallel.initialize_distributed())
    self.assertEqual(parallel.process_shard(), (0, 1))


class ShardedStepTest(parameterized.TestCase):
  """One RL update (GRPO + entropy bonus, 2 mini-batches) on several meshes
  equals the single-device update."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params, cls.axes = _model()
    cls.transform = er.named_chain(
        ("advantages", regularizers.grpo_advantages()),
        ("bonus", regularizers.entropy_bonus(0.01)))
    cls.opt = optax.adamw(1e-2, weight_decay=0.01)
    cls.step_fn = staticmethod(step_lib.make_train_step(
        cls.fns, er.grpo(), cls.transform, cls.opt, minibatches=2,
        measure_entropy_change=False, token_chunk=32, vocab_chunk=32))
    cls.ro = _rollout()
    state = types.init_train_state(cls.params, cls.opt, cls.transform, 0)
    cls.want_state, cls.want_metrics = jax.jit(cls.step_fn)(state, cls.ro)

  @parameterized.named_parameters(
      ("data", (8, 1, 1)), ("fsdp", (2, 4, 1)), ("fsdp_tensor", (2, 2, 2)))
  def test_sharded_equals_single_device(self, shape):
    mesh = parallel.make_mesh(shape)
    specs = parallel.param_specs(self.params, self.axes, mesh=mesh)
    state = types.init_train_state(self.params, self.opt, self.transform, 0)
    state_sh = parallel.tree_shardings(
        parallel.state_specs(state, specs, self.params), mesh)
    state = parallel.place(state, state_sh)
    step = parallel.shard_train_step(self.step_fn, mesh=mesh,
                                     state_sharding=state_sh)
    new, metrics = step(state, parallel.shard_batch(self.ro, mesh))

    chex_close = lambda a, b: np.testing.assert_allclose(  # noqa: E731
        np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    # Adam divides by |g|: a near-zero gradient summed in another order
    # (the vocabulary shards' psum under "tensor") moves one step by up to
    # lr·δg/|g| (seen: 1.6e-5 on 1 of 1,024 entries).
    params_close = lambda a, b: np.testing.assert_allclose(  # noqa: E731
        np.asarray(a), np.asarray(b), atol=5e-5, rtol=1e-5)
    jax.tree.map(params_close, new.params, self.want_state.params)
    jax.tree.map(chex_close, new.opt_state, self.want_state.opt_state)
    for k in ("loss", "pg_loss", "entropy", "grad_norm"):
      chex_close(metrics[k], self.want_metrics[k])

    # The parameters (and Adam's moments) are sharded as the rules say.
    attn = new.params["layers"][0]["attn"]
    mlp = new.params["layers"][0]["mlp"]
    want_q = parallel.logical_to_spec(("embed", "heads"), shape=(32, 32),
                                      mesh=mesh)
    self.assertEqual(attn["q_proj"][...].sharding.spec, want_q)
    self.assertEqual(mlp["down_proj"][...].sharding.spec,
                     parallel.logical_to_spec(("mlp", "embed"),
                                              shape=(64, 32), mesh=mesh))
    mu = new.opt_state[0].mu["layers"][0]["attn"]["q_proj"][...]
    self.assertEqual(mu.sharding.spec, want_q)
    if shape == (2, 2, 2):
      self.assertEqual(want_q, P("fsdp", "tensor"))
      self.assertTrue(parallel.is_sharded(attn["q_proj"][...]))
      self.assertEqual(new.params["embedding"][...].sharding.spec,
                       P("tensor", "fsdp"))
    if shape == (8, 1, 1):
      self.assertFalse(parallel.is_sharded(attn["q_proj"][...]))
    self.assertEqual(int(new.step), 1)

  def test_compiler_options_reach_xla(self):
    """XLA:CPU's own GEMMs instead of YNNPACK fusions: the option is in the
    compiled program (no ynn fusion left) and the update is the same."""
    mesh = parallel.make_mesh((1, 1, 1))
    state = types.init_train_state(self.params, self.opt, self.transform, 0)
    state_sh = parallel.tree_shardings(parallel.state_specs(
        state, parallel.param_specs(self.params, self.axes, mesh=mesh),
        self.params), mesh)
    ro = parallel.shard_batch(self.ro, mesh)
    texts = {}
    for name, opts in (("default", None),
                       ("eigen", {"xla_cpu_experimental_ynn_fusion_type": ""})):
      step = parallel.shard_train_step(self.step_fn, mesh=mesh,
                                       state_sharding=state_sh,
                                       compiler_options=opts)
      state = parallel.place(
          types.init_train_state(self.params, self.opt, self.transform, 0),
          state_sh)
      texts[name] = step.jitted.lower(state, ro).compile().as_text()
      with jax.set_mesh(mesh):
        new, _ = step(state, ro)
      # Another GEMM library sums in another order; after one AdamW step
      # at lr 1e-2 the parameters differ by up to ~1.3e-5 (0.1% of lr).
      tol = 1e-5 if opts is None else 1e-4
      jax.tree.map(lambda a, b, tol=tol: np.testing.assert_allclose(
          np.asarray(a), np.asarray(b), atol=tol, rtol=tol),
                   new.params, self.want_state.params)
    self.assertIn("ynn_fusion", texts["default"])
    self.assertNotIn("ynn_fusion", texts["eigen"])

  def test_unknown_compiler_option_is_a_clear_error(self):
    mesh = parallel.make_mesh((1, 1, 1))
    step = parallel.shard_train_step(
        lambda s, b: (s, {}), mesh=mesh, state_sharding=parallel.replicated(
            mesh), compiler_options={"xla_no_such_option": "1"})
    with self.assertRaisesRegex(Exception, "xla_no_such_option"):
      step(jnp.zeros(()), jnp.zeros(()))


def _has_libtpu() -> bool:
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


class CollectivesTest(parameterized.TestCase):
  """What the partitioned train step moves between devices (8 fake CPU
  devices): weights and their gradients, never activations or logit blocks
  (ROADMAP: FSDP that shards activations, row-sharded statistics)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params, cls.axes = _model()
    cls.transform = er.named_chain(
        ("advantages", regularizers.grpo_advantages()))
    cls.opt = optax.sgd(1e-2)
    # Token chunks of 5 (no parameter has a dimension 5): a [tc, vc] logit
    # block is recognisable.
    cls.step_fn = staticmethod(step_lib.make_train_step(
        cls.fns, er.grpo(), cls.transform, cls.opt,
        measure_entropy_change=False, token_chunk=5, vocab_chunk=16))
    cls.ro = _rollout()  # S = 4 + 5 = 9 tokens per row

  def _collectives(self, mesh):
    from entropy_rl import aot  # pylint: disable=g-import-not-at-top
    specs = parallel.param_specs(self.params, self.axes, mesh=mesh)
    state = types.init_train_state(self.params, self.opt, self.transform, 0)
    state_sh = parallel.tree_shardings(
        parallel.state_specs(state, specs, self.params), mesh)
    step = parallel.shard_train_step(self.step_fn, mesh=mesh,
                                     state_sharding=state_sh, donate=False)
    with jax.set_mesh(mesh):
      compiled = step.jitted.lower(
          parallel.place(state, state_sh),
          parallel.shard_batch(self.ro, mesh)).compile()
    return aot.analyze(compiled, chip=aot.CHIPS["v5e"],
                       num_chips=mesh.size).collectives

  @parameterized.named_parameters(("data", (8, 1, 1)), ("fsdp", (1, 8, 1)),
                                  ("data_fsdp", (2, 4, 1)))
  def test_only_weights_cross_devices(self, shape):
    from entropy_rl.training import preflight  # pylint: disable=g-import-not-at-top
    collectives = self._collectives(parallel.make_mesh(shape))
    bad = preflight.suspicious_collectives(collectives, self.params, 8,
                                           min_bytes=0)
    self.assertEqual([(c.kind, c.result_type) for c in bad], [])
    kinds = {c.kind for c in collectives if len(c.shape) >= 2}
    if shape[1] > 1:  # FSDP gathers the layers' weights
      self.assertIn("all-gather", kinds)

  def test_tensor_parallel_keeps_logit_blocks_local(self):
    """Under tensor parallelism activations are all-reduced (Megatron) but
    no [tokens, vocab-chunk] logit block crosses devices."""
    collectives = self._collectives(parallel.make_mesh((2, 2, 2)))
    # A logit block is [tc = 5, >= 8 vocabulary columns]; the vocabulary
    # shards exchange only [2, 5] online-softmax states.
    blocks = [c for c in collectives for shape in [tuple(c.shape)]
              if len(shape) >= 2 and shape[-2] == 5 and shape[-1] >= 8]
    self.assertEqual(blocks, [])
    self.assertTrue(any(tuple(c.shape)[-2:] == (2, 5) for c in collectives))

  def test_constrain_is_a_noop_outside_a_mesh(self):
    x = jnp.ones((8, 3))
    self.assertIs(parallel.constrain(x, ("batch", None)), x)
    self.assertFalse(parallel.in_mesh())
    mesh = parallel.make_mesh((8, 1, 1))
    with jax.set_mesh(mesh):
      self.assertTrue(parallel.in_mesh())
      y = jax.jit(lambda x: parallel.constrain(x * 2, ("batch", None)))(x)
    self.assertEqual(y.sharding.spec, P("data"))
    with self.assertRaisesRegex(ValueError, "logical axes"):
      with jax.set_mesh(mesh):
        parallel.constrain(x, ("batch",))

  def test_target_platform_follows_the_mesh(self):
    self.assertEqual(parallel.target_platform(), "cpu")
    if not _has_libtpu():
      self.skipTest("libtpu is not installed")
    from entropy_rl import aot  # pylint: disable=g-import-not-at-top
    topo = aot.topology("v5e:2x2")
    with jax.set_mesh(aot.mesh_for(topo, {"data": 4})):
      self.assertEqual(parallel.target_platform(), "tpu")


if __name__ == "__main__":
  absltest.main()
