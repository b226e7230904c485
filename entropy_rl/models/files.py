"""Checks of model, config and tokenizer files before they are read.

Every loader of the package (`load_pretrained`, `pretrained_config`,
`load_gguf`, `gguf_config`, `gguf_tokenizer`, the sentencepiece and Hugging
Face tokenizers) checks its files here first and raises `ModelFileError`,
whose message names the file, what was expected and what was found, instead
of letting a numpy, struct, JSON or Rust error surface from the middle of
the read:

* `file_size`: the file exists and is a regular file.
* `read_json` / `parse_json`: UTF-8 JSON, with the line and column of a
  syntax error (and a hint when it is the end of the file: truncated).
* `safetensors_header`: the 8-byte header length, the JSON header and every
  tensor's dtype, shape and ``data_offsets`` against the file size
  (``prod(shape) * itemsize == end - begin``, tensors contiguous, the file
  fully covered, as the safetensors library requires).
* `check_gguf`: magic, version, every metadata key and value, every tensor
  info (name, dimensions, known ggml type, shape a whole number of blocks)
  read within the file, then each tensor's data within the file at the
  offset llama.cpp expects (tensors in order, each padded to the
  alignment), and nothing after the last tensor's padding.
* `sentencepiece_problem`: a sentencepiece ``ModelProto`` parses to its
  end and holds its normalizer spec (a truncation between two pieces would
  otherwise load as a smaller vocabulary).
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
import struct
from typing import Any, NamedTuple


class ModelFileError(ValueError):
  """A model, config or tokenizer file is missing, truncated or corrupt.

  The message is ``"<path>: <detail>"``; the detail says what was expected
  and what was found (a size, a tensor name, an offset, a key).

  Attributes:
    path: the file (or checkpoint directory) at fault.
    detail: the message without the path.
  """

  def __init__(self, path: str | os.PathLike, detail: str):
    self.path = os.fspath(path)
    self.detail = detail
    super().__init__(f"{self.path}: {detail}")

  def __reduce__(self):
    return type(self), (self.path, self.detail)


def truncated(path: str | os.PathLike, what: str, start: int, end: int,
              size: int) -> ModelFileError:
  """The error of a read of bytes ``[start, end)`` past a file's end."""
  return ModelFileError(path, f"truncated: {what} needs bytes [{start}, "
                              f"{end}) but the file has {size} bytes")


def file_size(path: str | os.PathLike) -> int:
  """The size of a regular file; `ModelFileError` if there is none."""
  try:
    st = os.stat(path)
  except FileNotFoundError:
    raise ModelFileError(path, "no such file") from None
  except OSError as e:
    raise ModelFileError(path, f"cannot be read: {e.strerror}") from e
  if not stat.S_ISREG(st.st_mode):
    raise ModelFileError(path, "not a regular file")
  return st.st_size


def read_bytes(path: str | os.PathLike) -> bytes:
  """The bytes of a file; `ModelFileError` if it is missing or unreadable."""
  file_size(path)
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise ModelFileError(path, f"cannot be read: {e.strerror}") from e


def json_type(value: Any) -> str:
  """The JSON name of a parsed value's type (for messages)."""
  if value is None:
    return "null"
  if isinstance(value, bool):
    return "a boolean"
  if isinstance(value, (int, float)):
    return "a number"
  if isinstance(value, str):
    return "a string"
  return "an array" if isinstance(value, list) else "an object"


def parse_json(path: str | os.PathLike, raw: bytes, what: str = "JSON"
               ) -> Any:
  """Parses ``raw`` (the bytes of ``path``, or a part of it named ``what``)."""
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ModelFileError(
        path, f"{what} is not UTF-8 text: byte 0x{raw[e.start]:02x} at "
              f"offset {e.start}") from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    end = (f" (the end of the {len(raw)}-byte {what}: truncated?)"
           if not text[e.pos:].strip() else "")
    raise ModelFileError(
        path, f"invalid {what} at line {e.lineno} column {e.colno}{end}: "
              f"{e.msg}") from None
  except RecursionError:
    raise ModelFileError(path, f"invalid {what}: nested too deeply") from None


def read_json(path: str | os.PathLike) -> Any:
  """The parsed JSON file ``path``; `ModelFileError` if it is missing,
  unreadable, not UTF-8 or not valid JSON."""
  return parse_json(path, read_bytes(path))


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
  """`read_json`, and the value must be an object."""
  value = read_json(path)
  if not isinstance(value, dict):
    raise ModelFileError(path, f"expected a JSON object, found "
                               f"{json_type(value)}")
  return value


def is_int(value: Any) -> bool:
  """An integer (Python or numpy), not a bool."""
  return (isinstance(value, int) or _is_np_int(value)) and not isinstance(
      value, bool)


