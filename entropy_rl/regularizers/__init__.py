"""The catalogue of entropy methods, each an :class:`~entropy_rl.EntropyTransform`.

The modules ``_*.py`` are private: import every public name from this
package (``from entropy_rl import regularizers; regularizers.steer(...)``),
as with optax.

The registries at the end (:data:`TRANSFORMS`, :data:`OBJECTIVES`,
:data:`ROLLOUT_HOOKS`) are the catalogue a config names by ``kind``
(``entropy_rl.builders`` reads them; nothing is discovered by scanning). A
new method adds its constructor to the registry it belongs to, here.
"""

from entropy_rl.core import objectives as _objectives

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
from entropy_rl.regularizers._aepo import aepo_rollout_advantages
from entropy_rl.regularizers._aepo import aepo_rollout_hook
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
from entropy_rl.regularizers._hapo import hapo_sampler_kwargs
from entropy_rl.regularizers._hapo import hapo_sampler_params
from entropy_rl.regularizers._hapo import HapoState
from entropy_rl.regularizers._cure import cure_rollout
from entropy_rl.regularizers._cure import cure_rollout_hook
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
    "aepo_rollout_advantages",
    "aepo_rollout_hook",
    "aepo_select",
    "AepoState",
    "ce_gppo",
    "ce_gppo_objective",
    "clip_cov",
    "clip_cov_objective",
    "cure_rollout",
    "cure_rollout_hook",
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
    "hapo_sampler_kwargs",
    "hapo_sampler_params",
    "HapoState",
    "hdpo",
    "hdpo_objective",
    "kl_cov",
    "kl_cov_objective",
    "kl_in_reward",
    "kl_penalty",
    "lp_reg",
    "lp_reg_objective",
    "OBJECTIVES",
    "overlong_reward_shaping",
    "qae",
    "reinforce_pp_advantages",
    "rent",
    "riskpo",
    "riskpo_advantages",
    "ROLLOUT_HOOKS",
    "rloo_advantages",
    "siren",
    "siren_objective",
    "SirenState",
    "steer",
    "temperature_processor",
    "token_covariance",
    "token_entropy_change",
    "TRANSFORMS",
)

# ---------------------------------------------------------------- registries

# ``kind -> constructor`` of every chain member a config can name
# (``config.regularizers.<name> = dict(kind=..., **kwargs)``): each returns
# an EntropyTransform. Advantage estimators end in ``advantages`` (the
# builder inserts a rollout hook's members after the last of them).
TRANSFORMS = {
    "adaptive_entropy": adaptive_entropy,
    "aepo": aepo,
    "ce_gppo": ce_gppo,
    "clip_cov": clip_cov,
    "egsw": egsw,
    "em_ft": em_ft,
    "em_rl": em_rl,
    "entrocraft": entrocraft,
    "entropy_bonus": entropy_bonus,
    "era_llm": era_llm,
    "forking_tokens": forking_tokens,
    "grpo_advantages": grpo_advantages,
    "grpo_lambda": grpo_lambda,
    "grpo_s": grpo_s,
    "gtpo": gtpo,
    "haepo": haepo,
    "hapo": hapo,
    "hdpo": hdpo,
    "kl_cov": kl_cov,
    "kl_in_reward": kl_in_reward,
    "kl_penalty": kl_penalty,
    "lp_reg": lp_reg,
    "overlong_reward_shaping": overlong_reward_shaping,
    "qae": qae,
    "reinforce_pp_advantages": reinforce_pp_advantages,
    "rent": rent,
    "riskpo": riskpo,
    "rloo_advantages": rloo_advantages,
    "siren": siren,
    "steer": steer,
}

# ``kind -> constructor`` of every objective (``config.objective =
# dict(kind=..., **kwargs)``): the core presets and the methods' own.
OBJECTIVES = {
    "aepo": aepo_objective,
    "ce_gppo": ce_gppo_objective,
    "clip_cov": clip_cov_objective,
    "dapo": _objectives.dapo,
    "dr_grpo": _objectives.dr_grpo,
    "em_ft": em_ft_objective,
    "era": era_objective,
    "grpo": _objectives.grpo,
    "gspo": _objectives.gspo,
    "haepo": haepo_objective,
    "hdpo": hdpo_objective,
    "kl_cov": kl_cov_objective,
    "lp_reg": lp_reg_objective,
    "none": _objectives.none,
    "ppo_clip": _objectives.ppo_clip,
    "reinforce": _objectives.reinforce,
    "siren": siren_objective,
}

# ``name -> factory`` of the rollout-side methods a config enables
# (``config.rollout.<name> = dict(enabled=True, **kwargs)``): each returns a
# ``entropy_rl.core.rollout.RolloutHookSpec``. The builder passes the
# entry's keyword arguments, and, where the factory declares them,
# ``tokenizer`` and ``member_kwargs`` / ``state_name`` (the keyword
# arguments and the name of the chain member whose kind is ``<name>``).
# DAPO's dynamic sampling is a filter around any of them
# (``entropy_rl.training.hooks.dynamic_sampling_hook``).
ROLLOUT_HOOKS = {
    "aepo": aepo_rollout_hook,
    "cure": cure_rollout_hook,
}
