"""Hand-computed vectors (spec Part B / Appendix) and exact properties."""

import math
import types

from absl.testing import absltest
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import ace
from entropy_rl.classic import bandlimited
from entropy_rl.classic import bobw
from entropy_rl.classic import diayn
from entropy_rl.classic import doraemon
from entropy_rl.classic import envs
from entropy_rl.classic import maxent_exploration as mex
from entropy_rl.classic import maxinfo
from entropy_rl.classic import mdvi
from entropy_rl.classic import moco
from entropy_rl.classic import moss
from entropy_rl.classic import nets
from entropy_rl.classic import sac_pieces
from entropy_rl.classic import era
from entropy_rl.classic import trpo

close = np.testing.assert_allclose


def _bandit():
  return envs.TabularMDP(jnp.ones((1, 2, 1)), jnp.array([[1.0, 0.0]]), 0.0)


# --- ERA (A5.2) -------------------------------------------------------------
class EraVectorsTest(absltest.TestCase):

  def test_era_vectors(self):
    close(era.era_offset(2, 0.25), -2.337877, atol=1e-6)
    close(era.era_log_std(jnp.zeros(2), 0.25), [-1.168939] * 2, atol=1e-5)
    ls = era.era_log_std(jnp.array([0.0, 50.0]), 0.25)
    close(ls, [0.0, -2.337877], atol=1e-5)
    close(era.gaussian_entropy(ls), 0.5, atol=1e-5)
    close(nets.LOG_2PI_E_HALF, 1.418939, atol=1e-6)

  @hypothesis.settings(max_examples=30, deadline=None)
  @hypothesis.given(st.lists(st.floats(-3, 3), min_size=2, max_size=2))
  def test_era_entropy_invariance(self, pre):
    ls = era.era_log_std(jnp.asarray(pre), 0.25)
    close(era.gaussian_entropy(ls), 0.5, atol=1e-5)

  def test_era_clipping_raises_entropy(self):
    ls = era.era_log_std(jnp.array([0.0, 5.0]), -6.0)
    self.assertGreater(float(era.gaussian_entropy(ls)), 2 * -6.0)

  def test_truncated_normal_logp_normalised(self):
    loc, scale = jnp.array([0.3]), jnp.array([0.5])
    x = jnp.linspace(-1, 1, 4001)[:, None]
    p = jnp.exp(nets.truncated_normal_logp(loc, scale, x))
    close(jnp.trapezoid(p[:, 0], x[:, 0]), 1.0, atol=1e-3)
    a, lp = nets.truncated_normal_sample(jax.random.PRNGKey(0),
                                         jnp.full((1000, 1), 0.9),
                                         jnp.full((1000, 1), 0.5))
    self.assertLessEqual(float(jnp.abs(a).max()), 1.0)
    self.assertTrue(bool(jnp.isfinite(lp).all()))


# --- SAC base (B0) ----------------------------------------------------------
class SacBaseVectorsTest(absltest.TestCase):

  def test_squashed_logp_change_of_variables(self):
    # E_a[1] under the density: histogram of samples vs exp(log π).
    mean, log_std = jnp.array([0.3]), jnp.array([-0.5])
    a, lp = nets.tanh_gaussian_sample(jax.random.PRNGKey(1),
                                      jnp.broadcast_to(mean, (200_000, 1)),
                                      jnp.broadcast_to(log_std, (200_000, 1)))
    hist, edges = np.histogram(np.asarray(a[:, 0]), bins=40,
                               range=(-0.95, 0.95), density=False)
    centres = 0.5 * (edges[1:] + edges[:-1])
    dens = jnp.exp(nets.tanh_gaussian_logp(mean, log_std,
                                           jnp.asarray(centres)[:, None]))[:, 0]
    close(hist / 200_000 / (edges[1] - edges[0]), dens, rtol=0.08, atol=0.02)
    close(lp, nets.tanh_gaussian_logp(jnp.broadcast_to(mean, (200_000, 1)),
                                      jnp.broadcast_to(log_std, (200_000, 1)),
                                      a), atol=2e-2)

  def test_alpha_loss_sign(self):
    # entropy above target (log π + H̄ < 0) -> positive gradient -> α falls.
    g = jax.grad(lambda la: -jnp.mean(la * (jnp.array([-2.0]) + 1.0)))(0.0)
    self.assertGreater(float(g), 0)


