"""Time-bounded reward checking in a pool of killable worker processes.

A policy's text is untrusted input: one response such as
``\\boxed{9^{9^{9^{9}}}}`` costs a symbolic checker seconds of pure-Python
(sympy) work, and a batch a policy learns to fill with them stalls a step for
minutes. `ScorePool.score` runs a picklable checker over a batch in a few
persistent worker processes (started from a clean ``forkserver`` process,
never forked from the JAX process) and bounds every response:

* soft bound: the worker arms a CPU-time timer (``ITIMER_PROF``) of
  ``budget`` seconds; when it fires, the check is interrupted between two
  Python bytecodes and the response scores 0 (a *timeout*);
* hard bound: a check the timer cannot interrupt (a long C call) is killed
  by the parent once its worker has spent ``2 * budget + 0.1`` CPU seconds
  on it (or ``budget + grace`` wall seconds); the worker is replaced and
  the response is a timeout too.

Results keep the batch order; a response's score does not depend on which
worker scored it. `default_pool` is a process-wide pool of
``min(4, cpu_count)`` workers, shut down at exit; each pytest-xdist worker
has its own.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import multiprocessing
import multiprocessing.connection as mp_connection
import multiprocessing.spawn as mp_spawn
import os
import pickle
import signal
import threading
import time
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from entropy_rl.data import types

_LOG = logging.getLogger(__name__)

DEFAULT_GRACE = 2.0      # Wall seconds past the budget before a kill.
CPU_GRACE = 0.1          # CPU seconds past twice the budget before a kill.
STARTUP_TIMEOUT = 300.0  # A worker not ready by then is given up.
_POLL = 0.02             # Seconds between checks of the workers' CPU time.
_MAX_FNS = 8             # Checkers a worker keeps unpickled.


class BatchScores(NamedTuple):
  """Scores of a batch, in its order.

  Attributes:
    rewards: float32 ``[B]`` (0 for a timeout).
    parse_failed: bool ``[B]``.
    timeouts: bool ``[B]``: the check ran over its budget (or its worker
      died) and was stopped.
  """
  rewards: np.ndarray
  parse_failed: np.ndarray
  timeouts: np.ndarray


def from_results(results: Sequence[types.RewardResult],
                 timeouts: Sequence[bool] | None = None) -> BatchScores:
  n = len(results)
  return BatchScores(
      np.asarray([r.reward for r in results], np.float32).reshape(n),
      np.asarray([r.parse_failed for r in results], bool).reshape(n),
      np.zeros(n, bool) if timeouts is None
      else np.asarray(timeouts, bool).reshape(n))


# ------------------------------------------------------------------ worker


class _Overrun(BaseException):
  """Raised in a worker when the CPU budget is spent (a BaseException, so
  checkers' ``except Exception`` clauses do not swallow it)."""


_ARMED = False


def _on_prof(signum, frame):
  del signum, frame
  if _ARMED:
    raise _Overrun()


def _run_one(fn: Callable[..., Any], text: Any, answer: Any, budget: float
             ) -> tuple[float, bool, str | None] | None:
  """``safe_reward(fn, text, answer)`` under a CPU timer; None on overrun."""
  global _ARMED
  try:
    _ARMED = True
    # Re-fires every 10 ms until disarmed, in case a checker swallows it.
    signal.setitimer(signal.ITIMER_PROF, budget, 0.01)
    try:
      out = types.safe_reward(fn, text, answer)
    finally:
      _ARMED = False
      signal.setitimer(signal.ITIMER_PROF, 0)
  except _Overrun:
    return None
  return (float(out.reward), bool(out.parse_failed),
          None if out.extracted is None else str(out.extracted)[:256])


def preload_of(fn: Any) -> tuple[str, ...]:
  """Modules a checker needs (its ``preload`` attribute, or its
  ``functools.partial``'s function's)."""
  mods = getattr(fn, "preload", None)
  if mods is None:
    mods = getattr(getattr(fn, "func", None), "preload", ())
  return tuple(str(m) for m in mods)


_WARM: set[str] = set()


def warm_up(modules: Sequence[str] = ()) -> None:
  """Imports ``modules`` and runs each loaded checker library's one-off
  set-up (math-verify's first parses), once per process."""
  import importlib  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  for m in modules:
    try:
      importlib.import_module(m)
    except ImportError:
      pass
  if "math_verify" in sys.modules and "math_verify" not in _WARM:
    _WARM.add("math_verify")
    from entropy_rl.data import math_answers  # pylint: disable=import-outside-toplevel
    for pred, gold in _WARM_MATH:
      math_answers.math_reward(f"\\boxed{{{pred}}}", gold)


# Answer shapes whose first parse in a process is slow (one of each).
_WARM_MATH = (("x+1", "1+x"), ("\\frac{1}{2}", "0.5"), ("(1,2)", "(1, 2)"),
              ("[1,2)", "[1, 2)"), ("x=3", "3"), ("2\\sqrt{2}", "\\sqrt{8}"),
              ("\\{1,2\\}", "\\{2,1\\}"), ("3\\pi", "\\pi\\cdot 3"),
              ("x^2+2x+1", "(x+1)^2"))


def _cpu_seconds(pid: int) -> float | None:
  """CPU time (user + system) of process ``pid``; None where unknown."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
  except (OSError, IndexError, ValueError):
    return None


try:
  _CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):
  _CLK_TCK = 100.0


def _worker_main(conn: Any) -> None:
  """A worker's loop: ``load`` checkers, ``score`` one response at a time."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # The parent decides.
  signal.signal(signal.SIGPROF, _on_prof)
  import gc  # pylint: disable=import-outside-toplevel
  gc.callbacks.clear()  # (JAX's:) a timer signal there would be ignored.
  try:
    os.dup2(2, 1)  # Stray prints go to stderr, not to a pipe (xdist's).
  except OSError:
    pass
  fns: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
  conn.send(("ready", os.getpid()))
  while True:
    try:
      msg = conn.recv()
    except (EOFError, OSError):
      return
    if msg[0] == "stop":
      return
    if msg[0] == "load":
      _, key, blob = msg
      try:
        fns[key] = pickle.loads(blob)
        warm_up(preload_of(fns[key]))
        while len(fns) > _MAX_FNS:
          fns.popitem(last=False)
        err = None
      except BaseException as e:  # pylint: disable=broad-except
        err = f"{type(e).__name__}: {e}"
      conn.send(("loaded", key, err))
    elif msg[0] == "score":
      _, job, key, text, answer, budget = msg
      t0 = time.process_time()
      out = _run_one(fns[key], text, answer, budget)
      conn.send(("scored", job, out, time.process_time() - t0))


# ------------------------------------------------------------------ parent


_START_LOCK = threading.Lock()


def _start_without_main(proc: Any) -> None:
  """Starts ``proc`` without re-running the parent's ``__main__`` in it.

  A spawn / forkserver child normally imports the parent's main module
  first (so that functions defined there unpickle); a training script
  without an ``if __name__ == "__main__"`` guard would then run again in
  every worker. The workers need none of it: their target and the checkers
  live in importable modules.
  """
  orig = mp_spawn.get_preparation_data

  def preparation_data(name):
    data = orig(name)
    data.pop("init_main_from_path", None)
    data.pop("init_main_from_name", None)
    return data

  with _START_LOCK:
    mp_spawn.get_preparation_data = preparation_data
    try:
      proc.start()
    finally:
      mp_spawn.get_preparation_data = orig


class _Worker:
  """A worker process, its pipe and what it is doing."""

  def __init__(self, ctx: Any):
    parent, child = ctx.Pipe(duplex=True)
    self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True,
                            name="entropy_rl-score-worker")
    _start_without_main(self.proc)
    child.close()
    self.conn = parent
    self.state = "starting"  # starting | idle | loading | busy
    self.since = time.monotonic()
    self.keys: set[bytes] = set()
    self.job = -1
    self.deadline = 0.0
    self.cpu0: float | None = None

  def kill(self) -> None:
    try:
      self.proc.kill()
      self.proc.join(5)
    except (OSError, ValueError, AssertionError):
      pass
    self.conn.close()

  def stop(self) -> None:
    try:
      self.conn.send(("stop",))
    except (OSError, ValueError, BrokenPipeError):
      pass
    self.proc.join(1)
    if self.proc.is_alive():
      self.proc.kill()
      self.proc.join(5)
    self.conn.close()


