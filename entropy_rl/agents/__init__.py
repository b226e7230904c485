"""Multi-turn LLM agents: rollouts, environments and entropy methods.

The modules ``_*.py`` are private: import every public name from this
package (``from entropy_rl import agents; agents.epo(...)``),
as with optax.
"""

from entropy_rl.agents._empg import empg
from entropy_rl.agents._empg import empg_step_advantages
from entropy_rl.agents._empg import empg_token_advantages
from entropy_rl.agents._epo import epo
from entropy_rl.agents._epo import EPOState
from entropy_rl.agents._epo import phase_weight
from entropy_rl.agents._aepo_agentic import agentic_aepo
from entropy_rl.agents._aepo_agentic import branch_decision
from entropy_rl.agents._aepo_agentic import entropy_aware_advantage
from entropy_rl.agents._aepo_agentic import global_sample_budget
from entropy_rl.agents._branching import branching_rollout
from entropy_rl.agents._branching import BranchingConfig
from entropy_rl.agents._branching import pre_monitor_budget
from entropy_rl.agents._dr_po import dr_po
from entropy_rl.agents._dr_po import dr_po_turns
from entropy_rl.agents._dr_po import rollin_lengths
from entropy_rl.agents._dr_po import rollin_processor
from entropy_rl.agents._dr_po import turn_rollin
from entropy_rl.agents._epf import annealing_temperature
from entropy_rl.agents._epf import entropic_particle_filter
from entropy_rl.agents._spear import add_rows
from entropy_rl.agents._spear import init_replay_buffer
from entropy_rl.agents._spear import init_replay_state
from entropy_rl.agents._spear import recalibrate
from entropy_rl.agents._spear import replay_advantages
from entropy_rl.agents._spear import replay_loss
from entropy_rl.agents._spear import replay_pass
from entropy_rl.agents._spear import ReplayConfig
from entropy_rl.agents._spear import ReplayState
from entropy_rl.agents._spear import replay_weight
from entropy_rl.agents._spear import spear_clip_cov
from entropy_rl.agents._spear import toolcall_bonus
from entropy_rl.agents._spear import toolcall_reward
from entropy_rl.agents._calculator import calculator_task
from entropy_rl.agents._calculator import calculator_tokenizer
from entropy_rl.agents._calculator import CalculatorEnv
from entropy_rl.agents._calculator import safe_eval
from entropy_rl.agents._envs import AgentEnv
from entropy_rl.agents._envs import EnvSpec
from entropy_rl.agents._envs import JaxEnvAsPython
from entropy_rl.agents._envs import PythonEnv
from entropy_rl.agents._rollout import rollout
from entropy_rl.agents._turns import make_python_rollout
from entropy_rl.agents._turns import policy_turn
from entropy_rl.agents._turns import python_rollout
from entropy_rl.agents._turns import sample_turn
from entropy_rl.agents._layouts import Episodes
from entropy_rl.agents._layouts import model_inputs
from entropy_rl.agents._layouts import policy_batch
from entropy_rl.agents._layouts import trajectories_to_turns
from entropy_rl.agents._layouts import TrajBatch
from entropy_rl.agents._layouts import TurnBatch
from entropy_rl.agents._layouts import turns_to_trajectories
from entropy_rl.agents._token_game import token_game
from entropy_rl.agents._train import AgentInputs
from entropy_rl.agents._train import episode_advantages
from entropy_rl.agents._train import episode_grpo
from entropy_rl.agents._train import make_agent_train_step
from entropy_rl.agents._train import mix_replay
from entropy_rl.agents._train import train_inputs

__all__ = (
    "TRANSFORMS",
    "add_rows",
    "AgentEnv",
    "agentic_aepo",
    "AgentInputs",
    "annealing_temperature",
    "branch_decision",
    "branching_rollout",
    "BranchingConfig",
    "calculator_task",
    "calculator_tokenizer",
    "CalculatorEnv",
    "dr_po",
    "dr_po_turns",
    "empg",
    "empg_step_advantages",
    "empg_token_advantages",
    "entropic_particle_filter",
    "entropy_aware_advantage",
    "EnvSpec",
    "episode_advantages",
    "episode_grpo",
    "Episodes",
    "epo",
    "EPOState",
    "global_sample_budget",
    "init_replay_buffer",
    "init_replay_state",
    "JaxEnvAsPython",
    "make_agent_train_step",
    "make_python_rollout",
    "mix_replay",
    "model_inputs",
    "phase_weight",
    "policy_batch",
    "policy_turn",
    "pre_monitor_budget",
    "python_rollout",
    "PythonEnv",
    "recalibrate",
    "replay_advantages",
    "replay_loss",
    "replay_pass",
    "replay_weight",
    "ReplayConfig",
    "ReplayState",
    "rollin_lengths",
    "rollin_processor",
    "rollout",
    "safe_eval",
    "sample_turn",
    "spear_clip_cov",
    "token_game",
    "toolcall_bonus",
    "toolcall_reward",
    "train_inputs",
    "TrajBatch",
    "trajectories_to_turns",
    "turn_rollin",
    "TurnBatch",
    "turns_to_trajectories",
)

# The agent methods a config may name (``config.regularizers.<name>.kind``),
# explicit and alphabetised; the agent builder looks kinds up here, then in
# ``entropy_rl.regularizers.TRANSFORMS``.
TRANSFORMS = {
    "agentic_aepo": agentic_aepo,
    "dr_po": dr_po,
    "dr_po_turns": dr_po_turns,
    "empg": empg,
    "episode_advantages": episode_advantages,
    "epo": epo,
    "replay_advantages": replay_advantages,
    "spear_clip_cov": spear_clip_cov,
    "toolcall_reward": toolcall_reward,
}
