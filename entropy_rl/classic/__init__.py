"""Classic and continuous-control entropy methods, on device (spec Part B).

Loops (``make_train(config) -> train(rng, ...)``, one jitted ``lax.scan``,
vmap over seeds and hyperparameters): :mod:`~entropy_rl.classic.sac` (one SAC
skeleton; its variants ERA, band-limited, ACE, MaxInfoRL, DIAYN are pieces in
:mod:`~entropy_rl.classic.sac_pieces`),
:mod:`~entropy_rl.classic.ppo` (PPO through :func:`entropy_rl.policy_loss`),
:mod:`~entropy_rl.classic.trpo`, :mod:`~entropy_rl.classic.doraemon`,
:mod:`~entropy_rl.classic.mdqn` (Munchausen-DQN),
:mod:`~entropy_rl.classic.moss_agent` (MOSS: CIC skills + DDPG).
Tabular: :mod:`~entropy_rl.classic.mdvi`,
:mod:`~entropy_rl.classic.maxent_exploration`,
:mod:`~entropy_rl.classic.bobw`, :mod:`~entropy_rl.classic.moco`.
Pieces: :mod:`~entropy_rl.classic.moss`,
:mod:`~entropy_rl.classic.local_entropy` (Entropy-SGD, an optax transformation).
"""

from entropy_rl.classic import ace
from entropy_rl.classic import bandlimited
from entropy_rl.classic import bobw
from entropy_rl.classic import diayn
from entropy_rl.classic import doraemon
from entropy_rl.classic import local_entropy
from entropy_rl.classic import envs
from entropy_rl.classic import era
from entropy_rl.classic import maxent_exploration
from entropy_rl.classic import maxinfo
from entropy_rl.classic import mdqn
from entropy_rl.classic import mdvi
from entropy_rl.classic import moco
from entropy_rl.classic import moss
from entropy_rl.classic import moss_agent
from entropy_rl.classic import nets
from entropy_rl.classic import ppo
from entropy_rl.classic import sac
from entropy_rl.classic import sac_pieces
from entropy_rl.classic import tabular
from entropy_rl.classic import trpo
from entropy_rl.classic.ace import causal_weights
from entropy_rl.classic.ace import direct_lingam
from entropy_rl.classic.ace import soft_reset
from entropy_rl.classic.bandlimited import band_limited_q
from entropy_rl.classic.bobw import bobw_po
from entropy_rl.classic.bobw import ftrl_policy
from entropy_rl.classic.diayn import pseudo_reward as diayn_reward
from entropy_rl.classic.doraemon import doraemon_update
from entropy_rl.classic.local_entropy import entropy_sgd
from entropy_rl.classic.local_entropy import scale_by_local_entropy
from entropy_rl.classic.era import era_log_std
from entropy_rl.classic.era import truncated_normal_entropy
from entropy_rl.classic.maxent_exploration import entgame_plan
from entropy_rl.classic.maxent_exploration import ucbvi_ent_plan
from entropy_rl.classic.maxinfo import information_gain
from entropy_rl.classic.mdqn import MDQNConfig
from entropy_rl.classic.mdvi import mdvi_solve
from entropy_rl.classic.mdvi import munchausen_target
from entropy_rl.classic.moco import maxent_correction
from entropy_rl.classic.moco import mocovi
from entropy_rl.classic.moss import moss_reward
from entropy_rl.classic.moss_agent import MOSSConfig
from entropy_rl.classic.ppo import PPOConfig
from entropy_rl.classic.sac import SACConfig
from entropy_rl.classic.trpo import trpo_step
from entropy_rl.classic.trpo import TRPOConfig

__all__ = (
    "MDQNConfig", "MOSSConfig", "PPOConfig", "SACConfig", "TRPOConfig",
    "ace", "band_limited_q", "bandlimited", "bobw", "bobw_po",
    "causal_weights", "diayn",
    "diayn_reward", "direct_lingam", "doraemon", "doraemon_update",
    "entgame_plan",
    "entropy_sgd", "envs", "era", "era_log_std",
    "ftrl_policy", "information_gain", "local_entropy", "maxent_correction",
    "maxent_exploration", "maxinfo", "mdqn", "mdvi", "mdvi_solve", "moco",
    "mocovi", "moss", "moss_agent", "moss_reward", "munchausen_target",
    "nets", "ppo", "sac", "sac_pieces",
    "scale_by_local_entropy", "soft_reset", "tabular", "trpo", "trpo_step",
    "truncated_normal_entropy",
    "ucbvi_ent_plan",
)
