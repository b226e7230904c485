"""Multi-turn LLM agents: rollouts, environments and entropy methods."""

from entropy_rl.agents.empg import empg
from entropy_rl.agents.empg import empg_step_advantages
from entropy_rl.agents.empg import empg_token_advantages
from entropy_rl.agents.epo import epo
from entropy_rl.agents.epo import EPOState
from entropy_rl.agents.epo import phase_weight
