"""Tokenizers behind one small interface: char-level, sentencepiece, HF.

Every tokenizer the library uses (the samplers, the data pipelines, the
reward checkers) is seen through the `Tokenizer` protocol:

* attributes ``vocab_size``, ``pad_id``, ``bos_id``, ``eos_id`` (``None``
  where the tokenizer has no such token) and ``end_ids`` (the ids that end a
  generated response; the sampler stops on any of them);
* ``encode(text) -> list[int]`` (no special tokens added),
  ``decode(ids) -> str`` (decodes everything it is given, special tokens
  included; trimming at the end token is the caller's job, see
  `trim_at_end`), and ``apply_chat_template(messages,
  add_generation_prompt=True) -> str``.

Implementations here: `CharTokenizer` (a fixed character vocabulary, the
natural choice for the built-in arithmetic/Countdown tasks and the one the
on-device reward checkers parse), `SentencePieceTokenizer` (a user's
``.model`` file or one trained on the fly with `train_sentencepiece`) and
`HFTokenizer` (adapter over a Hugging Face ``transformers`` tokenizer,
imported lazily). The GGUF tokenizer of SmolLM2 lives in
``entropy_rl.models.gguf`` and follows the same protocol.
"""

from __future__ import annotations

import io
import os
import pathlib
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from entropy_rl.models import files as model_files

Message = Mapping[str, str]


