"""The catalogue of entropy methods, each an :class:`~entropy_rl.EntropyTransform`.

The modules ``_*.py`` are private: import every public name from this
package (``from entropy_rl import regularizers; regularizers.steer(...)``),
as with optax.
"""

from entropy_rl.core.advantages import grpo_advantages
from entropy_rl.core.advantages import reinforce_pp_advantages
from entropy_rl.core.advantages import rloo_advantages
from entropy_rl.core.kl import kl_in_reward
from entropy_rl.core.kl import kl_penalty
from entropy_rl.core.rewards import overlong_reward_shaping
from entropy_rl.regularizers._entropy import adaptive_entropy
from entropy_rl.regularizers._entropy import AdaptiveEntropyState
from entropy_rl.regularizers._entropy import entropy_bonus
from entropy_rl.regularizers._ce_gppo import ce_gppo
from entropy_rl.regularizers._ce_gppo import ce_gppo_objective
from entropy_rl.regularizers._cov import clip_cov
from entropy_rl.regularizers._cov import clip_cov_objective
from entropy_rl.regularizers._cov import kl_cov
from entropy_rl.regularizers._cov import kl_cov_objective
from entropy_rl.regularizers._cov import token_covariance
from entropy_rl.regularizers._forking import forking_tokens
from entropy_rl.regularizers._lp_reg import lp_reg
from entropy_rl.regularizers._lp_reg import lp_reg_objective
from entropy_rl.regularizers._steer import steer
from entropy_rl.regularizers._steer import token_entropy_change
from entropy_rl.regularizers._aepo import aepo
from entropy_rl.regularizers._aepo import aepo_assemble
from entropy_rl.regularizers._aepo import aepo_controller
from entropy_rl.regularizers._aepo import aepo_objective
from entropy_rl.regularizers._aepo import aepo_select
from entropy_rl.regularizers._aepo import AepoState
from entropy_rl.regularizers._aepo import temperature_processor
from entropy_rl.regularizers._diagnostics import entropy_change_exact
from entropy_rl.regularizers._diagnostics import entropy_change_law
from entropy_rl.regularizers._gtpo import grpo_s
from entropy_rl.regularizers._gtpo import gtpo
from entropy_rl.regularizers._qae import qae
from entropy_rl.regularizers._siren import siren
from entropy_rl.regularizers._siren import siren_objective
from entropy_rl.regularizers._siren import SirenState
from entropy_rl.regularizers._egsw import egsw
from entropy_rl.regularizers._entrocraft import entrocraft
from entropy_rl.regularizers._entropy_min import em_ft
from entropy_rl.regularizers._entropy_min import em_ft_objective
from entropy_rl.regularizers._entropy_min import em_rl
from entropy_rl.regularizers._entropy_min import entropy_rewards
from entropy_rl.regularizers._entropy_min import rent
from entropy_rl.regularizers._grpo_lambda import grpo_lambda
from entropy_rl.regularizers._haepo import haepo
from entropy_rl.regularizers._haepo import haepo_objective
from entropy_rl.regularizers._hdpo import hdpo
from entropy_rl.regularizers._hdpo import hdpo_objective
from entropy_rl.regularizers._riskpo import riskpo
from entropy_rl.regularizers._riskpo import riskpo_advantages
from entropy_rl.regularizers._hapo import hapo
from entropy_rl.regularizers._hapo import HapoState
from entropy_rl.regularizers._cure import cure_rollout
from entropy_rl.regularizers._cure import CureRollout
from entropy_rl.regularizers._era import era_llm
from entropy_rl.regularizers._era import era_objective

__all__ = (
    "adaptive_entropy",
    "AdaptiveEntropyState",
    "aepo",
    "aepo_assemble",
    "aepo_controller",
    "aepo_objective",
    "aepo_select",
    "AepoState",
    "ce_gppo",
    "ce_gppo_objective",
    "clip_cov",
    "clip_cov_objective",
    "cure_rollout",
    "CureRollout",
    "egsw",
    "em_ft",
    "em_ft_objective",
    "em_rl",
    "entrocraft",
    "entropy_bonus",
    "entropy_change_exact",
    "entropy_change_law",
    "entropy_rewards",
    "era_llm",
    "era_objective",
    "forking_tokens",
    "grpo_advantages",
    "grpo_lambda",
    "grpo_s",
    "gtpo",
    "haepo",
    "haepo_objective",
    "hapo",
    "HapoState",
    "hdpo",
    "hdpo_objective",
    "kl_cov",
    "kl_cov_objective",
    "kl_in_reward",
    "kl_penalty",
    "lp_reg",
    "lp_reg_objective",
    "overlong_reward_shaping",
    "qae",
    "reinforce_pp_advantages",
    "rent",
    "riskpo",
    "riskpo_advantages",
    "rloo_advantages",
    "siren",
    "siren_objective",
    "SirenState",
    "steer",
    "temperature_processor",
    "token_covariance",
    "token_entropy_change",
)