# --- ACE (B2) ---------------------------------------------------------------
class AceVectorsTest(absltest.TestCase):

  def test_ace_vectors_and_properties(self):
    w = ace.causal_weights(jnp.array([0.2, 0.0, -0.2]))
    close(w, [1.20528, 0.98680, 0.80792], atol=1e-5)
    close(w.sum(), 3.0, atol=1e-6)
    lp = jnp.array([[0.1, -0.4, 0.7]])
    close(ace.weighted_logp(lp, jnp.ones(3)), lp.sum(-1), atol=1e-7)
    w1, w2 = jnp.array([1.0, 2.0, 0.0]), jnp.array([0.5, 0.0, 2.5])
    close(ace.weighted_logp(lp, w1 + 2 * w2),
          ace.weighted_logp(lp, w1) + 2 * ace.weighted_logp(lp, w2), atol=1e-6)
    p = nets.mlp_init(jax.random.PRNGKey(0), (3, 4, 2))
    fresh = nets.mlp_init(jax.random.PRNGKey(1), (3, 4, 2))
    jax.tree.map(lambda a, b: close(a, b), ace.soft_reset(p, fresh, 1.0), p)
    jax.tree.map(lambda a, b: close(a, b), ace.soft_reset(p, fresh, 0.0), fresh)
    close(ace.reset_factor(jnp.array(0.0)), 0.9)
    close(ace.reset_factor(jnp.array(0.95)), 0.2)

  def test_ace_causal_proxy_linear_sem(self):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.uniform(k1, (500, 2), minval=-1, maxval=1)
    r = 2.0 * a[:, 0] + 0.1 * jax.random.normal(k2, (500,))
    b = ace.ols_causal_effects(jnp.zeros((500, 1)), a, r)
    w = ace.causal_weights(b)
    self.assertGreater(float(w[0]), float(w[1]))

  def test_dormant_ratio(self):
    g = [(jnp.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]), jnp.zeros(3))]
    close(ace.dormant_ratio(g), 1 / 3, atol=1e-6)


# --- band-limited SAC (B3) --------------------------------------------------
class BandLimitedVectorsTest(absltest.TestCase):

  def test_band_limited_kernels(self):
    a = jnp.array([[0.1, -0.2], [0.3, 0.0]])
    quad = lambda o, x: -jnp.sum(x ** 2, -1)
    out = bandlimited.band_limited_q(quad, None, a, 0.1, clip=False)
    close(out, quad(None, a) - 2 * 0.01, atol=1e-6)
    lin = lambda o, x: x @ jnp.array([1.5, -2.0])
    close(bandlimited.band_limited_q(lin, None, a, 0.2, clip=False),
          lin(None, a), atol=1e-6)
    close(bandlimited.band_limited_q(quad, None, a, 0.0), quad(None, a))
    mc = bandlimited.band_limited_q(quad, None, a, 0.1, "mc",
                                    jax.random.PRNGKey(0), 4096, clip=False)
    close(mc, quad(None, a) - 0.02, atol=2e-3)


