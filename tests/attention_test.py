"""entropy_rl.models.attention: every implementation against "xla".

Values and gradients (w.r.t. q, k, v) are compared at real query positions
only (padding queries are meaningless; their outputs must be finite), on
odd lengths, GQA (K=2, G=3) and left padding with a different pad count per
row. Splash runs in Pallas interpret mode on CPU and is compiled for a v5e
TPU topology when libtpu is installed; cuDNN's left-to-right-padding roll
is checked through the "xla" backend of `jax.nn.dot_product_attention`.
"""

from __future__ import annotations

import functools
import os

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
from jax.experimental import topologies
import jax.numpy as jnp
import numpy as np

from entropy_rl.models import attention as attn_lib
from entropy_rl.models import decoder as decoder_lib
from tests import test_utils


def _v5e_devices(test: absltest.TestCase) -> list:
  """The four devices of a v5e:2x2 topology, for ahead-of-time compiles
  from this CPU process beside others that may hold libtpu (skips the test
  without libtpu)."""
  if not test_utils.has_libtpu():
    test.skipTest("libtpu is not installed")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  return topologies.get_topology_desc(platform="tpu",
                                      topology_name="v5e:2x2").devices

K_HEADS, GROUPS, HEAD_DIM = 2, 3, 16
# LLVM -O0 halves XLA:CPU compile time of these tiny programs.
jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def make_inputs(s_len, pads, *, dtype=jnp.float32, seed=0, mask=None,
                kv_heads=K_HEADS, groups=GROUPS, head_dim=HEAD_DIM):
  """q (scaled), k, v, mask [B, S] (left padding ``pads`` per row) and
  cotangent weights w, zero at padding queries."""
  rng = np.random.default_rng(seed)
  b = len(pads)
  q = rng.normal(size=(b, s_len, kv_heads, groups, head_dim)) * head_dim**-0.5
  k = rng.normal(size=(b, s_len, kv_heads, head_dim))
  v = rng.normal(size=(b, s_len, kv_heads, head_dim))
  if mask is None:
    mask = np.arange(s_len)[None] >= np.asarray(pads)[:, None]
  w = rng.normal(size=q.shape) * mask[:, :, None, None, None]
  return (jnp.asarray(q, dtype), jnp.asarray(k, dtype), jnp.asarray(v, dtype),
          jnp.asarray(mask), jnp.asarray(w, jnp.float32))


def out_and_grads(fn):
  """jit of (q, k, v, mask, w) -> (out, (dq, dk, dv)) of sum(fn(...) * w)."""
  def loss(q, k, v, mask, w):
    out = fn(q, k, v, mask)
    return jnp.sum(out.astype(jnp.float32) * w), out
  grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)

  def both(q, k, v, mask, w):
    grads, out = grad(q, k, v, mask, w)
    return out, grads
  return jit(both)


def implementation(name, **kwargs):
  return lambda q, k, v, mask: attn_lib.attention(
      q, k, v, mask, implementation=name, **kwargs)


def cudnn_roll(q, k, v, mask):
  return attn_lib.cudnn_attention(q, k, v, mask, backend="xla")


XLA = out_and_grads(implementation("xla"))
CASES = {  # name -> (attention function, tolerance)
    "chunked": (lambda c: implementation("chunked", chunk_size=c), 1e-5),
    "splash": (lambda c: implementation("splash", interpret=True,
                                        splash_block=128), 1e-4),
    "cudnn_roll": (lambda c: cudnn_roll, 1e-5),
}