@runtime_checkable
class Tokenizer(Protocol):
  """What the library needs from a tokenizer.

  Attributes:
    vocab_size: number of ids the tokenizer can produce (ids are in
      ``[0, vocab_size)``); a model's vocabulary may be larger (padded).
    pad_id: id used for padding (always an int).
    bos_id: beginning-of-sequence id, or None.
    eos_id: end-of-sequence id, or None.
    end_ids: ids that end a generated response (non-empty).
  """

  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int | None
  end_ids: tuple[int, ...]

  def encode(self, text: str) -> list[int]:
    """Token ids of ``text``, without special tokens."""

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ``ids``; special tokens are rendered, nothing is trimmed."""

  def apply_chat_template(self, messages: Sequence[Message],
                          add_generation_prompt: bool = True) -> str:
    """The prompt text of a conversation ``[{"role", "content"}, ...]``."""


def simple_chat_template(messages: Sequence[Message],
                         add_generation_prompt: bool = True) -> str:
  """A plain-text chat format for tokenizers without a template.

  ``"User: hi\\nAssistant: hello\\n"`` and, with ``add_generation_prompt``,
  a trailing ``"Assistant:"``.
  """
  out = []
  for m in messages:
    out.append(f"{str(m['role']).capitalize()}: {m['content']}\n")
  if add_generation_prompt:
    out.append("Assistant:")
  return "".join(out)


class TokenizerBase:
  """Convenience base: the default chat template and ``token_text``.

  Subclasses set the five attributes and implement ``encode``/``decode``.
  ``token_text(i)`` is the text token ``i`` contributes inside a decoded
  sequence (used to build the character tables of the on-device reward
  checkers); the default decodes the token alone.
  """

  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int | None
  end_ids: tuple[int, ...]

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    raise NotImplementedError

  def apply_chat_template(self, messages: Sequence[Message],
                          add_generation_prompt: bool = True) -> str:
    return simple_chat_template(messages, add_generation_prompt)

  def token_text(self, token_id: int) -> str:
    return self.decode([int(token_id)])

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(vocab_size={self.vocab_size}, "
            f"pad_id={self.pad_id}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, end_ids={self.end_ids})")


# ---------------------------------------------------------------------------
# Character-level tokenizer (built-in tasks).

DEFAULT_CHARS = "0123456789+-*/=() ,.:?"
CHAR_SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


class CharTokenizer(TokenizerBase):
  """One token per character of a fixed alphabet, plus 4 special tokens.

  Ids: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3 (the end token),
  then the characters of ``chars`` in order (with the default alphabet digit
  ``d`` is id ``4 + d``). Unknown characters encode to ``<unk>``; special
  tokens and out-of-range ids decode to their ``<name>`` so that a checker
  never mistakes them for text. The chat template joins the message contents
  (roles are dropped: the alphabet is tiny).

  Example:
    >>> tok = CharTokenizer()
    >>> tok.encode("12+7=")
    [5, 6, 14, 11, 18]
    >>> tok.decode(tok.encode("12+7=") + [tok.eos_id])
    '12+7=<eos>'
  """

  def __init__(self, chars: str = DEFAULT_CHARS):
    if len(set(chars)) != len(chars) or not chars:
      raise ValueError(f"chars must be non-empty and unique, got {chars!r}")
    self.chars = chars
    self.pad_id, self.unk_id, self.bos_id, self.eos_id = 0, 1, 2, 3
    self.end_ids = (self.eos_id,)
    self._pieces = list(CHAR_SPECIALS) + list(chars)
    self._ids = {c: i + len(CHAR_SPECIALS) for i, c in enumerate(chars)}
    self.vocab_size = len(self._pieces)

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(c, self.unk_id) for c in text]

  def decode(self, ids: Sequence[int]) -> str:
    return "".join(self.token_text(i) for i in ids)

  def token_text(self, token_id: int) -> str:
    i = int(token_id)
    return self._pieces[i] if 0 <= i < self.vocab_size else "<unk>"

  def apply_chat_template(self, messages: Sequence[Message],
                          add_generation_prompt: bool = True) -> str:
    del add_generation_prompt
    return "".join(str(m["content"]) for m in messages)


# ---------------------------------------------------------------------------
# SentencePiece.

_SP_CONTROL_TEXT = ""


class SentencePieceTokenizer(TokenizerBase):
  """A sentencepiece model (a ``.model`` path, or its serialized bytes).

  ``pad_id`` falls back to ``eos_id`` (or 0) when the model has no pad piece.
  ``end_ids`` defaults to ``(eos_id,)``. Out-of-range ids decode to the
  unknown symbol instead of raising.

  Args:
    model: path of a ``.model`` file, or the model's bytes.
    end_ids: ids that end a response (default: the eos id).
    chat_template: optional ``f(messages, add_generation_prompt) -> str``;
      default `simple_chat_template`.

  Raises:
    ModelFileError: (a path) no such file, or a truncated or corrupt model
      (a model cut between two pieces is caught too: it would otherwise
      load as a smaller vocabulary).
    ValueError: (bytes) not a complete sentencepiece model.
  """

  def __init__(self, model: str | os.PathLike[str] | bytes, *,
               end_ids: Sequence[int] | None = None,
               chat_template: Any = None):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if isinstance(model, (bytes, bytearray)):
      proto, path = bytes(model), None
    elif isinstance(model, (str, os.PathLike)):
      path = model
      if not os.path.exists(model):
        raise model_files.ModelFileError(
            model, "no sentencepiece file (no such file)")
      proto = model_files.read_bytes(model)
    else:
      raise ValueError(f"model must be a path or bytes, got {type(model)}")
    problem = model_files.sentencepiece_problem(proto)
    if problem is None:
      try:
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
      except Exception as e:  # sentencepiece raises RuntimeError/OSError.
        problem = str(e)
    if problem is not None:
      if path is not None:
        raise model_files.ModelFileError(
            path, f"not a sentencepiece model ({len(proto)} bytes): "
                  f"{problem}")
      raise ValueError(f"model: not a sentencepiece model ({problem})")
    self._proto = proto
    self.vocab_size = int(self.sp.get_piece_size())
    opt = lambda i: int(i) if i >= 0 else None
    self.bos_id = opt(self.sp.bos_id())
    self.eos_id = opt(self.sp.eos_id())
    self.unk_id = opt(self.sp.unk_id())
    pad = opt(self.sp.pad_id())
    self.pad_id = pad if pad is not None else (
        self.eos_id if self.eos_id is not None else 0)
    if end_ids is None:
      end_ids = () if self.eos_id is None else (self.eos_id,)
    self.end_ids = tuple(int(i) for i in end_ids)
    self._chat_template = chat_template

  def encode(self, text: str) -> list[int]:
    return list(self.sp.encode(text, out_type=int))

  def decode(self, ids: Sequence[int]) -> str:
    unk = self.unk_id if self.unk_id is not None else 0
    ids = [int(i) if 0 <= int(i) < self.vocab_size else unk for i in ids]
    return self.sp.decode(ids)

  def token_text(self, token_id: int) -> str:
    i = int(token_id)
    if not 0 <= i < self.vocab_size:
      i = self.unk_id if self.unk_id is not None else 0
    if self.sp.is_control(i):
      return _SP_CONTROL_TEXT
    if self.sp.is_unknown(i):
      return self.sp.decode([i])
    if self.sp.is_byte(i):  # A partial UTF-8 byte: never a checker char.
      return self.sp.id_to_piece(i)
    return self.sp.id_to_piece(i).replace("\u2581", " ")

  def apply_chat_template(self, messages: Sequence[Message],
                          add_generation_prompt: bool = True) -> str:
    if self._chat_template is not None:
      return self._chat_template(messages, add_generation_prompt)
    return simple_chat_template(messages, add_generation_prompt)

  def serialized_model(self) -> bytes:
    """The model's bytes (write them to a ``.model`` file to reload)."""
    return self._proto

  def save(self, path: str | os.PathLike[str]) -> None:
    with open(path, "wb") as f:
      f.write(self._proto)


