"""From a config to objects: the only module that reads a ConfigDict.

Everything under ``jit`` sees plain objects built here once: the transform
chain, the objective, the optimizer, the sampling method, the mesh, the
model, the tokenizer and the task, bundled in a
:class:`entropy_rl.training.loop.Experiment`.

Regularizers are keyed by name so every knob can be overridden from the
command line (ml_collections cannot address list items)::

    config.regularizers.order = ("advantages", "steer")
    config.regularizers.advantages = dict(kind="grpo_advantages")
    config.regularizers.steer = dict(kind="steer", w_min=0.8, w_max=1.2)

``kind`` names a constructor in the explicit registries of
:mod:`entropy_rl.regularizers` (``TRANSFORMS``, ``OBJECTIVES``,
``ROLLOUT_HOOKS``; an unknown kind is an error listing the valid ones); the
other keys are its keyword arguments. A value ``dict(schedule="linear",
init=..., end=..., steps=...)`` (or ``"cosine"``, ``"constant"``) becomes an
optax schedule of the step.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import optax

from entropy_rl import parallel
from entropy_rl import regularizers
from entropy_rl.core import combine
from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import rollout as rollout_lib
from entropy_rl.core import types as core_types

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
           "float16": jnp.float16, "": None, None: None}


def _as_dict(cfg: Any) -> dict[str, Any]:
  if cfg is None:
    return {}
  if hasattr(cfg, "to_dict"):
    return cfg.to_dict()
  return dict(cfg)


def _unknown(what: str, name: str, valid) -> ValueError:
  valid = sorted(valid)
  close = difflib.get_close_matches(str(name), valid, 3)
  hint = f"; did you mean {close}?" if close else ""
  return ValueError(f"unknown {what} {name!r}{hint} Valid: {', '.join(valid)}")


# ----------------------------------------------------------- size checks


# The smallest valid value of each size / count field of an RLVR config
# (0 where 0 means "off" or "the preset's"); checked by build_experiment.
SIZE_MINIMUMS: dict[str, int] = {
    "num_seeds": 1,
    "train.num_steps": 1, "train.epochs": 1, "train.minibatches": 1,
    "train.stat_scope": 0, "train.token_chunk": 1, "train.vocab_chunk": 1,
    "data.prompts_per_step": 1, "data.num_samples": 1,
    "data.max_prompt_len": 1,
    "sampling.max_new_tokens": 1, "sampling.block_size": 1,
    "sampling.top_k": 0, "sampling.top_h_n": 1, "sampling.num_buckets": 0,
    "rollout.dynamic_sampling.max_rounds": 1, "rollout.cure.n2": 1,
    "rollout.cure.top_k": 1,
    "optimizer.warmup_steps": 0,
    "sft.steps": 0, "sft.batch_size": 1, "sft.seq_len": 1,
    "sft.warmup_steps": 0,
    "eval.every": 0, "eval.num_prompts": 1, "eval.num_samples": 0,
    "eval.ks": 1,
    "checkpoint.every": 0, "checkpoint.keep": 1, "checkpoint.keep_best": 0,
    "log.every": 1,
    "model.hidden_size": 0, "model.num_layers": 0, "model.num_heads": 0,
    "model.num_kv_heads": 0, "model.intermediate_size": 0,
    "model.head_dim": 0, "model.attention_chunk": 1,
}


def check_sizes(config: Any, minimums: Mapping[str, int]) -> None:
  """Checks a config's size and count fields against their minimums.

  Used by the three builders (RLVR, agent, classic) before they build
  anything, so a bad size names its key instead of failing later inside
  the code it reaches.

  Args:
    config: a ConfigDict (or nested mappings).
    minimums: ``{dotted key: smallest valid value}``. A key the config
      lacks, or whose value is None or not a number, is skipped; the items
      of a list or tuple value are each checked (``eval.ks[1]``).

  Raises:
    ValueError: naming every field below its minimum, e.g.
      ``config.train.num_steps must be >= 1, got -1``.
  """
  errors = []
  for key, low in minimums.items():
    node = config
    for part in key.split("."):
      node = node.get(part) if hasattr(node, "keys") else None
    items = (list(enumerate(node)) if isinstance(node, (list, tuple))
             else [(None, node)])
    for i, v in items:
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        continue
      if v < low:
        name = key if i is None else f"{key}[{i}]"
        errors.append(f"config.{name} must be >= {low}, got {v}")
  if errors:
    raise ValueError("; ".join(errors))


# ------------------------------------------------------------- registries


def regularizer_registry() -> dict[str, Callable[..., Any]]:
  """``kind -> constructor`` of every chain member
  (``entropy_rl.regularizers.TRANSFORMS``)."""
  return dict(regularizers.TRANSFORMS)


def objective_registry() -> dict[str, Callable[..., Any]]:
  """``kind -> constructor`` of every objective (core presets and the
  methods' own: ``entropy_rl.regularizers.OBJECTIVES``)."""
  return dict(regularizers.OBJECTIVES)


def _schedule(spec: Mapping[str, Any]) -> Callable[[Any], Any]:
  kind = spec.get("schedule")
  if kind == "constant":
    return optax.constant_schedule(spec["value"])
  if kind == "linear":
    return optax.linear_schedule(spec["init"], spec["end"], spec["steps"],
                                 spec.get("begin", 0))
  if kind == "cosine":
    return optax.cosine_decay_schedule(spec["init"], spec["steps"],
                                       spec.get("alpha", 0.0))
  raise _unknown("schedule", kind, ("constant", "linear", "cosine"))


def _kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for k, v in spec.items():
    if k == "kind":
      continue
    if isinstance(v, Mapping) and "schedule" in v:
      v = _schedule(v)
    elif isinstance(v, list):
      v = tuple(v)
    out[k] = v
  return out


def _call(what: str, kind: str, fn: Callable, kwargs: dict[str, Any]):
  params = inspect.signature(fn).parameters
  if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
    bad = sorted(set(kwargs) - set(params))
    if bad:
      raise ValueError(
          f"{what} {kind!r} got unknown arguments {bad}; its arguments are "
          f"{', '.join(params)}")
  return fn(**kwargs)


# ---------------------------------------------------------- transforms


def build_transform(cfg: Any, *, response_len: int | None = None,
                    group_size: int | None = None,
                    after_advantages: tuple = ()
                    ) -> core_types.EntropyTransform:
  """``config.regularizers`` -> ``named_chain`` in ``order``.

  Args:
    cfg: a ConfigDict with ``order`` (tuple of names) and one sub-dict per
      name with ``kind`` and keyword arguments.
    response_len: fills ``l_max`` / ``l_cache`` style arguments left at -1.
    group_size: fills a ``group_size`` argument left at 0 (RiskPO).
    after_advantages: extra ``(name, transform)`` members inserted after the
      last member whose kind is an advantage estimator (``*advantages``),
      or first if there is none (the AEPO rollout's advantages).

  Returns:
    The named chain.
  """
  spec = _as_dict(cfg)
  order = tuple(spec.get("order", ()))
  registry = regularizer_registry()
  members = []
  for name in order:
    if name not in spec:
      raise _unknown("regularizer entry (config.regularizers.order names "
                     "an entry that is not defined)", name,
                     [k for k in spec if k != "order"])
    sub = dict(spec[name])
    kind = sub.get("kind")
    if kind not in registry:
      raise _unknown(f"regularizer kind for {name!r}", kind, registry)
    kw = _kwargs(sub)
    if "l_max" in kw and kw["l_max"] == -1:
      kw["l_max"] = response_len
    if "group_size" in kw and kw["group_size"] == 0:
      kw["group_size"] = group_size
    members.append((name, _call("regularizer", kind, registry[kind], kw)))
  if after_advantages:
    adv = [i for i, n in enumerate(order)
           if str(spec[n].get("kind", "")).endswith("advantages")]
    at = adv[-1] + 1 if adv else 0
    members[at:at] = list(after_advantages)
  return combine.named_chain(*members)


def build_objective(cfg: Any, *, response_len: int | None = None
                    ) -> objectives_lib.Objective:
  """``config.objective`` (``kind`` + keyword arguments) -> Objective.

  An ``l_max`` of -1 is replaced by ``response_len`` (Dr. GRPO's L_max).
  """
  spec = _as_dict(cfg)
  kind = spec.get("kind")
  registry = objective_registry()
  if kind not in registry:
    raise _unknown("objective kind", kind, registry)
  kw = _kwargs(spec)
  if kw.get("l_max") == -1:
    kw["l_max"] = response_len
  return _call("objective", kind, registry[kind], kw)


# ---------------------------------------------------------- optimizer


def build_schedule(cfg: Any, num_steps: int) -> Callable[[Any], Any] | float:
  """Learning-rate schedule: constant / cosine / linear with warm-up."""
  spec = _as_dict(cfg)
  lr = float(spec.get("learning_rate", 1e-5))
  warmup = int(spec.get("warmup_steps", 0))
  kind = spec.get("schedule", "constant")
  decay_steps = max(int(num_steps) - warmup, 1)
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps,
                                       float(spec.get("final_fraction", 0.0)))
  elif kind == "linear":
    main = optax.linear_schedule(lr, lr * float(spec.get("final_fraction",
                                                         0.0)), decay_steps)
  else:
    raise _unknown("learning-rate schedule", kind,
                   ("constant", "cosine", "linear"))
  if warmup <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), main], [warmup])


