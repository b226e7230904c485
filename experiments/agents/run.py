r"""Deprecated alias of ``python -m experiments.main`` for agent configs.

Agent configs run through the one entry point, like every other config::

  python -m experiments.main \
      --config=experiments/configs/agent_compare.py:tiny --workdir=runs/agents
  python -m experiments.main \
      --config=experiments/configs/agent_spear.py:calc --workdir=runs/spear

This script keeps the old command lines working by translating them
(``--config path:size`` -> ``--config=path:size``; no ``--config``: the
GRPO/EPO/EMPG comparison ``agent_compare.py:<--size>``; ``--steps N`` ->
``--config.train.num_steps=N``; ``--seeds N`` -> ``--config.num_seeds=N``;
``--set a.b=v`` -> ``--config.a.b=v``) and running ``experiments.main`` in
its place, with the repository root on ``PYTHONPATH`` so that it also works
as ``python experiments/agents/run.py``.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
COMPARE = os.path.join(ROOT, "experiments", "configs", "agent_compare.py")
DEFAULT_METHODS = "grpo,epo,empg"


def translate(argv: list[str]) -> list[str]:
  """The old flags -> ``experiments.main``'s arguments."""
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default=None)
  ap.add_argument("--workdir", default="runs/agents")
  ap.add_argument("--steps", type=int, default=None)
  ap.add_argument("--seeds", type=int, default=None)
  ap.add_argument("--methods", default=DEFAULT_METHODS)
  ap.add_argument("--size", default="tiny")
  ap.add_argument("--set", action="append", default=[])
  args = ap.parse_args(argv)
  if args.methods != DEFAULT_METHODS:
    ap.error("--methods is gone: the comparison's runs are the variants of "
             "experiments/configs/agent_compare.py; run one method with "
             "--config=experiments/configs/agent_<method>.py")
  out = [f"--config={args.config or f'{COMPARE}:{args.size}'}",
         f"--workdir={args.workdir}"]
  if args.steps is not None:
    out.append(f"--config.train.num_steps={args.steps}")
  if args.seeds is not None:
    out.append(f"--config.num_seeds={args.seeds}")
  out += [f"--config.{s}" for s in args.set]
  return out


def main(argv: list[str] | None = None) -> None:
  args = translate(sys.argv[1:] if argv is None else argv)
  print("experiments/agents/run.py is deprecated; running: python -m "
        "experiments.main " + " ".join(args), file=sys.stderr, flush=True)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (ROOT, env.get("PYTHONPATH")) if p)
  os.execve(sys.executable, [sys.executable, "-m", "experiments.main",
                             *args], env)


if __name__ == "__main__":
  main()