# --- MaxInfoRL (B4) ---------------------------------------------------------
class MaxInfoVectorsTest(absltest.TestCase):

  def test_maxinfo_vectors(self):
    preds = jnp.array([0.0, 0.1, 0.2, 0.3, 0.4])[:, None]
    close(maxinfo.information_gain(preds), 10.12667, rtol=1e-5)
    close(maxinfo.information_gain(jnp.ones((5, 3, 2))), jnp.zeros(3),
          atol=1e-5)
    for gap in (0.5, -0.5):
      g = jax.grad(maxinfo.lambda_loss)(0.0, jnp.array([gap]), jnp.zeros(1))
      self.assertEqual(np.sign(float(g)), np.sign(gap))

  def test_information_gain_means_per_key_then_over_keys(self):
    # Spec §B4 / maxinforl ``get_disagreement``: mean over each key's output
    # dims, then over keys (next obs, reward), then − log ε.
    heads = jnp.array([0.0, 0.1, 0.2, 0.3, 0.4])  # Var (ddof 1) = 0.025
    same = jnp.zeros(5)
    # O = 3, only the reward disagrees: ½·ln(1 + 0.025/ε) = ½·ln 25001.
    obs3 = jnp.stack([same] * 3, -1)[:, None]  # [E, 1, 3]
    ig = maxinfo.information_gain((obs3, heads[:, None, None]))
    close(ig, [0.5 * math.log(25001)], rtol=1e-5)  # 5.06334
    # Pooling all O + 1 = 4 outputs would give a quarter: 2.53167.
    pooled = maxinfo.information_gain(
        jnp.concatenate([obs3, heads[:, None, None]], -1))
    close(pooled, [0.25 * math.log(25001)], rtol=1e-5)
    # O = 1: one dim per key, so per key and pooled agree (½·ln 25001).
    close(maxinfo.information_gain((same[:, None], heads[:, None])),
          0.5 * math.log(25001), rtol=1e-5)
    # O = 2: obs vars (0.025, 0), reward var 0.1:
    #   per key ½(½ ln 25001 + ln 100001) = 8.28814 (pooled: 7.21320).
    obs2 = jnp.stack([heads, same], -1)
    ig2 = maxinfo.information_gain((obs2, 2.0 * heads[:, None]))
    close(ig2, 0.25 * math.log(25001) + 0.5 * math.log(100001), rtol=1e-5)
    close(ig2, 8.28814, rtol=1e-5)

  def test_ensemble_loss_means_per_key_then_over_keys(self):
    # maxinforl: per key mean((f_e − y)²) over batch, dims and heads, then the
    # mean over keys. E = 2, B = 1, O = 2; obs errors (1, 1) and (1, 1),
    # reward errors 3 and 3: (1 + 9)/2 = 5 (pooling all 3 outputs: 11/3).
    obs = jnp.ones((2, 1, 2))
    rew = jnp.full((2, 1, 1), 3.0)
    loss = maxinfo.ensemble_loss((obs, rew), (jnp.zeros((1, 2)),
                                              jnp.zeros((1, 1))))
    close(loss, 5.0, rtol=1e-6)

  def test_sac_ig_splits_next_obs_and_reward(self):
    # SAC-MaxInfo's IG on a hand-built ensemble: zero last-layer weights, so
    # each head predicts its bias; O = 3 next-obs dims agree, reward does not.
    o, d, e = 3, 1, 5
    ens = nets.ensemble_init(jax.random.PRNGKey(0), e, (o + d, 8, 8, o + 1))
    w, _ = ens[-1]
    bias = jnp.zeros((e, o + 1)).at[:, o].set(
        jnp.array([0.0, 0.1, 0.2, 0.3, 0.4]))
    ens = ens[:-1] + [(jnp.zeros_like(w), bias)]
    st = types.SimpleNamespace(
        in_norm=maxinfo.running_norm_init((o + d,)),
        ig_norm=maxinfo.running_norm_init(()))
    _, ig = sac_pieces._ig(st, ens, jnp.ones((2, o)), jnp.zeros((2, d)))
    close(ig, [0.5 * math.log(25001)] * 2, rtol=1e-5)  # not ¼·ln 25001

  def test_running_norm_matches_batch_stats(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (300, 2)) * 3 + 1
    s = maxinfo.running_norm_init((2,))
    for chunk in jnp.split(x, 3):
      s = maxinfo.running_norm_update(s, chunk)
    close(s.mean, x.mean(0), rtol=1e-3)
    close(s.var, x.var(0), rtol=1e-3)


# --- DIAYN (B5) -------------------------------------------------------------
class DiaynVectorsTest(absltest.TestCase):

  def test_diayn_vectors(self):
    z = jnp.arange(4)
    close(diayn.pseudo_reward(jnp.zeros((4, 4)), z, 4), 0.0, atol=1e-5)
    perfect = 100.0 * jax.nn.one_hot(z, 4)
    close(diayn.pseudo_reward(perfect, z, 4), math.log(4), atol=1e-5)
    logits = jax.random.normal(jax.random.PRNGKey(0), (64, 4)) * 5
    zz = jax.random.randint(jax.random.PRNGKey(1), (64,), 0, 4)
    self.assertLessEqual(float(diayn.pseudo_reward(logits, zz, 4).max()),
                         math.log(4) + 1e-5)


