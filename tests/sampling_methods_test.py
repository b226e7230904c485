"""Sampling methods: truncations, Top-H, HAPO, EM-INF, draws (chi-square).

Hand-computed cases from the specs (A6 Top-H, §7 HAPO, §13b EM-INF), torch
ports of the EM-INF reference code, and sampled frequencies against the
softmax of a fixed-logit fake.
"""


from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from entropy_rl import sampling
from entropy_rl.core import types
from entropy_rl.sampling import processors
from tests import sampling_fakes as fakes

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  torch = None

KEY = jax.random.key(0)
# The module (entropy_rl.regularizers re-exports a function of the same name).
from entropy_rl.regularizers import _hapo as hapo_lib


def apply(proc, z, params=None):
  z = jnp.asarray(z, jnp.float32)
  if z.ndim == 1:
    z = z[None]
  return np.asarray(proc.apply(z, proc.init() if params is None else params,
                               rng=KEY, pos=0))


def kept(proc, z, params=None):
  return np.isfinite(apply(proc, z, params))


LOGP4 = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


class TruncationTest(parameterized.TestCase):

  def test_temperature_per_row(self):
    z = np.array([[1.0, 2.0], [1.0, 2.0]])
    out = apply(sampling.scale_by_temperature(), z,
                {"temperature": jnp.array([0.5, 2.0])})
    np.testing.assert_allclose(out, [[2.0, 4.0], [0.5, 1.0]])

  def test_top_k(self):
    z = np.array([0.1, 3.0, -1.0, 2.0, 0.5])
    np.testing.assert_array_equal(kept(sampling.truncate_top_k(2), z)[0],
                                  [0, 1, 0, 1, 0])
    # Per-row k below the static bound.
    proc = sampling.truncate_top_k(3)
    got = kept(proc, np.stack([z, z]), {"k": jnp.array([1, 3])})
    np.testing.assert_array_equal(got, [[0, 1, 0, 0, 0], [0, 1, 0, 1, 1]])
    self.assertTrue(kept(sampling.truncate_top_k(10), z).all())

  @parameterized.parameters((0.5, 1), (0.7, 2), (0.8, 2), (0.81, 3),
                            (0.96, 4), (1.0, 4))
  def test_top_p(self, p, n_kept):
    got = kept(sampling.truncate_top_p(p), LOGP4[::-1])[0]
    self.assertEqual(got.sum(), n_kept)
    self.assertTrue(got[::-1][:n_kept].all())  # the most probable ones
    got_c = kept(sampling.truncate_top_p(p, max_candidates=4), LOGP4)[0]
    self.assertEqual(got_c.sum(), n_kept)

  @parameterized.parameters((0.0, 4), (0.1, 4), (0.3, 3), (0.6, 2), (1.0, 1))
  def test_min_p(self, m, n_kept):
    self.assertEqual(kept(sampling.truncate_min_p(m), LOGP4).sum(), n_kept)

  def test_bad_constructor_args(self):
    with self.assertRaisesRegex(ValueError, "temperature"):
      sampling.scale_by_temperature(0.0)
    with self.assertRaisesRegex(ValueError, "k must"):
      sampling.truncate_top_k(0)
    with self.assertRaisesRegex(ValueError, "top_p"):
      sampling.truncate_top_p(0.0)
    with self.assertRaisesRegex(ValueError, "min_p"):
      sampling.truncate_min_p(1.5)
    with self.assertRaisesRegex(ValueError, "alpha"):
      sampling.truncate_top_h(1.2)
    with self.assertRaisesRegex(ValueError, "sign_mode"):
      sampling.hapo_temperature(sign_mode="both")
    with self.assertRaisesRegex(ValueError, "n_steps"):
      sampling.em_inf(n_steps=-1)
    with self.assertRaisesRegex(ValueError, "compose"):
      sampling.compose("top_p")

  def test_compose_and_jit(self):
    m = sampling.compose(sampling.em_inf(), sampling.top_p(0.9, 0.7))
    self.assertLen(m.processors, 3)
    self.assertEqual(m.draw, "cdf")
    self.assertEqual(sampling.compose(sampling.greedy()).draw, "argmax")
    z = jax.random.normal(KEY, (3, 20))

    def run(z):
      for proc, prm in zip(m.processors, m.init()):
        z = proc.apply(z, prm, rng=KEY, pos=0)
      return z
    np.testing.assert_allclose(jax.jit(run)(z), run(z), rtol=1e-5)