def _is_np_int(value: Any) -> bool:
  import numpy as np  # pylint: disable=import-outside-toplevel
  return isinstance(value, np.integer)


# ---------------------------------------------------------------------------
# safetensors.

# dtype -> bytes per element (the sub-byte F4/F6 types are not read).
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
    "F64": 8, "I64": 8, "U64": 8, "C64": 8,
}


class SafetensorsTensor(NamedTuple):
  """One tensor of a safetensors header: its bytes are ``[start, end)`` of
  the file."""
  dtype: str
  shape: tuple[int, ...]
  start: int
  end: int


def safetensors_header(path: str | os.PathLike
                       ) -> dict[str, SafetensorsTensor]:
  """Checks a safetensors file against its size and returns its tensors.

  Raises:
    ModelFileError: missing file; a length prefix, header or tensor past
      the end of the file; a header that is not a UTF-8 JSON object; an
      unknown dtype; a shape whose bytes differ from the ``data_offsets``
      span; tensors that overlap, leave gaps or do not reach the file's end.
  """
  size = file_size(path)
  with open(path, "rb") as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise truncated(path, "the 8-byte header length", 0, 8, size)
    n = int.from_bytes(prefix, "little")
    if 8 + n > size:
      raise truncated(path, f"the JSON header ({n} bytes, from the length "
                            "prefix)", 8, 8 + n, size)
    raw = f.read(n)
  header = parse_json(path, raw, "JSON header")
  if not isinstance(header, dict):
    raise ModelFileError(path, f"the JSON header must be an object, found "
                               f"{json_type(header)}")
  data = 8 + n
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      if not (isinstance(info, dict) and all(
          isinstance(v, str) for v in info.values())):
        raise ModelFileError(path, "__metadata__ must map strings to "
                                   f"strings, found {info!r:.200}")
      continue
    if not isinstance(info, dict):
      raise ModelFileError(path, f"tensor {name!r}: expected an object with "
                                 f"dtype, shape and data_offsets, found "
                                 f"{info!r:.200}")
    dtype, shape, offsets = (info.get("dtype"), info.get("shape"),
                             info.get("data_offsets"))
    if dtype not in SAFETENSORS_DTYPES:
      raise ModelFileError(path, f"tensor {name!r} has unknown dtype "
                                 f"{dtype!r}; known: "
                                 f"{sorted(SAFETENSORS_DTYPES)}")
    if not (isinstance(shape, list) and all(is_int(d) and d >= 0
                                            for d in shape)):
      raise ModelFileError(path, f"tensor {name!r}: shape must be a list of "
                                 f"non-negative integers, found "
                                 f"{shape!r:.200}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and
            all(is_int(o) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
      raise ModelFileError(path, f"tensor {name!r}: data_offsets must be "
                                 f"[begin, end] with 0 <= begin <= end, found "
                                 f"{offsets!r:.200}")
    need = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
    if offsets[1] - offsets[0] != need:
      raise ModelFileError(
          path, f"tensor {name!r} ({dtype}, shape {tuple(shape)}) needs "
                f"{need} bytes but its data_offsets {offsets} span "
                f"{offsets[1] - offsets[0]}")
    tensors[name] = SafetensorsTensor(dtype, tuple(shape), data + offsets[0],
                                      data + offsets[1])
  pos = data
  for name, t in sorted(tensors.items(), key=lambda kv: kv[1][2:]):
    if t.end > size:
      raise truncated(path, f"tensor {name!r} ({t.dtype}, shape {t.shape})",
                      t.start, t.end, size)
    if t.start != pos:
      raise ModelFileError(
          path, f"tensor {name!r} starts at byte {t.start} but the tensors "
                f"before it end at byte {pos} (safetensors data must be "
                "contiguous)")
    pos = t.end
  if pos != size:
    raise ModelFileError(
        path, f"the header's tensors end at byte {pos} but the file has "
              f"{size} bytes ({size - pos} bytes no tensor accounts for)")
  return tensors


# ---------------------------------------------------------------------------
# GGUF.

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f",
                 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_GGUF_MAX_DIMS = 4
_GGUF_VERSIONS = (2, 3)


class GGUFTensor(NamedTuple):
  """One tensor of a GGUF file: its data are bytes ``[start, end)``."""
  name: str
  type_name: str
  shape: tuple[int, ...]  # ne: innermost dimension first.
  start: int
  end: int


class _Cursor:
  """Reads little- (or big-) endian fields of a GGUF file, bounds-checked."""

  def __init__(self, path, buf, size):
    self.path, self.buf, self.size = path, buf, size
    self.pos, self.order = 0, "<"

  def take(self, n: int, what: str) -> int:
    start = self.pos
    if start + n > self.size:
      raise truncated(self.path, what, start, start + n, self.size)
    self.pos = start + n
    return start

  def scalar(self, fmt: str, what: str):
    start = self.take(struct.calcsize(fmt), what)
    return struct.unpack_from(self.order + fmt, self.buf, start)[0]

  def string(self, what: str) -> str:
    n = self.scalar("Q", f"the length of {what}")
    start = self.take(n, f"{what} ({n} bytes)")
    raw = bytes(self.buf[start:start + n])
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ModelFileError(
          self.path, f"{what} is not UTF-8 text: byte 0x{raw[e.start]:02x} "
                     f"at offset {start + e.start}") from None


def _gguf_value(cur: _Cursor, vtype: int, what: str, depth: int = 0) -> Any:
  """Reads (and returns) one metadata value; arrays of scalars are skipped
  (None), arrays of strings are read (each must be UTF-8)."""
  if vtype in _GGUF_SCALARS:
    return cur.scalar(_GGUF_SCALARS[vtype], what)
  if vtype == _GGUF_STRING:
    return cur.string(what)
  if vtype != _GGUF_ARRAY:
    raise ModelFileError(cur.path, f"{what} has unknown value type {vtype} "
                                   f"(at byte {cur.pos - 4})")
  if depth > 8:
    raise ModelFileError(cur.path, f"{what}: arrays nested too deeply")
  itype = cur.scalar("I", f"the item type of {what}")
  count = cur.scalar("Q", f"the length of {what}")
  if itype in _GGUF_SCALARS:
    cur.take(count * struct.calcsize(_GGUF_SCALARS[itype]),
             f"{what} ({count} items)")
    return None
  # Each string or array item needs at least 8 bytes (its length).
  if count * 8 > cur.size - cur.pos:
    raise truncated(cur.path, f"{what} ({count} items of at least 8 bytes)",
                    cur.pos, cur.pos + count * 8, cur.size)
  if itype == _GGUF_STRING:  # The vocabulary: up to ~10^5 strings.
    _gguf_strings(cur, count, what)
    return None
  for i in range(count):
    _gguf_value(cur, itype, f"{what} item {i}", depth + 1)
  return None


def _gguf_strings(cur: _Cursor, count: int, what: str) -> None:
  """Skips ``count`` strings (each must be UTF-8), as `_Cursor.string`
  would one by one, faster."""
  buf, size, pos = cur.buf, cur.size, cur.pos
  unpack = struct.Struct(cur.order + "Q").unpack_from
  for i in range(count):
    if pos + 8 > size:
      break
    (n,) = unpack(buf, pos)
    if pos + 8 + n > size:
      break
    try:
      buf[pos + 8:pos + 8 + n].decode("utf-8")
    except UnicodeDecodeError:
      break
    pos += 8 + n
  else:
    cur.pos = pos
    return
  cur.pos = pos  # Item i is bad: read it again for the message.
  cur.string(f"{what} item {i}")


def check_gguf(path: str | os.PathLike) -> list[GGUFTensor]:
  """Checks a GGUF file's structure against its size.

  Returns:
    Its tensors, in file order.

  Raises:
    ModelFileError: missing file; bad magic or unsupported version; a
      header field, metadata value or tensor info read past the end of the
      file; a non-UTF-8 key, string or name; an unknown value or ggml type;
      a shape that is not a whole number of blocks; a duplicate key or
      tensor; a tensor whose offset is not where llama.cpp expects it (the
      previous tensors' bytes, each padded to the alignment) or whose data
      run past the end of the file; bytes after the last tensor's padding.
  """
  from gguf import constants  # pylint: disable=import-outside-toplevel
  size = file_size(path)
  if size == 0:
    raise truncated(path, "the magic b'GGUF'", 0, 4, 0)
  with open(path, "rb") as f, mmap.mmap(f.fileno(), 0,
                                        access=mmap.ACCESS_READ) as buf:
    cur = _Cursor(path, buf, size)
    magic = bytes(buf[cur.take(4, "the magic b'GGUF'"):4])
    if magic != b"GGUF":
      raise ModelFileError(path, f"not a GGUF file: it starts with "
                                 f"{magic!r}, expected b'GGUF'")
    version = cur.scalar("I", "the version")
    if not version & 0xFFFF:  # Written on a big-endian machine.
      cur.order = ">"
      version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in _GGUF_VERSIONS:
      raise ModelFileError(path, f"GGUF version {version} is not supported "
                                 f"(supported: {_GGUF_VERSIONS})")
    n_tensors = cur.scalar("Q", "the tensor count")
    n_kv = cur.scalar("Q", "the metadata count")
    alignment = constants.GGUF_DEFAULT_ALIGNMENT
    keys = set()
    for i in range(n_kv):
      key = cur.string(f"metadata key #{i}")
      if key in keys:
        raise ModelFileError(path, f"metadata key {key!r} appears twice")
      keys.add(key)
      vtype = cur.scalar("I", f"the value type of metadata {key!r}")
      value = _gguf_value(cur, vtype, f"metadata {key!r}")
      if key == "general.alignment":
        if vtype != _GGUF_UINT32 or value <= 0 or value & (value - 1):
          raise ModelFileError(path, f"general.alignment must be a uint32 "
                                     f"power of two, found {value!r} (value "
                                     f"type {vtype})")
        alignment = value
    infos = []
    names = set()
    for i in range(n_tensors):
      name = cur.string(f"the name of tensor #{i}")
      what = f"tensor {name!r}"
      if name in names:
        raise ModelFileError(path, f"{what} appears twice")
      names.add(name)
      n_dims = cur.scalar("I", f"the dimension count of {what}")
      if n_dims > _GGUF_MAX_DIMS:
        raise ModelFileError(path, f"{what} has {n_dims} dimensions; GGUF "
                                   f"allows at most {_GGUF_MAX_DIMS}")
      shape = tuple(cur.scalar("Q", f"dimension {d} of {what}")
                    for d in range(n_dims))
      raw_type = cur.scalar("I", f"the ggml type of {what}")
      offset = cur.scalar("Q", f"the data offset of {what}")
      try:
        ggml_type = constants.GGMLQuantizationType(raw_type)
        block, type_size = constants.GGML_QUANT_SIZES[ggml_type]
      except (ValueError, KeyError):
        raise ModelFileError(path, f"{what} has unknown ggml type "
                                   f"{raw_type}") from None
      if shape and shape[0] % block:
        raise ModelFileError(
            path, f"{what} has shape {shape} (innermost first) but its type "
                  f"{ggml_type.name} stores blocks of {block} values along "
                  "the first dimension")
      infos.append((name, ggml_type.name, shape, offset,
                    math.prod(shape) // block * type_size))
    data = -(-cur.pos // alignment) * alignment
    expected = 0
    tensors = []
    for name, type_name, shape, offset, nbytes in infos:
      what = f"tensor {name!r} ({type_name}, shape {shape})"
      if offset != expected:
        raise ModelFileError(
            path, f"{what} has data offset {offset}, expected {expected} "
                  f"(the bytes of the tensors before it, each padded to "
                  f"{alignment})")
      start, end = data + offset, data + offset + nbytes
      if end > size:
        raise truncated(path, what, start, end, size)
      tensors.append(GGUFTensor(name, type_name, shape, start, end))
      expected += -(-nbytes // alignment) * alignment
    if tensors and size > data + expected:
      # Writers pad the last tensor to the alignment and stop: more bytes
      # mean the header under-counts the data (a corrupt type or shape).
      raise ModelFileError(
          path, f"the tensors' data end at byte {tensors[-1].end} (padded: "
                f"{data + expected}) but the file has {size} bytes "
                f"({size - data - expected} bytes no tensor accounts for)")
  return tensors


# ---------------------------------------------------------------------------
# sentencepiece.


def _varint(raw: bytes, pos: int) -> tuple[int, int] | None:
  value = shift = 0
  while pos < len(raw) and shift < 64:
    b = raw[pos]
    value |= (b & 0x7F) << shift
    pos += 1
    if not b & 0x80:
      return value, pos
    shift += 7
  return None


def sentencepiece_problem(raw: bytes) -> str | None:
  """What is wrong with a serialized sentencepiece model, or None.

  Walks the top-level fields of the ``ModelProto``: each must lie within the
  bytes, and the normalizer spec (field 3, written after the pieces and the
  trainer spec) must be there. A model cut between two pieces parses as a
  smaller vocabulary otherwise.
  """
  pos, fields, pieces = 0, set(), 0
  while pos < len(raw):
    key = _varint(raw, pos)
    if key is None:
      return f"truncated: field key at byte {pos} runs past the end"
    (key, pos), start = key, pos
    number, wire = key >> 3, key & 7
    if wire == 0:
      end = _varint(raw, pos)
      if end is None:
        return f"truncated: field {number} at byte {start} runs past the end"
      pos = end[1]
    elif wire in (1, 5):
      pos += 8 if wire == 1 else 4
    elif wire == 2:
      n = _varint(raw, pos)
      if n is None:
        return f"truncated: field {number} at byte {start} runs past the end"
      pos = n[1] + n[0]
    else:
      return f"field {number} at byte {start} has wire type {wire}"
    if pos > len(raw):
      return (f"truncated: field {number} at byte {start} needs bytes up to "
              f"{pos} but there are {len(raw)}")
    fields.add(number)
    pieces += number == 1
  if 3 not in fields:
    return (f"truncated or incomplete: no normalizer spec after the "
            f"{pieces} pieces ({len(raw)} bytes)")
  return None