class AttentionTest(parameterized.TestCase):

  def assert_matches(self, got, want, mask, atol):
    """Outputs and gradients equal at real queries; outputs finite."""
    (out, grads), (ref, ref_grads) = got, want
    real = np.asarray(mask)
    self.assertTrue(np.isfinite(np.asarray(out, np.float32)).all())
    np.testing.assert_allclose(np.asarray(out, np.float32)[real],
                               np.asarray(ref, np.float32)[real], atol=atol)
    for name, g, r in zip("qkv", grads, ref_grads):
      g, r = np.asarray(g, np.float32), np.asarray(r, np.float32)
      self.assertTrue(np.isfinite(g).all(), name)
      np.testing.assert_allclose(g, r, atol=atol, err_msg=f"d{name}")

  @parameterized.named_parameters(
      (f"{name}_s{case[0]}", name, case) for name in CASES
      for case in ((7, 4, (6, 2)), (33, 8, (0, 32)), (130, 32, (129, 5))))
  def test_values_and_grads_match_xla(self, name, case):
    # (S, chunk_size, left pads per row): S is never a multiple of the
    # chunk or of splash's 128 blocks; one row has a single real token.
    s_len, chunk, pads = case
    make_fn, atol = CASES[name]
    args = make_inputs(s_len, pads)
    got = out_and_grads(make_fn(chunk))(*args)
    self.assert_matches(got, XLA(*args), args[3], atol)

  def test_chunked_bfloat16(self):
    # Against float32 "xla" on the same (bf16-rounded) inputs, chunked bf16
    # stays within 1% of each array's scale (bf16 "xla" is off by up to
    # 0.6% there: dS - D cancels).
    args = make_inputs(45, (3, 40), dtype=jnp.bfloat16)
    out, grads = out_and_grads(implementation("chunked", chunk_size=16))(*args)
    self.assertEqual(out.dtype, jnp.bfloat16)
    self.assertEqual({g.dtype for g in grads}, {jnp.dtype(jnp.bfloat16)})
    wide = [x.astype(jnp.float32) for x in args[:3]]
    ref, ref_grads = XLA(*wide, *args[3:])
    real = np.asarray(args[3])
    pairs = [(out[real], ref[real])] + list(zip(grads, ref_grads))
    for name, (got, want) in zip(("out", "dq", "dk", "dv"), pairs):
      got, want = np.asarray(got, np.float32), np.asarray(want)
      np.testing.assert_allclose(got, want, atol=1e-2 * np.abs(want).max(),
                                 err_msg=name)

  def test_chunked_jit_equals_eager(self):
    q, k, v, mask, _ = make_inputs(21, (4, 20))
    fn = implementation("chunked", chunk_size=8)
    np.testing.assert_allclose(jit(fn)(q, k, v, mask), fn(q, k, v, mask),
                               atol=1e-6)

  def test_chunked_memory_is_linear_in_seq_len(self):
    # Compiled temp bytes of value_and_grad at S and 4S: chunked grows ~3x
    # (the [C, C] blocks are a constant term), xla ~16x ([S, S] scores).
    def temp_bytes(name, s_len):
      def loss(q, k, v, mask, w):
        out = attn_lib.attention(q, k, v, mask, implementation=name,
                                 chunk_size=128)
        return jnp.sum(out * w)
      f32 = jnp.float32
      shapes = [((1, s_len, 1, 2, 16), f32), ((1, s_len, 1, 16), f32),
                ((1, s_len, 1, 16), f32), ((1, s_len), bool),
                ((1, s_len, 1, 2, 16), f32)]
      args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
      compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(
          *args).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    chunked = temp_bytes("chunked", 4096) / temp_bytes("chunked", 1024)
    dense = temp_bytes("xla", 4096) / temp_bytes("xla", 1024)
    self.assertLess(chunked, 5.0)
    self.assertGreater(dense, 12.0)

  @settings(deadline=None, max_examples=15)
  @given(st.integers(1, 40), st.integers(1, 16), st.data())
  def test_chunked_property(self, s_len, chunk, data):
    # Any (S, chunk) and pad counts (fully padded rows included), or an
    # arbitrary non-left-padded mask: same real-query outputs as "xla".
    pads = data.draw(st.lists(st.integers(0, s_len), min_size=2, max_size=2))
    mask = None
    if data.draw(st.booleans()):
      mask = np.asarray(data.draw(st.lists(
          st.lists(st.booleans(), min_size=s_len, max_size=s_len),
          min_size=2, max_size=2)))
    q, k, v, mask, _ = make_inputs(s_len, pads, mask=mask, kv_heads=1,
                                   groups=2, head_dim=4)
    out, ref = jit(lambda *a: (  # one compilation per example
        attn_lib.attention(*a, implementation="chunked", chunk_size=chunk),
        attn_lib.attention(*a, implementation="xla")))(q, k, v, mask)
    self.assertTrue(np.isfinite(np.asarray(out)).all())
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real],
                               atol=1e-5)

  def test_splash_under_cpu_mesh(self):
    # 8 fake CPU devices as (data, fsdp, tensor) = (2, 2, 2): heads over
    # "tensor", the batch of 2 over "data"; same numbers as one device.
    if jax.device_count() < 8:
      self.skipTest("needs the 8 fake CPU devices of tests/conftest.py")
    args = make_inputs(130, (129, 5))
    fn = out_and_grads(implementation("splash", interpret=True,
                                      splash_block=128))
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with jax.set_mesh(mesh):
      got = fn(*args)
    self.assert_matches(got, XLA(*args), args[3], atol=1e-4)

  def test_splash_compiles_for_tpu(self):
    devices = _v5e_devices(self)
    mesh = jax.sharding.Mesh(
        np.array(devices).reshape(4, 1, 1), ("data", "fsdp", "tensor"),
        axis_types=(jax.sharding.AxisType.Auto,) * 3)
    b, s_len, dh = 8, 300, 64
    sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
    shapes = [(b, s_len, K_HEADS, GROUPS, dh), (b, s_len, K_HEADS, dh),
              (b, s_len, K_HEADS, dh)]
    args = [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=sharding)
            for s in shapes]
    args.append(jax.ShapeDtypeStruct((b, s_len), bool, sharding=sharding))

    def loss(q, k, v, mask):
      out = attn_lib.attention(q, k, v, mask, implementation="splash",
                               splash_block=256)
      return jnp.sum(jnp.square(out.astype(jnp.float32)))
    with jax.set_mesh(mesh):
      compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(
          *args).compile()
    hlo = compiled.as_text()
    # Forward, dq and dkv kernels, each on its own batch shard.
    self.assertEqual(hlo.count("custom_call_target=\"tpu_custom_call\""), 3)
    self.assertNotIn("all-gather", hlo)

  def test_resolve(self):
    self.assertEqual(attn_lib.resolve("auto", "tpu", 4096), "splash")
    self.assertEqual(attn_lib.resolve("auto", "gpu", 64), "cudnn")
    self.assertEqual(attn_lib.resolve("auto", "cuda", 64, dtype=jnp.bfloat16),
                     "cudnn")
    self.assertEqual(attn_lib.resolve("auto", "gpu", 64, dtype=jnp.float32),
                     "xla")
    self.assertEqual(attn_lib.resolve("auto", "rocm", 4096), "chunked")
    self.assertEqual(attn_lib.resolve("auto", "cpu", 512), "xla")
    self.assertEqual(attn_lib.resolve("auto", "cpu", 513), "chunked")
    self.assertEqual(attn_lib.resolve("chunked", "tpu", 8), "chunked")
    with self.assertRaisesRegex(ValueError, "'auto', 'xla', 'chunked'"):
      attn_lib.resolve("flash", "cpu", 8)

  def test_bad_arguments(self):
    q, k, v, mask, _ = make_inputs(8, (0, 2))
    cases = [
        (dict(implementation="auto"), "implementation must be one of"),
        (dict(implementation="xla", chunk_size=0), "chunk_size"),
        (dict(implementation="splash", splash_block=100), "splash_block"),
    ]
    for kwargs, message in cases:
      with self.assertRaisesRegex(ValueError, message):
        attn_lib.attention(q, k, v, mask, **kwargs)
    with self.assertRaisesRegex(ValueError, r"k \(2, 8, 1, 16\)"):
      attn_lib.attention(q, k[:, :, :1], v, mask, implementation="xla")
    with self.assertRaisesRegex(ValueError, "mask"):
      attn_lib.attention(q, k, v, mask[:, 1:], implementation="xla")
    with self.assertRaisesRegex(ValueError, "bfloat16 or float16"):
      attn_lib.attention(q, k, v, mask, implementation="cudnn")