class TopHTest(parameterized.TestCase):
  """Spec A6 (f): p = (½, ¼, ⅛, ⅛), S = (0.5, 1, 1.375, 1.75)."""

  P = np.array([0.5, 0.25, 0.125, 0.125])

  @parameterized.parameters((0.4, 1), (0.6, 2), (0.8, 3), (1.0, 4))
  def test_spec_cases(self, alpha, n_kept):
    count = sampling.top_h_keep_count(jnp.asarray(self.P)[None], alpha)
    self.assertEqual(int(count[0]), n_kept)
    got = kept(sampling.truncate_top_h(alpha, top_n=4), np.log(self.P))[0]
    self.assertEqual(got.sum(), n_kept)
    np.testing.assert_array_equal(got[:n_kept], True)

  def test_monotone_in_alpha_and_one_hot(self):
    z = jax.random.normal(jax.random.key(1), (16, 50)) * 2
    probs = jnp.sort(jax.nn.softmax(z), -1)[:, ::-1][:, :20]
    counts = [np.asarray(sampling.top_h_keep_count(probs, a))
              for a in np.linspace(0.0, 1.0, 11)]
    self.assertTrue((np.diff(np.stack(counts), axis=0) >= 0).all())
    one_hot = jnp.array([[1.0, 0.0, 0.0, 0.0]])
    self.assertEqual(int(sampling.top_h_keep_count(one_hot, 0.9)[0]), 1)
    # Truncates the renormalised top-N: the kept set is a top set.
    out = apply(sampling.truncate_top_h(0.5, top_n=20), z)
    for row_z, row_o in zip(np.asarray(z), out):
      k = np.isfinite(row_o)
      self.assertGreaterEqual(row_z[k].min(), row_z[~k].max())


