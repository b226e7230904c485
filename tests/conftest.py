"""pytest set-up: 8 fake CPU devices before JAX starts, float32 everywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import chex  # noqa: E402  (after the XLA flags above)
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_trace_counters():
  """chex.assert_max_traces counts per function name and process; with
  pytest-xdist several tests share a process, so start each test at zero."""
  chex.clear_trace_counter()
  yield
