"""pytest set-up: 8 fake CPU devices before JAX starts, float32 everywhere,
and one XLA compilation cache for the whole test session.

The cache: many tests compile the same program (the tiny config's train
step, its sampler, ...) in separate processes (the two pytest-xdist
workers, and the ``experiments.main``, notebook and pre-flight
subprocesses some tests start) or from freshly built ``jax.jit`` wrappers
that the in-memory cache does not share. JAX's persistent compilation cache
is keyed by the lowered program, its compile options, the backend, the
jaxlib version and the XLA flags, so a hit is an executable that the
compiler produced for the same program and options. (Not always byte for
byte the one a fresh compile gives: XLA:CPU may emit the same kernels in
another order, which is why JAX's cache-contents check fails on CPU.)
The first process (the xdist controller, or pytest itself without ``-n``)
makes a temporary directory and exports it as ``JAX_COMPILATION_CACHE_DIR``
before JAX is imported; workers and subprocesses inherit the variable, and
the directory is removed when that process ends. A directory already set
in the environment is used as it is (and kept). Programs compiled for a
TPU topology from this CPU host (``entropy_rl.aot``) are written too but
cannot be read back without a TPU client: JAX warns and compiles them
again, as it would without the cache; that warning is silenced here.
"""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_OWN_CACHE_DIR = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _OWN_CACHE_DIR = tempfile.mkdtemp(prefix="entropy_rl_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE_DIR
# Every program is written, however fast its compile (JAX's default skips
# those under a second: most of the tests' are, with the small configs).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


import chex  # noqa: E402  (after the XLA flags above)
import pytest  # noqa: E402


def pytest_configure(config):
  # A filter's fields are split at colons: "." stands for each in the text.
  config.addinivalue_line(
      "filterwarnings",
      r"ignore:Error reading persistent compilation cache entry for '[^']*'. "
      r"JaxRuntimeError. INVALID_ARGUMENT. PjRtCompiler must be constructed "
      r"with a Client:UserWarning")


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE_DIR is not None:
    shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_trace_counters():
  """chex.assert_max_traces counts per function name and process; with
  pytest-xdist several tests share a process, so start each test at zero."""
  chex.clear_trace_counter()
  yield


@pytest.fixture(autouse=True, scope="module")
def _unoptimised_compiles(request):
  """XLA with most optimisations off for a module that sets
  ``UNOPTIMISED_COMPILES = True``: its tests compile whole rollouts or
  training iterations and compare paths or check behaviour, not speed or
  compiled memory, and unoptimised XLA compiles them faster."""
  if not getattr(request.module, "UNOPTIMISED_COMPILES", False):
    yield
    return
  import jax  # pylint: disable=import-outside-toplevel
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)
