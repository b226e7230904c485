"""Training: train state, pure steps, the RL iteration, checkpoints, loop."""

from entropy_rl.training.step import apply_gradients
from entropy_rl.training.step import make_sft_step
from entropy_rl.training.step import make_train_step
from entropy_rl.training.types import init_train_state
from entropy_rl.training.types import Rollout
from entropy_rl.training.types import SFTBatch
from entropy_rl.training.types import step_key
from entropy_rl.training.types import TrainState