_OPTIMIZERS = ("adamw", "adam", "sgd", "lion", "adafactor")


def build_optimizer(cfg: Any, num_steps: int
                    ) -> optax.GradientTransformation:
  """``config.optimizer`` -> optax (clipping is done by the train step)."""
  spec = _as_dict(cfg)
  name = spec.get("name", "adamw")
  lr = build_schedule(spec, num_steps)
  wd = float(spec.get("weight_decay", 0.0))
  if name == "adamw":
    return optax.adamw(lr, b1=spec.get("b1", 0.9), b2=spec.get("b2", 0.999),
                       eps=spec.get("eps", 1e-8), weight_decay=wd)
  if name == "adam":
    return optax.adam(lr, b1=spec.get("b1", 0.9), b2=spec.get("b2", 0.999),
                      eps=spec.get("eps", 1e-8))
  if name == "sgd":
    return optax.sgd(lr, momentum=spec.get("momentum") or None)
  if name == "lion":
    return optax.lion(lr, weight_decay=wd)
  if name == "adafactor":
    return optax.adafactor(lr)
  raise _unknown("optimizer", name, _OPTIMIZERS)


# ------------------------------------------------------------ sampling


_METHODS = ("temperature", "greedy", "top_k", "top_p", "min_p", "top_h")


