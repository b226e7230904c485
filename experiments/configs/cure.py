"""CURE stage 1: critical-token re-concatenation, with DAPO's loss.

Li et al. 2025, https://arxiv.org/abs/2508.11016; values from
methods_rlvr.md §11(e) (authors' code github.com/bytedance/CURE,
``recipe/CURE_First_Stage/run_cure_stage_1.sh``): n1 = 4, n2 = 3,
top_k = 20, DAPO loss (0.2 / 0.28, dual clip c = 10, token-mean), dynamic
sampling. Its overlong buffer (512 tokens) is not added (see dapo.py).

Each prompt gets n1 = data.num_samples responses; from each, one of its
top_k highest-entropy eligible tokens t* is picked and n2 continuations
of ``x ⊕ y[:t*]`` are sampled; the group is the n1 (1 + n2) responses,
trained with DAPO (clip-higher, token-mean, dynamic sampling). Stage 2 is plain DAPO
(experiments/configs/dapo.py from the stage-1 checkpoint).

The reference rule admits only tokens whose text is longer than one
character; the :tiny task's tokenizer is character-level, so there every
non-special token is eligible and the reward reads the whole response
``y[:t*] ⊕ continuation`` (the answer spans the branch point).

  python -m experiments.main --config=experiments/configs/cure.py:tiny \
      --workdir=runs/cure
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  size, _ = base.parse_arg(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dapo", eps_low=0.2, eps_high=0.28, dual_c=10.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages",), advantages=dict(kind="grpo_advantages")))
  c.data.num_samples = 4  # n1
  c.rollout.cure.update(enabled=True, n2=3, top_k=20)
  c.rollout.dynamic_sampling.update(enabled=True, max_rounds=2)
  if size == "tiny":
    c.data.prompts_per_step = 16  # 16 x 4 x (1 + 3) = 256 rows
    c.rollout.cure.update(eligible="non_special", reward_on="full")
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"rollout.cure.n2": n} for n in (0, 1, 3)]
