"""Flax NNX decoders (Llama / Qwen2 / Qwen3) and their checkpoints."""

from entropy_rl.models.checkpoint import load_pretrained
from entropy_rl.models.checkpoint import pretrained_config
from entropy_rl.models.checkpoint import save_pretrained
from entropy_rl.models.config import DecoderConfig
from entropy_rl.models.decoder import abstract_decoder
from entropy_rl.models.decoder import as_functions
from entropy_rl.models.decoder import Decoder
from entropy_rl.models.decoder import init_cache
from entropy_rl.models.decoder import KVCache
from entropy_rl.models.decoder import LMFns
from entropy_rl.models.decoder import logical_axes
from entropy_rl.models.decoder import positions_from_mask
from entropy_rl.models.files import ModelFileError
from entropy_rl.models.gguf import gguf_config
from entropy_rl.models.gguf import gguf_tokenizer
from entropy_rl.models.gguf import GGUFTokenizer
from entropy_rl.models.gguf import load_gguf
from entropy_rl.models.gguf import smollm2_gguf_path

__all__ = (
    "Decoder",
    "DecoderConfig",
    "GGUFTokenizer",
    "KVCache",
    "LMFns",
    "ModelFileError",
    "abstract_decoder",
    "as_functions",
    "gguf_config",
    "gguf_tokenizer",
    "init_cache",
    "load_gguf",
    "load_pretrained",
    "logical_axes",
    "positions_from_mask",
    "pretrained_config",
    "save_pretrained",
    "smollm2_gguf_path",
)