def build_sampling(cfg: Any, *, temperature: float | None = None) -> Any:
  """``config.sampling`` -> a ``SamplingMethod`` (the rollout policy).

  Methods are values: equal settings give equal methods, so the sampler's
  compilation (keyed by the method) is shared by runs in one process.
  """
  spec = _as_dict(cfg)
  method = spec.get("method", "temperature")
  t = float(spec.get("temperature", 1.0) if temperature is None
            else temperature)
  return _sampling_method(method, t, spec)


def _sampling_method(method: str, t: float, spec: Mapping[str, Any]) -> Any:
  from entropy_rl import sampling  # pylint: disable=import-outside-toplevel
  if method == "temperature":
    return sampling.temperature(t)
  if method == "greedy":
    return sampling.greedy()
  if method == "top_k":
    return sampling.top_k(int(spec["top_k"]), t)
  if method == "top_p":
    return sampling.top_p(float(spec["top_p"]), t)
  if method == "min_p":
    return sampling.min_p(float(spec["min_p"]), t)
  if method == "top_h":
    return sampling.top_h(float(spec.get("top_h_alpha", 0.4)),
                          int(spec.get("top_h_n", 100)), t)
  raise _unknown("sampling method", method, _METHODS)


def _members_of_kind(config: Any, kind: str) -> list[str]:
  """Names in ``config.regularizers.order`` whose entry has ``kind``."""
  return [n for n in config.regularizers.order
          if config.regularizers[n].kind == kind]


