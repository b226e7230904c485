"""Rollout hooks: the generic machinery, DAPO dynamic sampling, and the
AEPO and CURE hooks run by the loop."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl import builders
from entropy_rl import regularizers
from entropy_rl.core import combine
from entropy_rl.core import rollout as rollout_lib
from entropy_rl.core import types as core_types
from entropy_rl.regularizers import _cure as cure_lib
from entropy_rl.training import hooks
from entropy_rl.training import iteration as it_lib
from entropy_rl.training import loop
from entropy_rl.training import types
from experiments.configs import aepo as aepo_config
from experiments.configs import cure as cure_config
from experiments.configs import dapo as dapo_config
from tests import training_loop_test

B, G, N = 3, 4, 2  # groups per batch, rows per group, response length

# Rewards of (round, group, member). Round 0: groups 0 and 2 tie (dropped),
# group 1 kept (the spec's example). Round 1: groups 0 and 2 kept, group 1
# ties. Round 2: everything kept (never reached with 3 rounds: full after
# round 1). Round 3 (the padding case): all tie.
TABLE = np.array([
    [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]],
    [[0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]],
    [[1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]],
    [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]],
], np.float32)


def fake_collect(state, prompts, key):
  """A deterministic fake round: prompt token 0 is 100·round + group; rows
  are member-major (row = member·B + group), so groups are interleaved;
  response token 0 encodes (round, group, member)."""
  del state, key
  tok = prompts.tokens[:, 0]
  rnd, grp = tok // 100, tok % 100
  member = jnp.repeat(jnp.arange(G), B)
  g_of_row = jnp.tile(jnp.arange(B), G)
  code = rnd[g_of_row] * 100 + grp[g_of_row] * 10 + member
  rows = B * G
  ro = types.Rollout(
      prompt=prompts.tokens[g_of_row], prompt_mask=prompts.mask[g_of_row],
      response=jnp.stack([code, code], 1).astype(jnp.int32),
      response_mask=jnp.ones((rows, N), jnp.float32),
      logp=jnp.zeros((rows, N)), entropy=jnp.zeros((rows, N)),
      rewards=jnp.asarray(TABLE)[rnd[g_of_row], grp[g_of_row], member],
      group_ids=g_of_row.astype(jnp.int32))
  return ro, {"accuracy": jnp.mean(ro.rewards)}


def round_prompts(rounds):
  toks = np.array([[100 * r + g, 5] for r in rounds for g in range(B)],
                  np.int32)
  return it_lib.Prompts(jnp.asarray(toks), jnp.ones(toks.shape, bool))


class DynamicSamplingTest(absltest.TestCase):

  def test_group_keep_spec_example(self):
    # {[1,1,1,1], [1,0,0,0], [0,0,0,0]} keeps only the second (spec 1.4 f).
    r = jnp.asarray(TABLE[0].reshape(-1))
    keep = hooks.group_keep(r, jnp.repeat(jnp.arange(3), 4), 3)
    np.testing.assert_array_equal(keep, [False, True, False])
    # A singleton group is kept.
    keep = hooks.group_keep(jnp.array([1.0, 1.0, 1.0]),
                            jnp.array([0, 0, 1]), 2)
    np.testing.assert_array_equal(keep, [False, True])

  def check_full(self, out, m):
    # Kept groups in round order: (r0, g1), (r1, g0), (r1, g2).
    codes = np.asarray(out.response[:, 0]).reshape(B, G)
    np.testing.assert_array_equal(codes, [[10, 11, 12, 13],
                                          [100, 101, 102, 103],
                                          [120, 121, 122, 123]])
    np.testing.assert_array_equal(out.group_ids, np.repeat(np.arange(B), G))
    np.testing.assert_array_equal(np.asarray(out.rewards).reshape(B, G),
                                  [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(out.response_mask, np.ones((B * G, N)))
    # Round 0 dropped 2 groups, round 1 dropped 1; round 2 never ran.
    self.assertEqual(float(m["dynamic/filtered_groups"]), 3.0)
    self.assertEqual(float(m["dynamic/kept_groups"]), 3.0)
    self.assertEqual(float(m["dynamic/rounds"]), 2.0)
    self.assertEqual(float(m["dynamic/padded_groups"]), 0.0)
    self.assertAlmostEqual(float(m["dynamic/filtered_frac"]), 0.5)
    # Round 0's own metrics: mean of TABLE[0] = 5/12.
    self.assertAlmostEqual(float(m["accuracy"]), 5 / 12, places=6)

  def test_drops_tied_groups_until_full(self):
    run = jax.jit(hooks.dynamic_sampling(fake_collect, num_groups=B,
                                         max_rounds=3))
    out, m = run(None, round_prompts([0, 1, 2]), jax.random.PRNGKey(0))
    self.check_full(out, m)
    # The Python-loop version (host rewards) gives the same batch.
    prompts = round_prompts([0, 1, 2])
    calls = []

    def collect_round(r):
      calls.append(r)
      return fake_collect(None, hooks.round_prompts(prompts, r, B), None)

    select = jax.jit(lambda buf, keep: hooks.select_groups(buf, keep, B))
    out2, m2 = hooks.python_dynamic_sampling(collect_round, select,
                                             num_groups=B, max_rounds=3)
    self.assertEqual(calls, [0, 1])
    self.check_full(out2, m2)

  def test_pads_with_masked_groups_after_max_rounds(self):
    run = jax.jit(hooks.dynamic_sampling(fake_collect, num_groups=B,
                                         max_rounds=2))
    out, m = run(None, round_prompts([0, 3]), jax.random.PRNGKey(0))
    # Only (r0, g1) is kept; two dropped groups fill the batch, masked.
    codes = np.asarray(out.response[:, 0]).reshape(B, G)
    np.testing.assert_array_equal(codes[0], [10, 11, 12, 13])
    mask = np.asarray(out.response_mask).reshape(B, G, N)
    np.testing.assert_array_equal(mask[0], 1.0)
    np.testing.assert_array_equal(mask[1:], 0.0)
    self.assertEqual(float(m["dynamic/kept_groups"]), 1.0)
    self.assertEqual(float(m["dynamic/filtered_groups"]), 5.0)
    self.assertEqual(float(m["dynamic/padded_groups"]), 2.0)
    self.assertEqual(float(m["dynamic/rounds"]), 2.0)

  def test_nothing_filtered_is_round_zero(self):
    run = jax.jit(hooks.dynamic_sampling(fake_collect, num_groups=B,
                                         max_rounds=3))
    out, m = run(None, round_prompts([2, 0, 0]), jax.random.PRNGKey(0))
    want, _ = fake_collect(None, round_prompts([2]), None)
    want = hooks.group_sorted(want)
    jax.tree.map(np.testing.assert_array_equal, out, want)
    self.assertEqual(float(m["dynamic/rounds"]), 1.0)
    self.assertEqual(float(m["dynamic/filtered_groups"]), 0.0)


class AepoHookTest(absltest.TestCase):

  def rollout(self, rows, groups, rewards, code):
    return types.Rollout(
        prompt=jnp.zeros((rows, 2), jnp.int32),
        prompt_mask=jnp.ones((rows, 2), bool),
        response=jnp.full((rows, N), code, jnp.int32) + jnp.arange(rows)[:,
                                                                         None],
        response_mask=jnp.ones((rows, N), jnp.float32),
        logp=jnp.zeros((rows, N)), entropy=jnp.zeros((rows, N)),
        rewards=jnp.asarray(rewards, jnp.float32),
        group_ids=jnp.repeat(jnp.arange(groups, dtype=jnp.int32),
                             rows // groups), aux={})

  def test_assembles_selected_rows_with_unit_advantage(self):
    # 4 prompts x 2 samples; AEPO samples prompt 0 only (1/4), 2 samples.
    d_rew = [1, 0, 1, 1, 0, 0, 1, 0]
    r_rew = [0, 1]  # GRPO: A = (-0.707, +0.707): row 1 selected
    d = self.rollout(8, 4, d_rew, 100)
    r = self.rollout(2, 1, r_rew, 200)
    spec = regularizers.aepo_rollout_hook(
        dict(target_entropy=0.5, n_max=60), state_name="aepo")
    hook = spec.build(rollout_lib.HookContext(num_prompts=4))
    tstate = combine.named_chain(
        ("aepo", regularizers.aepo(0.5))).init(None)
    state = types.TrainState(step=0, params=None, opt_state=None,
                             transform_state=tstate, rng=None,
                             nonfinite_steps=0)
    prompts = it_lib.Prompts(jnp.zeros((4, 2), jnp.int32),
                             jnp.ones((4, 2), bool))
    d, r = (it_lib.with_rewards(x, x.rewards) for x in (d, r))
    out, m = hook.finish(state, prompts, (d, r))
    # h_prev = 0 <= H*: n_reg = min(N_sel = 1, 60) = 1 row replaced.
    self.assertEqual(float(m["aepo/n_sel"]), 1.0)
    self.assertEqual(float(m["aepo/n_reg_rows"]), 1.0)
    self.assertAlmostEqual(float(m["aepo/reg_temperature"]), 1.2)
    np.testing.assert_array_equal(out.response[:, 0],
                                  [201, 101, 102, 103, 104, 105, 106, 107])
    np.testing.assert_array_equal(out.aux["aepo_reg"],
                                  [1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out.rewards, [1, 0, 1, 1, 0, 0, 1, 0])
    # GRPO of the full main batch (before replacement), std ddof=1:
    # groups (1,0): ±0.7071; (1,1), (0,0): 0; (1,0): ±0.7071; row 0 -> 1.
    s = 1 / np.sqrt(2) / (1 + 1e-6 * np.sqrt(2))  # 0.5 / (0.7071 + 1e-6)
    np.testing.assert_allclose(out.aux["aepo_adv"],
                               [1, -s, 0, 0, 0, 0, s, -s], atol=1e-6)
    # The inserted chain member makes them the batch's advantages.
    pb = core_types.PolicyBatch(
        logp=jnp.zeros((8, N)), old_logp=jnp.zeros((8, N)),
        advantages=jnp.full((8, N), 7.0),
        mask=jnp.ones((8, N)).at[0, 1].set(0.0), aux=out.aux)
    pb2, _ = regularizers.aepo_rollout_advantages().prepare(pb, ())
    np.testing.assert_allclose(pb2.advantages[:, 0],
                               [1, -s, 0, 0, 0, 0, s, -s], atol=1e-6)
    self.assertEqual(float(pb2.advantages[0, 1]), 0.0)  # masked token

    # The controller settings are the chain member's: n_max = 0 is GRPO.
    hook0 = regularizers.aepo_rollout_hook(dict(n_max=0)).build(
        rollout_lib.HookContext(num_prompts=4))
    out0, m0 = hook0.finish(state, prompts, (d, r))
    self.assertEqual(float(m0["aepo/n_reg_rows"]), 0.0)
    np.testing.assert_array_equal(out0.response[:, 0], np.arange(100, 108))
    with self.assertRaisesRegex(TypeError, "target"):
      regularizers.aepo_rollout_hook(dict(target=0.5))

  def test_builders_insert_advantage_member_after_estimator(self):
    c = aepo_config.get_config("tiny")
    spec = builders.build_rollout_hook(c)
    self.assertEqual(spec.name, "aepo")
    self.assertTrue(spec.mixes_groups)
    self.assertEqual(spec.rows_per_prompt(4), 4)
    self.assertEqual([n for n, _ in spec.after_advantages],
                     ["aepo_rollout_advantages"])
    t = builders.build_transform(
        c.regularizers, after_advantages=(
            ("x", regularizers.aepo_rollout_advantages()),))
    self.assertEqual(list(t.init(None).keys()), ["advantages", "x", "aepo"])
    # AEPO replaces rows across groups: no group filter, no second hook.
    c.rollout.dynamic_sampling.enabled = True
    with self.assertRaisesRegex(ValueError, "dynamic sampling"):
      builders.build_rollout_hook(c)
    c.rollout.dynamic_sampling.enabled = False
    c.rollout.cure.enabled = True
    with self.assertRaisesRegex(ValueError, "cannot be combined"):
      builders.build_rollout_hook(c)
    c = aepo_config.get_config("tiny")
    c.regularizers.order = ("advantages",)
    with self.assertRaisesRegex(ValueError, "kind 'aepo'"):
      builders.build_rollout_hook(c)


class WithModelTest(training_loop_test.TinyExperimentTest):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.batch = cls.batches[0]

  def test_disabled_hooks_are_the_plain_loop(self):
    exp = self.exp
    self.assertIsNone(exp.rollout_hook)
    fns = exp.step_functions
    self.assertNotIn("hook", fns)
    p = loop._prompts(self.batch, True)
    reward = exp.task.jax_reward_fn
    plain = jax.jit(it_lib.make_rl_iteration(self.rollout_fn, reward,
                                             self.train_step, num_samples=4))
    want, want_m = plain(self.state0, p)
    got, got_m = jax.jit(fns["iteration"])(self.state0, p)
    for k in ("loss", "reward", "entropy", "accuracy"):
      self.assertEqual(float(got_m[k]), float(want_m[k]), k)
    jax.tree.map(np.testing.assert_array_equal, got.params, want.params)
    # The hook machinery with the plain hook is the same program too; and
    # dynamic sampling whose first round drops nothing is the plain step.
    # (Reward: the sum of the response ids, which differs between the 4
    # samples of every prompt here.)
    reward = lambda pt, rt, m, a: jnp.sum(rt * m, -1) / 100.0  # noqa: E731
    plain = jax.jit(it_lib.make_rl_iteration(self.rollout_fn, reward,
                                             self.train_step, num_samples=4))
    want, want_m = plain(self.state0, p)
    collect = hooks.dynamic_sampling(
        hooks.jax_collect(hooks.plain_hook(self.rollout_fn), reward),
        num_groups=4, max_rounds=2)
    two = jax.tree.map(lambda x: jnp.concatenate([x, x]), p)
    got, got_m = jax.jit(hooks.make_hooked_iteration(
        collect, self.train_step))(self.state0, two)
    self.assertEqual(float(got_m["dynamic/rounds"]), 1.0)
    self.assertEqual(float(got_m["dynamic/filtered_groups"]), 0.0)
    for k in ("loss", "reward", "entropy", "accuracy"):
      self.assertEqual(float(got_m[k]), float(want_m[k]), k)
    jax.tree.map(np.testing.assert_array_equal, got.params, want.params)

  def test_cure_rows_and_prefixes(self):
    exp = self.exp
    tok = exp.tokenizer
    table = cure_lib.eligible_table(tok, "non_special")
    spec = regularizers.cure_rollout_hook(n2=2, top_k=3, eligible=table,
                                          reward_on="full")
    self.assertEqual(spec.rows_per_prompt(2), 6)
    base = loop._sample_fn(exp, exp.sampling)
    hook = spec.build(rollout_lib.HookContext(
        sample_fn=lambda prm, t, m, k, n, ts: base(exp.fns, prm, t, m, k,
                                                   num_samples=n),
        num_samples=2, pad_id=tok.pad_id))
    self.assertIs(hook.reward_view, cure_lib.full_response_view)
    p = loop._prompts(self.batch, True)
    (ro,) = hook.rollouts(self.state0, p, jax.random.PRNGKey(3))
    n, plen = 4, 8  # max_new_tokens, prompt length
    r1 = 4 * 2
    self.assertEqual(ro.response.shape, (r1 * (1 + 2), n))  # 24 rows
    self.assertEqual(ro.prompt.shape, (24, plen + n))
    np.testing.assert_array_equal(
        ro.group_ids, np.concatenate([np.repeat(np.arange(4), 2),
                                      np.repeat(np.arange(4), 2 * 2)]))
    toks, pm = np.asarray(ro.prompt), np.asarray(ro.prompt_mask)
    resp, rmask = np.asarray(ro.response), np.asarray(ro.response_mask)
    t = np.asarray(ro.aux["cure_prefix_len"])
    np.testing.assert_array_equal(t[:r1], 0)
    branched = 0
    for i in range(r1):
      orig_prompt = toks[i][pm[i]]
      np.testing.assert_array_equal(
          orig_prompt, np.asarray(p.tokens[i // 2])[np.asarray(p.mask[i //
                                                                     2])])
      eligible = [j for j in range(1, n) if rmask[i, j] and table[resp[i, j]]]
      for c in range(2):
        row = r1 + i * 2 + c
        ts = int(t[row])
        if eligible:
          self.assertIn(ts, eligible)  # 1 <= t* < N, an eligible token
          branched += 1
        else:
          self.assertEqual(ts, 0)
        # The branch prompt is x ⊕ y[:t*], the critical token excluded.
        want = np.concatenate([orig_prompt, resp[i, :ts]])
        np.testing.assert_array_equal(toks[row][pm[row]], want)
        # The reward view is y[:t*] ⊕ continuation.
        _, full, fmask = cure_lib.full_response_view(
            jax.tree.map(lambda x: x[row:row + 1], ro))
        cont = resp[row][rmask[row] > 0]
        np.testing.assert_array_equal(
            np.asarray(full[0])[np.asarray(fmask[0]) > 0],
            np.concatenate([resp[i, :ts], cont]))
    self.assertGreater(branched, 0)


class ConfigsTest(absltest.TestCase):

  def test_configs_select_hooks(self):
    spec = builders.build_rollout_hook(dapo_config.get_config("tiny"))
    self.assertEqual(spec.name, "plain")  # dynamic sampling of the plain
    self.assertEqual(spec.prompt_batches, 3)
    self.assertEqual(spec.rows_per_prompt(8), 8)
    self.assertIsNotNone(spec.wrap_collect)
    self.assertIsNotNone(spec.host_rounds)
    c = cure_config.get_config("tiny")
    spec = builders.build_rollout_hook(c, builders.build_tokenizer(
        c.tokenizer))
    self.assertEqual(spec.name, "cure")
    self.assertEqual(spec.rows_per_prompt(4), 4 * (1 + 3))  # n2 = 3
    self.assertEqual(spec.prompt_batches, 2)  # dynamic sampling, 2 rounds
    hook = spec.build(rollout_lib.HookContext())
    self.assertIs(hook.reward_view, cure_lib.full_response_view)
    # Character tokenizer: the reference's multi-character rule admits no
    # token; "non_special" admits all but pad/unk/bos/eos.
    tok = builders.build_tokenizer(c.tokenizer)
    self.assertFalse(cure_lib.eligible_table(tok, "multichar").any())
    self.assertEqual(int(cure_lib.eligible_table(tok, "non_special").sum()),
                     tok.vocab_size - 4)
    self.assertIsNone(builders.build_rollout_hook(
        training_loop_test.tiny_config()))
    c.rollout.cure.update(enabled=False)
    c.rollout.update(nope=dict(enabled=True))
    with self.assertRaisesRegex(ValueError, "unknown rollout hook"):
      builders.build_rollout_hook(c)


if __name__ == "__main__":
  absltest.main()