class HapoTest(absltest.TestCase):
  """Spec §7 (f): H = (0.05, 0.2, 1.0, 2.0, 0.5)."""

  H = np.array([0.05, 0.2, 1.0, 2.0, 0.5], np.float32)

  def test_stats(self):
    st = sampling.hapo_sampler_stats(self.H[None], np.ones((1, 5)), 0.8)
    self.assertAlmostEqual(float(st["q"]), 0.0, places=6)
    self.assertAlmostEqual(float(st["s"]), 1.582758, places=5)
    self.assertAlmostEqual(1 / float(st["inv_p"]), 0.437936, places=5)
    self.assertAlmostEqual(1 / float(st["inv_n"]), -1.892730, places=5)
    # Padding is ignored.
    st2 = sampling.hapo_sampler_stats(
        np.concatenate([self.H, [9.0, 9.0]])[None],
        np.array([[1, 1, 1, 1, 1, 0, 0]]), 0.8)
    for k in st:
      self.assertAlmostEqual(float(st[k]), float(st2[k]), places=6)

  def test_score_both_signs(self):
    st = sampling.hapo_sampler_stats(self.H, np.ones(5), 0.8)
    np.testing.assert_allclose(
        sampling.hapo_score(jnp.asarray(self.H), st, "intended"),
        [-1, -0.537244, 0, 1, -0.231378], atol=2e-5)
    np.testing.assert_allclose(
        sampling.hapo_score(jnp.asarray(self.H), st, "released"),
        [1, 0.537244, 0, 1, 0.231378], atol=2e-5)

  def test_processor_temperature(self):
    st = sampling.hapo_sampler_stats(self.H, np.ones(5), 0.8)
    proc = sampling.hapo_temperature(tau=0.5, t0=0.9)
    z = jax.random.normal(jax.random.key(2), (4, 30)) * jnp.array(
        [[0.1], [1.0], [3.0], [8.0]])
    h_raw = sampling.entropy_of_logits(z)
    hh = sampling.hapo_score(h_raw, st, "intended")
    out = apply(proc, z, {**proc.init(), **st})
    np.testing.assert_allclose(np.asarray(z) / out,
                               np.broadcast_to((0.9 * (1 + 0.5 * hh))[:, None],
                                               z.shape), rtol=1e-5)
    # Defaults (no statistics yet): T = T0.
    np.testing.assert_allclose(apply(proc, z), np.asarray(z) / 0.9,
                               rtol=1e-6)

  def test_agrees_with_the_training_side(self):
    """The HAPO transform's state stats drive the processor directly."""
    ent = jax.random.exponential(jax.random.key(3), (6, 9))
    mask = jax.random.bernoulli(jax.random.key(4), 0.7, (6, 9))
    ours = sampling.hapo_sampler_stats(ent, mask, 0.8)
    theirs = hapo_lib.entropy_score_stats(ent, mask, 0.8)
    for k, v in theirs._asdict().items():
      np.testing.assert_allclose(ours[k], v, rtol=1e-6)
    proc = sampling.hapo_temperature(sign_mode="released")
    z = jax.random.normal(jax.random.key(5), (3, 12))
    state = hapo_lib.hapo().init(None)  # stats before the first step: T0
    np.testing.assert_allclose(
        apply(proc, z, {**proc.init(), **state.sampler_stats._asdict()}), z,
        rtol=1e-6)
    np.testing.assert_allclose(
        apply(proc, z, {**proc.init(), **theirs._asdict()}),
        apply(proc, z, {**proc.init(), **ours}), rtol=1e-6)


def _torch_em_inf(z, threshold, kl_weight, lr, n_steps):
  """The reference loop (EM_PT eval/utils/em_inf_utils.py), one row."""
  import torch.nn.functional as tf  # pylint: disable=g-import-not-at-top
  logits = torch.tensor(z[None], dtype=torch.float32)
  original = tf.softmax(logits, -1).detach()
  param = torch.nn.Parameter(logits.clone())
  opt = torch.optim.Adam([param], lr=lr)
  for _ in range(n_steps):
    opt.zero_grad()
    probs = tf.softmax(param, -1)
    ent = -torch.sum(probs * torch.log(probs + 1e-12))
    if ent < threshold:
      break
    kl = tf.kl_div(probs.log(), original, reduction="batchmean")
    (kl_weight * kl + ent).backward()
    opt.step()
  return param.detach().numpy()[0]


def _ref_adaptive_temperature(z, t_min=0.01, t_max=1.0, max_iter=100,
                              tol=0.1, ratio=0.2, thr=1e-6):
  """AdaptiveTemperatureProcessor (same file), one row, in float64."""
  def ent(x):
    p = np.exp(x - x.max())
    p /= p.sum()
    return -np.sum(p * np.log(p + 1e-9))
  h = ent(z)
  target = max(thr, ratio * h)
  final = 1.0
  if h > thr:
    for _ in range(max_iter):
      mid = (t_max + t_min) / 2
      hm = ent(z / mid)
      if abs(hm - target) < tol:
        final = mid
        break
      elif hm < target:
        t_min = mid
      else:
        t_max = mid
      final = mid
  return z / final


class EmInfTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.z = np.asarray(jax.random.normal(jax.random.key(4), (4, 40))) * (
        np.array([[0.3], [1.0], [2.0], [6.0]]))

  def test_matches_torch_reference(self):
    if torch is None:
      self.skipTest("torch not installed")
    for thr, lam, lr, n in ((0.3, 0.001, 0.1, 5), (0.3, 0.05, 0.1, 3),
                            (2.5, 0.05, 0.2, 6)):
      proc = sampling.em_inf(thr, lam, lr, n)
      got = apply(proc, self.z)
      for r in range(4):
        want = _torch_em_inf(self.z[r], thr, lam, lr, n)
        np.testing.assert_allclose(got[r], want, atol=2e-4, rtol=1e-4)

  def test_neutral_settings(self):
    np.testing.assert_array_equal(apply(sampling.em_inf(n_steps=0), self.z),
                                  self.z.astype(np.float32))
    # Threshold above every row's entropy: unchanged.
    np.testing.assert_array_equal(
        apply(sampling.em_inf(threshold=100.0), self.z),
        self.z.astype(np.float32))
    # Otherwise the entropy goes down.
    h0 = sampling.entropy_of_logits(jnp.asarray(self.z))
    h1 = sampling.entropy_of_logits(jnp.asarray(apply(sampling.em_inf(0.0),
                                                      self.z)))
    self.assertTrue(bool(jnp.all(h1 < h0)))

  def test_adaptive_temperature_matches_reference(self):
    proc = sampling.em_inf_temperature()
    got = apply(proc, self.z)
    for r in range(4):
      np.testing.assert_allclose(
          got[r], _ref_adaptive_temperature(self.z[r].astype(np.float64)),
          rtol=1e-4, atol=1e-4)


