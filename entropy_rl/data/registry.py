"""Task registry: ``get_task("arithmetic", num_digits=3)`` and friends.

Names: ``"arithmetic"``, ``"countdown"`` (built-in, with JAX checkers),
``"rg:<dataset>"`` (reasoning-gym), ``"jsonl:<path>"`` (a user's GSM8K/MATH
style file), plus anything added with `register_task`.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from entropy_rl.data import arithmetic_task
from entropy_rl.data import countdown_task
from entropy_rl.data import jsonl
from entropy_rl.data import rg_tasks
from entropy_rl.data import types

TaskFactory = Callable[..., types.Task]

_REGISTRY: dict[str, TaskFactory] = {
    "arithmetic": arithmetic_task.arithmetic,
    "countdown": countdown_task.countdown,
}
_PREFIXES: dict[str, TaskFactory] = {
    "rg:": rg_tasks.rg_task,
    "jsonl:": jsonl.jsonl_task,
}


def register_task(name: str, factory: TaskFactory, *,
                  overwrite: bool = False) -> None:
  """Adds ``factory(**kwargs) -> Task`` under ``name``."""
  if not name or ":" in name:
    raise ValueError(f"name must be non-empty without ':', got {name!r}")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"task {name!r} is already registered "
                     "(pass overwrite=True)")
  _REGISTRY[name] = factory


def list_tasks() -> list[str]:
  """Registered names and the ``rg:`` / ``jsonl:`` prefixes."""
  return sorted(_REGISTRY) + [p + "..." for p in _PREFIXES]


def get_task(name: str, **kwargs: Any) -> types.Task:
  """Builds a task by name.

  Args:
    name: "arithmetic", "countdown", "rg:<reasoning-gym name>",
      "jsonl:<path>", or a name given to `register_task`.
    **kwargs: the factory's options (e.g. ``num_digits=3``).

  Returns:
    A `Task`.

  Raises:
    ValueError: unknown name (with close matches).
  """
  for prefix, factory in _PREFIXES.items():
    if name.startswith(prefix):
      return factory(name[len(prefix):], **kwargs)
  if name in _REGISTRY:
    return _REGISTRY[name](**kwargs)
  close = difflib.get_close_matches(name, list(_REGISTRY), 3)
  raise ValueError(f"name: unknown task {name!r}; known: {list_tasks()}"
                   + (f"; did you mean {close}?" if close else ""))