# --- maximum-entropy exploration (B6) ---------------------------------------
class MaxentExplorationVectorsTest(absltest.TestCase):

  def test_maxent_exploration_vectors(self):
    close(mex.transition_entropy(jnp.array([0.5, 0.5])), 0.69315, atol=1e-5)
    v, pi = mex.soft_backup(jnp.array([1.0, 1.0]))
    close(v, 1.69315, atol=1e-5)
    close(pi, [0.5, 0.5])
    close(mex.entgame_reward(10.0, jnp.full((2, 2), 3.0)), 1.25276, atol=1e-5)
    counts = jnp.zeros((2, 2, 2)).at[0, 0, 1].set(5.0)
    r = mex.entgame_reward(10.0, counts.sum(-1))
    self.assertGreater(float(r[1, 1]), float(r[0, 0]))

  def test_ucbvi_ent_uniform_on_deterministic_chain(self):
    # 3-state chain, both actions lead to distinct states from the middle.
    mdp = envs.chain_mdp(3, horizon=4)
    counts = 50.0 * jnp.asarray(mdp.P)
    pis, _ = mex.ucbvi_ent_plan(counts, 4, clip=False)
    close(pis[0, 1], [0.5, 0.5], atol=1e-3)

  def test_ucbvi_ent_bonus_scales_with_vmax_of_step_h(self):
    # S = 1, A = 2, H = 2, N = 4 per action, δ = 0.1, γ = 1, no clip:
    # R = 0, both actions tie, so V_h = b₁(h) + b₂ + V_{h+1} + ln 2, with
    # v_max = [2 ln 2, ln 2, 0] and (log(4SAH/δ) = ln 160)
    #   b₁(h) = sqrt((ln 160 + ln(4e·4·9))/4)·v_max[h] = 1.66170·v_max[h],
    #   b₂ = sqrt((ln 160 + ln²4·ln 40)/4) + β_ent2/4 = 1.99388 (β_ent2 = 1).
    counts = jnp.full((1, 2, 1), 4.0)
    c, b2, l2 = 1.6616999665, 1.9938826525, math.log(2)
    _, v = mex.ucbvi_ent_plan(counts, 2, clip=False)  # default: v_max[h]
    close(v[1, 0] - b2 - l2, c * l2, rtol=1e-5)  # b₁ at h = 1: c·ln 2
    close(v[:, 0], [8.8294676, 3.8388325, 0.0], rtol=1e-5)
    _, v_h = mex.ucbvi_ent_plan(counts, 2, clip=False, bonus_vmax="h")
    close(v_h, v)
    # The v_max[h + 1] reading has no concentration bonus at the last step.
    _, v_next = mex.ucbvi_ent_plan(counts, 2, clip=False, bonus_vmax="next")
    close(v_next[:, 0], [6.5258623, 2.6870298, 0.0], rtol=1e-5)
    with self.assertRaisesRegex(ValueError, "bonus_vmax"):
      mex.ucbvi_ent_plan(counts, 2, bonus_vmax="H")