def _context(preload: Sequence[str]) -> Any:
  """The forkserver context (spawn where there is none). The fork server
  (one per process, started on first use) imports ``preload`` and warms
  the checkers, so workers start warm in milliseconds."""
  methods = multiprocessing.get_all_start_methods()
  if "forkserver" in methods:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["entropy_rl.data.bounded", *preload,
                                "entropy_rl.data._score_warmup"])
    return ctx
  return multiprocessing.get_context("spawn")


TIMEOUT_RESULT = types.RewardResult(0.0, False, None)


class ScorePool:
  """A few persistent worker processes that score responses under a budget.

  A worker whose check goes on past its budget (the CPU timer could not
  interrupt it: a long C call) is killed once it has used ``2 * budget +
  CPU_GRACE`` CPU seconds on it (read from ``/proc``), or ``budget +
  grace`` wall seconds where that is unavailable or the worker is starved.

  Args:
    num_workers: processes (default ``min(4, cpu_count)``).
    grace: wall seconds past a response's budget after which its worker is
      killed whatever its CPU time.
    startup_timeout: seconds a new worker may take to start and load the
      checker before the batch's remaining responses are scored in-process.
  """

  def __init__(self, num_workers: int | None = None, *,
               grace: float = DEFAULT_GRACE,
               startup_timeout: float = STARTUP_TIMEOUT):
    n = num_workers or min(4, os.cpu_count() or 1)
    if n < 1:
      raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if grace <= 0:
      raise ValueError(f"grace must be > 0 seconds, got {grace}")
    self.num_workers = int(n)
    self.grace = float(grace)
    self.startup_timeout = float(startup_timeout)
    self._ctx = None
    self._workers: list[_Worker] = []
    self._lock = threading.Lock()
    self.kills = 0  # Workers killed over the pool's life (stuck checks).
    self._deaths = 0
    self._closed = False

  # -- lifecycle

  def start(self, preload: Sequence[str] = ()) -> "ScorePool":
    """Starts the workers now (they start lazily otherwise).

    Args:
      preload: modules the checkers need (e.g. ``("math_verify",)``;
        `preload_of(task.reward_fn)`), imported once by the fork server.
    """
    with self._lock:
      self._fill(preload)
    return self

  def _fill(self, preload: Sequence[str] = ()) -> None:
    if self._closed:
      raise RuntimeError("ScorePool: used after close()")
    if self._ctx is None:
      self._ctx = _context(preload)
    self._workers = [w for w in self._workers if w.state != "dead"]
    while len(self._workers) < self.num_workers:
      self._workers.append(_Worker(self._ctx))

  def pids(self) -> list[int]:
    """Process ids of the live workers."""
    return [w.proc.pid for w in self._workers if w.proc.is_alive()]

  def close(self) -> None:
    """Stops every worker (idempotent)."""
    with self._lock:
      for w in self._workers:
        w.stop()
      self._workers = []
      self._closed = True

  def __enter__(self) -> "ScorePool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # -- scoring

  def score(self, fn: Callable[[str, Any], Any], texts: Sequence[Any],
            answers: Sequence[Any], budget: float) -> BatchScores:
    """``safe_reward(fn, texts[i], answers[i])`` for every ``i``, bounded.

    Args:
      fn: a picklable ``reward_fn(text, answer)`` (a module-level function,
        a ``functools.partial`` of one, or an object with a picklable state).
      texts: the responses.
      answers: one answer per response.
      budget: CPU seconds per response (> 0).

    Returns:
      `BatchScores` in the batch order.

    Raises:
      pickle.PicklingError, TypeError, AttributeError: ``fn`` is not
        picklable (score in-process instead).
    """
    if len(texts) != len(answers):
      raise ValueError(f"{len(texts)} texts for {len(answers)} answers")
    if not budget > 0:
      raise ValueError(f"budget must be > 0 seconds, got {budget}")
    blob = pickle.dumps(fn)
    key = hashlib.blake2b(blob, digest_size=16).digest()
    with self._lock:
      return self._score(fn, blob, key, texts, answers, float(budget))

  def _score(self, fn, blob, key, texts, answers, budget) -> BatchScores:
    n = len(texts)
    results: list[types.RewardResult | None] = [None] * n
    timeouts = np.zeros(n, bool)
    pending = collections.deque(range(n))
    self._fill(preload_of(fn))
    for w in self._workers:  # A new batch: a new window to get ready.
      if w.state in ("starting", "loading"):
        w.since = time.monotonic()
    local = False  # Workers failed to start: score the rest in-process.
    self._deaths = 0  # Workers that died by themselves during this call.
    while pending or any(w.state == "busy" for w in self._workers):
      now = time.monotonic()
      for w in self._workers:
        if w.state == "idle" and key not in w.keys:
          try:
            w.conn.send(("load", key, blob))
          except OSError:  # It died while idle.
            self._lost(w)
            continue
          w.state, w.since = "loading", now
        elif w.state == "idle" and pending:
          i = pending.popleft()
          try:
            w.conn.send(("score", i, key, texts[i], answers[i], budget))
          except (pickle.PicklingError, TypeError, AttributeError):
            results[i] = types.safe_reward(fn, texts[i], answers[i])
            continue
          except OSError:
            pending.appendleft(i)
            self._lost(w)
            continue
          w.state, w.job, w.deadline = "busy", i, now + budget + self.grace
          w.cpu0 = _cpu_seconds(w.proc.pid)
      if self._deaths > 2 * self.num_workers + 2:
        _LOG.warning("reward workers keep dying: scoring in-process")
        local = True
        break
      if any(w.state == "dead" for w in self._workers):
        self._workers = [w for w in self._workers if w.state != "dead"]
        self._fill()
        continue
      waiting = [w for w in self._workers if w.state != "idle"]
      if not waiting:
        if pending and not self._workers:
          local = True
          break
        continue
      limits = [w.deadline if w.state == "busy"
                else w.since + self.startup_timeout for w in waiting]
      timeout = max(0.0, min(limits) - time.monotonic())
      if any(w.state == "busy" and w.cpu0 is not None for w in waiting):
        timeout = min(timeout, _POLL)
      ready = mp_connection.wait([w.conn for w in waiting], timeout)
      for w in waiting:
        if w.conn in ready and not self._receive(w, results, timeouts):
          local = True
      now = time.monotonic()
      for w in self._workers:
        if w.state == "busy" and (now > w.deadline or self._cpu_over(
            w, budget)):
          _LOG.warning("reward check of response %d overran its %.3gs "
                       "budget and could not be interrupted: killing its "
                       "worker (pid %s)", w.job, budget, w.proc.pid)
          results[w.job], timeouts[w.job] = TIMEOUT_RESULT, True
          w.kill()
          w.state = "dead"
          self.kills += 1
        elif w.state in ("starting", "loading") and (
            now > w.since + self.startup_timeout):
          _LOG.warning("reward worker (pid %s) not ready after %.0fs: "
                       "scoring in-process", w.proc.pid, self.startup_timeout)
          w.kill()
          w.state = "dead"
          local = True
      if local:
        break
      self._workers = [w for w in self._workers if w.state != "dead"]
      if not local:
        self._fill()
    if local:
      for w in self._workers:
        if w.state == "busy":  # Give up on it; its job is scored below.
          pending.append(w.job)
          w.kill()
          w.state = "dead"
      self._workers = [w for w in self._workers if w.state != "dead"]
      for i in pending:
        results[i] = types.safe_reward(fn, texts[i], answers[i])
    return from_results(results, timeouts)

  def _lost(self, w: _Worker) -> None:
    """Records a worker that died by itself."""
    w.proc.join(1)
    _LOG.warning("reward worker (pid %s) died (exit code %s)", w.proc.pid,
                 w.proc.exitcode)
    w.kill()
    w.state = "dead"
    self._deaths += 1

  @staticmethod
  def _cpu_over(w: _Worker, budget: float) -> bool:
    if w.cpu0 is None:
      return False
    cpu = _cpu_seconds(w.proc.pid)
    return cpu is not None and cpu - w.cpu0 > 2 * budget + CPU_GRACE

  def _receive(self, w: _Worker, results, timeouts) -> bool:
    """Handles one message of ``w``; False if it cannot load the checker."""
    try:
      msg = w.conn.recv()
    except (EOFError, OSError):  # The worker died (e.g. killed for memory).
      if w.state == "busy":
        results[w.job], timeouts[w.job] = TIMEOUT_RESULT, True
      self._lost(w)
      return True
    if msg[0] == "ready":
      w.state = "idle"
    elif msg[0] == "loaded":
      _, key, err = msg
      w.state = "idle"
      if err is not None:
        _LOG.warning("reward worker (pid %s) could not load the checker "
                     "(%s): scoring in-process", w.proc.pid, err)
        return False
      w.keys.add(key)
    elif msg[0] == "scored":
      _, job, out, _ = msg
      if out is None:
        results[job], timeouts[job] = TIMEOUT_RESULT, True
      else:
        results[job] = types.RewardResult(*out)
      w.state = "idle"
    return True