class DrawTest(parameterized.TestCase):
  """Sampled frequencies against the (processed) softmax."""

  Z = np.array([1.0, 0.2, -0.5, 2.0, 0.0, -2.0, 1.5, 0.7], np.float32)

  def counts(self, method, rows=2048, steps=4, **kw):
    f, p = fakes.fixed_logits_model(self.Z)
    out = sampling.sample(f, p, np.zeros((rows, 1), np.int32),
                          np.ones((rows, 1), bool), jax.random.key(7),
                          max_new_tokens=steps, sampling=method,
                          block_size=steps, **kw)
    return np.bincount(np.asarray(out.tokens).ravel(), minlength=8), out

  def assert_matches(self, counts, probs):
    support = probs > 0
    self.assertEqual(counts[~support].sum(), 0)  # truncated: never drawn
    n = counts.sum()
    chi2 = np.sum((counts[support] - n * probs[support]) ** 2
                  / (n * probs[support]))
    self.assertLess(chi2, stats.chi2.ppf(0.999, support.sum() - 1))

  @parameterized.parameters("cdf", "gumbel")
  def test_categorical_at_temperature(self, draw):
    counts, out = self.counts(sampling.temperature(0.7, draw=draw))
    probs = np.asarray(jax.nn.softmax(self.Z / 0.7))
    self.assert_matches(counts, probs)
    np.testing.assert_allclose(
        out.logp, np.log(probs)[np.asarray(out.tokens)], atol=1e-5)
    np.testing.assert_allclose(out.entropy, -np.sum(probs * np.log(probs)),
                               rtol=1e-5)

  def test_top_k_truncated_distribution(self):
    counts, out = self.counts(sampling.top_k(3, temperature=1.3))
    z = self.Z / 1.3
    keep = z >= np.sort(z)[-3]
    probs = np.where(keep, np.exp(z), 0.0)
    probs /= probs.sum()
    self.assert_matches(counts, probs)
    # logp is the truncated, renormalised log-prob (the behaviour policy).
    logp = np.log(np.where(keep, probs, 1.0))
    np.testing.assert_allclose(out.logp, logp[np.asarray(out.tokens)],
                               atol=1e-5)

  def test_draw_with_padded_vocab_chunks(self):
    z = jax.random.normal(jax.random.key(5), (1, 67)) * 1.5  # 67 is prime
    zz = jnp.broadcast_to(z, (20000, 67))
    keys = jax.random.split(jax.random.key(6), 20000)
    tok, logp, ent = jax.jit(sampling.draw_and_stats, static_argnums=2)(
        zz, keys, "cdf")
    probs = np.asarray(jax.nn.softmax(z[0]))
    counts = np.bincount(np.asarray(tok), minlength=67)
    # Pool the rare tokens so every cell expects >= 20 draws.
    order = np.argsort(probs)
    small = order[np.cumsum(probs[order]) * 20000 < 200]
    big = np.setdiff1d(np.arange(67), small)
    c = np.append(counts[big], counts[small].sum())
    q = np.append(probs[big], probs[small].sum())
    chi2 = np.sum((c - 20000 * q) ** 2 / (20000 * q))
    self.assertLess(chi2, stats.chi2.ppf(0.999, len(c) - 1))
    np.testing.assert_allclose(logp, np.log(probs)[np.asarray(tok)],
                               atol=1e-5)
    np.testing.assert_allclose(ent[0], -np.sum(probs * np.log(probs)),
                               rtol=1e-5)

  def test_precomputed_uniforms_equal_the_keys(self):
    """``cdf_uniforms`` over a block of keys (typed or raw uint32) gives the
    uniforms ``draw_and_stats`` draws from each step's keys."""
    z = jax.random.normal(jax.random.key(1), (6, 67)) * 2.0
    for base in (jax.random.key(3), jax.random.PRNGKey(3)):
      keys = jax.vmap(lambda t, b=base: jax.random.split(
          jax.random.fold_in(b, t), 6))(jnp.arange(4))  # [L=4, R=6]
      us = processors.cdf_uniforms(keys)
      self.assertEqual(us.shape, (4, 6))
      for t in range(4):
        want = sampling.draw_and_stats(z, keys[t], "cdf")
        got = sampling.draw_and_stats(z, None, "cdf", us[t])
        for a, b in zip(got, want):
          np.testing.assert_array_equal(a, b)
      self.assertGreater(len(np.unique(np.asarray(us))), 20)

  def test_top_k_one_equals_greedy(self):
    f, p = fakes.tiny_attention_model()
    rs = np.random.RandomState(1)
    prompts = rs.randint(0, 48, (4, 5)).astype(np.int32)
    masks = np.ones((4, 5), bool)
    masks[1, :3] = False
    kw = dict(max_new_tokens=10, block_size=4)
    g = sampling.sample(f, p, prompts, masks, jax.random.key(0),
                        sampling=sampling.greedy(), **kw)
    k1 = sampling.sample(f, p, prompts, masks, jax.random.key(1),
                         sampling=sampling.top_k(1, temperature=0.9), **kw)
    np.testing.assert_array_equal(g.tokens, k1.tokens)
    np.testing.assert_allclose(k1.logp, 0.0, atol=1e-6)
    np.testing.assert_allclose(k1.entropy, 0.0, atol=1e-6)
    # Greedy reports the statistics of softmax(z) at temperature 1.
    logits, _ = fakes.full_recompute_logits(f, p, prompts, masks, g.tokens)
    lp = jax.nn.log_softmax(logits, -1)
    np.testing.assert_allclose(
        g.logp, jnp.take_along_axis(lp, g.tokens[..., None], -1)[..., 0],
        atol=1e-4)