def build_rollout_processors(config: Any) -> tuple[tuple, Any]:
  """Rollout-side logits processors whose parameters live in transform state.

  ``config.sampling.hapo_tau > 0``: HAPO's per-token adaptive temperature
  ``T_t = T₀(1 + τ ĥ_t)`` (T₀ = ``config.sampling.temperature``), built
  with the settings it shares with the ``hapo`` chain member (the same
  keyword arguments: ``regularizers.hapo_sampler_kwargs``, e.g. its
  ``sign_mode``), with the entropy normalisation the member stored at the
  last step (``regularizers.hapo_sampler_params``; the first rollout uses
  T₀).

  Returns:
    ``(processors, processor_params_fn)`` for the Experiment.
  """
  tau = float(config.sampling.get("hapo_tau", 0.0) or 0.0)
  if tau <= 0:
    return (), None
  from entropy_rl import sampling  # pylint: disable=import-outside-toplevel
  t0 = float(config.sampling.temperature)
  names = _members_of_kind(config, "hapo")
  if not names:
    raise ValueError("config.sampling.hapo_tau > 0 needs a regularizer of "
                     "kind 'hapo' in config.regularizers.order")
  name = names[0]
  kw = _kwargs(_as_dict(config.regularizers[name]))
  proc = sampling.hapo_temperature(tau, t0,
                                   **regularizers.hapo_sampler_kwargs(**kw))

  def params_fn(transform_state):
    return (regularizers.hapo_sampler_params(
        combine.get_state(transform_state, name), proc.init()),)

  return (proc,), params_fn


def build_rollout_hook(config: Any, tokenizer: Any = None
                       ) -> rollout_lib.RolloutHookSpec | None:
  """``config.rollout`` -> the Experiment's rollout hook (None: plain).

  Every enabled entry ``config.rollout.<name>`` but ``dynamic_sampling``
  names a factory of ``entropy_rl.regularizers.ROLLOUT_HOOKS`` (at most one
  may be enabled), called with the entry's other keys and, where the
  factory declares them, ``tokenizer`` and ``member_kwargs`` /
  ``state_name`` (the chain member of kind ``<name>``, which must be in
  ``config.regularizers.order``). ``dynamic_sampling.enabled`` wraps the
  result (or the plain rollout) in DAPO's filter of all-tied groups, with
  at most ``max_rounds`` generation rounds per step.

  Returns:
    A ``RolloutHookSpec``, or None when every entry is off (a config
    without ``rollout`` has every hook off).
  """
  from entropy_rl.training import hooks  # pylint: disable=import-outside-toplevel
  r = _as_dict(config.get("rollout"))
  specs = []
  for name, entry in r.items():
    entry = dict(entry or {})
    if name == "dynamic_sampling" or not entry.pop("enabled", False):
      continue
    if name not in regularizers.ROLLOUT_HOOKS:
      raise _unknown("rollout hook (config.rollout)", name,
                     list(regularizers.ROLLOUT_HOOKS) + ["dynamic_sampling"])
    factory = regularizers.ROLLOUT_HOOKS[name]
    params = inspect.signature(factory).parameters
    kw = _kwargs(entry)
    if "tokenizer" in params:
      kw["tokenizer"] = tokenizer
    if "member_kwargs" in params:
      names = _members_of_kind(config, name)
      if not names:
        raise ValueError(f"config.rollout.{name}.enabled needs a regularizer "
                         f"of kind {name!r} in config.regularizers.order")
      kw["member_kwargs"] = _kwargs(_as_dict(config.regularizers[names[0]]))
      kw["state_name"] = names[0]
    specs.append(_call("rollout hook", name, factory, kw))
  if len(specs) > 1:
    raise ValueError(f"the {' and '.join(s.name for s in specs)} rollouts "
                     "cannot be combined")
  spec = specs[0] if specs else None
  ds = dict(r.get("dynamic_sampling") or {})
  if ds.get("enabled"):
    spec = hooks.dynamic_sampling_hook(
        spec, max_rounds=int(ds.get("max_rounds", 3)))
  return spec


def build_mesh(cfg: Any):
  """``config.mesh.shape`` -> a ("data", "fsdp", "tensor") mesh."""
  return parallel.make_mesh(tuple(_as_dict(cfg).get("shape", (-1, 1, 1))))


# ------------------------------------------------------ task and model


DEFAULT_REWARD_TIME_BUDGET = 0.2


