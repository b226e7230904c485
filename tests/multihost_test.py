"""Multi-host data parallelism with jax.distributed on one machine.

Two local processes (2 fake CPU devices each) join one ``jax.distributed``
job (CPU collectives: gloo, ``jax_cpu_collectives_implementation``), each
reads its own grain shard of the prompts, and they run 2 sharded RL
iterations of the :tiny model (sampling, on-device reward, update) as one
4-device program. Checks: the shards are disjoint (process p reads the
examples with index ≡ p mod 2), both processes end with the same
parameters, and those equal a single-process run on 4 fake devices fed the
same global batches (within 1e-5).
"""

import os
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 2
PROMPTS = 4  # global prompts per step (2 per process)


def _config():
  from tests import training_loop_test  # pylint: disable=import-outside-toplevel
  cfg = training_loop_test.tiny_config(num_steps=STEPS)
  cfg.data.prompts_per_step = PROMPTS
  # SGD: the parameter change is proportional to the gradient (Adam's
  # first steps are lr·sign(g), which turns rounding noise in near-zero
  # gradients into lr-sized differences).
  cfg.optimizer.update(name="sgd", learning_rate=0.5, warmup_steps=0)
  cfg.mesh.shape = (4, 1, 1)
  return cfg


def _experiment():
  """The :tiny experiment with a reward that varies inside every group (an
  untrained model never answers right, and all-zero rewards give GRPO no
  gradient): the sum of the response's token ids / 100."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from entropy_rl import builders  # pylint: disable=import-outside-toplevel
  exp = builders.build_experiment(_config())
  reward = lambda p, r, m, a: (r * m).sum(-1) / 100.0  # noqa: E731
  return dataclasses.replace(
      exp, task=dataclasses.replace(exp.task, jax_reward_fn=reward))


def _flat_params(params):
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  leaves = jax.tree.leaves(params)
  return [np.asarray(multihost_utils.process_allgather(x, tiled=True))
          if jax.process_count() > 1 else np.asarray(x) for x in leaves]


def run_steps(exp, batches_fn):
  """``STEPS`` sharded RL iterations; ``batches_fn(k)`` gives step k's host
  prompt batch (this process's rows)."""
  from entropy_rl import parallel  # pylint: disable=import-outside-toplevel
  from entropy_rl.training import loop  # pylint: disable=import-outside-toplevel
  state, state_sh, mesh = loop.init_rl_state(exp, exp.params)
  fns = exp.step_functions
  step = parallel.shard_train_step(fns["iteration"], mesh=mesh,
                                   state_sharding=state_sh)
  losses = []
  for k in range(STEPS):
    prompts = parallel.shard_batch(
        loop._prompts(batches_fn(k), True), mesh)  # pylint: disable=protected-access
    state, m = step(state, prompts)
    losses.append(float(m["loss"]))
  return _flat_params(state.params), losses


def worker(process_id: int, port: int, out: str) -> None:
  """One process of the 2-process job (run in a subprocess)."""
  # CPU collectives across processes: gloo (jax 0.10's default; "none"
  # would fail at the first cross-process reduction).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from entropy_rl import parallel  # pylint: disable=import-outside-toplevel
  parallel.initialize_distributed(f"localhost:{port}", 2, process_id)
  jax.config.update("jax_disable_most_optimizations", True)
  from entropy_rl import data as data_lib  # pylint: disable=import-outside-toplevel
  assert jax.process_count() == 2 and jax.device_count() == 4
  exp = _experiment()
  s = exp.settings
  # The loop's pipeline: shard (process_index, process_count) by default.
  it = iter(data_lib.prompt_dataset(
      exp.task, seed=s.data_seed, batch_size=s.prompts_per_step,
      tokenizer=exp.tokenizer, max_prompt_len=s.max_prompt_len,
      truncate="left"))
  batches = [next(it) for _ in range(STEPS)]
  params, losses = run_steps(exp, lambda k: batches[k])
  np.savez(os.path.join(out, f"proc{process_id}.npz"),
           index=np.stack([b.index for b in batches]),
           shard=np.asarray(parallel.process_shard()),
           losses=np.asarray(losses),
           **{f"p{i}": p for i, p in enumerate(params)})


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


class _Concat:
  """Two processes' host batches as one global batch (process order)."""

  def __init__(self, a, b):
    cat = lambda x, y: np.concatenate([np.asarray(x), np.asarray(y)])  # noqa: E731
    self.tokens, self.mask = cat(a.tokens, b.tokens), cat(a.mask, b.mask)
    self.answer = cat(a.answer, b.answer)
    self.index = cat(a.index, b.index)


class MultiHostTest(absltest.TestCase):

  def test_two_processes_equal_one(self):
    out = tempfile.mkdtemp()
    port = _free_port()
    env = dict(os.environ,
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    procs = [subprocess.Popen(
        [sys.executable, "-c",
         f"from tests import multihost_test as m; m.worker({i}, {port}, "
         f"{out!r})"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT) for i in range(2)]

    # Meanwhile: the single-process run on 4 of this process's 8 fake
    # devices, fed the same global batches (shard 0 rows, then shard 1's).
    from entropy_rl import data as data_lib  # pylint: disable=import-outside-toplevel
    opt = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    try:
      exp = _experiment()
      s = exp.settings
      shards = [data_lib.prompt_map_dataset(
          exp.task, seed=s.data_seed, batch_size=PROMPTS,
          tokenizer=exp.tokenizer, max_prompt_len=s.max_prompt_len,
          truncate="left", shard_index=i, shard_count=2) for i in range(2)]
      want, want_losses = run_steps(
          exp, lambda k: _Concat(shards[0][k], shards[1][k]))
    finally:
      jax.config.update("jax_disable_most_optimizations", opt)

    logs = []
    for p in procs:
      try:
        text, _ = p.communicate(timeout=240)
      except subprocess.TimeoutExpired:
        p.kill()
        text, _ = p.communicate()
      logs.append(text.decode(errors="replace")[-3000:])
      self.assertEqual(p.returncode, 0, "\n".join(logs))
    got = [dict(np.load(os.path.join(out, f"proc{i}.npz"))) for i in (0, 1)]

    # (a) Each process read its own shard: example index ≡ process (mod 2),
    # disjoint, and together the reference's global batches.
    for i, g in enumerate(got):
      np.testing.assert_array_equal(g["shard"], [i, 2])
      self.assertTrue(np.all(g["index"] % 2 == i), g["index"])
    self.assertEmpty(set(got[0]["index"].ravel()) &
                     set(got[1]["index"].ravel()))
    for k in range(STEPS):
      np.testing.assert_array_equal(
          np.concatenate([got[0]["index"][k], got[1]["index"][k]]),
          np.concatenate([shards[0][k].index, shards[1][k].index]))
    # (b) Same parameters on both processes, equal to the 4-device run.
    n = len(want)
    self.assertGreater(n, 5)
    for j in range(n):
      np.testing.assert_array_equal(got[0][f"p{j}"], got[1][f"p{j}"])
      np.testing.assert_allclose(got[0][f"p{j}"], want[j], atol=1e-5,
                                 rtol=0)
    np.testing.assert_allclose(got[0]["losses"], want_losses, atol=1e-5)
    # The steps really trained (the check is not vacuous): Adam moves each
    # weight by about lr = 2e-4 per step.
    moved = max(float(np.abs(w - p).max()) for w, p in zip(
        want, _initial(exp)))
    self.assertGreater(moved, 1e-4)


def _initial(exp):
  return [np.asarray(x) for x in jax.tree.leaves(exp.params)]


if __name__ == "__main__":
  absltest.main()
