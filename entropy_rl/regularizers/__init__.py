"""The catalogue of entropy methods, each an :class:`~entropy_rl.EntropyTransform`."""

from entropy_rl.core.advantages import grpo_advantages
from entropy_rl.core.advantages import reinforce_pp_advantages
from entropy_rl.core.advantages import rloo_advantages
from entropy_rl.core.kl import kl_in_reward
from entropy_rl.core.kl import kl_penalty
from entropy_rl.core.rewards import overlong_reward_shaping
from entropy_rl.regularizers.entropy import adaptive_entropy
from entropy_rl.regularizers.entropy import AdaptiveEntropyState
from entropy_rl.regularizers.entropy import entropy_bonus