# --- DORAEMON (B7) ----------------------------------------------------------
class DoraemonVectorsTest(absltest.TestCase):

  def test_beta_closed_forms(self):
    with jax.enable_x64(True):  # betaln differences cancel in float32
      f = lambda *a: [jnp.float64(x) for x in a]
      close(doraemon.beta_entropy(*f(1.0, 1.0)), 0.0, atol=1e-9)
      close(doraemon.beta_entropy(*f(2.0, 2.0)), -0.125093, atol=1e-6)
      close(doraemon.beta_entropy(*f(100.0, 100.0)), -1.925880, atol=1e-6)
      close(doraemon.beta_kl(*f(2.0, 2.0, 1.0, 1.0)), 0.125093, atol=1e-6)
      close(doraemon.beta_kl(*f(100.0, 100.0, 90.0, 90.0)), 0.002694,
            atol=1e-6)

  def test_doraemon_step_moves_to_trust_region_edge(self):
    d = doraemon.BetaDist(jnp.full(2, 100.0), jnp.full(2, 100.0),
                          jnp.zeros(2), jnp.ones(2))
    xi = doraemon.sample(jax.random.PRNGKey(0), d, (64,))
    close(doraemon.success_estimate(d, d, xi, jnp.ones(64)), 1.0, atol=1e-5)
    new, m = jax.jit(doraemon.doraemon_update, static_argnums=3)(
        d, xi, jnp.ones(64), doraemon.DoraemonConfig())
    self.assertGreater(float(doraemon.entropy(new)), float(doraemon.entropy(d)))
    self.assertTrue(0.6 * 0.005 < float(m["kl_step"]) <= 0.005 + 1e-6)


# --- MOSS (B8) --------------------------------------------------------------
class MossVectorsTest(absltest.TestCase):

  def test_moss_vectors(self):
    e = jnp.array([[0.0], [1.0], [3.0]])
    close(moss.knn_distances(e, e, 2), [[0, 1], [0, 1], [0, 2]], atol=1e-6)
    r, s = moss.moss_reward(e, e, jnp.zeros(3, jnp.int32),
                            moss.knn_stats_init(), k=2)
    close(s.mean, 0.66666, atol=1e-4)
    close(s.var, 0.55557, atol=1e-4)
    close(r, [0.26217, 0.26217, 0.78833], atol=1e-4)
    r, _ = moss.moss_reward(e, e, jnp.array([0, 0, 1]), moss.knn_stats_init(),
                            k=2)
    close(r, [0.26217, 0.26217, -0.78833], atol=1e-4)
    mode, skill = moss.skill_schedule(jax.random.PRNGKey(0), 100, 8)
    self.assertTrue(int(mode[0]) == 0 and int(mode[-1]) == 1)
    self.assertEqual(float(jnp.abs(skill[0, 4:]).sum()), 0.0)
    self.assertEqual(float(jnp.abs(skill[-1, :4]).sum()), 0.0)


# --- MD-VI / M-DQN (B9) -----------------------------------------------------
class MdviVectorsTest(absltest.TestCase):

  def test_mdvi_bandit_vectors(self):
    st_, pis = mdvi.mdvi_solve(_bandit(), 0.9, 0.1, 400)
    close(st_.psi[0], [10.0, 0.0], atol=1e-3)
    close(pis[-1, 0], [0.99995, 4.54e-5], atol=1e-5)
    close(pis[0, 0], [0.73106, 0.26894], atol=1e-5)
    _, pis0 = mdvi.mdvi_solve(_bandit(), 0.5, 0.0, 30)  # τ = 0: softmax(k r / λ)
    close(pis0[2, 0], jax.nn.softmax(jnp.array([3.0, 0.0]) / 0.5), atol=1e-5)
    self.assertGreater(float(pis0[-1, 0, 0]), 0.999)

  def test_munchausen_target_limits(self):
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    qs = jax.random.normal(k[0], (5, 3))
    qn = jax.random.normal(k[1], (5, 3))
    a, r, disc = jnp.array([0, 1, 2, 0, 1]), jnp.ones(5), jnp.full(5, 0.9)
    soft = r + disc * 0.5 * jax.nn.logsumexp(qn / 0.5, -1)
    close(mdvi.munchausen_target(qs, qn, a, r, disc, 0.5, 0.0), soft,
          atol=1e-5)
    y = mdvi.munchausen_target(qs, qn, a, r, disc, 1e-4, 0.9)
    adv = jnp.take_along_axis(qs, a[:, None], -1)[:, 0] - qs.max(-1)
    close(y, r + 0.9 * jnp.clip(adv, -1, 0) + disc * qn.max(-1), atol=1e-3)


