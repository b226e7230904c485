"""Hugging Face checkpoints: `load_pretrained` and `save_pretrained`.

A Hugging Face directory holds ``config.json`` (``model_type`` llama, qwen2
or qwen3) and ``model.safetensors``, or shards listed in
``model.safetensors.index.json``. Tensors are stored ``[out, in]``; the
decoder keeps kernels ``[in, out]``, so projections are transposed.

Every file is checked before it is read (`entropy_rl.models.files`): a
missing, truncated or corrupt config.json, index or safetensors file, a
config value of the wrong type, or a tensor whose shape differs from the
config's raises `ModelFileError` naming the file, what was expected and what
was found.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Any, Callable, Iterator, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from entropy_rl.models.config import DecoderConfig
from entropy_rl.models.decoder import Decoder
from entropy_rl.models import files as model_files
from entropy_rl.models.files import ModelFileError

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM"}
_INDEX = "model.safetensors.index.json"
# Tensors some checkpoints carry that the model derives itself.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")
_LAYER = re.compile(r"model\.layers\.(\d+)\.")


# config.json keys `config_from_hf` reads, by the type they must have.
_INT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers",
             "num_attention_heads", "intermediate_size")  # Required.
_OPTIONAL_INT_KEYS = ("num_key_value_heads", "head_dim",
                      "max_position_embeddings")
_NUMBER_KEYS = ("rope_theta", "rms_norm_eps")
_BOOL_KEYS = ("tie_word_embeddings", "use_sliding_window", "mlp_bias",
              "attention_bias")
_OBJECT_KEYS = ("rope_parameters", "rope_scaling")


def _required(hf: Mapping[str, Any], key: str):
  if key not in hf:
    raise ValueError(f"lacks required key {key!r}")
  return hf[key]


def _check_hf_types(hf: Mapping[str, Any]) -> None:
  """Raises ValueError naming the first key of the wrong type."""
  if not isinstance(hf, Mapping):
    raise ValueError(f"expected a JSON object, found "
                     f"{model_files.json_type(hf)}")

  def wrong(key, want):
    value = hf[key]
    return ValueError(f"{key!r} must be {want}, found "
                      f"{model_files.json_type(value)} {value!r:.80}")

  for key in _INT_KEYS + _OPTIONAL_INT_KEYS:
    if key in hf and not (model_files.is_int(hf[key]) or (
        hf[key] is None and key in _OPTIONAL_INT_KEYS)):
      raise wrong(key, "an integer")
  for key in _NUMBER_KEYS:
    if key in hf and not (
        (model_files.is_int(hf[key]) or isinstance(hf[key], float))
        and math.isfinite(hf[key]) and hf[key] >= 0):
      raise wrong(key, "a non-negative number")
  for key in _BOOL_KEYS:
    if key in hf and not isinstance(hf[key], (bool, type(None))):
      raise wrong(key, "true or false")
  for key in _OBJECT_KEYS:
    if key in hf and not isinstance(hf[key], (Mapping, type(None))):
      raise wrong(key, "an object")
  if not isinstance(hf.get("model_type"), (str, type(None))):
    raise wrong("model_type", "a string")


def config_from_hf(hf: Mapping[str, Any], **overrides) -> DecoderConfig:
  """`DecoderConfig` from a Hugging Face ``config.json`` dictionary.

  Args:
    hf: the parsed config.json.
    **overrides: `DecoderConfig` fields to set (dtype, scan_layers, ...).

  Raises:
    ValueError: unknown ``model_type``, an option the decoder lacks
      (rope scaling, sliding windows, o_proj/MLP bias, activations), or a
      required key missing or of the wrong type (named).
  """
  _check_hf_types(hf)
  family = hf.get("model_type")
  if family not in _ARCHITECTURES:
    raise ValueError(
        f"unsupported model_type {family!r} (architectures "
        f"{hf.get('architectures')}); supported: {sorted(_ARCHITECTURES)}")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r}")
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"unsupported rope scaling {rope!r}")
  theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
  if not ((model_files.is_int(theta) or isinstance(theta, float)) and
          math.isfinite(theta) and theta > 0):
    raise ValueError(f"rope_theta must be a positive number, found "
                     f"{theta!r:.80}")
  if hf.get("use_sliding_window"):
    raise ValueError("unsupported: use_sliding_window=True")
  if hf.get("mlp_bias"):
    raise ValueError("unsupported: mlp_bias=True")
  if family != "qwen2" and hf.get("attention_bias"):
    raise ValueError(f"unsupported: attention_bias=True for {family} "
                     "(bias on o_proj)")
  heads = _required(hf, "num_attention_heads")
  hidden = _required(hf, "hidden_size")
  if not heads > 0:
    raise ValueError(f"num_attention_heads must be positive, got {heads}")
  head_dim = hf.get("head_dim") or (128 if family == "qwen3"
                                    else hidden // heads)
  if head_dim <= 0:
    raise ValueError(f"head_dim must be positive, got {head_dim}")
  kw = dict(
      vocab_size=_required(hf, "vocab_size"), hidden_size=hidden,
      num_layers=_required(hf, "num_hidden_layers"), num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=head_dim,
      intermediate_size=_required(hf, "intermediate_size"),
      rope_theta=float(theta), rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=family == "qwen2", qk_norm=family == "qwen3",
      max_position_embeddings=hf.get("max_position_embeddings", 2048),
      family=family)
  kw.update(overrides)
  return DecoderConfig(**kw)


def config_to_hf(cfg: DecoderConfig) -> dict[str, Any]:
  """The ``config.json`` dictionary transformers needs for ``cfg``."""
  family = cfg.hf_model_type
  want = {"llama": (False, False), "qwen2": (True, False),
          "qwen3": (False, True)}[family]
  if (cfg.qkv_bias, cfg.qk_norm) != want:
    raise ValueError(
        f"family {family!r} needs qkv_bias={want[0]}, qk_norm={want[1]}; "
        f"got qkv_bias={cfg.qkv_bias}, qk_norm={cfg.qk_norm}")
  hf = {
      "architectures": [_ARCHITECTURES[family]], "model_type": family,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_position_embeddings,
      "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
      "rope_parameters": {"rope_type": "default",
                          "rope_theta": cfg.rope_theta},
      "tie_word_embeddings": cfg.tie_word_embeddings,
      "attention_dropout": 0.0, "dtype": cfg.param_dtype.name,
  }
  if family == "llama":
    hf.update(attention_bias=False, mlp_bias=False)
  else:
    hf.update(use_sliding_window=False)
  if family == "qwen3":
    hf.update(attention_bias=False)
  return hf


def hf_layout(cfg: DecoderConfig) -> Iterator[tuple[tuple, str, bool]]:
  """(path in the unrolled state, Hugging Face name, transpose) per tensor.

  Layer paths start with ``("layers", i)``; with ``scan_layers`` the same
  tensors are stacked on a leading axis under ``("layers",)``.
  """
  yield ("embedding",), "model.embed_tokens.weight", False
  for i in range(cfg.num_layers):
    hf = f"model.layers.{i}."
    ours = ("layers", i)
    yield ours + ("attn_norm", "scale"), hf + "input_layernorm.weight", False
    for n in ("q", "k", "v", "o"):
      yield (ours + ("attn", f"{n}_proj"), hf + f"self_attn.{n}_proj.weight",
             True)
    if cfg.qkv_bias:
      for n in ("q", "k", "v"):
        yield (ours + ("attn", f"{n}_bias"), hf + f"self_attn.{n}_proj.bias",
               False)
    if cfg.qk_norm:
      for n in ("q", "k"):
        yield (ours + ("attn", f"{n}_norm", "scale"),
               hf + f"self_attn.{n}_norm.weight", False)
    yield (ours + ("mlp_norm", "scale"),
           hf + "post_attention_layernorm.weight", False)
    for n in ("gate", "up", "down"):
      yield ours + ("mlp", f"{n}_proj"), hf + f"mlp.{n}_proj.weight", True
  yield ("final_norm", "scale"), "model.norm.weight", False
  if not cfg.tie_word_embeddings:
    yield ("lm_head",), "lm_head.weight", True


def _set(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def model_from_tensors(cfg: DecoderConfig, names: set[str] | Any,
                       get: Callable[[str], np.ndarray], *,
                       source: str | os.PathLike = "checkpoint",
                       tensor_files: Mapping[str, Any] | None = None,
                       file_names: Mapping[str, str] | None = None
                       ) -> Decoder:
  """Builds a `Decoder` from Hugging Face-named tensors.

  Args:
    cfg: the configuration.
    names: the tensor names available.
    get: name -> numpy array ``[out, in]`` (Hugging Face layout).
    source: the checkpoint (file or directory) the errors name.
    tensor_files: name -> the file holding it (default ``source``).
    file_names: name -> the tensor's name in its file, where it differs
      (GGUF).

  Raises:
    ModelFileError: missing or unexpected tensors, or a shape other than
      the config's, naming them and their file.
  """
  # Before listing the config's tensors: a corrupt layer count (a flipped
  # byte of a GGUF's block_count reads 4e9) must not list billions.
  layers = {int(m.group(1)) for m in map(_LAYER.match, names) if m}
  if cfg.num_layers > len(layers):
    raise ModelFileError(
        source, f"the config has {cfg.num_layers} layers but the checkpoint "
                f"has tensors of {len(layers)} (model.layers.<i> for i in "
                f"{sorted(layers)[:8]}{' ...' if len(layers) > 8 else ''})")
  layout = list(hf_layout(cfg))
  expected = {name for _, name, _ in layout}
  missing = sorted(expected - set(names))
  if missing:
    raise ModelFileError(
        source, f"missing {len(missing)} tensor(s) the config needs: "
                f"{missing[:8]}{' ...' if len(missing) > 8 else ''}")
  ignored = {n for n in names if _IGNORED.match(n)}
  if cfg.tie_word_embeddings:
    ignored.add("lm_head.weight")
  unexpected = sorted(set(names) - expected - ignored)
  if unexpected:
    raise ModelFileError(
        source, f"{len(unexpected)} unexpected tensor(s) for "
                f"{cfg.hf_model_type}: {unexpected[:8]}")
  tensor_files = tensor_files or {}
  file_names = file_names or {}

  abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  shapes = nnx.to_pure_dict(state)
  pure: dict = {}
  stacked: dict[tuple, list] = {}
  for path, name, transpose in layout:
    arr = np.asarray(get(name))
    hf_shape = arr.shape
    if transpose:
      arr = arr.T
    stack = cfg.scan_layers and path[0] == "layers"
    key = ("layers",) + path[2:] if stack else path
    want = _get(shapes, key).shape[1 if stack else 0:]
    if arr.shape != tuple(want):
      label = repr(file_names.get(name, name))
      if name in file_names and file_names[name] != name:
        label += f" ({name})"
      raise ModelFileError(
          tensor_files.get(name, source),
          f"tensor {label} has shape {hf_shape}, the config expects "
          f"{tuple(want[::-1] if transpose else want)}")
    value = jnp.asarray(arr, cfg.param_dtype)
    if stack:
      stacked.setdefault(key, []).append(value)
    else:
      _set(pure, path, value)
  for key, values in stacked.items():
    _set(pure, key, jnp.stack(values))
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _tensor_files(path: pathlib.Path) -> dict[str, pathlib.Path]:
  """Tensor name -> safetensors file of a checkpoint directory, every file
  checked (`model_files.safetensors_header`)."""
  index = path / _INDEX
  if index.exists():
    weight_map = model_files.read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ModelFileError(
          index, "'weight_map' must be an object mapping tensor names to "
                 f"files, found {model_files.json_type(weight_map)}")
    shards: dict[str, list[str]] = {}
    for name, f in weight_map.items():
      if not isinstance(f, str):
        raise ModelFileError(index, f"weight_map[{name!r}] must be a file "
                                    f"name, found {f!r:.80}")
      shards.setdefault(f, []).append(name)
    out = {}
    for f, names in shards.items():
      shard = path / f
      if not shard.exists():
        raise ModelFileError(shard, f"no such file ({_INDEX} maps "
                                    f"{len(names)} tensor(s) to it, e.g. "
                                    f"{names[0]!r})")
      header = model_files.safetensors_header(shard)
      absent = [n for n in names if n not in header]
      if absent:
        raise ModelFileError(
            shard, f"has no tensor {absent[0]!r} ({len(absent)} of the "
                   f"{len(names)} tensors {_INDEX} maps to this file are "
                   "absent)")
      out.update({name: shard for name in names})
    return out
  files = sorted(path.glob("*.safetensors"))
  if not files:
    raise ModelFileError(path, "no *.safetensors files in this directory")
  out = {}
  for f in files:
    out.update({name: f for name in model_files.safetensors_header(f)})
  return out


def _config_file(path: pathlib.Path) -> pathlib.Path:
  if not path.is_dir():
    raise ModelFileError(path, "no such directory (a Hugging Face checkpoint "
                               "is a directory with a config.json)")
  config_file = path / "config.json"
  if not config_file.exists():
    raise ModelFileError(path, "no config.json in this directory")
  return config_file


def config_from_file(path: str | os.PathLike, hf: Any, **overrides
                     ) -> DecoderConfig:
  """`config_from_hf` of a config read from ``path``: the file's own
  problems raise `ModelFileError` naming it; those of ``overrides`` (the
  caller's) raise ValueError."""
  try:
    cfg = config_from_hf(hf)
  except ValueError as e:
    if isinstance(e, ModelFileError):
      raise
    raise ModelFileError(path, str(e)) from None
  return cfg.replace(**overrides) if overrides else cfg


def pretrained_config(path: str | os.PathLike, *, dtype: Any = jnp.float32,
                      param_dtype: Any = None, **overrides) -> DecoderConfig:
  """The `DecoderConfig` of a Hugging Face checkpoint directory, from its
  config.json alone (no weights are read): e.g. to compile the model's
  programs ahead of time (`experiments.preflight`).

  Raises:
    ModelFileError: no directory or config.json; config.json unreadable,
      not JSON, a required key missing or of the wrong type, or a value the
      decoder does not support (named).
  """
  config_file = _config_file(pathlib.Path(path))
  return config_from_file(config_file, model_files.read_json(config_file),
                          dtype=dtype, param_dtype=param_dtype or dtype,
                          **overrides)


def load_pretrained(path: str | os.PathLike, *, dtype: Any = jnp.float32,
                    param_dtype: Any = None, **overrides) -> Decoder:
  """Loads a Hugging Face Llama / Qwen2 / Qwen3 checkpoint directory.

  Args:
    path: directory with config.json and safetensors (single or sharded).
    dtype: compute dtype.
    param_dtype: parameter dtype; default ``dtype``.
    **overrides: other `DecoderConfig` fields (e.g. ``scan_layers=True``).

  Returns:
    The `Decoder` (its config records the family for `save_pretrained`).

  Raises:
    ModelFileError: a missing, truncated or corrupt config.json, index or
      safetensors file; an unsupported architecture; missing, unexpected or
      misshapen tensors. The message names the file, what was expected and
      what was found.
  """
  path = pathlib.Path(path)
  cfg = pretrained_config(path, dtype=dtype, param_dtype=param_dtype,
                          **overrides)
  files = _tensor_files(path)
  handles: dict[pathlib.Path, Any] = {}

  def get(name):
    f = files[name]
    try:
      if f not in handles:
        handles[f] = safetensors.safe_open(f, framework="numpy")
      return handles[f].get_tensor(name)
    except Exception as e:  # pylint: disable=broad-except
      # The header was checked; a file changed since, or a dtype numpy
      # cannot hold.
      raise ModelFileError(f, f"tensor {name!r} could not be read: "
                              f"{type(e).__name__}: {e}") from e

  return model_from_tensors(cfg, set(files), get, source=path,
                            tensor_files=files)


def save_pretrained(model: Decoder, path: str | os.PathLike, *,
                    max_shard_size: int | None = None) -> None:
  """Writes ``model`` as a Hugging Face directory transformers can load.

  Args:
    model: a `Decoder`.
    path: output directory (created).
    max_shard_size: bytes per safetensors shard; None writes one file.
  """
  cfg = model.config
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  hf = config_to_hf(cfg)
  pure = nnx.to_pure_dict(nnx.state(model))
  tensors = {}
  for p, name, transpose in hf_layout(cfg):
    if cfg.scan_layers and p[0] == "layers":
      value = _get(pure, ("layers",) + p[2:])[p[1]]
    else:
      value = _get(pure, p)
    arr = np.asarray(jax.device_get(value))
    tensors[name] = np.ascontiguousarray(arr.T if transpose else arr)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, arr in tensors.items():
    if max_shard_size and shards[-1] and size + arr.nbytes > max_shard_size:
      shards.append({})
      size = 0
    shards[-1][name] = arr
    size += arr.nbytes
  meta = {"format": "pt"}
  if len(shards) == 1:
    safetensors.numpy.save_file(shards[0], path / "model.safetensors", meta)
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      f = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      safetensors.numpy.save_file(shard, path / f, meta)
      weight_map.update({name: f for name in shard})
    total = sum(a.nbytes for a in tensors.values())
    (path / _INDEX).write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map},
        indent=2))
  (path / "config.json").write_text(json.dumps(hf, indent=2))
