"""entropy_rl: policy optimisation with explicit control of policy entropy.

The public API. Import from here (or the public subpackages
``entropy_rl.regularizers``, ``entropy_rl.models``, ``entropy_rl.sampling``,
``entropy_rl.data``, ``entropy_rl.parallel``, ``entropy_rl.aot``,
``entropy_rl.training``), not
from private module paths.
"""

from entropy_rl.core.combine import chain
from entropy_rl.core.combine import get_state
from entropy_rl.core.combine import identity
from entropy_rl.core.combine import named_chain
from entropy_rl.core.loss import entropy_metrics
from entropy_rl.core.loss import policy_loss
from entropy_rl.core.loss import prepare_batch
from entropy_rl.core.loss import validate_batch
from entropy_rl.core.objectives import AGGREGATION_MODES
from entropy_rl.core.objectives import aggregate
from entropy_rl.core.objectives import clipped_surrogate
from entropy_rl.core.objectives import dapo
from entropy_rl.core.objectives import dr_grpo
from entropy_rl.core.objectives import grpo
from entropy_rl.core.objectives import gspo
from entropy_rl.core.objectives import none
from entropy_rl.core.objectives import Objective
from entropy_rl.core.objectives import ppo_clip
from entropy_rl.core.objectives import reinforce
from entropy_rl.core.types import Clip
from entropy_rl.core.types import EmptyState
from entropy_rl.core.types import EntropyTransform
from entropy_rl.core.types import init_empty_state
from entropy_rl.core.types import LogitsProcessor
from entropy_rl.core.types import MonoidReduction
from entropy_rl.core.types import Needs
from entropy_rl.core.types import PolicyBatch
from entropy_rl.core.types import RowReduction
from entropy_rl.core.token_stats import batched_token_stats
from entropy_rl.core.token_stats import stats_for_needs
from entropy_rl.core.token_stats import token_stats
from entropy_rl.sampling.sampler import sample
from entropy_rl.sampling.sampler import SampleOutput

__version__ = "0.1.0"

__all__ = (
    "AGGREGATION_MODES",
    "Clip",
    "EmptyState",
    "EntropyTransform",
    "LogitsProcessor",
    "MonoidReduction",
    "Needs",
    "Objective",
    "PolicyBatch",
    "RowReduction",
    "SampleOutput",
    "aggregate",
    "batched_token_stats",
    "chain",
    "clipped_surrogate",
    "dapo",
    "dr_grpo",
    "entropy_metrics",
    "get_state",
    "grpo",
    "gspo",
    "identity",
    "init_empty_state",
    "named_chain",
    "none",
    "policy_loss",
    "ppo_clip",
    "prepare_batch",
    "reinforce",
    "sample",
    "stats_for_needs",
    "token_stats",
    "validate_batch",
)
