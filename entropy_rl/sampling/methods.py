"""Deprecated alias of `entropy_rl.sampling.processors` (renamed).

``entropy_rl.sampling.methods.X`` keeps resolving to
``entropy_rl.sampling.processors.X`` for one release; import from
``entropy_rl.sampling`` (the public names) or from ``processors``.
"""

from typing import Any

from entropy_rl.sampling import processors as _processors


def __getattr__(name: str) -> Any:
  return getattr(_processors, name)
