"""entropy_rl.sampling.sample: tokens, masks, cache, padding, early stop.

Fake models (tests/sampling_fakes.py) give exact expected tokens (a
deterministic next-token rule), fixed logits, and a small real transformer
whose KV-cache decode must equal its full recomputation.
"""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl import models
from entropy_rl import sampling
from entropy_rl.core import token_stats as token_stats_lib
from entropy_rl.sampling import sampler as sampler_lib
from tests import sampling_fakes as fakes
from tests import test_utils

V = 17
END = 16
# Left-padded prompts; row 2 is a single real token.
PROMPTS = np.array([[0, 0, 5, 3], [1, 2, 3, 4], [0, 0, 0, 9]], np.int32)
MASKS = np.array([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]], bool)


def expected_rollout(prompt, mask, n_new, end=END, pad=0):
  """The deterministic fake's greedy rollout, computed by hand."""
  n_real = int(mask.sum())
  last, pos = int(prompt[-1]), n_real - 1
  toks, live, done = [], [], False
  for _ in range(n_new):
    if done:
      toks.append(pad)
      live.append(False)
      continue
    nxt = fakes.next_token_rule(last, pos, pos + 1, V)
    toks.append(nxt)
    live.append(True)
    done = nxt == end
    last, pos = nxt, pos + 1
  return np.array(toks), np.array(live)


class DeterministicTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = fakes.next_token_model(V)

  def run_greedy(self, n_new, **kw):
    return sampling.sample(self.fns, self.params, PROMPTS, MASKS,
                           jax.random.key(0), max_new_tokens=n_new,
                           sampling=sampling.greedy(), end_ids=(END,), **kw)

  def test_exact_tokens_and_masks(self):
    out = self.run_greedy(10, block_size=4)
    for r in range(3):
      toks, live = expected_rollout(PROMPTS[r], MASKS[r], 10)
      np.testing.assert_array_equal(out.tokens[r], toks)
      np.testing.assert_array_equal(out.mask[r], live)
      self.assertEqual(int(out.lengths[r]), live.sum())
      self.assertEqual(bool(out.ended[r]), bool((toks[live] == END).any()))
    # The end token is inside the mask, everything after is padding.
    self.assertTrue(bool(out.ended[0]))
    first_end = int(np.argmax(np.asarray(out.tokens[0]) == END))
    self.assertTrue(bool(out.mask[0, first_end]))
    self.assertFalse(np.asarray(out.mask[0, first_end + 1:]).any())
    # A one-hot-like distribution: logp ≈ 0 and entropy ≈ 0 where live, 0
    # exactly elsewhere.
    np.testing.assert_allclose(out.logp, 0.0, atol=1e-6)
    np.testing.assert_allclose(out.entropy, 0.0, atol=1e-6)
    self.assertEqual(out.tokens.dtype, jnp.int32)
    self.assertEqual(out.mask.dtype, jnp.bool_)
    np.testing.assert_array_equal(out.prompt_tokens, PROMPTS)
    np.testing.assert_array_equal(out.group_ids, [0, 1, 2])

  @parameterized.parameters(1, 3)
  def test_early_stop_equals_all_blocks(self, num_buckets):
    n_new = 40
    ends = []
    for r in range(3):
      _, live = expected_rollout(PROMPTS[r], MASKS[r], n_new)
      ends.append(live.sum())
    self.assertLess(max(ends) + 8, n_new)  # every row ends well before N
    early = self.run_greedy(n_new, block_size=4, num_buckets=num_buckets)
    full = self.run_greedy(n_new, block_size=4, early_stop=False,
                           num_buckets=num_buckets)
    for a, b in zip(early, full):
      if a.ndim:
        np.testing.assert_array_equal(a, b)
    self.assertEqual(int(full.num_steps), n_new)
    # Stopped at the first block boundary after the last row ended.
    self.assertLess(int(early.num_steps), max(ends) + 4 + 1)
    self.assertGreaterEqual(int(early.num_steps), max(ends))

  def test_block_size_does_not_change_outputs(self):
    a = self.run_greedy(11, block_size=1)
    b = self.run_greedy(11, block_size=16)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.mask, b.mask)

  @parameterized.parameters((10, 2, 4), (10, 4, 2), (13, 3, 9), (3, 5, 2))
  def test_buckets_give_the_exact_tokens(self, n_new, block, buckets):
    """Decoding in stretches over a growing cache (``num_buckets``) keeps
    every token; the fake's next token counts the valid slots it sees."""
    out = self.run_greedy(n_new, block_size=block, num_buckets=buckets,
                          early_stop=False)
    for r in range(3):
      toks, live = expected_rollout(PROMPTS[r], MASKS[r], n_new)
      np.testing.assert_array_equal(out.tokens[r], toks)
      np.testing.assert_array_equal(out.mask[r], live)

  @settings(deadline=None, max_examples=12)
  @given(n_new=st.integers(1, 23), block=st.integers(1, 9),
         buckets=st.integers(1, 6), early=st.booleans(),
         pad=st.integers(0, 3), n=st.integers(1, 3))
  def test_property_any_blocks_buckets_padding(self, n_new, block, buckets,
                                               early, pad, n):
    """Any block size, bucket count, early stop, extra left padding and
    group size: every row's tokens and mask are the hand-computed rollout,
    and the step count never exceeds N."""
    prompts = np.pad(PROMPTS, ((0, 0), (pad, 0)))
    masks = np.pad(MASKS, ((0, 0), (pad, 0)))
    out = sampling.sample(self.fns, self.params, prompts, masks,
                          jax.random.key(0), max_new_tokens=n_new,
                          sampling=sampling.greedy(), end_ids=(END,),
                          block_size=block, num_buckets=buckets,
                          early_stop=early, num_samples=n)
    self.assertEqual(out.tokens.shape, (3 * n, n_new))
    self.assertLessEqual(int(out.num_steps), n_new)
    for r in range(3 * n):
      toks, live = expected_rollout(PROMPTS[r // n], MASKS[r // n], n_new)
      np.testing.assert_array_equal(out.tokens[r], toks)
      np.testing.assert_array_equal(out.mask[r], live)
      self.assertEqual(int(out.lengths[r]), int(live.sum()))

  def test_segments(self):
    seg = sampler_lib._segments  # (stop, full blocks, tail) per bucket
    self.assertEqual(seg(9, 4, 2), [(9, 2, 0), (10, 0, 1)])
    self.assertEqual(seg(63, 16, 4), [(17, 1, 0), (33, 1, 0), (49, 1, 0),
                                      (64, 0, 15)])
    self.assertEqual(seg(63, 16, 1), [(64, 3, 15)])
    self.assertEqual(seg(5, 2, 10), [(3, 1, 0), (5, 1, 0), (6, 0, 1)])
    self.assertEqual(seg(8, 4, 1), [(9, 2, 0)])
    self.assertEqual(seg(0, 4, 3), [])

  def test_one_new_token(self):
    out = self.run_greedy(1)
    self.assertEqual(out.tokens.shape, (3, 1))
    for r in range(3):
      np.testing.assert_array_equal(
          out.tokens[r], expected_rollout(PROMPTS[r], MASKS[r], 1)[0])

  def test_num_samples_repeats_rows(self):
    out = self.run_greedy(6, num_samples=3)
    self.assertEqual(out.tokens.shape, (9, 6))
    np.testing.assert_array_equal(out.group_ids, np.repeat(np.arange(3), 3))
    np.testing.assert_array_equal(out.prompt_tokens,
                                  np.repeat(PROMPTS, 3, axis=0))
    for r in range(9):
      np.testing.assert_array_equal(
          out.tokens[r], expected_rollout(PROMPTS[r // 3], MASKS[r // 3],
                                          6)[0])

  def test_bad_inputs(self):
    f, p = self.fns, self.params
    key = jax.random.key(0)

    def call(prompts=PROMPTS, masks=MASKS, **kw):
      kw.setdefault("max_new_tokens", 4)
      return sampling.sample(f, p, prompts, masks, key, **kw)

    for n in (0, -3):
      with self.assertRaisesRegex(ValueError, "max_new_tokens"):
        call(max_new_tokens=n)
    with self.assertRaisesRegex(ValueError, "cache holds max_len"):
      call(max_len=3)  # P = 4 > 3
    with self.assertRaisesRegex(ValueError, "cache holds max_len"):
      call(max_len=5, max_new_tokens=4)  # needs 4 + 4 - 1 = 7
    with self.assertRaisesRegex(ValueError, "vocabulary mismatch"):
      call(vocab_size=V + 1)
    with self.assertRaisesRegex(ValueError, "vocabulary mismatch"):
      call(prompts=PROMPTS + V)
    with self.assertRaisesRegex(ValueError, "end_ids"):
      call(end_ids=(V,))
    with self.assertRaisesRegex(ValueError, "pad_id"):
      call(pad_id=-1)
    bad_fns = f._replace(config=fakes.FakeConfig(vocab_size=V + 3,
                                                 hidden_size=V))
    with self.assertRaisesRegex(ValueError, "vocabulary mismatch"):
      sampling.sample(bad_fns, p, PROMPTS, MASKS, key, max_new_tokens=2)
    with self.assertRaisesRegex(ValueError, "prompt_mask shape"):
      call(masks=MASKS[:, 1:])
    with self.assertRaisesRegex(ValueError, r"\[B, P\]"):
      call(prompts=PROMPTS[0], masks=MASKS[0])
    with self.assertRaisesRegex(ValueError, "integers"):
      call(prompts=PROMPTS.astype(np.float32))
    with self.assertRaisesRegex(ValueError, "num_samples"):
      call(num_samples=0)
    with self.assertRaisesRegex(ValueError, "num_buckets"):
      call(num_buckets=0)
    with self.assertRaisesRegex(ValueError, "block_size"):
      call(block_size=0)
    with self.assertRaisesRegex(ValueError, "draw"):
      call(sampling=sampling.SamplingMethod((), "nucleus"))
    with self.assertRaisesRegex(ValueError, "one entry per processor"):
      call(sampling=sampling.temperature(0.5), sampling_params=())
    with self.assertRaisesRegex(ValueError, "LogitsProcessor"):
      call(processors=(lambda z: z,))


class DecodeSettingsTest(absltest.TestCase):
  """One static settings value; methods and settings hash by value."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = fakes.fixed_logits_model(np.linspace(-2.0, 2.0, V))

  def _sample(self, **kw):
    return sampling.sample(self.fns, self.params, PROMPTS, MASKS,
                           jax.random.key(4), max_new_tokens=9,
                           end_ids=(END,), **kw)

  def test_settings_equal_the_deprecated_keywords(self):
    kw = dict(block_size=4, num_buckets=3, early_stop=False, max_len=14,
              share_prompt=False)
    old = self._sample(sampling=sampling.top_k(6, 0.8), num_samples=2, **kw)
    new = self._sample(sampling=sampling.top_k(6, 0.8), num_samples=2,
                       settings=sampling.DecodeSettings(**kw))
    for a, b in zip(old, new):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(int(new.num_steps), 9)
    # Keywords apply over settings=.
    mixed = self._sample(sampling=sampling.top_k(6, 0.8), num_samples=2,
                         settings=sampling.DecodeSettings(block_size=2,
                                                          max_len=14),
                         block_size=4, num_buckets=3, early_stop=False,
                         share_prompt=False)
    for a, b in zip(old, mixed):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(
        sampler_lib._decode_settings(sampling.DecodeSettings(block_size=2),
                                     dict(block_size=4), "sample"),
        sampling.DecodeSettings(block_size=4))
    # sample_traced and make_sampler take the same settings.
    traced = sampling.sample_traced(
        self.fns, self.params, jnp.asarray(PROMPTS), jnp.asarray(MASKS),
        jax.random.key(4), max_new_tokens=9, end_ids=(END,),
        sampling=sampling.top_k(6, 0.8), num_samples=2,
        settings=sampling.DecodeSettings(**kw))
    np.testing.assert_array_equal(traced.tokens, new.tokens)
    s = sampling.make_sampler(self.fns, max_new_tokens=9, end_ids=(END,),
                              sampling=sampling.top_k(6, 0.8),
                              num_samples=2,
                              settings=sampling.DecodeSettings(**kw))
    out, _ = s.generate(self.params, PROMPTS, MASKS, jax.random.key(4),
                        s.init_cache(3, 4))
    np.testing.assert_array_equal(out.tokens, new.tokens)
    with self.assertRaisesRegex(TypeError, "block_sise"):
      self._sample(block_sise=4)
    with self.assertRaisesRegex(ValueError, "DecodeSettings"):
      self._sample(settings=dict(block_size=4))

  def test_equal_methods_and_settings_compile_once(self):
    # Counted by traces of the jitted rollout (each calls
    # _in_compute_dtype once), not _sample_jit._cache_size(): the C++
    # fast-path cache read 0 in a clean-clone run after other tests in the
    # same worker.
    traces = []
    real = sampler_lib._in_compute_dtype

    def counting(*args, **kwargs):
      traces.append(1)
      return real(*args, **kwargs)

    with mock.patch.object(sampler_lib, "_in_compute_dtype", counting):
      first = self._sample(sampling=sampling.top_p(0.9, 0.7),
                           settings=sampling.DecodeSettings(block_size=3))
      size = len(traces)
      self.assertLessEqual(size, 1)  # 0 when an earlier test traced it
      # Rebuilt, equal method and settings: the same compilation.
      again = self._sample(sampling=sampling.top_p(0.9, 0.7),
                           settings=sampling.DecodeSettings(block_size=3))
      self.assertLen(traces, size)
      for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
      self._sample(sampling=sampling.top_p(0.9, 0.7), block_size=3)
      self.assertLen(traces, size)
      # Different settings: a new one.
      self._sample(sampling=sampling.top_p(0.8, 0.7),
                   settings=sampling.DecodeSettings(block_size=3))
      self.assertLen(traces, size + 1)
      self._sample(sampling=sampling.top_p(0.9, 0.7),
                   settings=sampling.DecodeSettings(block_size=2))
      self.assertLen(traces, size + 2)


class AttentionModelTest(absltest.TestCase):
  """The small transformer: cache vs recompute, padding, stats, donation."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = fakes.tiny_attention_model()
    rs = np.random.RandomState(0)
    cls.prompts = rs.randint(1, 48, (3, 6)).astype(np.int32)
    cls.masks = np.ones((3, 6), bool)
    cls.masks[0, :2] = False
    cls.masks[2, :5] = False
    cls.prompts[~cls.masks] = 0
    cls.method = sampling.temperature(0.8)
    cls.out = sampling.sample(cls.fns, cls.params, cls.prompts, cls.masks,
                              jax.random.key(3), max_new_tokens=12,
                              num_samples=2, sampling=cls.method,
                              end_ids=(7,), block_size=5)

  def test_cache_decode_equals_full_recompute(self):
    out = self.out
    logits, hidden = fakes.full_recompute_logits(
        self.fns, self.params, out.prompt_tokens, out.prompt_mask,
        out.tokens)
    logp_all = jax.nn.log_softmax(logits / 0.8, -1)  # [R, N, V]
    logp = jnp.take_along_axis(logp_all, out.tokens[..., None], -1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
    m = np.asarray(out.mask)
    self.assertGreater(m.sum(), 12)
    np.testing.assert_allclose(np.asarray(out.logp)[m], np.asarray(logp)[m],
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.entropy)[m],
                               np.asarray(ent)[m], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.logp)[~m], 0.0)
    # The token-statistics pass of training on the same tokens.
    r, n, d = hidden.shape
    stats = token_stats_lib.token_stats(
        hidden.reshape(r * n, d), self.fns.head(self.params),
        out.tokens.reshape(-1), temperature=0.8, vocab_chunk=16)
    np.testing.assert_allclose(
        np.asarray(out.logp)[m], np.asarray(stats["logp"]).reshape(r, n)[m],
        atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(out.entropy)[m],
        np.asarray(stats["entropy"]).reshape(r, n)[m], atol=1e-4)

  def test_samples_differ_within_a_group(self):
    toks = np.asarray(self.out.tokens)
    self.assertFalse(all(np.array_equal(toks[2 * b], toks[2 * b + 1])
                         for b in range(3)))

  def test_left_padding_does_not_change_outputs(self):
    extra = 5
    prompts = np.pad(self.prompts, ((0, 0), (extra, 0)))
    masks = np.pad(self.masks, ((0, 0), (extra, 0)))
    out = sampling.sample(self.fns, self.params, prompts, masks,
                          jax.random.key(3), max_new_tokens=12,
                          num_samples=2, sampling=self.method, end_ids=(7,),
                          block_size=5)
    np.testing.assert_array_equal(out.tokens, self.out.tokens)
    np.testing.assert_array_equal(out.mask, self.out.mask)
    np.testing.assert_allclose(out.logp, self.out.logp, atol=1e-5)
    np.testing.assert_allclose(out.entropy, self.out.entropy, atol=1e-5)

  def test_make_sampler_reuses_donated_cache(self):
    s = sampling.make_sampler(self.fns, max_new_tokens=12, num_samples=2,
                              sampling=self.method, end_ids=(7,),
                              block_size=5)
    cache = s.init_cache(3, 6)
    for _ in range(2):
      out, cache = s.generate(self.params, self.prompts, self.masks,
                              jax.random.key(3), cache)
      np.testing.assert_array_equal(out.tokens, self.out.tokens)
      np.testing.assert_allclose(out.logp, self.out.logp, atol=1e-6)
    with self.assertRaisesRegex(ValueError, "init_cache"):
      s.generate(self.params, self.prompts[:2], self.masks[:2],
                 jax.random.key(3), cache)

  def test_traced_processor_params_do_not_recompile(self):
    f, p = fakes.fixed_logits_model(np.linspace(-2.0, 2.0, 11))
    method = sampling.temperature(1.0)
    kw = dict(max_new_tokens=3, sampling=method, block_size=2)
    prompts, masks = np.zeros((4, 2), np.int32), np.ones((4, 2), bool)
    sampling.sample(f, p, prompts, masks, jax.random.key(0), **kw)
    size = sampler_lib._sample_jit._cache_size()
    z = np.linspace(-2.0, 2.0, 11)
    for t in (0.5, 2.0, np.array([0.5, 1.0, 2.0, 4.0], np.float32)):
      out = sampling.sample(f, p, prompts, masks, jax.random.key(0),
                            sampling_params=({"temperature": t},), **kw)
      t_rows = np.broadcast_to(np.asarray(t, np.float32), (4,))
      want = [float(sampling.entropy_of_logits(jnp.asarray(z / tr)[None])[0])
              for tr in t_rows]
      np.testing.assert_allclose(out.entropy, np.repeat(
          np.array(want)[:, None], 3, 1), rtol=1e-5)
    self.assertLessEqual(sampler_lib._sample_jit._cache_size(), size + 1)


def _decoder(scan_layers=False):
  """A small random GQA decoder (4 heads, 2 kv heads, q/k norm, biases)."""
  cfg = models.DecoderConfig(
      vocab_size=40, hidden_size=32, num_layers=2, num_heads=4,
      num_kv_heads=2, intermediate_size=48, qkv_bias=True, qk_norm=True,
      tie_word_embeddings=False, scan_layers=scan_layers)
  return models.as_functions(models.Decoder(cfg, rngs=nnx.Rngs(4)))


class LongGenerationTest(absltest.TestCase):

  def test_8k_new_tokens_match_a_full_recomputation(self):
    """8,192 new tokens (four decode stretches over a growing cache, RoPE up
    to position 8,195): every row runs to the end, and the sampler's
    log-probs equal a teacher-forced pass over prompt + response (the
    chunked attention path past 512 tokens) at positions spread over the
    whole generation."""
    cfg = models.DecoderConfig.tiny(
        vocab_size=64, hidden_size=32, num_layers=1, num_heads=2,
        num_kv_heads=1, intermediate_size=64)
    fns, params = models.as_functions(models.Decoder(cfg, rngs=nnx.Rngs(0)))
    n = 8192
    toks = jnp.asarray([[0, 5, 6, 7], [3, 4, 5, 6]], jnp.int32)
    mask = jnp.asarray([[False, True, True, True], [True] * 4])
    out = sampling.sample(fns, params, toks, mask, jax.random.PRNGKey(0),
                          max_new_tokens=n, block_size=256,
                          early_stop=False)
    self.assertEqual(out.tokens.shape, (2, n))
    np.testing.assert_array_equal(out.lengths, [n, n])
    seq = jnp.concatenate([toks, out.tokens], 1)
    full_mask = jnp.concatenate([mask, out.mask], 1)
    hidden, _ = fns.hidden(params, seq, models.positions_from_mask(full_mask),
                           full_mask)
    stats = token_stats_lib.batched_token_stats(
        hidden[:, 3:-1], fns.head(params), out.tokens)
    at = np.asarray([0, 1, 511, 512, 2047, 4096, 6000, n - 1])
    np.testing.assert_allclose(np.asarray(stats["logp"])[:, at],
                               np.asarray(out.logp)[:, at], atol=2e-4)
    np.testing.assert_allclose(np.asarray(stats["entropy"])[:, at],
                               np.asarray(out.entropy)[:, at], atol=2e-4)


class SharedPromptTest(parameterized.TestCase):
  """Decoding against one shared prompt cache vs n repeated copies."""

  prompts = np.array([[0, 0, 5, 3, 9], [1, 2, 3, 4, 6], [0, 0, 0, 0, 9]],
                     np.int32)
  masks = prompts > 0
  kw = dict(max_new_tokens=10, num_samples=3, end_ids=(7,), block_size=4,
            sampling=sampling.temperature(1.5))

  @parameterized.parameters(False, True)
  def test_shared_equals_repeated(self, scan_layers):
    fns, params = _decoder(scan_layers)
    outs = [sampling.sample(fns, params, self.prompts, self.masks,
                            jax.random.key(2), share_prompt=share, **self.kw)
            for share in (False, True)]
    a, b = outs
    self.assertGreater(int(a.mask.sum()), 40)  # many tokens, some ended
    self.assertTrue(bool(a.ended.any()))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.logp, b.logp, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5, rtol=0)
    # The default shares the prompt for n > 1: the same outputs as True.
    auto = sampling.sample(fns, params, self.prompts, self.masks,
                           jax.random.key(2), **self.kw)
    np.testing.assert_array_equal(auto.logp, b.logp)
    # And sample_traced under jit is the same program.
    traced = jax.jit(lambda p, t, m, k: sampling.sample_traced(
        fns, p, t, m, k, **self.kw))(params, self.prompts, self.masks,
                                     jax.random.key(2))
    np.testing.assert_array_equal(traced.tokens, b.tokens)
    np.testing.assert_allclose(traced.logp, b.logp, atol=1e-6, rtol=0)

  @parameterized.product(scan_layers=(False, True), share=(False, True))
  def test_buckets_equal_one_stretch(self, scan_layers, share):
    fns, params = _decoder(scan_layers)
    kw = dict(self.kw, max_new_tokens=14, block_size=3, share_prompt=share)
    ref = sampling.sample(fns, params, self.prompts, self.masks,
                          jax.random.key(5), num_buckets=1, **kw)
    self.assertEqual(sampler_lib._num_buckets(None), 4)  # CPU default
    s = sampling.make_sampler(fns, num_buckets=3, **kw)
    cache = s.init_cache(3, 5)
    shape = cache.valid.shape
    for _ in range(2):  # the full-size cache comes back for the next call
      out, cache = s.generate(params, self.prompts, self.masks,
                              jax.random.key(5), cache)
      self.assertEqual(cache.valid.shape, shape)
      np.testing.assert_array_equal(out.tokens, ref.tokens)
      np.testing.assert_array_equal(out.mask, ref.mask)
      np.testing.assert_allclose(out.logp, ref.logp, atol=1e-6, rtol=0)
      np.testing.assert_allclose(out.entropy, ref.entropy, atol=1e-6, rtol=0)

  def test_make_sampler_cache_holds_the_generated_tokens_only(self):
    fns, params = _decoder()
    ref = sampling.sample(fns, params, self.prompts, self.masks,
                          jax.random.key(2), **self.kw)
    for share, slots in ((True, 9), (False, 14)):
      s = sampling.make_sampler(fns, share_prompt=share, early_stop=False,
                                **self.kw)
      cache = s.init_cache(3, 5)
      self.assertEqual(cache.valid.shape, (9, slots))  # R rows
      # The donated cache is reused: the same outputs every call (9 decode
      # steps in blocks of 4: the last block is shorter, so no step writes
      # past the cache or looks up a position outside the RoPE tables,
      # which once left NaN keys in the reused cache).
      for _ in range(3):
        out, cache = s.generate(params, self.prompts, self.masks,
                                jax.random.key(2), cache)
        self.assertEqual(int(cache.index), slots)
        self.assertTrue(np.isfinite(np.asarray(out.logp)).all())
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        np.testing.assert_allclose(out.logp, ref.logp, atol=1e-5, rtol=0)
    s = sampling.make_sampler(fns, **self.kw)
    with self.assertRaisesRegex(ValueError, r"expected \(9, 9\)"):
      s.generate(params, self.prompts, self.masks, jax.random.key(2),
                 fns.init_cache(9, 14))
    # One sample per prompt, or share_prompt=False: the full-length cache.
    for kw in (dict(num_samples=1), dict(share_prompt=False)):
      s = sampling.make_sampler(fns, **{**self.kw, **kw})
      self.assertEqual(s.init_cache(3, 5).valid.shape[1], 14)

  def test_models_without_prefix_support(self):
    fns, params = fakes.next_token_model(V)
    s = sampling.make_sampler(fns, max_new_tokens=4, num_samples=2)
    self.assertEqual(s.init_cache(3, 4).valid.shape, (6, 7))  # not shared
    with self.assertRaisesRegex(ValueError, "shared prefix"):
      sampling.sample(fns, params, PROMPTS, MASKS, jax.random.key(0),
                      max_new_tokens=4, num_samples=2, share_prompt=True)


class TracedEntryPointsTest(absltest.TestCase):
  """sample_traced / continue_traced: the public traceable sampler."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = fakes.tiny_attention_model()
    rs = np.random.RandomState(1)
    cls.prompts = rs.randint(1, 48, (3, 5)).astype(np.int32)
    cls.masks = np.ones((3, 5), bool)
    cls.masks[1, :3] = False
    cls.prompts[~cls.masks] = 0
    cls.method = sampling.temperature(0.9)
    cls.kw = dict(max_new_tokens=7, sampling=cls.method, end_ids=(7,))
    cls.ref = sampling.sample(cls.fns, cls.params, cls.prompts, cls.masks,
                              jax.random.key(11), num_samples=2,
                              block_size=3, **cls.kw)

  def test_sample_traced_equals_sample_inside_jit_and_scan(self):
    # The temperature is traced, as sample() passes it: bit-identical
    # outputs (a constant would let XLA fold the division, last-bit noise).
    sp = ({"temperature": jnp.float32(0.9)},)
    jitted = jax.jit(lambda p, t, m, k, sp: sampling.sample_traced(
        self.fns, p, t, m, k, num_samples=2, block_size=3,
        sampling_params=sp, **self.kw))
    out = jitted(self.params, self.prompts, self.masks, jax.random.key(11),
                 sp)
    for name, a, b in zip(out._fields, out, self.ref):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                    err_msg=name)
    self.assertGreater(int(self.ref.mask.sum()), 14)
    # Inside a scan: one sample per key (params and prompts traced too).
    def run(params, keys, sp):
      def body(c, k):
        o = sampling.sample_traced(self.fns, params, c[0], c[1], k,
                                   num_samples=2, block_size=3,
                                   sampling_params=sp, **self.kw)
        return c, (o.tokens, o.logp)
      return jax.lax.scan(body, (self.prompts, self.masks), keys)[1]
    keys = jnp.stack([jax.random.key(11), jax.random.key(12)])
    tok, logp = jax.jit(run)(self.params, keys, sp)
    np.testing.assert_array_equal(tok[0], self.ref.tokens)
    np.testing.assert_array_equal(logp[0], self.ref.logp)
    self.assertFalse(np.array_equal(tok[1], self.ref.tokens))

  def test_continue_traced_from_cache_equals_sample(self):
    """Prefill with init_decode_state, then continue: same tokens as a
    sample() of the same rows and key (logits from the cache agree to
    float rounding)."""
    @jax.jit
    def go(params, key):
      ds = sampling.init_decode_state(self.fns, params, self.prompts,
                                      self.masks, 5 + 7)
      return sampling.continue_traced(self.fns, params, ds, key,
                                      max_new_tokens=7,
                                      sampling=self.method, end_ids=(7,))
    ref = sampling.sample(self.fns, self.params, self.prompts, self.masks,
                          jax.random.key(4), **self.kw)
    ds, out = go(self.params, jax.random.key(4))
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_array_equal(out.mask, ref.mask)
    np.testing.assert_allclose(out.logp, ref.logp, atol=1e-5)
    np.testing.assert_allclose(out.entropy, ref.entropy, atol=1e-5)
    # Real tokens so far: the prompt's plus the generated ones.
    np.testing.assert_array_equal(
        ds.pos, self.masks.sum(1) + np.asarray(ref.mask).sum(1))

  def test_continue_write_mask_and_take_rows(self):
    ds = sampling.init_decode_state(self.fns, self.params, self.prompts,
                                    self.masks, 5 + 3)
    ds2, _ = sampling.continue_traced(
        self.fns, self.params, ds, jax.random.key(0), max_new_tokens=3,
        sampling=self.method, write=jnp.array([True, False, True]))
    np.testing.assert_array_equal(ds2.pos, self.masks.sum(1) + [3, 0, 3])
    np.testing.assert_array_equal(ds2.logits[1], ds.logits[1])
    # Row 1 wrote nothing: its cache slots 5..7 stay invalid.
    np.testing.assert_array_equal(np.asarray(ds2.cache.valid)[1, 5:], False)
    c = sampling.take_cache_rows(ds2.cache, jnp.array([2, 2, 0]))
    np.testing.assert_array_equal(c.valid, np.asarray(ds2.cache.valid)[
        [2, 2, 0]])
    for a, b in zip(jax.tree.leaves(c.k), jax.tree.leaves(ds2.cache.k)):
      np.testing.assert_array_equal(a, np.take(np.asarray(b), [2, 2, 0],
                                               axis=b.ndim - 4))


def _bf16_decoder(decode_attention, **kw):
  """A small bfloat16 GQA decoder (G = 2) with the given decode attention
  (the same float32 parameters for every choice)."""
  cfg = models.DecoderConfig(**{**dict(
      vocab_size=48, hidden_size=32, num_layers=2, num_heads=4,
      num_kv_heads=2, intermediate_size=48, qkv_bias=True,
      dtype=jnp.bfloat16, decode_attention=decode_attention), **kw})
  return models.as_functions(models.Decoder(cfg, rngs=nnx.Rngs(3)))


class TpuPathsTest(parameterized.TestCase):
  """The TPU decode paths on CPU: the paged kernel (Pallas TPU interpret
  mode, ``decode_attention="paged"``), parameters in the compute dtype,
  and compilation for a v5e chip."""

  prompts = np.array([[0, 0, 5, 3, 9], [1, 2, 3, 4, 6], [0, 0, 0, 0, 9]],
                     np.int32)
  masks = prompts > 0

  def teacher_forced_logp(self, fns, params, out, temperature):
    """log-probs of the sampled tokens under a full recomputation."""
    r = out.tokens.shape[0]
    seq = np.concatenate([np.asarray(out.prompt_tokens),
                          np.asarray(out.tokens)], 1)
    mask = np.concatenate([np.asarray(out.prompt_mask),
                           np.asarray(out.mask)], 1)
    pos = models.positions_from_mask(jnp.asarray(mask))
    h, _ = jax.jit(fns.hidden)(params, seq, pos, mask)
    z = fns.logits(params, h)[:, self.prompts.shape[1] - 1:-1] / temperature
    lp = jax.nn.log_softmax(z)
    return np.take_along_axis(np.asarray(lp), np.asarray(out.tokens)[
        ..., None], -1)[..., 0].reshape(r, -1)

  @parameterized.parameters(1, 3)
  def test_paged_decode_samples_the_model(self, n):
    fns, params = _bf16_decoder("paged")
    xfns, _ = _bf16_decoder("xla")
    self.assertTrue(sampler_lib._paged_decode(fns))
    self.assertFalse(sampler_lib._paged_decode(xfns))
    self.assertTrue(sampler_lib._share_prompt(fns, None, 1))
    self.assertFalse(sampler_lib._share_prompt(xfns, None, 1))
    kw = dict(max_new_tokens=9, num_samples=n, block_size=4,
              sampling=sampling.temperature(1.5))
    # The decode cache holds the generated tokens from slot 0, in pages.
    s = sampling.make_sampler(fns, **kw)
    cache = s.init_cache(3, 5)
    self.assertEqual(cache.valid.shape, (3 * n, 64))
    structure = jax.tree.structure(cache)
    out, cache = s.generate(params, self.prompts, self.masks,
                            jax.random.key(2), cache)
    np.testing.assert_array_equal(cache.lengths, 8)
    self.assertEqual(jax.tree.structure(cache), structure)
    ref = sampling.sample(xfns, params, self.prompts, self.masks,
                          jax.random.key(2), **kw)
    self.assertTrue(bool(out.mask.all()))
    # Each step drew from the model's distribution given the tokens so far
    # (bfloat16 attention in both paths: rounding-level differences).
    want = self.teacher_forced_logp(xfns, params, out, 1.5)
    np.testing.assert_allclose(out.logp, want, atol=0.03)
    # The einsum path draws the same tokens from the same key, except
    # where rounding moves a draw across a boundary.
    self.assertGreaterEqual(np.mean(np.asarray(out.tokens)
                                    == np.asarray(ref.tokens)), 0.6)

  def test_float32_parameters_cast_once(self):
    """A bfloat16 model sampled from float32 parameters gives exactly the
    outputs of the parameters cast beforehand (the sampler casts them
    once at entry; the model casts every weight before use anyway)."""
    fns, params = _bf16_decoder("xla")
    self.assertEqual({x.dtype for x in jax.tree.leaves(params)},
                     {jnp.dtype(jnp.float32)})
    cast = sampler_lib._in_compute_dtype(fns, params)
    self.assertEqual({x.dtype for x in jax.tree.leaves(cast)},
                     {jnp.dtype(jnp.bfloat16)})
    kw = dict(max_new_tokens=6, num_samples=2, block_size=3,
              sampling=sampling.temperature(1.2))
    a = sampling.sample(fns, params, self.prompts, self.masks,
                        jax.random.key(4), **kw)
    b = sampling.sample(fns, cast, self.prompts, self.masks,
                        jax.random.key(4), **kw)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    # Models without a config (the fakes) keep their parameters.
    ffns, fparams = fakes.next_token_model(V)
    self.assertIs(sampler_lib._in_compute_dtype(ffns, fparams), fparams)

  def test_compiles_for_a_tpu_chip(self):
    """The TPU program: vocabulary-major logits into the draw, the paged
    kernel in the decode (one per layer) beside the prefill's splash
    kernels, no padded [R, C, S] copy of the logits."""
    if not test_utils.has_libtpu():
      self.skipTest("libtpu is not installed")
    from entropy_rl import aot  # pylint: disable=g-import-not-at-top
    from entropy_rl import parallel  # pylint: disable=g-import-not-at-top
    topo = aot.topology("v5e-1")
    mesh = aot.mesh_for(topo, {"data": 1})
    fns, params = _bf16_decoder("auto", head_dim=64)
    rep = parallel.replicated(mesh)
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,  # noqa: E731
                                              sharding=rep)
    args = jax.tree.map(abstract, (params, self.prompts, self.masks,
                                   jax.random.key_data(jax.random.key(0))))
    with jax.set_mesh(mesh):
      self.assertTrue(sampler_lib._vocab_major(
          fns, params, (), sampling.SamplingMethod()))
      self.assertTrue(sampler_lib._share_prompt(fns, None, 1))
    compiled = aot.compile_for(
        lambda p, t, m, k: sampling.sample_traced(
            fns, p, t, m, k, max_new_tokens=8, block_size=4,
            early_stop=False), args, mesh=mesh)
    hlo = compiled.as_text()
    # 2 layers: a paged kernel per layer in the decode blocks, the
    # prefill's 2 splash kernels.
    self.assertGreaterEqual(
        hlo.count("custom_call_target=\"tpu_custom_call\""), 4)
    self.assertIn("dv,rd->vr", hlo)  # fns.logits_t: E h, vocabulary-major


if __name__ == "__main__":
  absltest.main()
