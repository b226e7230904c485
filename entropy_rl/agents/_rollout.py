"""The on-device rollout: independent episodes, or AEPO's branching.

:func:`rollout` is the one entry point of the library for a pure-JAX
:class:`~entropy_rl.agents.AgentEnv`: without ``branching`` every row is an
independent episode (:func:`entropy_rl.agents._turns.plain_rollout`); with
a :class:`~entropy_rl.agents.BranchingConfig` the rows of a group share a
sampling budget and high-entropy turns branch
(:func:`entropy_rl.agents.branching_rollout`, Dong et al. 2025,
https://arxiv.org/abs/2510.14545). The dispatch lives here, above both
modules, so neither imports the other.
"""

from __future__ import annotations

from typing import Any, Sequence

from entropy_rl.agents import _branching as branching_lib
from entropy_rl.agents import _envs as envs_lib
from entropy_rl.agents import _layouts as layouts
from entropy_rl.agents import _turns as turns_lib
from entropy_rl.core import types
from entropy_rl.sampling import processors as processors_lib

PRNGKey = types.PRNGKey


def rollout(fns: Any, params: Any, env: envs_lib.AgentEnv, rng: PRNGKey, *,
            num_groups: int, group_size: int,
            sampling: processors_lib.SamplingMethod = (
                processors_lib.SamplingMethod()),
            processors: Sequence[types.LogitsProcessor] = (),
            processor_params: Sequence[Any] | None = None,
            sampling_params: Sequence[Any] | None = None,
            decode: str = "cache", cache_dtype: Any = None,
            branching: branching_lib.BranchingConfig | None = None
            ) -> layouts.Episodes:
  """Whole episodes of a pure-JAX environment on device (jit-able).

  R = ``num_groups · group_size`` episodes in one ``lax.scan`` over the
  turns; without ``branching`` every row is an independent episode.

  Args:
    fns, params, env, rng, num_groups, group_size, sampling, processors,
      processor_params, sampling_params, decode, cache_dtype: as in
      :func:`entropy_rl.agents._turns.plain_rollout`.
    branching: None (every row an independent episode:
      :func:`entropy_rl.agents._turns.plain_rollout`), or a
      :class:`~entropy_rl.agents.BranchingConfig`: AEPO's entropy-balanced
      branching rollout (:func:`entropy_rl.agents.branching_rollout`, with
      the measured pre-monitoring entropies; call it directly to pass
      ``pre_entropies``).

  Returns:
    :class:`~entropy_rl.agents.Episodes` (L1 and L2).
  """
  kw = dict(num_groups=num_groups, group_size=group_size, sampling=sampling,
            processors=processors, processor_params=processor_params,
            sampling_params=sampling_params, decode=decode,
            cache_dtype=cache_dtype)
  if branching is not None:
    return branching_lib.branching_rollout(fns, params, env, rng,
                                           branching=branching, **kw)
  return turns_lib.plain_rollout(fns, params, env, rng, **kw)
