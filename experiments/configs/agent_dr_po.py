"""DR-PO: dataset reset policy optimisation for agents (spec A7).

Chang et al. 2024, https://arxiv.org/abs/2404.08495. Each episode is, with
probability β = ``rollout.dataset_reset.reset_prob`` (the paper's 1.0),
reset to a state of the offline data: the first L ~ U{1, …, ℓ−1} turns of a
reference trajectory are teacher-forced (the roll-in, through
``entropy_rl.agents.rollin_processor``; the environment answers them as
usual), then the policy plays on. The forced turns are out of the policy
gradient (the ``dr_po`` member, ``entropy_rl.agents.dr_po_turns``); the
return counts every turn. The reference here is the token game's scripted
evidence gathering: ℓ = ``demo_turns`` tool calls ``[TOOL, VALUE, VALUE,
VALUE]`` (slot 0), so resets start from states with tool observations the
policy must learn to use. ``reset_prob = 0`` is plain GRPO.

  python -m experiments.main --config=experiments/configs/agent_dr_po.py:tiny \
      --workdir=runs/agent_dr_po
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  if c.env.kind != "token_game":
    raise ValueError("agent_dr_po needs the token game (size 'tiny'): the "
                     "dataset resets are wired into the on-device rollout")
  c.name = "dr_po"
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "dr_po"),
      advantages=dict(kind="episode_advantages"),
      dr_po=dict(kind="dr_po_turns")))
  c.rollout.dataset_reset.update(enabled=True, reset_prob=1.0, demo_turns=3,
                                 demo_action=(2, 8, 8, 8))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """β: 0 (plain GRPO), 0.5, 1."""
  del arg
  return [{"rollout.dataset_reset.reset_prob": p} for p in (0.0, 0.5, 1.0)]