def build_task(cfg: Any, tokenizer: Any = None) -> Any:
  """``config.task`` (``name`` + ``kwargs``) -> ``entropy_rl.data.Task``.

  Built-in tasks (which take a ``tokenizer`` argument) get ``tokenizer`` so
  their on-device checker decodes that tokenizer's ids. The task's
  ``reward_time_budget`` is ``config.task.reward_time_budget`` (CPU seconds
  per response; default `DEFAULT_REWARD_TIME_BUDGET`; 0 = unbounded,
  in-process).
  """
  from entropy_rl import data  # pylint: disable=import-outside-toplevel
  spec = _as_dict(cfg)
  kwargs = _kwargs(spec.get("kwargs", {}))
  name = spec["name"]
  factory = None if ":" in name else getattr(data, name, None)
  if (tokenizer is not None and factory is not None and
      "tokenizer" in inspect.signature(factory).parameters):
    kwargs["tokenizer"] = tokenizer
  task = data.get_task(name, **kwargs)
  budget = spec.get("reward_time_budget", DEFAULT_REWARD_TIME_BUDGET)
  if (isinstance(budget, bool) or not isinstance(budget, (int, float))
      or not 0 <= budget < 1e6):
    raise ValueError("config.task.reward_time_budget must be a number of "
                     f"seconds >= 0 (0 = unbounded), got {budget!r}")
  task = dataclasses.replace(task, reward_time_budget=float(budget) or None)
  suffix = spec.get("prompt_suffix", "")
  return with_prompt_suffix(task, suffix) if suffix else task


def with_prompt_suffix(task: Any, suffix: str) -> Any:
  """The task with ``suffix`` appended to every prompt (e.g. an answer
  format instruction for an instruction-tuned model); answers, checkers and
  gold solutions are unchanged."""
  from entropy_rl.data import types as data_types  # pylint: disable=import-outside-toplevel

  def add(example):
    prompt, answer = example
    return prompt + suffix, answer

  sample = task.sample
  examples = (None if task.examples is None
              else data_types.sequence_examples(task.examples, add))
  solution = task.solution_fn
  return dataclasses.replace(
      task, sample=lambda rng: add(sample(rng)), examples=examples,
      solution_fn=None if solution is None else (
          lambda prompt, answer: solution(prompt[:len(prompt) - len(suffix)],
                                          answer)))


_TOKENIZERS = ("task", "char", "gguf", "hf", "sentencepiece")


def build_tokenizer(cfg: Any, model_cfg: Any = None) -> Any:
  """``config.tokenizer`` -> a tokenizer.

  Kinds: ``task`` / ``char`` (the built-in tasks' character tokenizer),
  ``gguf`` (from the model's GGUF file, or ``path``), ``hf`` (a Hugging
  Face tokenizer directory: ``path`` or the model's path), ``sentencepiece``
  (a ``.model`` file).
  """
  from entropy_rl import tokenizers  # pylint: disable=import-outside-toplevel
  spec = _as_dict(cfg)
  kind = spec.get("kind", "task")
  path = spec.get("path", "") or _as_dict(model_cfg).get("path", "")
  if kind in ("task", "char"):
    return tokenizers.CharTokenizer()
  if kind == "gguf":
    from entropy_rl.models import gguf  # pylint: disable=import-outside-toplevel
    return gguf.gguf_tokenizer(path or gguf.smollm2_gguf_path())
  if kind == "hf":
    if not path:
      raise ValueError("tokenizer kind 'hf' needs --config.tokenizer.path "
                       "(or --config.model.path)")
    return tokenizers.HFTokenizer.from_pretrained(path)
  if kind == "sentencepiece":
    if not path:
      raise ValueError("tokenizer kind 'sentencepiece' needs "
                       "--config.tokenizer.path")
    return tokenizers.SentencePieceTokenizer(path)
  raise _unknown("tokenizer kind", kind, _TOKENIZERS)


_PRESETS = {"tiny": "tiny", "qwen2.5-0.5b": "qwen2_5_0_5b",
            "0.5b": "qwen2_5_0_5b", "qwen2.5-1.5b": "qwen2_5_1_5b",
            "1.5b": "qwen2_5_1_5b", "qwen2.5-7b": "qwen2_5_7b",
            "7b": "qwen2_5_7b", "smollm2-135m": "smollm2_135m"}
_DIMS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
         "intermediate_size", "head_dim")
_MODELS = ("decoder", "gguf", "pretrained")