def _decode_inputs(b, bp, t, p, *, dtype, seed=0):
  """One decode step's q [B, 1, K, G, Dh] (scaled), a cache k, v [B, K, T,
  Dh] and a prefix k_p, v_p [B_p, K, P, Dh], with *poisoned* slots past
  each row's live ones: keys aligned with the queries and values of 1e3,
  so a kernel that read one would be off by far more than rounding."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(b, 1, K_HEADS, GROUPS, HEAD_DIM)) * HEAD_DIM**-0.5
  k = rng.normal(size=(b, K_HEADS, t, HEAD_DIM))
  v = rng.normal(size=(b, K_HEADS, t, HEAD_DIM))
  kp = rng.normal(size=(bp, K_HEADS, p, HEAD_DIM))
  vp = rng.normal(size=(bp, K_HEADS, p, HEAD_DIM))
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0], lengths[-1] = 1, t
  lp = rng.integers(0, p + 1, size=bp)
  lp[0] = p
  dead = np.arange(t)[None] >= lengths[:, None]  # [B, T]
  dead_p = np.arange(p)[None] >= lp[:, None]  # [B_p, P]
  bait = 30.0 * np.sign(q[:, 0].sum(2))[:, :, None, :]  # [B, K, 1, Dh]
  k = np.where(dead[:, None, :, None], bait, k)
  v = np.where(dead[:, None, :, None], 1e3, v)
  kp = np.where(dead_p[:, None, :, None], 30.0, kp)
  vp = np.where(dead_p[:, None, :, None], 1e3, vp)
  cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
  return (cast(q), cast(k), cast(v), cast(kp), cast(vp),
          jnp.asarray(lengths, jnp.int32), jnp.asarray(lp, jnp.int32))


def _decode_reference(q, k, v, kp, vp, lengths, lp):
  """float64 softmax attention over the live slots of prefix and cache."""
  q, k, v, kp, vp = (np.asarray(x, np.float64) for x in (q, k, v, kp, vp))
  b, bp = q.shape[0], kp.shape[0]
  out = np.zeros(q.shape[:1] + q.shape[2:])
  for r in range(b):
    pr = r // (b // bp)
    for h in range(K_HEADS):
      keys = np.concatenate([kp[pr, h, :lp[pr]], k[r, h, :lengths[r]]])
      vals = np.concatenate([vp[pr, h, :lp[pr]], v[r, h, :lengths[r]]])
      sc = q[r, 0, h] @ keys.T
      pw = np.exp(sc - sc.max(-1, keepdims=True))
      out[r, h] = (pw / pw.sum(-1, keepdims=True)) @ vals
  return out[:, None]


class PagedDecodeTest(parameterized.TestCase):
  """The Pallas paged-attention decode path (TPU interpret mode on CPU)
  against float64 and the decoder's einsums, over live slots only."""

  @parameterized.product(dtype=(jnp.bfloat16, jnp.float32),
                         prefix=("none", "dense", "paged"), n=(1, 2))
  def test_matches_reference(self, dtype, prefix, n):
    bp, t, p = 3, 64, 32
    q, k, v, kp, vp, lengths, lp = _decode_inputs(n * bp, bp, t, p,
                                                  dtype=dtype, seed=n)
    if prefix == "none":
      lp = jnp.zeros_like(lp)
      pre = None
    else:
      pre = (kp, vp, lp if prefix == "paged" else
             jnp.arange(p)[None] < lp[:, None])
    got = attn_lib.paged_decode_attention(q, k, v, lengths, pre,
                                          interpret=True)
    self.assertEqual(got.shape, q.shape)
    self.assertEqual(got.dtype, q.dtype)
    want = _decode_reference(q, k, v, kp, vp, lengths, lp)
    # The kernel's products run at the TPU's default matmul precision
    # (bfloat16 operands; the interpreter emulates it), as the einsums'
    # p @ v in a bfloat16 model: errors of bfloat16 rounding. A poisoned
    # slot read would be off by ~1e3.
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=3e-2)
    allowed = (jnp.arange(t)[None] < lengths[:, None])[:, None]
    einsum = decoder_lib._attend(
        q, k, v, allowed, "bksd",
        None if pre is None else (kp, vp, jnp.arange(p)[None] < lp[:, None]))
    np.testing.assert_allclose(np.asarray(got, np.float32),
                               np.asarray(einsum, np.float32), atol=3e-2)

  def test_kernel_statistics(self):
    q, k, v, _, _, lengths, _ = _decode_inputs(4, 4, 32, 16,
                                               dtype=jnp.bfloat16)
    o, m, l = attn_lib._paged_part(q[:, 0], k, v, lengths, interpret=True)
    qq, kk = np.asarray(q, np.float64)[:, 0], np.asarray(k, np.float64)
    for r in range(4):
      for h in range(K_HEADS):
        sc = qq[r, h] @ kk[r, h, :lengths[r]].T  # [G, L]
        np.testing.assert_allclose(np.asarray(m)[r, h, :, 0], sc.max(-1),
                                   rtol=2e-2, atol=2e-2)
        np.testing.assert_allclose(
            np.asarray(l)[r, h, :, 0],
            np.exp(sc - sc.max(-1, keepdims=True)).sum(-1), rtol=5e-2)
    # m and l repeat along Dh (the layout of o).
    np.testing.assert_array_equal(np.asarray(m), np.asarray(m)[..., :1]
                                  * np.ones(HEAD_DIM))
    self.assertTrue(np.isfinite(np.asarray(o)).all())

  def test_bad_arguments(self):
    q, k, v, kp, vp, lengths, lp = _decode_inputs(2, 2, 64, 16,
                                                  dtype=jnp.float32)
    with self.assertRaisesRegex(ValueError, "one query per row"):
      attn_lib.paged_decode_attention(jnp.concatenate([q, q], 1), k, v,
                                      lengths, interpret=True)
    with self.assertRaisesRegex(ValueError, "multiple of 16"):
      attn_lib.paged_decode_attention(q, k[:, :, :60], v[:, :, :60],
                                      lengths, interpret=True)
    with self.assertRaisesRegex(ValueError, "must be one of"):
      attn_lib.resolve_decode("flash", "tpu")

  def test_resolve_decode(self):
    self.assertEqual(attn_lib.resolve_decode("auto", "tpu"), "paged")
    self.assertEqual(attn_lib.resolve_decode("auto", "cpu"), "xla")
    self.assertEqual(attn_lib.resolve_decode("auto", "gpu"), "xla")
    self.assertEqual(attn_lib.resolve_decode("paged", "cpu"), "paged")
    self.assertEqual(attn_lib.page_size(256), 64)
    self.assertEqual(attn_lib.page_size(96), 32)
    self.assertEqual(attn_lib.page_size(48), 16)
    self.assertIsNone(attn_lib.page_size(255))

  def test_paged_decode_compiles_for_tpu(self):
    devices = _v5e_devices(self)
    mesh = jax.sharding.Mesh(np.array(devices[:1]).reshape(1), ("data",))
    rep = jax.sharding.NamedSharding(mesh, jax.P())
    b, t, p, g, dh = 16, 128, 64, 7, 64  # Qwen2.5-0.5B's G and Dh
    shapes = [((b, 1, K_HEADS, g, dh), jnp.bfloat16),
              ((b, K_HEADS, t, dh), jnp.bfloat16),
              ((b, K_HEADS, t, dh), jnp.bfloat16),
              ((b, K_HEADS, p, dh), jnp.bfloat16),
              ((b, K_HEADS, p, dh), jnp.bfloat16),
              ((b,), jnp.int32), ((b,), jnp.int32)]
    args = [jax.ShapeDtypeStruct(s, d, sharding=rep) for s, d in shapes]

    def step(q, k, v, kp, vp, lengths, lp):
      return attn_lib.paged_decode_attention(q, k, v, lengths, (kp, vp, lp))
    with jax.set_mesh(mesh):
      hlo = jax.jit(step).lower(*args).compile().as_text()
    # One kernel over the cache, one over the prefix.
    self.assertEqual(hlo.count("custom_call_target=\"tpu_custom_call\""), 2)


if __name__ == "__main__":
  absltest.main()
