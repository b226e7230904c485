r"""Pre-flight: compile a config's programs for a TPU slice before running it.

  python -m experiments.preflight \
      --config=experiments/configs/grpo.py:0.5b --topology=v5e-8 \
      --mesh=fsdp:8 [--config.x=y ...] [--programs=train,rollout] \
      [--json=preflight.json]

Builds the config's real programs (the RL update and the rollout sampler,
``entropy_rl.training.preflight``) with abstract parameters (no weights are
read or initialised: a checkpoint's config.json / GGUF metadata, or the
config's ``model.preset``), compiles them ahead of time for the named
topology, and prints per chip: memory (parameters, optimizer, other
arguments, temporaries) against HBM, the collectives and their sizes
(flagging activation- or logit-sized ones), an estimated step time, MFU and
rollout tokens/s. When a program does not fit it says so and searches the
largest batch that does. Times are estimates of the compiled programs
(``entropy_rl.aot``: XLA:TPU's cost model, loops times their trip counts,
collectives at the ICI bandwidth), not measurements.

Topologies: JAX names (``v5e:2x4``) or Cloud names (``v5e-8``, ``v6e-8``,
``v5p-8``); Colab's TPU runtimes are ``v5e-1`` and ``v6e-1``; ``local``
compiles for this machine's devices (on a TPU or GPU host). Compiling for a
TPU from a CPU host needs ``libtpu`` (``pip install -e .[tpu]``).

``--mesh`` sets the ("data", "fsdp", "tensor") sizes, e.g. ``fsdp:8`` or
``data:2,fsdp:4``; by default the config's ``mesh.shape`` (-1 = the rest).
Exit status: 0 when every program fits, 1 when one does not.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path[:size]).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string(
    "topology", "local", "TPU topology (v5e-8, v5e:2x4, v6e-1, ...) or "
    "'local'.")
_MESH = flags.DEFINE_string(
    "mesh", "", "Mesh sizes, e.g. 'fsdp:8' or 'data:2,fsdp:4' (default: "
    "the config's mesh.shape).")
_PROGRAMS = flags.DEFINE_list("programs", ["train", "rollout"],
                              "Programs to compile: train, rollout.")
_FIND_BATCH = flags.DEFINE_bool(
    "find_batch", True, "When a program does not fit, search the largest "
    "batch that does.")
_JSON = flags.DEFINE_string("json", "", "Also write the results here.")


def parse_mesh(text: str, default) -> tuple[int, int, int]:
  """``"fsdp:8"`` / ``"data:2,fsdp:4"`` -> sizes; "" -> ``default``."""
  from entropy_rl import parallel  # pylint: disable=import-outside-toplevel
  if not text:
    return tuple(int(x) for x in default)
  sizes = {}
  for item in text.split(","):
    name, sep, value = item.partition(":")
    name = name.strip()
    if not sep or name not in parallel.MESH_AXES:
      raise ValueError(f"--mesh item {item!r}: expected axis:size with axis "
                       f"one of {parallel.MESH_AXES}")
    sizes[name] = int(value)
  return tuple(sizes.get(a, 1) for a in parallel.MESH_AXES)


def run(config, topology: str, mesh_text: str = "",
        programs=("train", "rollout"), find_batch: bool = True):
  """The pre-flight of ``config`` on ``topology``: (results, text)."""
  from entropy_rl import aot  # pylint: disable=import-outside-toplevel
  from entropy_rl import builders  # pylint: disable=import-outside-toplevel
  from entropy_rl import parallel  # pylint: disable=import-outside-toplevel
  from entropy_rl.training import preflight  # pylint: disable=import-outside-toplevel

  topo = aot.local() if topology == "local" else aot.topology(topology)
  sizes = parallel.resolve_mesh_shape(
      parse_mesh(mesh_text, config.mesh.shape), topo.num_devices)
  mesh = aot.mesh_for(topo, dict(zip(parallel.MESH_AXES, sizes)))
  exp = builders.build_experiment(config, abstract=True)
  # The programs are traced under the target mesh (preflight.preflight):
  # backend choices (the attention kernel, the sampler's layout) follow the
  # target, not the host.
  results = preflight.preflight(exp, topo, mesh, programs=programs,
                                find_batch=find_batch)
  return results, preflight.describe(results, topo, mesh)


def main(argv):
  del argv
  results, text = run(_CONFIG.value, _TOPOLOGY.value, _MESH.value,
                      tuple(_PROGRAMS.value), _FIND_BATCH.value)
  print(text, flush=True)
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({k: r.to_dict() for k, r in results.items()}, f, indent=1,
                default=str)
  sys.exit(0 if all(r.fits for r in results.values()) else 1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
