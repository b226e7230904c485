"""Training: train state, pure steps, the RL iteration, checkpoints, loop.

* :func:`make_train_step` -- one RL update over a rollout (old/ref passes,
  ``prepare``, epochs x mini-batches, clipping, non-finite skip, realised
  entropy change), for any :class:`BatchLayout` (default
  :data:`RLVR_LAYOUT`; the agents pass theirs); :func:`make_sft_step` --
  supervised warm-up.
* :func:`make_rollout_fn`, :func:`make_rl_iteration`, :func:`vmap_seeds` --
  rollout + JAX reward + update as one jitted program, over seeds;
  :func:`python_reward_iteration` for host-side checkers.
* :class:`Checkpointer` -- orbax, train state + grain iterator together;
  damaged checkpoints are reported, moved aside and skipped
  (:class:`CheckpointCorruptError` when none restores,
  :class:`CheckpointSaveError` when a save fails).
* :class:`MetricWriter`, :class:`Progress`, :func:`pass_at_k`.
* :func:`run`, :func:`run_sft`, :func:`run_rl` -- the resumable loop over an
  :class:`Experiment` (built from a config by ``entropy_rl.builders``).
"""

from entropy_rl.training.checkpoint import CheckpointCorruptError
from entropy_rl.training.checkpoint import Checkpointer
from entropy_rl.training.checkpoint import CheckpointSaveError
from entropy_rl.training.checkpoint import CheckpointWarning
from entropy_rl.training.iteration import make_rl_iteration
from entropy_rl.training.iteration import make_rollout_fn
from entropy_rl.training.iteration import Prompts
from entropy_rl.training.iteration import python_reward_iteration
from entropy_rl.training.iteration import score
from entropy_rl.training.iteration import stack_states
from entropy_rl.training.iteration import unstack_state
from entropy_rl.training.iteration import vmap_seeds
from entropy_rl.training.iteration import with_rewards
from entropy_rl.training.loop import Experiment
from entropy_rl.training.loop import Preempted
from entropy_rl.training.loop import run
from entropy_rl.training.loop import run_rl
from entropy_rl.training.loop import run_sft
from entropy_rl.training.loop import Settings
from entropy_rl.training.metrics import MetricWriter
from entropy_rl.training.metrics import pass_at_k
from entropy_rl.training.metrics import Progress
from entropy_rl.training.step import apply_gradients
from entropy_rl.training.step import BatchLayout
from entropy_rl.training.step import make_sft_step
from entropy_rl.training.step import make_train_step
from entropy_rl.training.step import RLVR_LAYOUT
from entropy_rl.training.types import init_train_state
from entropy_rl.training.types import Rollout
from entropy_rl.training.types import SFTBatch
from entropy_rl.training.types import step_key
from entropy_rl.training.types import TrainState

__all__ = (
    "BatchLayout", "CheckpointCorruptError", "CheckpointSaveError",
    "CheckpointWarning", "Checkpointer", "Experiment", "MetricWriter",
    "Preempted", "Progress", "Prompts", "RLVR_LAYOUT", "Rollout", "SFTBatch", "Settings",
    "TrainState", "apply_gradients", "init_train_state", "make_rl_iteration",
    "make_rollout_fn", "make_sft_step", "make_train_step", "pass_at_k",
    "python_reward_iteration", "run", "run_rl", "run_sft", "score",
    "stack_states", "step_key", "unstack_state", "vmap_seeds", "with_rewards",
)