def build_model(cfg: Any, *, vocab_size: int | None = None, seed: int = 0,
                abstract: bool = False):
  """``config.model`` -> ``(fns, params, logical_axes)``.

  Kinds: ``decoder`` (random init of a preset, dims overridable; the
  vocabulary follows the tokenizer when ``vocab_from_tokenizer``), ``gguf``
  (a GGUF file; empty ``path``: SmolLM2-135M-Instruct), ``pretrained``
  (a Hugging Face safetensors directory, e.g. Qwen2.5-0.5B).

  With ``abstract`` the parameters are ``jax.ShapeDtypeStruct``s: nothing
  is initialised or read but the checkpoint's config (config.json, GGUF
  metadata); a checkpoint kind without a ``path`` takes the dimensions of
  ``preset`` (e.g. ``"0.5b"``).
  """
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from entropy_rl import models  # pylint: disable=import-outside-toplevel
  spec = _as_dict(cfg)
  kind = spec.get("kind", "decoder")
  dtype = _DTYPES[spec.get("dtype", "float32")]
  pdtype = _DTYPES[spec.get("param_dtype", "")] or dtype
  extra = {"scan_layers": bool(spec.get("scan_layers", False)),
           "attention": str(spec.get("attention", "auto")),
           "attention_chunk": int(spec.get("attention_chunk", 512)),
           "remat": str(spec.get("remat", "none")),
           "decode_attention": str(spec.get("decode_attention", "auto"))}
  def preset_config(vocab_from_tokenizer: bool):
    preset = spec.get("preset", "tiny")
    if preset not in _PRESETS:
      raise _unknown("model preset", preset, _PRESETS)
    dims = {k: int(spec[k]) for k in _DIMS if spec.get(k)}
    if vocab_size and vocab_from_tokenizer:
      dims["vocab_size"] = int(vocab_size)
    return getattr(models.DecoderConfig, _PRESETS[preset])(
        dtype=dtype, param_dtype=pdtype, **dims, **extra)

  if abstract:
    from entropy_rl.models import gguf  # pylint: disable=import-outside-toplevel
    if kind not in _MODELS:
      raise _unknown("model kind", kind, _MODELS)
    if kind == "decoder":
      mcfg = preset_config(spec.get("vocab_from_tokenizer", True))
    elif kind == "gguf" and (spec.get("path") or spec.get("preset") not in
                             _PRESETS):
      mcfg = gguf.gguf_config(spec.get("path", "") or
                              gguf.smollm2_gguf_path(), dtype=dtype,
                              param_dtype=pdtype, **extra)
    elif kind == "pretrained" and spec.get("path"):
      mcfg = models.pretrained_config(spec["path"], dtype=dtype,
                                      param_dtype=pdtype, **extra)
    else:
      mcfg = preset_config(False)
    model = models.abstract_decoder(mcfg)
  elif kind == "decoder":
    mcfg = preset_config(spec.get("vocab_from_tokenizer", True))
    model = models.Decoder(mcfg, rngs=nnx.Rngs(seed))
  elif kind == "gguf":
    from entropy_rl.models import gguf  # pylint: disable=import-outside-toplevel
    path = spec.get("path", "") or gguf.smollm2_gguf_path()
    model, _ = gguf.load_gguf(path, dtype=dtype, param_dtype=pdtype, **extra)
  elif kind == "pretrained":
    if not spec.get("path"):
      raise ValueError("model kind 'pretrained' needs --config.model.path "
                       "(a Hugging Face checkpoint directory)")
    model = models.load_pretrained(spec["path"], dtype=dtype,
                                   param_dtype=pdtype, **extra)
  else:
    raise _unknown("model kind", kind, _MODELS)
  fns, params = models.as_functions(model)
  return fns, params, models.logical_axes(model)


# ------------------------------------------------------------- together


def _dtype_or_none(name: str):
  return _DTYPES[name]