_DEFAULT: ScorePool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> ScorePool:
  """The process-wide pool (created on first use, closed at exit)."""
  global _DEFAULT
  with _DEFAULT_LOCK:
    if _DEFAULT is None or _DEFAULT._closed:  # pylint: disable=protected-access
      _DEFAULT = ScorePool()
      atexit.register(_DEFAULT.close)
    return _DEFAULT


def shutdown_default_pool() -> None:
  """Closes the process-wide pool (a later use starts a new one)."""
  global _DEFAULT
  with _DEFAULT_LOCK:
    if _DEFAULT is not None:
      _DEFAULT.close()
      _DEFAULT = None


_WARNED: set[str] = set()


def _picklable(fn: Any) -> bool:
  try:
    pickle.dumps(fn)
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def score_batch(fn: Callable[[str, Any], Any], texts: Sequence[Any],
                answers: Sequence[Any], *, budget: float | None,
                pool: ScorePool | None = None, name: str = "task"
                ) -> BatchScores:
  """Scores a batch: in the pool under ``budget`` CPU seconds per response,
  or in-process (serially, unbounded) when ``budget`` is None / 0 or ``fn``
  is not picklable (a closure; logged once per task name)."""
  if len(texts) != len(answers):
    raise ValueError(f"{len(texts)} responses for {len(answers)} answers")
  if budget and len(texts) and not _picklable(fn):
    if name not in _WARNED:
      _WARNED.add(name)
      _LOG.warning("%s: reward_fn %r is not picklable, so its responses are "
                   "scored in-process without the time budget; make it a "
                   "module-level function or a functools.partial of one",
                   name, fn)
    budget = None
  if not budget or not len(texts):
    return from_results([types.safe_reward(fn, t, a)
                         for t, a in zip(texts, answers)])
  return (pool or default_pool()).score(fn, texts, answers, budget)