# --- TRPO (B10) -------------------------------------------------------------
class TrpoVectorsTest(absltest.TestCase):

  def test_trpo_vectors(self):
    g = jnp.array([1.0, 0.0])
    step, _, _ = trpo.natural_step(g, lambda v: v, 0.01, 15, 0.0)
    close(step, [0.141421, 0.0], atol=1e-6)
    step, _, beta = trpo.natural_step(g, lambda v: v, 0.01, 15, 0.1)
    close(beta, 0.148324, atol=1e-6)
    close(step, [0.134840, 0.0], atol=1e-6)

  def test_conjugate_gradient_matches_solve(self):
    m = jax.random.normal(jax.random.PRNGKey(0), (6, 6))
    a = m @ m.T + 6 * jnp.eye(6)
    b = jnp.arange(6.0)
    close(trpo.conjugate_gradient(lambda v: a @ v, b, 30),
          jnp.linalg.solve(a, b), rtol=1e-4, atol=1e-5)

  def test_trpo_line_search_rejects_kl_violation(self):
    # KL is 100x the quadratic the step assumes: every candidate breaks δ.
    sur = lambda p: p["x"][0]
    kl_ok = lambda p: 0.5 * jnp.sum(p["x"] ** 2)
    kl_bad = lambda p: 500.0 * jnp.sum(p["x"] ** 2) * (p["x"][0] > 1e-3)
    p0 = {"x": jnp.zeros(2)}
    new, info = trpo.trpo_step(p0, sur, kl_ok, 0.01, damping=0.0)
    self.assertTrue(float(info["accepted"]) == 1.0 and float(new["x"][0]) > 0)
    new, info = trpo.trpo_step(p0, sur, lambda p: kl_ok(p) + kl_bad(p), 1e-4,
                               damping=0.0, max_backtracks=3)
    self.assertEqual(float(info["accepted"]), 0.0)
    close(new["x"], p0["x"])


# --- BoBW (B11) -------------------------------------------------------------
class BobwVectorsTest(absltest.TestCase):

  def test_bobw_vectors(self):
    with jax.enable_x64(True):
      ftrl = jax.jit(bobw.ftrl_policy, static_argnums=2)
      L = jnp.array([0.0, 1.0], jnp.float64)
      close(bobw.ftrl_policy(L, 1.0, "shannon"), [0.731059, 0.268941],
            atol=1e-6)
      close(bobw.ftrl_normalizer(L, 1.0, "tsallis"), 1.132242, atol=1e-6)
      close(bobw.ftrl_policy(L, 1.0, "tsallis"), [0.780048, 0.219952],
            atol=1e-6)
      close(bobw.ftrl_normalizer(L, 1.0, "logbarrier"), (1 + 5 ** 0.5) / 2,
            atol=1e-9)
      close(bobw.ftrl_policy(L, 1.0, "logbarrier"), [0.618034, 0.381966],
            atol=1e-6)
      for reg in bobw.REGULARIZERS:
        p = bobw.ftrl_policy(jnp.array([0.3, 1.2, -0.4, 2.0]), 1.7, reg)
        close(p.sum(), 1.0, atol=1e-9)
        self.assertTrue(bool(jnp.all(jnp.diff(p[jnp.array([2, 0, 1, 3])]) < 0)))
        close(bobw.ftrl_policy(jnp.full(3, 0.7), 2.0, reg), jnp.full(3, 1 / 3),
              atol=1e-9)
      # the unnormalised FTRL formula already sums to one at ν
      nu = bobw.ftrl_normalizer(L, 1.0, "tsallis")
      close(jnp.sum((L + nu) ** -2.0), 1.0, atol=1e-9)


# --- MoCo (B12) -------------------------------------------------------------
class MocoVectorsTest(absltest.TestCase):

  def test_moco_correction(self):
    ph = jnp.array([0.2, 0.3, 0.5])
    phi = jnp.array([[0.0, 1.0, 2.0]])
    q, lam = moco.maxent_correction(ph, phi, phi @ ph)
    close(q, ph, atol=1e-6)
    close(lam, 0.0, atol=1e-6)
    p = jnp.array([0.5, 0.25, 0.25])
    q, _ = moco.maxent_correction(ph, jnp.eye(3), p)
    close(q, p, atol=1e-5)
    psi = jnp.array([1.4])
    q, _ = moco.maxent_correction(ph, phi, psi)
    close(phi @ q, psi, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
