"""XLA flags the command-line entry points set, measured per jaxlib version.

XLA reads ``XLA_FLAGS`` once, when JAX creates its first backend, and aborts
on a flag it does not know, so a flag is only recommended for the jaxlib
versions where it was measured to help (BENCHMARKS.md), and the helpers
never override a flag the user already set. Call
:func:`apply_recommended_flags` before the first JAX computation (the
launchers ``experiments/main.py`` and ``benchmarks/*.py`` do it first thing);
``ENTROPY_RL_XLA_DEFAULTS=0`` turns it off. Library code never calls it.

Measured (2-core CPU, jaxlib 0.10.2, interleaved runs, BENCHMARKS.md):
``--xla_cpu_experimental_ynn_fusion_type=`` (XLA:CPU's own Eigen GEMMs
instead of YNNPACK fusions) makes the policy-gradient train step 5-8%
faster (1.20x the transformers peer instead of 1.11-1.15x) and its float32
matmuls closer to float64; the sampler is unchanged.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

# jaxlib version prefix -> flags measured to help there.
_RECOMMENDED: dict[str, tuple[str, ...]] = {
    "0.10.": ("--xla_cpu_experimental_ynn_fusion_type=",),
}
_OPT_OUT = "ENTROPY_RL_XLA_DEFAULTS"


def recommended_flags(jaxlib_version: str | None = None) -> tuple[str, ...]:
  """The flags measured to help under ``jaxlib_version`` (default: installed).

  Unknown versions get none: XLA aborts on flags it does not know.
  """
  if jaxlib_version is None:
    try:
      jaxlib_version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
      return ()
  for prefix, flags in _RECOMMENDED.items():
    if jaxlib_version.startswith(prefix):
      return flags
  return ()


def _flag_name(flag: str) -> str:
  return flag.lstrip("-").split("=", 1)[0]


def merge_flags(current: str, extra: tuple[str, ...]) -> str:
  """``current`` plus each flag of ``extra`` whose name it does not set."""
  names = {_flag_name(f) for f in current.split()}
  added = [f for f in extra if _flag_name(f) not in names]
  return " ".join([current.strip()] + added if current.strip() else added)


def apply_recommended_flags(
    environ: MutableMapping[str, str] | None = None,
    jaxlib_version: str | None = None) -> tuple[str, ...]:
  """Adds the recommended flags to ``environ["XLA_FLAGS"]``; returns them.

  A flag whose name the user already set keeps the user's value.
  ``ENTROPY_RL_XLA_DEFAULTS=0`` in ``environ`` makes this a no-op. Only
  effective before JAX creates its first backend.
  """
  environ = os.environ if environ is None else environ
  if environ.get(_OPT_OUT, "1").strip().lower() in ("0", "false", "no"):
    return ()
  current = environ.get("XLA_FLAGS", "")
  merged = merge_flags(current, recommended_flags(jaxlib_version))
  if merged != current:
    environ["XLA_FLAGS"] = merged
  names = {_flag_name(f) for f in current.split()}
  return tuple(f for f in recommended_flags(jaxlib_version)
               if _flag_name(f) not in names)