def train_sentencepiece(
    lines: Iterable[str], vocab_size: int, *, model_type: str = "bpe",
    character_coverage: float = 1.0, split_digits: bool = True,
    byte_fallback: bool = False, user_defined_symbols: Sequence[str] = (),
    num_threads: int = 2, end_ids: Sequence[int] | None = None,
    **trainer_kwargs: Any) -> SentencePieceTokenizer:
  """Trains a sentencepiece model in memory, fully offline.

  Settings fixed for small task corpora: ``hard_vocab_limit=False`` (a narrow
  corpus may not reach ``vocab_size``; the model is then smaller),
  identity normalisation and no whitespace rewriting (exact round trips of
  the training alphabet), ``split_digits`` (numbers are read digit by digit),
  ids pad 0 / unk 1 / bos 2 / eos 3.

  Args:
    lines: training sentences (an iterator is fine; empty lines are skipped).
    vocab_size: target vocabulary size (upper bound).
    model_type: "bpe", "unigram", "char" or "word".
    character_coverage: fraction of characters covered (1.0 keeps all).
    split_digits: split numbers into single digits.
    byte_fallback: encode unseen characters as UTF-8 bytes instead of unk.
    user_defined_symbols: extra pieces kept whole.
    num_threads: trainer threads.
    end_ids: passed to `SentencePieceTokenizer`.
    **trainer_kwargs: any other ``SentencePieceTrainer.train`` option.

  Returns:
    A `SentencePieceTokenizer`.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if model_type not in ("bpe", "unigram", "char", "word"):
    raise ValueError("model_type must be one of bpe, unigram, char, word; "
                     f"got {model_type!r}")
  if vocab_size < 5:
    raise ValueError(f"vocab_size must be >= 5, got {vocab_size}")
  sentences = [s for s in (str(l).rstrip("\n") for l in lines) if s]
  if not sentences:
    raise ValueError("lines: the training corpus is empty")
  model = io.BytesIO()
  kwargs = dict(
      model_type=model_type, vocab_size=int(vocab_size),
      hard_vocab_limit=False, split_digits=split_digits,
      character_coverage=character_coverage, byte_fallback=byte_fallback,
      pad_id=0, unk_id=1, bos_id=2, eos_id=3,
      normalization_rule_name="identity", add_dummy_prefix=False,
      remove_extra_whitespaces=False, num_threads=num_threads,
      minloglevel=2)
  if user_defined_symbols:
    kwargs["user_defined_symbols"] = list(user_defined_symbols)
  kwargs.update(trainer_kwargs)
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences),
                                   model_writer=model, **kwargs)
  except RuntimeError as e:
    raise ValueError(f"sentencepiece training failed: {e}") from e
  return SentencePieceTokenizer(model.getvalue(), end_ids=end_ids)


# ---------------------------------------------------------------------------
# Hugging Face adapter.

# The JSON files of a tokenizer directory (checked before transformers).
_HF_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json",
                      "vocab.json", "config.json")


class HFTokenizer(TokenizerBase):
  """Adapter over a ``transformers`` tokenizer (imported lazily).

  ``encode`` adds no special tokens (chat templates carry their own);
  ``decode`` keeps special tokens and does not clean up spaces, so decoding
  is the exact inverse the checkers expect. ``vocab_size`` is ``len(tok)``
  (added tokens included). ``pad_id`` falls back to eos, then 0.

  Args:
    tokenizer: a ``transformers.PreTrainedTokenizerBase``.
    end_ids: ids that end a response (default: eos, plus ``<|im_end|>`` /
      ``<|eot_id|>`` / ``<|endoftext|>`` when present).
  """

  def __init__(self, tokenizer: Any, *, end_ids: Sequence[int] | None = None):
    self.tok = tokenizer
    self.vocab_size = int(len(tokenizer))
    self.bos_id = tokenizer.bos_token_id
    self.eos_id = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    self.pad_id = int(pad if pad is not None else (
        self.eos_id if self.eos_id is not None else 0))
    if end_ids is None:
      ends = [] if self.eos_id is None else [self.eos_id]
      vocab = tokenizer.get_vocab()
      for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        if name in vocab and vocab[name] not in ends:
          ends.append(vocab[name])
      end_ids = ends
    self.end_ids = tuple(int(i) for i in end_ids)

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike[str], **kwargs: Any
                      ) -> "HFTokenizer":
    """Loads ``transformers.AutoTokenizer.from_pretrained(path)``.

    For a local directory, its JSON files (tokenizer.json,
    tokenizer_config.json, ...) and sentencepiece ``tokenizer.model`` are
    checked first, and a failure of transformers to load it is reported
    against the directory.

    Raises:
      ModelFileError: (a local directory) a truncated or corrupt tokenizer
        file (named, with the line and column of a JSON error), or one
        transformers cannot load.
    """
    try:
      import transformers  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("HFTokenizer needs `pip install transformers`") from e
    end_ids = kwargs.pop("end_ids", None)
    local = pathlib.Path(os.fspath(path))
    if local.is_dir():
      for name in _HF_TOKENIZER_JSON:
        if (local / name).exists():
          model_files.read_json(local / name)
      spm_file = local / "tokenizer.model"
      if spm_file.exists():
        problem = model_files.sentencepiece_problem(
            model_files.read_bytes(spm_file))
        if problem is not None:
          raise model_files.ModelFileError(
              spm_file, f"not a sentencepiece model: {problem}")
    try:
      tok = transformers.AutoTokenizer.from_pretrained(os.fspath(path),
                                                       **kwargs)
    except ImportError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if not local.is_dir():
        raise
      raise model_files.ModelFileError(
          local, f"transformers could not load the tokenizer: "
                 f"{type(e).__name__}: {e}") from e
    return cls(tok, end_ids=end_ids)

  def encode(self, text: str) -> list[int]:
    return list(self.tok.encode(text, add_special_tokens=False))

  def decode(self, ids: Sequence[int]) -> str:
    # Out-of-range ids (a model's padded vocabulary) decode as unknown.
    unk = self.tok.unk_token_id
    ids = [int(i) if 0 <= int(i) < self.vocab_size else unk for i in ids]
    return self.tok.decode([i for i in ids if i is not None],
                           skip_special_tokens=False,
                           clean_up_tokenization_spaces=False)

  def apply_chat_template(self, messages: Sequence[Message],
                          add_generation_prompt: bool = True) -> str:
    if getattr(self.tok, "chat_template", None):
      return self.tok.apply_chat_template(
          [dict(m) for m in messages], tokenize=False,
          add_generation_prompt=add_generation_prompt)
    return simple_chat_template(messages, add_generation_prompt)


# ---------------------------------------------------------------------------
# Helpers.


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
  """The text ``token_id`` contributes inside a decoded sequence."""
  fn = getattr(tokenizer, "token_text", None)
  if fn is not None:
    return fn(int(token_id))
  return tokenizer.decode([int(token_id)])


def trim_at_end(ids: Sequence[int] | np.ndarray, end_ids: Sequence[int],
                mask: Sequence[bool] | np.ndarray | None = None) -> list[int]:
  """The ids before the first end token (among the ``mask``-ed positions).

  Args:
    ids: token ids ``[T]``.
    end_ids: ids that end a response.
    mask: optional ``[T]``; positions where it is false are dropped first.

  Returns:
    The response ids without the end token.
  """
  arr = np.asarray(ids).reshape(-1)
  if mask is not None:
    m = np.asarray(mask).reshape(-1).astype(bool)
    if m.shape != arr.shape:
      raise ValueError(f"mask shape {m.shape} != ids shape {arr.shape}")
    arr = arr[m]
  out = []
  ends = set(int(e) for e in end_ids)
  for i in arr.tolist():
    if i in ends:
      break
    out.append(int(i))
  return out


def batch_encode(tokenizer: Tokenizer, texts: Sequence[str],
                 max_len: int | None = None, pad: str = "left", *,
                 add_bos: bool = False, add_eos: bool = False,
                 truncate: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Encodes and pads a batch of texts.

  Left padding (the default) is what prompts need: every row ends at the
  last column, so generation continues all rows at the same position.

  Args:
    tokenizer: a `Tokenizer`.
    texts: ``B`` strings.
    max_len: padded length ``L``; None = the longest row.
    pad: "left" or "right".
    add_bos: prepend ``bos_id`` (ValueError if the tokenizer has none).
    add_eos: append ``eos_id``.
    truncate: None (a row longer than ``max_len`` raises), "left" (keep the
      last ``max_len`` tokens) or "right" (keep the first).

  Returns:
    ``ids`` int32 ``[B, L]`` (pad positions hold ``pad_id``) and ``mask``
    bool ``[B, L]`` (True on real tokens).
  """
  if pad not in ("left", "right"):
    raise ValueError(f"pad must be 'left' or 'right', got {pad!r}")
  if truncate not in (None, "left", "right"):
    raise ValueError(f"truncate must be None, 'left' or 'right', "
                     f"got {truncate!r}")
  if isinstance(texts, str):
    raise ValueError("texts must be a sequence of strings, not a string")
  rows = [encode_row(tokenizer, t, add_bos=add_bos, add_eos=add_eos)
          for t in texts]
  if max_len is None:
    max_len = max([len(r) for r in rows] + [1])
  if max_len <= 0:
    raise ValueError(f"max_len must be positive, got {max_len}")
  ids = np.full((len(rows), max_len), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(rows), max_len), bool)
  for b, r in enumerate(rows):
    if len(r) > max_len:
      if truncate is None:
        raise ValueError(
            f"texts[{b}] has {len(r)} tokens > max_len={max_len}; raise "
            "max_len or pass truncate='left'/'right'")
      r = r[-max_len:] if truncate == "left" else r[:max_len]
    n = len(r)
    if pad == "left":
      ids[b, max_len - n:] = r
      mask[b, max_len - n:] = True
    else:
      ids[b, :n] = r
      mask[b, :n] = True
  return ids, mask


def encode_row(tokenizer: Tokenizer, text: str, *, add_bos: bool = False,
               add_eos: bool = False) -> list[int]:
  """``[bos] + encode(text) + [eos]`` with the optional special tokens."""
  ids = list(tokenizer.encode(text))
  if add_bos:
    if tokenizer.bos_id is None:
      raise ValueError("add_bos=True but the tokenizer has no bos_id")
    ids = [int(tokenizer.bos_id)] + ids
  if add_eos:
    if tokenizer.eos_id is None:
      raise ValueError("add_eos=True but the tokenizer has no eos_id")
    ids = ids + [int(tokenizer.eos_id)]
  return ids


def decode_batch(tokenizer: Tokenizer, ids: np.ndarray,
                 mask: np.ndarray | None = None) -> list[str]:
  """Decodes each row of ``ids`` ``[B, T]`` up to its first end token."""
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f"ids must be [B, T], got shape {ids.shape}")
  out = []
  for b in range(ids.shape[0]):
    m = None if mask is None else np.asarray(mask)[b]
    out.append(tokenizer.decode(trim_at_end(ids[b], tokenizer.end_ids, m)))
  return out
