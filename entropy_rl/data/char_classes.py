"""Token -> character-class tables for reward checkers that run under jit.

The built-in tasks' answers are integers and arithmetic expressions. To score
them on device, every token id is mapped once (on the host) to a class:
a digit 0-9, one of ``+ - * / ( )``, a space, SKIP (a token that decodes to
nothing, e.g. a sentencepiece control token), END (one of the tokenizer's
``end_ids``) or OTHER (anything else, which makes a response malformed).
The checkers then run a small state machine over the classes with
`jax.lax.scan`. This needs a character-level tokenizer for the checker's
alphabet (`CharTokenizer`, or a sentencepiece ``char`` model): a token whose
text is several alphabet characters would be read as one class, so
`char_class_table` refuses such tokenizers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl import tokenizers as tok_lib

# Classes 0..9 are the digits.
PLUS, MINUS, TIMES, DIV, LPAREN, RPAREN, SPACE, SKIP, END, OTHER = range(
    10, 20)
_CHAR_CLASS = {str(d): d for d in range(10)}
_CHAR_CLASS.update({"+": PLUS, "-": MINUS, "*": TIMES, "/": DIV,
                    "(": LPAREN, ")": RPAREN, " ": SPACE})
ALPHABET = "".join(_CHAR_CLASS)

# Largest magnitude of any integer a checker reads or computes (int32 range;
# larger values make the answer wrong, never overflow silently).
INT_LIMIT = 2**31 - 1


def char_class_table(tokenizer: tok_lib.Tokenizer) -> np.ndarray:
  """The class of every token id, ``int32 [vocab_size]``.

  Args:
    tokenizer: a `Tokenizer`; its ``token_text`` (or ``decode([i])``) gives
      each token's text.

  Returns:
    ``table[i]`` in ``0..OTHER``.

  Raises:
    ValueError: a token's text is several characters of the alphabet
      (digits, ``+-*/()`` and space), i.e. the tokenizer is not
      character-level for the checker; use the Python ``reward_fn`` instead.
  """
  ends = set(int(e) for e in tokenizer.end_ids)
  table = np.full((int(tokenizer.vocab_size),), OTHER, np.int32)
  for i in range(int(tokenizer.vocab_size)):
    if i in ends:
      table[i] = END
      continue
    text = tok_lib.token_text(tokenizer, i)
    if not text:
      table[i] = SKIP
    elif len(text) == 1:
      table[i] = _CHAR_CLASS.get(text, OTHER)
    elif all(c in _CHAR_CLASS for c in text):
      raise ValueError(
          f"tokenizer: token {i} is {text!r}, several characters the "
          "on-device checker reads; it needs a character-level tokenizer "
          "(CharTokenizer or a sentencepiece 'char' model). Use the task's "
          "Python reward_fn with this tokenizer.")
  return table


def token_classes(table: jax.Array, tokens: jax.Array) -> jax.Array:
  """``table[tokens]``, with ids outside the table mapped to OTHER."""
  v = table.shape[0]
  inside = (tokens >= 0) & (tokens < v)
  return jnp.where(inside, table[jnp.clip(tokens, 0, v - 1)], OTHER)


def active_positions(classes: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked positions before the first masked END token, ``bool [B, T]``.

  Mirrors the host-side `trim_at_end(ids, end_ids, mask)`: positions with a
  false mask are dropped, then everything from the first end token on.
  """
  mask = mask.astype(bool)
  is_end = (classes == END) & mask
  seen = jnp.cumsum(is_end.astype(jnp.int32), axis=-1)
  return mask & (seen == 0)


def checked_add(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``a + b`` and whether it stays within ``±INT_LIMIT``."""
  ok = ~(((b > 0) & (a > INT_LIMIT - b)) | ((b < 0) & (a < -INT_LIMIT - b)))
  return jnp.where(ok, a + b, 0), ok


def checked_mul(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``a * b`` and whether it stays within ``±INT_LIMIT`` (exact test)."""
  bb = jnp.maximum(jnp.abs(b), 1)
  ok = (b == 0) | (jnp.abs(a) <= INT_LIMIT // bb)
  return jnp.where(ok, a * b, 0), ok


def checked_div(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``a / b`` when ``b`` divides ``a`` exactly (and ``b != 0``)."""
  safe = jnp.where(b == 0, 1, b)
  ok = (b != 0) & (jnp.remainder(a, safe) == 0)
  return jnp.where(ok, a // safe, 0), ok
