"""Deprecated: the old home of the agent environments and rollouts.

Split into :mod:`entropy_rl.agents._envs` (the environment protocols:
``EnvSpec``, ``AgentEnv``, ``PythonEnv``, ``JaxEnvAsPython``),
:mod:`entropy_rl.agents._turns` (the context buffer, policy turns, the
plain on-device rollout and the Python rollout) and
:mod:`entropy_rl.agents._rollout` (``rollout``, which dispatches to the
branching rollout), so that ``_branching`` no longer imports the module
that imports it. This module only re-exports the names it had, for code
written against it; import them from :mod:`entropy_rl.agents` instead.
It will be removed.
"""

from entropy_rl.agents._envs import AgentEnv
from entropy_rl.agents._envs import EnvSpec
from entropy_rl.agents._envs import JaxEnvAsPython
from entropy_rl.agents._envs import PythonEnv
from entropy_rl.agents._rollout import rollout
from entropy_rl.agents._turns import append_turn
from entropy_rl.agents._turns import Buffer
from entropy_rl.agents._turns import DECODES
from entropy_rl.agents._turns import DecodeState
from entropy_rl.agents._turns import feed
from entropy_rl.agents._turns import init_buffer
from entropy_rl.agents._turns import init_decode
from entropy_rl.agents._turns import make_python_rollout
from entropy_rl.agents._turns import policy_turn
from entropy_rl.agents._turns import python_rollout
from entropy_rl.agents._turns import PythonRollout
from entropy_rl.agents._turns import reset_keys
from entropy_rl.agents._turns import rollout_keys
from entropy_rl.agents._turns import sample_turn
from entropy_rl.agents._turns import turn_keys
from entropy_rl.agents._turns import TurnSample

__all__ = (
    "AgentEnv",
    "append_turn",
    "Buffer",
    "DECODES",
    "DecodeState",
    "EnvSpec",
    "feed",
    "init_buffer",
    "init_decode",
    "JaxEnvAsPython",
    "make_python_rollout",
    "policy_turn",
    "python_rollout",
    "PythonEnv",
    "PythonRollout",
    "reset_keys",
    "rollout",
    "rollout_keys",
    "sample_turn",
    "turn_keys",
    "TurnSample",
)