class VocabMajorDrawTest(parameterized.TestCase):
  """The TPU draw on transposed logits [V, R] against the CPU draw on the
  same logits: the same statistics up to float32 rounding, the same
  inverse-CDF rule, exact frequencies."""

  def test_chunks(self):
    vm = processors.vocab_major_chunk
    self.assertEqual(vm(151_936), 128)  # Qwen2.5: (C, S) = (1187, 128)
    self.assertEqual(vm(49_152), 128)
    self.assertEqual(vm(152), 8)  # 8 · 19
    self.assertEqual(vm(40), 40)
    self.assertIsNone(vm(67))
    self.assertIsNone(vm(4))

  @parameterized.product(v=(40, 152, 1024, 67), draw=("cdf", "argmax"))
  def test_statistics_and_tokens_equal_the_rows_draw(self, v, draw):
    r = 512
    z = jax.random.normal(jax.random.key(v), (r, v)) * 3.0
    z = z.at[:, 1].set(-jnp.inf)  # removed tokens are never drawn
    keys = jax.random.split(jax.random.key(1), r)
    want = jax.jit(sampling.draw_and_stats, static_argnums=2)(z, keys, draw)
    got = jax.jit(processors.draw_and_stats_vocab_major, static_argnums=2)(
        z.T, keys, draw)
    # logp and entropy: the same sums in another order (float32 rounding).
    np.testing.assert_allclose(got[1], want[1], rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(got[2], want[2], rtol=2e-6, atol=2e-6)
    tok, want_tok = np.asarray(got[0]), np.asarray(want[0])
    self.assertFalse((tok == 1).any())
    if draw == "argmax":
      np.testing.assert_array_equal(tok, want_tok)
    else:
      # One uniform per row, the same inverse CDF: the same token except
      # where u·Σp falls within rounding of a boundary.
      self.assertGreaterEqual(np.mean(tok == want_tok), 0.995)
    np.testing.assert_allclose(
        got[1], np.asarray(jax.nn.log_softmax(z))[np.arange(r), tok],
        atol=1e-5)

  @parameterized.parameters(152, 67)
  def test_token_frequencies(self, v):
    z = jax.random.normal(jax.random.key(5), (v,)) * 1.5
    rows = 20000
    zt = jnp.broadcast_to(z[:, None], (v, rows))
    keys = jax.random.split(jax.random.key(6), rows)
    tok, logp, ent = jax.jit(processors.draw_and_stats_vocab_major,
                             static_argnums=2)(zt, keys, "cdf")
    probs = np.asarray(jax.nn.softmax(z), np.float64)
    counts = np.bincount(np.asarray(tok), minlength=v)
    order = np.argsort(probs)  # pool the rare tokens (>= 200 expected)
    small = order[np.cumsum(probs[order]) * rows < 200]
    big = np.setdiff1d(np.arange(v), small)
    c = np.append(counts[big], counts[small].sum())
    q = np.append(probs[big], probs[small].sum())
    chi2 = np.sum((c - rows * q) ** 2 / (rows * q))
    self.assertLess(chi2, stats.chi2.ppf(0.999, len(c) - 1))
    np.testing.assert_allclose(logp, np.log(probs)[np.asarray(tok)],
                               atol=1e-5)
    np.testing.assert_allclose(ent, -np.sum(probs * np.log(probs)),
                               rtol=1e-5)

  def test_precomputed_uniforms_equal_the_keys(self):
    zt = jax.random.normal(jax.random.key(2), (152, 6)) * 2.0
    keys = jax.random.split(jax.random.key(3), 6)
    want = processors.draw_and_stats_vocab_major(zt, keys, "cdf")
    got = processors.draw_and_stats_vocab_major(
        zt, None, "cdf", processors.cdf_uniforms(keys))
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)

  def test_processors(self):
    temp = sampling.scale_by_temperature(0.7)
    top = sampling.truncate_top_k(3)
    self.assertTrue(processors.supports_vocab_major(()))
    self.assertTrue(processors.supports_vocab_major((temp,)))
    self.assertFalse(processors.supports_vocab_major((temp, top)))
    z = jax.random.normal(jax.random.key(0), (4, 24))
    for prm in ({"temperature": jnp.float32(0.7)},
                {"temperature": jnp.array([0.5, 1.0, 2.0, 0.3])}):
      want = processors.apply_processors(z, (temp,), (prm,), rng=KEY, pos=0)
      got = processors.apply_processors_vocab_major(z.T, (temp,), (prm,),
                                                    rng=KEY, pos=0)
      np.testing.assert_array_equal(got, want.T)

