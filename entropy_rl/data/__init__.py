"""Verifiable tasks, reward checkers and grain pipelines.

Built-in tasks (`arithmetic`, `countdown`) are generated on the fly, use a
`CharTokenizer` and have exact checkers both in Python and in JAX (so one
jitted RL iteration can score responses on device). reasoning-gym datasets
(``get_task("rg:chain_sum")``) and GSM8K/MATH-style JSONL files
(``get_task("jsonl:/path/train.jsonl")``) are checked in Python.
"""

from entropy_rl.data import bounded
from entropy_rl.data.arithmetic_task import arithmetic
from entropy_rl.data.arithmetic_task import arithmetic_jax_reward
from entropy_rl.data.char_classes import char_class_table
from entropy_rl.data.char_classes import INT_LIMIT
from entropy_rl.data.countdown_task import countdown
from entropy_rl.data.countdown_task import countdown_jax_reward
from entropy_rl.data.countdown_task import CountdownAnswer
from entropy_rl.data.jsonl import GoldAnswer
from entropy_rl.data.jsonl import jsonl_task
from entropy_rl.data.jsonl import load_jsonl
from entropy_rl.data.math_answers import answers_match
from entropy_rl.data.math_answers import extract_answer
from entropy_rl.data.math_answers import extract_gold
from entropy_rl.data.math_answers import math_reward
from entropy_rl.data.math_answers import math_verify_available
from entropy_rl.data.pipeline import prompt_dataset
from entropy_rl.data.pipeline import prompt_map_dataset
from entropy_rl.data.pipeline import PromptBatch
from entropy_rl.data.pipeline import score_responses
from entropy_rl.data.pipeline import score_responses_bounded
from entropy_rl.data.pipeline import score_texts
from entropy_rl.data.pipeline import sft_batches
from entropy_rl.data.pipeline import task_corpus
from entropy_rl.data.pipeline import task_examples
from entropy_rl.data.pipeline import TaskSource
from entropy_rl.data.registry import get_task
from entropy_rl.data.registry import list_tasks
from entropy_rl.data.registry import register_task
from entropy_rl.data.rg_tasks import extract_rg_answer
from entropy_rl.data.rg_tasks import equation_result
from entropy_rl.data.rg_tasks import rg_task
from entropy_rl.data.types import FAILED
from entropy_rl.data.types import RewardResult
from entropy_rl.data.types import safe_reward
from entropy_rl.data.types import Task
from entropy_rl.tokenizers import CharTokenizer

__all__ = (
    "CharTokenizer",
    "CountdownAnswer",
    "FAILED",
    "GoldAnswer",
    "INT_LIMIT",
    "PromptBatch",
    "RewardResult",
    "Task",
    "TaskSource",
    "answers_match",
    "arithmetic",
    "arithmetic_jax_reward",
    "bounded",
    "char_class_table",
    "countdown",
    "countdown_jax_reward",
    "extract_answer",
    "extract_gold",
    "equation_result",
    "extract_rg_answer",
    "get_task",
    "jsonl_task",
    "list_tasks",
    "load_jsonl",
    "math_reward",
    "math_verify_available",
    "prompt_dataset",
    "prompt_map_dataset",
    "register_task",
    "rg_task",
    "safe_reward",
    "score_responses",
    "score_responses_bounded",
    "score_texts",
    "sft_batches",
    "task_corpus",
    "task_examples",
)