def build_settings(config: Any) -> Any:
  """The loop's plain :class:`~entropy_rl.training.loop.Settings`."""
  from entropy_rl.training import loop  # pylint: disable=import-outside-toplevel
  c = config
  return loop.Settings(
      num_steps=int(c.train.num_steps),
      prompts_per_step=int(c.data.prompts_per_step),
      num_samples=int(c.data.num_samples),
      max_prompt_len=int(c.data.max_prompt_len),
      max_new_tokens=int(c.sampling.max_new_tokens),
      seed=int(c.seed), num_seeds=int(c.num_seeds),
      data_seed=int(c.data.seed),
      use_chat_template=bool(c.data.use_chat_template),
      add_bos=bool(c.data.add_bos), jax_reward=bool(c.data.jax_reward),
      sft_steps=int(c.sft.steps), sft_batch_size=int(c.sft.batch_size),
      sft_seq_len=int(c.sft.seq_len),
      eval_every=int(c.eval.every), eval_prompts=int(c.eval.num_prompts),
      eval_samples=int(c.eval.num_samples),
      eval_ks=tuple(int(k) for k in c.eval.ks), eval_seed=int(c.eval.seed),
      checkpoint_every=int(c.checkpoint.every),
      keep_checkpoints=int(c.checkpoint.keep),
      keep_best=int(c.checkpoint.keep_best),
      best_metric=str(c.checkpoint.best_metric),
      async_checkpoints=bool(c.checkpoint.async_save),
      log_every=int(c.log.every), tensorboard=bool(c.log.tensorboard),
      progress=bool(c.log.progress),
      mesh_shape=tuple(int(x) for x in c.mesh.shape),
      xla_options=parse_xla_options(str(c.train.get("xla_options", ""))))


def parse_xla_options(text: str) -> tuple[tuple[str, str], ...]:
  """``"name=value,name2=value2"`` -> ((name, value), ...); "" -> ().

  A value may be empty (``"xla_cpu_experimental_ynn_fusion_type="``).
  Whether XLA knows a name is checked when the step compiles.
  """
  out = []
  for item in (x.strip() for x in text.split(",")):
    if not item:
      continue
    name, sep, value = item.partition("=")
    name = name.strip().lstrip("-")
    if not sep or not name or not name.replace("_", "").isalnum():
      raise ValueError(
          f"bad XLA option {item!r} in {text!r}: expected name=value "
          "(e.g. xla_cpu_experimental_ynn_fusion_type=)")
    out.append((name, value.strip()))
  return tuple(out)


def step_kwargs(config: Any) -> dict[str, Any]:
  """Keyword arguments of ``training.make_train_step`` from ``config``."""
  t = config.train
  return dict(
      epochs=int(t.epochs), minibatches=int(t.minibatches),
      max_grad_norm=float(config.optimizer.max_grad_norm) or None,
      stat_scope=int(t.stat_scope) or None,
      temperature=float(config.sampling.temperature),
      token_chunk=int(t.token_chunk), vocab_chunk=int(t.vocab_chunk),
      compute_dtype=_dtype_or_none(t.compute_dtype),
      recompute_old_logp=bool(t.recompute_old_logp),
      fuse_old_pass=bool(t.fuse_old_pass),
      measure_entropy_change=bool(t.measure_entropy_change))


def _same(a: Any, b: Any) -> bool:
  return _as_dict(a) == _as_dict(b)


def build_experiment(config: Any, *, reuse: Any = None,
                     abstract: bool = False) -> Any:
  """The whole :class:`~entropy_rl.training.loop.Experiment` of a config.

  Args:
    config: the experiment config.
    reuse: an Experiment built from a config with the same ``model``,
      ``tokenizer``, ``task`` and ``seed``: its model, tokenizer and task
      are reused instead of rebuilt (side-by-side variants).
    abstract: build for ahead-of-time compilation only: abstract
      parameters (``build_model(abstract=True)``), no task (None), and the
      tokenizer only where it needs no file the config lacks (else None:
      the programs then use the model's vocabulary). Such an Experiment
      cannot run; ``entropy_rl.training.preflight`` compiles it.
  """
  from entropy_rl.training import loop  # pylint: disable=import-outside-toplevel
  c = config
  check_sizes(c, SIZE_MINIMUMS)
  old = None if reuse is None else reuse.config
  if abstract:
    tokenizer = _abstract_tokenizer(c)
    task = None
    fns, params, axes = build_model(
        c.model, vocab_size=None if tokenizer is None
        else tokenizer.vocab_size, seed=int(c.seed), abstract=True)
  elif old is not None and c.seed == old.seed and all(
      _same(c[k], old[k]) for k in ("model", "tokenizer", "task")):
    tokenizer, task = reuse.tokenizer, reuse.task
    fns, params, axes = reuse.fns, reuse.params, reuse.logical_axes
  else:
    tokenizer = build_tokenizer(c.tokenizer, c.model)
    task = build_task(c.task, tokenizer)
    fns, params, axes = build_model(c.model, vocab_size=tokenizer.vocab_size,
                                    seed=int(c.seed))
  n = int(c.sampling.max_new_tokens)
  sft_opt = None
  if int(c.sft.steps) > 0:
    sft_opt = build_optimizer(
        dict(name="adamw", learning_rate=float(c.sft.learning_rate),
             warmup_steps=int(c.sft.warmup_steps),
             weight_decay=float(c.sft.weight_decay),
             schedule=str(c.sft.schedule)), int(c.sft.steps))
  processors, params_fn = build_rollout_processors(c)
  hook = build_rollout_hook(c, tokenizer)
  group = int(c.data.num_samples)
  extra = ()
  if hook is not None:
    group = hook.rows_per_prompt(group)
    extra = tuple(hook.after_advantages)
  exp = loop.Experiment(
      fns=fns, params=params, logical_axes=axes, tokenizer=tokenizer,
      task=task,
      transform=build_transform(c.regularizers, response_len=n,
                                group_size=group, after_advantages=extra),
      objective=build_objective(c.objective, response_len=n),
      optimizer=build_optimizer(c.optimizer, int(c.train.num_steps)),
      sft_optimizer=sft_opt,
      sampling=build_sampling(c.sampling, temperature=1.0 if processors
                              else None),
      rollout_processors=processors, processor_params_fn=params_fn,
      eval_sampling=build_sampling(c.sampling,
                                   temperature=float(c.eval.temperature)),
      step_kwargs=step_kwargs(c),
      sampler_kwargs=build_sampler_kwargs(c.sampling),
      settings=build_settings(c), config=c, rollout_hook=hook)
  return exp


