"""Hugging Face checkpoints: `load_pretrained` and `save_pretrained`.

A Hugging Face directory holds ``config.json`` (``model_type`` llama, qwen2
or qwen3) and ``model.safetensors``, or shards listed in
``model.safetensors.index.json``. Tensors are stored ``[out, in]``; the
decoder keeps kernels ``[in, out]``, so projections are transposed.
"""

from __future__ import annotations

import json
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

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM"}
_INDEX = "model.safetensors.index.json"
# Tensors some checkpoints carry that the model derives itself.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


def _required(hf: Mapping[str, Any], key: str):
  if key not in hf:
    raise ValueError(f"config.json lacks {key!r}")
  return hf[key]


def config_from_hf(hf: Mapping[str, Any], **overrides) -> DecoderConfig:
  """`DecoderConfig` from a Hugging Face ``config.json`` dictionary.

  Args:
    hf: the parsed config.json.
    **overrides: `DecoderConfig` fields to set (dtype, scan_layers, ...).

  Raises:
    ValueError: unknown ``model_type`` or an option the decoder lacks
      (rope scaling, sliding windows, o_proj/MLP bias, activations).
  """
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
  if hf.get("use_sliding_window"):
    raise ValueError("unsupported: use_sliding_window=True")
  if hf.get("mlp_bias"):
    raise ValueError("unsupported: mlp_bias=True")
  if family != "qwen2" and hf.get("attention_bias"):
    raise ValueError(f"unsupported: attention_bias=True for {family} "
                     "(bias on o_proj)")
  heads = _required(hf, "num_attention_heads")
  hidden = _required(hf, "hidden_size")
  head_dim = hf.get("head_dim") or (128 if family == "qwen3"
                                    else hidden // heads)
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
                       get: Callable[[str], np.ndarray]) -> Decoder:
  """Builds a `Decoder` from Hugging Face-named tensors.

  Args:
    cfg: the configuration.
    names: the tensor names available.
    get: name -> numpy array ``[out, in]`` (Hugging Face layout).

  Raises:
    ValueError: missing or unexpected tensors, or a wrong shape, naming them.
  """
  layout = list(hf_layout(cfg))
  expected = {name for _, name, _ in layout}
  missing = sorted(expected - set(names))
  if missing:
    raise ValueError(f"checkpoint is missing {len(missing)} tensor(s): "
                     f"{missing[:8]}{' ...' if len(missing) > 8 else ''}")
  ignored = {n for n in names if _IGNORED.match(n)}
  if cfg.tie_word_embeddings:
    ignored.add("lm_head.weight")
  unexpected = sorted(set(names) - expected - ignored)
  if unexpected:
    raise ValueError(f"checkpoint has {len(unexpected)} unexpected "
                     f"tensor(s) for {cfg.hf_model_type}: {unexpected[:8]}")

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
      raise ValueError(f"tensor {name} has shape {hf_shape}, expected "
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
  """Tensor name -> safetensors file of a checkpoint directory."""
  index = path / _INDEX
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    return {name: path / f for name, f in weight_map.items()}
  files = sorted(path.glob("*.safetensors"))
  if not files:
    raise ValueError(f"no *.safetensors files in {path}")
  out = {}
  for f in files:
    with safetensors.safe_open(f, framework="numpy") as st:
      out.update({name: f for name in st.keys()})
  return out


def pretrained_config(path: str | os.PathLike, *, dtype: Any = jnp.float32,
                      param_dtype: Any = None, **overrides) -> DecoderConfig:
  """The `DecoderConfig` of a Hugging Face checkpoint directory, from its
  config.json alone (no weights are read): e.g. to compile the model's
  programs ahead of time (`experiments.preflight`)."""
  config_file = pathlib.Path(path) / "config.json"
  if not config_file.exists():
    raise ValueError(f"no config.json in {path}")
  return config_from_hf(json.loads(config_file.read_text()), dtype=dtype,
                        param_dtype=param_dtype or dtype, **overrides)


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
    ValueError: unknown architecture, missing/unexpected tensors.
  """
  path = pathlib.Path(path)
  cfg = pretrained_config(path, dtype=dtype, param_dtype=param_dtype,
                          **overrides)
  files = _tensor_files(path)
  handles: dict[pathlib.Path, Any] = {}

  def get(name):
    f = files[name]
    if f not in handles:
      handles[f] = safetensors.safe_open(f, framework="numpy")
    return handles[f].get_tensor(name)

  return model_from_tensors(cfg, set(files), get)


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