class ValueSemanticsTest(absltest.TestCase):

  def test_equal_settings_are_equal_values(self):
    makers = (
        lambda: sampling.scale_by_temperature(0.7),
        lambda: sampling.truncate_top_k(5),
        lambda: sampling.truncate_top_p(0.9, max_candidates=64),
        lambda: sampling.truncate_min_p(0.1),
        lambda: sampling.truncate_top_h(0.4, 50),
        lambda: sampling.hapo_temperature(0.05, 1.0, "released"),
        lambda: sampling.em_inf(0.3, 0.05, 0.1, 3),
        lambda: sampling.em_inf_temperature(max_iter=20),
        lambda: sampling.greedy(), lambda: sampling.temperature(0.7),
        lambda: sampling.top_k(5, 0.7), lambda: sampling.top_p(0.9, 0.7),
        lambda: sampling.min_p(0.1, 0.7), lambda: sampling.top_h(0.4, 50),
        lambda: sampling.compose(sampling.em_inf(), sampling.top_p(0.9)))
    for make in makers:
      a, b = make(), make()
      self.assertIsNot(a, b)
      self.assertEqual(a, b)
      self.assertEqual(hash(a), hash(b))
    self.assertEqual(sampling.truncate_top_k(5), processors.TruncateTopK(k=5))
    self.assertNotEqual(sampling.top_k(5), sampling.top_k(6))
    self.assertNotEqual(sampling.top_k(5), sampling.top_k(5, 0.7))
    self.assertNotEqual(sampling.top_k(5), sampling.top_k(5, draw="gumbel"))
    self.assertNotEqual(sampling.truncate_top_h(0.4, 50),
                        sampling.truncate_top_h(0.4, 51))
    # A list of processors is stored as a tuple (hashable).
    self.assertEqual(sampling.SamplingMethod([sampling.truncate_top_k(5)]),
                     sampling.SamplingMethod((sampling.truncate_top_k(5),)))

  def test_equal_methods_compile_once(self):
    z = jax.random.normal(KEY, (3, 20))

    traces = []

    def run(z, method):
      traces.append(method)  # once per trace (per compilation)
      for proc, prm in zip(method.processors, method.init()):
        z = proc.apply(z, prm, rng=KEY, pos=0)
      return z

    # Counted by traces, not f._cache_size(): the C++ fast-path cache can
    # read 0 after other tests ran in the same worker.
    f = jax.jit(run, static_argnums=1)
    a = f(z, sampling.top_k(5, 0.7))
    b = f(z, sampling.top_k(5, 0.7))
    self.assertLen(traces, 1)
    np.testing.assert_array_equal(a, b)
    f(z, sampling.top_k(6, 0.7))
    self.assertLen(traces, 2)

  def test_function_form(self):
    # LogitsProcessor(init, apply) still builds a processor (closures),
    # equal only to one made of the same functions.
    init = lambda: {"b": jnp.float32(1.0)}  # noqa: E731
    apply_fn = lambda z, prm, *, rng=None, pos=None: z + prm["b"]  # noqa
    proc = types.LogitsProcessor(init, apply_fn)
    self.assertIsInstance(proc, types.LogitsProcessor)
    self.assertIsNone(proc.apply_vocab_major)
    self.assertEqual(proc, types.LogitsProcessor(init, apply_fn))
    self.assertNotEqual(proc, types.LogitsProcessor(dict, apply_fn))
    self.assertFalse(processors.supports_vocab_major((proc,)))
    m = sampling.compose(proc, sampling.temperature(2.0))
    np.testing.assert_allclose(
        apply(m.processors[0], [0.0, 1.0]), [[1.0, 2.0]])
    self.assertEqual(len(m.init()), 2)


if __name__ == "__main__":
  absltest.main()
