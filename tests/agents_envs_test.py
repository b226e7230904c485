"""Agent environments: the E3 token game and the calculator task (no model).

Exact rewards on scripted action sequences, determinism under a key, token
ranges (hypothesis), the safe evaluator, and the calculator environment on
correct / incorrect / malformed actions.
"""

from absl.testing import absltest
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.agents import _token_game as game
from entropy_rl.agents import _calculator as calc
from entropy_rl.agents import _envs as envs_lib

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

TOOL, ANSWER, SLOT, VALUE, NOTHING = (game.TOOL, game.ANSWER, game.SLOT,
                                      game.VALUE, game.NOTHING)


def play(env, key, actions):
  """Runs scripted actions; returns [(obs, reward, done)] and the state."""
  state, obs0 = env.reset(key)
  out = []
  for i, a in enumerate(actions):
    state, obs, r, d = env.step(state, game.scripted_action(*a),
                                jax.random.fold_in(key, 100 + i))
    out.append((np.asarray(obs).tolist(), float(r), bool(d)))
  return obs0, out, state


class TokenGameTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.env = game.token_game(num_slots=2, num_values=4, max_turns=5,
                              p_true=1.0)
    cls.key = jax.random.PRNGKey(3)
    cls.hidden = np.asarray(cls.env.reset(cls.key)[0].key).tolist()

  def test_spec(self):
    s = self.env.spec
    self.assertEqual((s.vocab_size, s.action_len, s.obs_len, s.init_obs_len,
                      s.max_turns), (16, 4, 2, 1, 5))
    self.assertEqual(s.context_len, 1 + 5 * (4 + 2))

  def test_tool_answer_exact(self):
    k0, k1 = self.hidden
    obs0, out, state = play(self.env, self.key, [
        (TOOL, 0), (TOOL, 1), (TOOL, 3),  # slot 3 mod 2 = 1
        (ANSWER, VALUE + k0, VALUE + k1)])
    self.assertEqual(np.asarray(obs0).tolist(), [NOTHING])
    self.assertEqual(out[0], ([SLOT + 0, VALUE + k0], 0.0, False))
    self.assertEqual(out[1], ([SLOT + 1, VALUE + k1], 0.0, False))
    self.assertEqual(out[2], ([SLOT + 1, VALUE + k1], 0.0, False))
    self.assertEqual(out[3], ([ANSWER, VALUE + 1], 10.0, True))
    m = {k: float(v) for k, v in self.env.metrics(state).items()}
    self.assertEqual(m, {"success": 1.0, "n_tool_calls": 3.0,
                         "answered": 1.0, "episode_turns": 4.0})

  def test_wrong_answer_and_digit_modulo(self):
    k0, k1 = self.hidden
    _, out, state = play(self.env, self.key,
                         [(ANSWER, VALUE + k0, VALUE + (k1 + 1) % 4)])
    self.assertEqual(out, [([ANSWER, VALUE], 0.0, True)])
    self.assertEqual(float(self.env.metrics(state)["success"]), 0.0)
    # Digits are read modulo D: VALUE + k + 4 is the same digit.
    _, out, _ = play(self.env, self.key,
                     [(ANSWER, VALUE + k0 + 4, VALUE + k1 + 4)])
    self.assertEqual(out[0][1], 10.0)

  def test_noop_turns_until_max_turns(self):
    _, out, state = play(self.env, self.key, [(0,), (5,), (NOTHING,),
                                              (15,), (4,)])
    self.assertEqual([o for o, _, _ in out], [[NOTHING, NOTHING]] * 5)
    self.assertEqual([r for _, r, _ in out], [0.0] * 5)
    self.assertEqual([d for _, _, d in out], [False] * 4 + [True])
    self.assertEqual(float(self.env.metrics(state)["n_tool_calls"]), 0.0)

  def test_noisy_tool_frequency(self):
    env = game.token_game(num_slots=1, num_values=4, p_true=0.7)
    state, _ = env.reset(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    obs = jax.vmap(lambda k: env.step(state, game.scripted_action(TOOL, 0),
                                      k)[1])(keys)
    right = float(jnp.mean(obs[:, 1] == VALUE + state.key[0]))
    # P(right) = 0.7 + 0.3 / 4 = 0.775; 4000 draws: sd 0.0066.
    self.assertAlmostEqual(right, 0.775, delta=0.03)

  def test_bad_arguments_raise(self):
    with self.assertRaisesRegex(ValueError, "num_slots"):
      game.token_game(num_slots=4)
    with self.assertRaisesRegex(ValueError, "num_values"):
      game.token_game(num_values=9)
    with self.assertRaisesRegex(ValueError, "max_turns"):
      game.token_game(max_turns=0)


_ENV = game.token_game(num_slots=3, num_values=8, max_turns=6)


@jax.jit
def _episode(key, actions):
  """Steps [T, L] actions through one episode (no done gating)."""
  state, obs0 = _ENV.reset(key)

  def body(state, xs):
    a, k = xs
    state, obs, r, d = _ENV.step(state, a, k)
    return state, (obs, r, d)

  keys = jax.random.split(jax.random.fold_in(key, 1), actions.shape[0])
  _, (obs, r, d) = jax.lax.scan(body, state, (actions, keys))
  return obs0, obs, r, d


class AdapterTest(absltest.TestCase):

  def test_pad_tokens(self):
    self.assertEqual(envs_lib.pad_tokens([5, 6], 4, 0), [5, 6, 0, 0])
    self.assertEqual(envs_lib.pad_tokens(np.array([5, 6, 7]), 2, 9), [5, 6])
    self.assertEqual(envs_lib.pad_tokens([], 2, 3), [3, 3])

  def test_jax_env_as_python_plays_the_same_episode(self):
    env = game.token_game(num_slots=2, num_values=4, max_turns=5,
                          p_true=1.0)
    key = jax.random.PRNGKey(3)
    k0, k1 = np.asarray(env.reset(key)[0].key).tolist()
    actions = [(TOOL, 0), (TOOL, 1), (ANSWER, VALUE + k0, VALUE + k1)]
    obs0, out, state = play(env, key, actions)
    py = envs_lib.JaxEnvAsPython(env)
    self.assertEqual(py.reset(key), np.asarray(obs0).tolist())
    # The adapter gets the action's tokens unpadded and drops pad tokens of
    # the observation (token game observations have none).
    py_out = [py.step([c, *a], jax.random.fold_in(key, 100 + i))
              for i, (c, *a) in enumerate(actions)]
    self.assertEqual([(list(o), r, d) for o, r, d in py_out], out)
    self.assertEqual(py.metrics(), {k: float(v) for k, v in
                                    env.metrics(state).items()})
    self.assertEqual(py.metrics()["success"], 1.0)


class TokenGamePropertyTest(absltest.TestCase):

  @hypothesis.settings(max_examples=40, deadline=None)
  @hypothesis.given(seed=st.integers(0, 2**31 - 1),
                    actions=st.lists(st.lists(st.integers(0, 15), min_size=4,
                                              max_size=4),
                                     min_size=6, max_size=6))
  def test_deterministic_and_in_range(self, seed, actions):
    key = jax.random.PRNGKey(seed)
    a = jnp.asarray(actions, jnp.int32)
    first = jax.tree.map(np.asarray, _episode(key, a))
    again = jax.tree.map(np.asarray, _episode(key, a))
    for x, y in zip(first, again):
      np.testing.assert_array_equal(x, y)
    obs0, obs, r, d = first
    for o in (obs0, obs):
      self.assertTrue(np.all((o >= 1) & (o < 16)), o)  # never pad, in V
    self.assertTrue(set(np.unique(r)) <= {0.0, 10.0})
    self.assertTrue(d[-1])  # max_turns = 6


class SafeEvalTest(absltest.TestCase):

  def test_values(self):
    cases = {"15 - 43 - 75": "-103", "2*(3+4)": "14", "7/2": "3.5",
             "1/3": "0.333333", "-(2-5)": "3", "0.5+0.25": "0.75",
             "10/5": "2"}
    for expr, want in cases.items():
      self.assertEqual(calc.safe_eval(expr), want, expr)

  def test_rejects(self):
    for expr in ("1/0", "2**10", "__import__('os')", "a+1", "", "1+",
                 "9" * 20, "(" * 40 + "1" + ")" * 40, "1e30", None, "3 % 2",
                 "[1]", "True+1"):
      self.assertIsNone(calc.safe_eval(expr), expr)


class CalculatorEnvTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    envs, cls.spec, cls.tok = calc.calculator_task(num_envs=1, max_turns=3,
                                                   size=50, seed=0)
    cls.env = envs[0]

  def act(self, text, eos=True):
    ids = self.tok.encode(text) + ([self.tok.eos_id] if eos else [])
    return ids

  def start(self):
    obs = self.env.reset(np.asarray(jax.random.PRNGKey(7)))
    return obs, self.env.item

  def test_reset_observation(self):
    obs, item = self.start()
    self.assertEqual(obs[0], self.tok.bos_id)
    expr = item["metadata"]["expression"]
    self.assertEqual(self.tok.decode(obs[1:]), f"{expr}=?"[-23:])
    # The same key gives the same question.
    obs2 = self.env.reset(np.asarray(jax.random.PRNGKey(7)))
    self.assertEqual(obs, obs2)

  def test_calc_then_correct_answer(self):
    _, item = self.start()
    expr = item["metadata"]["expression"].replace(" ", "")
    obs, r, d = self.env.step(self.act("calc:" + expr))
    self.assertEqual(self.tok.decode(obs), "=" + item["answer"])
    self.assertEqual((r, d), (0.0, False))
    obs, r, d = self.env.step(self.act("answer:" + item["answer"]))
    self.assertEqual((r, d), (1.0, True))
    self.assertEqual(self.env.metrics(), {"success": 1.0,
                                          "n_tool_calls": 1.0,
                                          "answered": 1.0, "malformed": 0.0})

  def test_incorrect_answer(self):
    _, item = self.start()
    wrong = str(int(item["answer"]) + 1)
    obs, r, d = self.env.step(self.act("answer:" + wrong))
    self.assertEqual((r, d), (0.0, True))
    self.assertEqual(self.env.metrics()["success"], 0.0)

  def test_malformed_never_crashes(self):
    self.start()
    bad = [self.act("hello"), self.act("calc:1+"), [99, -5, 5, 3, 7],
           self.act("calc:1/0"), [], self.act("answer:", eos=False)]
    results = []
    for a in bad:
      if self.env.answered:
        self.start()
      results.append(self.env.step(a))
    texts = [self.tok.decode(o) for o, _, _ in results]
    self.assertEqual(texts[0], "?")
    self.assertEqual(texts[1], "=?")
    self.assertEqual(texts[3], "=?")
    self.assertTrue(all(r == 0.0 for _, r, _ in results))
    # The episode is cut at max_turns = 3.
    self.start()
    dones = [self.env.step(self.act("x"))[2] for _ in range(3)]
    self.assertEqual(dones, [False, False, True])


if __name__ == "__main__":
  absltest.main()
