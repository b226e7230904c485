"""On-device sampling: the sampler and the sampling methods.

``sample`` / ``make_sampler`` run prefill and a KV-cache decode loop in one
jitted program; ``sample_traced`` is the same program as a traceable
function (inside ``jit``/``scan``), and ``init_decode_state`` /
``feed_tokens`` / ``continue_traced`` extend an existing KV cache (multi-turn
rollouts); the methods are composable
:class:`~entropy_rl.core.types.LogitsProcessor`s plus a draw
(`entropy_rl.sampling.processors`; ``entropy_rl.sampling.methods`` is its
deprecated old name). The decode's static knobs are one
:class:`DecodeSettings` value.
"""

from entropy_rl.sampling import methods  # deprecated alias of processors
from entropy_rl.sampling.processors import compose
from entropy_rl.sampling.processors import draw_and_stats
from entropy_rl.sampling.processors import em_inf
from entropy_rl.sampling.processors import em_inf_temperature
from entropy_rl.sampling.processors import entropy_of_logits
from entropy_rl.sampling.processors import greedy
from entropy_rl.sampling.processors import hapo_sampler_stats
from entropy_rl.sampling.processors import hapo_score
from entropy_rl.sampling.processors import hapo_temperature
from entropy_rl.sampling.processors import min_p
from entropy_rl.sampling.processors import SamplingMethod
from entropy_rl.sampling.processors import scale_by_temperature
from entropy_rl.sampling.processors import temperature
from entropy_rl.sampling.processors import top_h
from entropy_rl.sampling.processors import top_h_keep_count
from entropy_rl.sampling.processors import top_k
from entropy_rl.sampling.processors import top_p
from entropy_rl.sampling.processors import truncate_min_p
from entropy_rl.sampling.processors import truncate_top_h
from entropy_rl.sampling.processors import truncate_top_k
from entropy_rl.sampling.processors import truncate_top_p
from entropy_rl.sampling.sampler import continue_traced
from entropy_rl.sampling.sampler import DecodeSettings
from entropy_rl.sampling.sampler import DecodeOutput
from entropy_rl.sampling.sampler import DecodeState
from entropy_rl.sampling.sampler import feed_tokens
from entropy_rl.sampling.sampler import init_decode_state
from entropy_rl.sampling.sampler import make_sampler
from entropy_rl.sampling.sampler import sample
from entropy_rl.sampling.sampler import sample_traced
from entropy_rl.sampling.sampler import SampleOutput
from entropy_rl.sampling.sampler import Sampler
from entropy_rl.sampling.sampler import take_cache_rows

__all__ = (
    "DecodeOutput",
    "DecodeSettings",
    "DecodeState",
    "SampleOutput",
    "Sampler",
    "SamplingMethod",
    "compose",
    "continue_traced",
    "draw_and_stats",
    "em_inf",
    "em_inf_temperature",
    "entropy_of_logits",
    "feed_tokens",
    "greedy",
    "hapo_sampler_stats",
    "hapo_score",
    "hapo_temperature",
    "init_decode_state",
    "make_sampler",
    "min_p",
    "sample",
    "sample_traced",
    "scale_by_temperature",
    "take_cache_rows",
    "temperature",
    "top_h",
    "top_h_keep_count",
    "top_k",
    "top_p",
    "truncate_min_p",
    "truncate_top_h",
    "truncate_top_k",
    "truncate_top_p",
)