def _abstract_tokenizer(config: Any) -> Any:
  """The config's tokenizer when it is cheap and needs no missing file
  (the built-in character tokenizer, or one whose file is given), else
  None."""
  kind = _as_dict(config.tokenizer).get("kind", "task")
  path = (_as_dict(config.tokenizer).get("path", "") or
          _as_dict(config.model).get("path", ""))
  if kind in ("task", "char") or path:
    return build_tokenizer(config.tokenizer, config.model)
  return None


def build_sampler_kwargs(spec: Any) -> dict:
  """Keyword arguments of ``sampling.sample`` from ``config.sampling``:
  ``block_size``, ``num_buckets`` (0: the platform's default) and
  ``share_prompt`` ("auto" | "on" | "off")."""
  share = {"auto": None, "on": True, "off": False}
  mode = spec.get("share_prompt", "auto")
  if mode not in share:
    raise ValueError(f"sampling.share_prompt must be one of {sorted(share)}, "
                     f"got {mode!r}")
  buckets = int(spec.get("num_buckets", 0) or 0)
  if buckets < 0:
    raise ValueError(f"sampling.num_buckets must be >= 0 (0: auto), got "
                     f"{buckets}")
  return dict(block_size=int(spec.block_size), num_buckets=buckets or None,
              share_prompt=share[mode])


# ------------------------------------------------------------- variants


def deep_update(cfg: Any, overrides: Mapping[str, Any]) -> None:
  """Recursively sets ``overrides`` (nested dicts) on a ConfigDict."""
  for k, v in overrides.items():
    if isinstance(v, Mapping) and k in cfg and hasattr(cfg[k], "keys"):
      deep_update(cfg[k], v)
    else:
      if k not in cfg:
        raise _unknown("config key in a variant", k, list(cfg.keys()))
      cfg[k] = v


def variants(config: Any) -> list[tuple[str, Any]]:
  """``[(name, config)]``: one config per ``config.variants`` entry (each a
  nested dict of overrides), or ``[("", config)]`` without variants."""
  names = list(_as_dict(config.get("variants", {})))
  if not names:
    return [("", config)]
  out = []
  for name in names:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      deep_update(c, _as_dict(config.variants[name]))
    out.append((name, c))
  return out


__all__ = (
    "build_experiment", "build_mesh", "build_model", "build_objective",
    "build_optimizer", "build_rollout_hook", "build_rollout_processors",
    "build_sampling",
    "build_schedule", "build_settings",
    "build_task", "build_tokenizer", "build_transform", "check_sizes",
    "deep_update",
    "objective_registry", "regularizer_registry", "SIZE_MINIMUMS",
    "step_kwargs", "variants",
)
