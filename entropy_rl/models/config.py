"""`DecoderConfig`: the dimensions and options of a Llama/Qwen decoder."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

_FAMILIES = ("llama", "qwen2", "qwen3")
REMAT_POLICIES = ("none", "block", "dots")
ATTENTION_CHOICES = ("auto", "xla", "chunked", "splash", "cudnn")
DECODE_ATTENTION_CHOICES = ("auto", "xla", "paged")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Dimensions and numerics of a decoder-only transformer.

  Covers the Llama, Qwen2 and Qwen3 families: RMSNorm, RoPE (HF half-split),
  grouped-query attention, SwiGLU MLP, optional q/k/v bias (Qwen2), optional
  per-head q/k RMSNorm (Qwen3), tied or untied LM head.

  Attributes:
    vocab_size: V.
    hidden_size: D, the residual width.
    num_layers: L.
    num_heads: H, query heads.
    num_kv_heads: K, key/value heads (H % K == 0; K == H is plain MHA).
    head_dim: Dh; ``None`` means D // H.
    intermediate_size: F, the SwiGLU width.
    rope_theta: RoPE base.
    rms_norm_eps: epsilon of every RMSNorm.
    tie_word_embeddings: LM head = embedding transposed.
    qkv_bias: bias on the q, k, v projections (Qwen2).
    qk_norm: RMSNorm over Dh of each q and k head before RoPE (Qwen3).
    max_position_embeddings: longest context the checkpoint was trained on
      (metadata; nothing is allocated from it).
    dtype: compute dtype of activations and matmuls (softmax, norms and
      logits are always float32).
    param_dtype: dtype the parameters are stored in.
    scan_layers: stack the layers' parameters on a leading ``layers`` axis
      and run them with ``lax.scan`` (faster compiles for deep models);
      the default unrolls them in Python (faster on CPU).
    family: the Hugging Face ``model_type`` written by ``save_pretrained``;
      ``None`` derives it (qk_norm -> qwen3, qkv_bias -> qwen2, else llama).
    attention: the attention implementation of full-sequence passes
      (training, prefill): ``"auto"`` picks by the platform the program is
      built for (Pallas splash attention on TPU, cuDNN on GPU, on CPU the
      materialised reference up to 512 tokens and the chunked online
      softmax beyond), or one of ``entropy_rl.models.attention``'s
      ``IMPLEMENTATIONS`` (``"xla"``, ``"chunked"``, ``"splash"``,
      ``"cudnn"``).
    attention_chunk: query/key block of the ``"chunked"`` path.
    decode_attention: the attention of cached decode steps (one new token
      per row): ``"auto"`` picks by the platform the program is built for
      (``"paged"`` on TPU, ``"xla"`` elsewhere); ``"xla"``: einsums over
      every slot of the cache; ``"paged"``: JAX's Pallas paged-attention
      kernel over each row's live slots, for caches that declare them
      (``KVCache.lengths``, as the sampler's do), in interpret mode off TPU
      (``entropy_rl.models.attention.resolve_decode``).
    remat: rematerialisation of each block in full-sequence passes with
      gradients: ``"none"`` (save every activation), ``"block"`` (save
      only each block's input; the backward pass recomputes the block),
      ``"dots"`` (save the matrix products' outputs, recompute the rest).
      Memory of the saved activations per layer: O(B·S·(D + F)) for none,
      O(B·S·D) for block.
  """
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  intermediate_size: int
  head_dim: int | None = None
  rope_theta: float = 10_000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = True
  qkv_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 2048
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  scan_layers: bool = False
  family: str | None = None
  attention: str = "auto"
  attention_chunk: int = 512
  remat: str = "none"
  decode_attention: str = "auto"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                 "num_kv_heads", "intermediate_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
          f"({self.num_kv_heads})")
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise ValueError(
            f"hidden_size ({self.hidden_size}) is not divisible by num_heads "
            f"({self.num_heads}); give head_dim explicitly")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
    if self.remat not in REMAT_POLICIES:
      raise ValueError(
          f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
    if self.attention not in ATTENTION_CHOICES:
      raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, got "
                       f"{self.attention!r}")
    if self.decode_attention not in DECODE_ATTENTION_CHOICES:
      raise ValueError(f"decode_attention must be one of "
                       f"{DECODE_ATTENTION_CHOICES}, got "
                       f"{self.decode_attention!r}")
    if self.attention_chunk < 1:
      raise ValueError(f"attention_chunk must be >= 1, got "
                       f"{self.attention_chunk}")
    if self.family is not None and self.family not in _FAMILIES:
      raise ValueError(
          f"family must be one of {_FAMILIES}, got {self.family!r}")

  @property
  def hf_model_type(self) -> str:
    """The Hugging Face ``model_type`` this configuration saves as."""
    if self.family is not None:
      return self.family
    if self.qk_norm:
      return "qwen3"
    return "qwen2" if self.qkv_bias else "llama"

  def replace(self, **changes) -> DecoderConfig:
    return dataclasses.replace(self, **changes)

  @classmethod
  def tiny(cls, **overrides) -> DecoderConfig:
    """The peer benchmark's ``tiny`` preset (Qwen2 architecture, 3.3M)."""
    return cls(**{**dict(
        vocab_size=512, hidden_size=256, num_layers=4, num_heads=4,
        num_kv_heads=4, intermediate_size=1024, tie_word_embeddings=True,
        qkv_bias=True, rope_theta=10_000.0, rms_norm_eps=1e-6,
        max_position_embeddings=2048), **overrides})

  @classmethod
  def qwen2_5_0_5b(cls, **overrides) -> DecoderConfig:
    """Qwen2.5-0.5B dimensions (494M parameters)."""
    return cls(**{**dict(
        vocab_size=151_936, hidden_size=896, num_layers=24, num_heads=14,
        num_kv_heads=2, intermediate_size=4864, tie_word_embeddings=True,
        qkv_bias=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        max_position_embeddings=32_768), **overrides})

  @classmethod
  def qwen2_5_1_5b(cls, **overrides) -> DecoderConfig:
    """Qwen2.5-1.5B dimensions (1.54B parameters)."""
    return cls(**{**dict(
        vocab_size=151_936, hidden_size=1536, num_layers=28, num_heads=12,
        num_kv_heads=2, intermediate_size=8960, tie_word_embeddings=True,
        qkv_bias=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        max_position_embeddings=32_768), **overrides})

  @classmethod
  def qwen2_5_7b(cls, **overrides) -> DecoderConfig:
    """Qwen2.5-7B dimensions (7.6B parameters, untied LM head)."""
    return cls(**{**dict(
        vocab_size=152_064, hidden_size=3584, num_layers=28, num_heads=28,
        num_kv_heads=4, intermediate_size=18_944, tie_word_embeddings=False,
        qkv_bias=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        max_position_embeddings=32_768), **overrides})

  @classmethod
  def smollm2_135m(cls, **overrides) -> DecoderConfig:
    """SmolLM2-135M dimensions (Llama architecture, 134.5M parameters)."""
    return cls(**{**dict(
        vocab_size=49_152, hidden_size=576, num_layers=30, num_heads=9,
        num_kv_heads=3, intermediate_size=1536, tie_word_embeddings=True,
        rope_theta=100_000.0, rms_norm_eps=1e-5,
        max_position_embeddings=8192), **overrides})
