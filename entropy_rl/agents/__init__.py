"""Multi-turn LLM agents: rollouts, environments and entropy methods."""

from entropy_rl.agents.empg import empg
from entropy_rl.agents.empg import empg_step_advantages
from entropy_rl.agents.empg import empg_token_advantages
from entropy_rl.agents.epo import epo
from entropy_rl.agents.epo import EPOState
from entropy_rl.agents.epo import phase_weight
from entropy_rl.agents.aepo_agentic import agentic_aepo
from entropy_rl.agents.aepo_agentic import branch_decision
from entropy_rl.agents.aepo_agentic import entropy_aware_advantage
from entropy_rl.agents.aepo_agentic import global_sample_budget
from entropy_rl.agents.dr_po import dr_po
from entropy_rl.agents.dr_po import rollin_lengths
from entropy_rl.agents.dr_po import rollin_processor
from entropy_rl.agents.epf import annealing_temperature
from entropy_rl.agents.epf import entropic_particle_filter
from entropy_rl.agents.spear import add_rows
from entropy_rl.agents.spear import init_replay_buffer
from entropy_rl.agents.spear import recalibrate
from entropy_rl.agents.spear import replay_weight
from entropy_rl.agents.spear import toolcall_bonus
from entropy_rl.agents.spear import toolcall_reward
