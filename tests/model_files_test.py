"""Truncated and corrupt model, config and tokenizer files.

Every loader must raise `ModelFileError` naming the file, what was expected
and what was found, never a numpy / struct / JSON / KeyError from the
middle of the read, and never load garbage silently. The files are tiny and
written here: a 1-layer Llama GGUF (the gguf package's writer; a Q8_0
embedding, the rest F32), a Hugging Face directory (`save_pretrained` of a
1-layer decoder, single file and sharded), a sentencepiece model and a
transformers tokenizer directory. Each is cut at every byte of its header
and every few bytes of its data, and the header bytes are overwritten one
at a time.
"""

import functools
import json
import os
import pathlib
import shutil
import struct
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
from flax import nnx
import numpy as np
import safetensors.numpy

from entropy_rl import models
from entropy_rl import tokenizers
from entropy_rl.models import files as model_files

ModelFileError = models.ModelFileError
_TMP = tempfile.TemporaryDirectory()
TMP = pathlib.Path(_TMP.name)

# The tiny model: V tokens, width D, H query heads of 8, K kv heads, MLP F.
V, D, H, K, F = 32, 32, 4, 2, 32
GGUF_TOKENS = (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b",
                "ab"] + [f"t{i}" for i in range(V - 6)])
GGUF_LAYER = [("attn_norm.weight", (D,)), ("attn_q.weight", (H * 8, D)),
              ("attn_k.weight", (K * 8, D)), ("attn_v.weight", (K * 8, D)),
              ("attn_output.weight", (D, H * 8)), ("ffn_norm.weight", (D,)),
              ("ffn_gate.weight", (F, D)), ("ffn_up.weight", (F, D)),
              ("ffn_down.weight", (D, F))]


def write_gguf(path, *, tokenizer=True, shapes=None, drop=None, **meta):
  """A 1-layer Llama GGUF; ``shapes`` overrides tensor shapes (numpy
  order), ``drop`` leaves a tensor out, ``meta`` sets metadata values (None
  drops a key)."""
  import gguf  # pylint: disable=g-import-not-at-top
  w = gguf.GGUFWriter(str(path), "llama")
  values = {"llama.block_count": 1, "llama.context_length": 64,
            "llama.embedding_length": D, "llama.feed_forward_length": F,
            "llama.attention.head_count": H,
            "llama.attention.head_count_kv": K}
  values.update(meta)
  for key, value in values.items():
    if value is None:
      continue
    if isinstance(value, str):
      w.add_string(key, value)
    else:
      w.add_uint32(key, value)
  w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
  w.add_float32("llama.rope.freq_base", 10_000.0)
  if tokenizer:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(GGUF_TOKENS)
    w.add_token_types([3, 3, 3] + [1] * (V - 3))
    w.add_token_merges(["a b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
  rng = np.random.RandomState(0)
  shapes = shapes or {}
  emb = rng.randn(*shapes.get("token_embd.weight", (V, D))).astype(np.float32)
  w.add_tensor("token_embd.weight",
               gguf.quants.quantize(emb, gguf.GGMLQuantizationType.Q8_0),
               raw_dtype=gguf.GGMLQuantizationType.Q8_0)
  for name, shape in GGUF_LAYER:
    name = f"blk.0.{name}"
    if name == drop:
      continue
    w.add_tensor(name, rng.randn(*shapes.get(name, shape)).astype(np.float32))
  w.add_tensor("output_norm.weight", rng.randn(D).astype(np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return pathlib.Path(path), emb


@functools.cache
def gguf_bytes():
  path, _ = write_gguf(TMP / "good.gguf")
  return path.read_bytes()


@functools.cache
def gguf_layout():
  """{"field:<key>": offset, "info:<name>": offset, "data:<name>":
  (start, end), "data": data start} of the good file (gguf's reader)."""
  import gguf  # pylint: disable=g-import-not-at-top
  reader = gguf.GGUFReader(str(TMP / "good.gguf"))
  out = {f"field:{k}": f.offset for k, f in reader.fields.items()}
  for t in reader.tensors:
    out[f"info:{t.name}"] = t.field.offset
    out[f"data:{t.name}"] = (t.data_offset, t.data_offset + t.n_bytes)
  out["data"] = reader.data_offset
  return out


def tiny_config(**kw):
  return models.DecoderConfig(**{**dict(
      vocab_size=V, hidden_size=D, num_layers=1, num_heads=H,
      num_kv_heads=K, intermediate_size=F, family="llama"), **kw})


@functools.cache
def hf_dir(sharded=False):
  """A saved 1-layer Llama directory (a fresh copy per call of `copy_hf`)."""
  path = TMP / ("hf_sharded" if sharded else "hf")
  model = models.Decoder(tiny_config(), rngs=nnx.Rngs(0))
  models.save_pretrained(model, path,
                         max_shard_size=6_000 if sharded else None)
  return path


def copy_hf(name, sharded=False):
  dst = TMP / name
  shutil.rmtree(dst, ignore_errors=True)
  shutil.copytree(hf_dir(sharded), dst)
  return dst


def rewrite_safetensors(path, edit):
  """Rewrites ``path`` with ``edit(header dict)`` applied to its header."""
  raw = path.read_bytes()
  n = struct.unpack("<Q", raw[:8])[0]
  header = json.loads(raw[8:8 + n])
  edit(header)
  new = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def _expect_model_file_errors(test, load, path, cases, allowed_ok, paths):
  """Runs ``load(path)`` after each ``prepare()`` of ``cases`` [(n,
  prepare)]: a ModelFileError whose path is ``path`` (or one of ``paths``)
  or, where ``allowed_ok(n)``, a result. Returns the messages by n."""
  names = {str(p) for p in (path,) + tuple(paths)}
  messages, wrong = {}, []
  for n, prepare in cases:
    prepare()
    try:
      load(path)
    except ModelFileError as e:
      messages[n] = str(e)
      if e.path not in names or not str(e).startswith(f"{e.path}: "):
        wrong.append((n, f"path {e.path!r}: {e}"))
    except Exception as e:  # pylint: disable=broad-except
      wrong.append((n, f"{type(e).__name__}: {e}"))
    else:
      if not allowed_ok(n):
        wrong.append((n, "loaded without an error"))
  test.assertEqual(wrong[:5], [], f"{len(wrong)} of {len(cases)} cases")
  return messages


def assert_truncations_raise(test, load, path, data, offsets, paths=()):
  """``data`` cut to each of ``offsets`` (cut in place, longest first):
  every load raises a ModelFileError naming ``path``."""
  path.write_bytes(data)
  cases = [(n, functools.partial(os.truncate, path, n))
           for n in sorted(offsets, reverse=True)]
  return _expect_model_file_errors(test, load, path, cases, lambda n: False,
                                   paths)


def assert_flips_raise(test, load, path, data, offsets, new_byte,
                       allowed_ok=lambda n: True, paths=()):
  """Byte n of ``data`` replaced by ``new_byte(n)`` (written in place), for
  each n of ``offsets``: a ModelFileError naming ``path``, or a result."""
  path.write_bytes(data)
  fd = os.open(path, os.O_WRONLY)
  test.addCleanup(os.close, fd)

  last = []

  def prepare(n):
    if last:  # Restores the byte the previous case changed.
      os.pwrite(fd, data[last[0]:last[0] + 1], last.pop())
    os.pwrite(fd, bytes([new_byte(n)]), n)
    last.append(n)
  return _expect_model_file_errors(
      test, load, path, [(n, functools.partial(prepare, n)) for n in offsets],
      allowed_ok, paths)


class ModelFileErrorTest(absltest.TestCase):

  def test_message_and_attributes(self):
    e = ModelFileError(pathlib.Path("/x/model.gguf"), "truncated: ...")
    self.assertIsInstance(e, ValueError)
    self.assertEqual(str(e), "/x/model.gguf: truncated: ...")
    self.assertEqual((e.path, e.detail), ("/x/model.gguf", "truncated: ..."))
    import pickle  # pylint: disable=g-import-not-at-top
    again = pickle.loads(pickle.dumps(e))
    self.assertEqual((type(again), str(again)), (ModelFileError, str(e)))


class GGUFTest(parameterized.TestCase):

  def test_tiny_file_loads(self):
    path, emb = write_gguf(TMP / "ok.gguf")
    model, meta = models.load_gguf(path)
    self.assertEqual(model.config, tiny_config(
        rope_theta=10_000.0, rms_norm_eps=1e-5, max_position_embeddings=64))
    self.assertEqual(meta["general.architecture"], "llama")
    # Q8_0 keeps each value to within 1/127 of its row's largest.
    np.testing.assert_allclose(np.asarray(model.embedding[...]), emb,
                               atol=np.abs(emb).max() / 127 + 1e-6)
    tok = models.gguf_tokenizer(path)
    self.assertEqual(tok.encode("ab<|im_end|>"), [5, 2])
    self.assertEqual(models.gguf_config(path).num_kv_heads, K)

  def test_every_truncation_raises_model_file_error(self):
    data, layout = gguf_bytes(), gguf_layout()
    self.assertEqual(layout["data:output_norm.weight"][1], len(data))
    # Every byte of the header (magic, version, counts, metadata, tensor
    # infos, padding) and every 23rd byte of the tensor data.
    offsets = (list(range(layout["data"] + 8)) +
               list(range(layout["data"] + 8, len(data), 23)) +
               [len(data) - 1])
    path = TMP / "cut.gguf"
    messages = assert_truncations_raise(self, models.load_gguf, path, data,
                                        offsets)
    for n, message in messages.items():
      self.assertIn(f"but the file has {n} bytes", message)
    # The cheaper entry points check the same way.
    for load in (models.gguf_config, models.gguf_tokenizer):
      assert_truncations_raise(self, load, path, data, offsets[::7])

  def test_truncation_messages_name_the_part(self):
    data, layout = gguf_bytes(), gguf_layout()
    path = TMP / "cut.gguf"
    tokens = layout["field:tokenizer.ggml.tokens"]
    after_tokens = layout["field:tokenizer.ggml.token_type"]
    q_info = layout["info:blk.0.attn_q.weight"]
    q_start, q_end = layout["data:blk.0.attn_q.weight"]
    cases = [
        (0, "the magic b'GGUF' needs bytes [0, 4)"),
        (6, "the version needs bytes [4, 8)"),
        (12, "the tensor count needs bytes [8, 16)"),
        (20, "the metadata count needs bytes [16, 24)"),
        # Key (8 + 21 bytes), value type (4), item type (4), count (8),
        # then 32 strings of at least 8 bytes each.
        (tokens + 8 + 21 + 4 + 4 + 8 + 3,
         f"metadata 'tokenizer.ggml.tokens' (32 items of at least 8 bytes) "
         f"needs bytes [{tokens + 45}, {tokens + 45 + 256})"),
        (after_tokens - 2, f"metadata 'tokenizer.ggml.tokens' item 31 (3 "
                           f"bytes) needs bytes [{after_tokens - 3}, "
                           f"{after_tokens})"),
        (q_info + 5, f"the length of the name of tensor #2 needs bytes "
                     f"[{q_info}, {q_info + 8})"),
        (q_info + 8 + 5, f"the name of tensor #2 (19 bytes) needs bytes "
                         f"[{q_info + 8}, {q_info + 27})"),
        (q_info + 8 + 19 + 4 + 9, "dimension 1 of tensor "
                                  "'blk.0.attn_q.weight' needs bytes"),
        (q_start + 1000,
         f"tensor 'blk.0.attn_q.weight' (F32, shape (32, 32)) needs bytes "
         f"[{q_start}, {q_end}) but the file has {q_start + 1000} bytes"),
    ]
    for n, want in cases:
      path.write_bytes(data[:n])
      with self.assertRaises(ModelFileError) as e:
        models.load_gguf(path)
      self.assertEqual(e.exception.path, str(path))
      self.assertIn(f"{path}: truncated: {want}", str(e.exception))

  def test_overwritten_header_bytes_never_leak_other_errors(self):
    """Each header byte flipped (XOR 0xFF, or XOR 0x01: a count or size off
    by one): a ModelFileError naming the file, or, where the change is
    plausible (a float, a token's letter, a context length), a result."""
    data, layout = gguf_bytes(), gguf_layout()
    path = TMP / "flip.gguf"

    def flipped(n):
      return data[n] ^ (0xFF, 0x01)[n % 2]
    header = range(layout["data"])
    assert_flips_raise(self, models.gguf_config, path, data, header, flipped)
    assert_flips_raise(self, models.gguf_tokenizer, path, data, header[::3],
                       flipped)
    # The tensor infos (names, shapes, types, offsets): every change is an
    # error but in the padding before the data.
    infos = range(layout["info:token_embd.weight"], layout["data"])
    padding = range(layout["info:output_norm.weight"] + 8 + 18 + 4 + 8 + 4 + 8,
                    layout["data"])
    assert_flips_raise(self, models.load_gguf, path, data, infos, flipped,
                       allowed_ok=lambda n: n in padding)

  def test_corrupt_headers(self):
    data, layout = gguf_bytes(), gguf_layout()
    path = TMP / "bad.gguf"
    q_info = layout["info:blk.0.attn_q.weight"]
    q_type = q_info + 8 + 19 + 4 + 16
    k_offset = layout["info:blk.0.attn_k.weight"] + 8 + 19 + 4 + 16 + 4
    k_expected = layout["data:blk.0.attn_k.weight"][0] - layout["data"]
    arch = layout["field:general.architecture"]
    arch_index = [k for k in layout if k.startswith("field:") and
                  not k.startswith("field:GGUF.")].index(
                      "field:general.architecture")

    def patch(at, raw):
      return data[:at] + raw + data[at + len(raw):]
    cases = [
        (b"GGML" + data[4:], "not a GGUF file: it starts with b'GGML', "
                             "expected b'GGUF'"),
        (patch(4, struct.pack("<I", 1)), "GGUF version 1 is not supported"),
        (patch(q_type, struct.pack("<I", 99)),
         "tensor 'blk.0.attn_q.weight' has unknown ggml type 99"),
        (patch(k_offset, struct.pack("<Q", 8)),
         f"tensor 'blk.0.attn_k.weight' (F32, shape (32, 16)) has data offset "
         f"8, expected {k_expected} (the bytes of the tensors before it, each "
         "padded to 32)"),
        (patch(arch + 8, b"\xff"),
         f"metadata key #{arch_index} is not UTF-8 text: byte 0xff at offset "
         f"{arch + 8}"),
        (patch(arch + 8 + 20, b"\x11"),
         f"metadata 'general.architecture' has unknown value type 17 (at byte "
         f"{arch + 28})"),
        # F32 -> F16 in the last tensor's info: its data would end early.
        (patch(layout["info:output_norm.weight"] + 8 + 18 + 4 + 8,
               struct.pack("<I", 1)),
         f"the tensors' data end at byte {len(data) - 64} (padded: "
         f"{len(data) - 64}) but the file has {len(data)} bytes (64 bytes no "
         "tensor accounts for)"),
    ]
    for raw, want in cases:
      path.write_bytes(raw)
      with self.assertRaises(ModelFileError) as e:
        models.load_gguf(path)
      self.assertIn(f"{path}: {want}", str(e.exception))
    with self.assertRaisesRegex(ModelFileError, f"^{TMP}/none.gguf: no such "
                                                "file$"):
      models.load_gguf(TMP / "none.gguf")

  @parameterized.named_parameters(
      ("missing_key", dict(**{"llama.attention.head_count": None}),
       "GGUF metadata lacks llama.attention.head_count"),
      ("wrong_type", dict(**{"llama.block_count": "one"}),
       "GGUF metadata llama.block_count must be a positive integer, found "
       "'one'"),
      ("zero", dict(**{"llama.embedding_length": 0}),
       "GGUF metadata llama.embedding_length must be a positive integer, "
       "found 0"),
      ("bad_heads", dict(**{"llama.attention.head_count_kv": 3}),
       "num_heads (4) must be a multiple of num_kv_heads (3)"),
      ("no_vocab", dict(tokenizer=False),
       "GGUF metadata lacks llama.vocab_size and tokenizer.ggml.tokens"),
      ("layers", dict(**{"llama.block_count": 2}),
       "the config has 2 layers but the checkpoint has tensors of 1 "
       "(model.layers.<i> for i in [0])"),
      ("missing", dict(shapes={}, drop="blk.0.ffn_up.weight"),
       "missing 1 tensor(s) the config needs: "
       "['model.layers.0.mlp.up_proj.weight']"),
      ("embedding_shape", dict(shapes={"token_embd.weight": (V + 1, D)}),
       "tensor 'token_embd.weight' (model.embed_tokens.weight) has shape "
       "(33, 32), the config expects (32, 32)"),
      ("q_shape", dict(shapes={"blk.0.attn_q.weight": (H * 8 - 2, D)}),
       "tensor 'blk.0.attn_q.weight' (model.layers.0.self_attn.q_proj.weight)"
       " has shape (30, 32), the config expects (32, 32)"),
  )
  def test_metadata_and_shape_errors_name_the_file(self, kw, want):
    path, _ = write_gguf(TMP / "meta.gguf", **kw)
    with self.assertRaises(ModelFileError) as e:
      models.load_gguf(path)
    self.assertEqual(e.exception.path, str(path))
    self.assertStartsWith(str(e.exception), f"{path}: {want}")

  def test_tokenizer_metadata_errors_name_the_file(self):
    path, _ = write_gguf(TMP / "notok.gguf", tokenizer=False,
                         **{"llama.vocab_size": V,
                            "tokenizer.ggml.model": "gpt2"})
    models.load_gguf(path)  # The model does not need the tokenizer.
    with self.assertRaisesRegex(
        ModelFileError, f"^{path}: GGUF metadata lacks tokenizer.ggml.tokens$"):
      models.gguf_tokenizer(path)


class SafetensorsTest(parameterized.TestCase):

  def test_every_truncation_raises_model_file_error(self):
    path = copy_hf("cut") / "model.safetensors"
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    offsets = (list(range(8 + n + 16)) +
               list(range(8 + n + 16, len(data), 41)) + [len(data) - 1])
    messages = assert_truncations_raise(
        self, lambda p: models.load_pretrained(p.parent), path, data, offsets)
    for cut, message in messages.items():
      self.assertIn(f"truncated: ", message)
      self.assertIn(f"but the file has {cut} bytes", message)
    self.assertIn(f"{path}: truncated: the 8-byte header length needs bytes "
                  "[0, 8) but the file has 5 bytes", messages[5])
    self.assertIn(f"{path}: truncated: the JSON header ({n} bytes, from the "
                  f"length prefix) needs bytes [8, {8 + n}) but the file has "
                  "100 bytes", messages[100])
    cut = len(data) - 1
    self.assertRegex(messages[cut], rf"^{path}: truncated: tensor '.*' "
                                    rf"\(F32, shape \(.*\)\) needs bytes "
                                    rf"\[\d+, {len(data)}\) but the file has "
                                    rf"{cut} bytes$")

  def test_overwritten_header_bytes_never_leak_other_errors(self):
    """Each byte of the length prefix and JSON header set to 0xFF or "9"."""
    path = copy_hf("flip") / "model.safetensors"
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    # A flipped byte of a tensor name makes that tensor missing: the error
    # then names the checkpoint directory.
    assert_flips_raise(
        self, lambda p: models.load_pretrained(p.parent), path, data,
        range(8 + n), lambda i: (0xFF, ord("9"))[i % 2], paths=[path.parent])

  @parameterized.named_parameters(
      ("dtype", lambda h: h["model.norm.weight"].update(dtype="Q9"),
       "tensor 'model.norm.weight' has unknown dtype 'Q9'"),
      ("span", lambda h: h["model.norm.weight"].update(shape=[D + 1]),
       "tensor 'model.norm.weight' (F32, shape (33,)) needs 132 bytes but "
       "its data_offsets [{b}, {e}] span 128"),
      ("offsets", lambda h: h["model.norm.weight"].update(data_offsets=[4]),
       "tensor 'model.norm.weight': data_offsets must be [begin, end] with "
       "0 <= begin <= end, found [4]"),
      ("shape", lambda h: h["model.norm.weight"].update(shape="32"),
       "tensor 'model.norm.weight': shape must be a list of non-negative "
       "integers, found '32'"),
      ("entry", lambda h: h.update({"model.norm.weight": [1, 2]}),
       "tensor 'model.norm.weight': expected an object with dtype, shape and "
       "data_offsets, found [1, 2]"),
      ("overlap", lambda h: h["model.norm.weight"].update(
          data_offsets=[h["model.norm.weight"]["data_offsets"][0] - 4,
                        h["model.norm.weight"]["data_offsets"][1] - 4]),
       "tensor 'model.norm.weight' starts at byte {s4} but the tensors "
       "before it end at byte {s}"),
      ("metadata", lambda h: h.update(__metadata__={"format": 1}),
       "__metadata__ must map strings to strings, found {'format': 1}"),
  )
  def test_corrupt_header(self, edit, want):
    path = copy_hf("corrupt") / "model.safetensors"
    b, e = json.loads(path.read_bytes()[8:8 + struct.unpack(
        "<Q", path.read_bytes()[:8])[0]])["model.norm.weight"]["data_offsets"]
    rewrite_safetensors(path, edit)
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    want = want.replace("{b}", str(b)).replace("{e}", str(e)).replace(
        "{s4}", str(8 + n + b - 4)).replace("{s}", str(8 + n + b))
    with self.assertRaises(ModelFileError) as err:
      models.load_pretrained(path.parent)
    self.assertIn(f"{path}: {want}", str(err.exception))

  def test_raw_header_errors(self):
    path = copy_hf("raw") / "model.safetensors"
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    cases = [
        (data[:8] + b"[" + data[9:], "invalid JSON header at line 1 column "),
        (data[:8] + b"\xfe" + data[9:],
         "JSON header is not UTF-8 text: byte 0xfe at offset 0"),
        (struct.pack("<Q", 2) + b"[]" + data[8 + n:],
         "the JSON header must be an object, found an array"),
        (data + b"\0\0\0\0", f"the header's tensors end at byte {len(data)} "
                             f"but the file has {len(data) + 4} bytes (4 "
                             "bytes no tensor accounts for)"),
        (struct.pack("<Q", 2**62) + data[8:],
         f"truncated: the JSON header ({2**62} bytes, from the length "
         "prefix) needs bytes"),
    ]
    for raw, want in cases:
      path.write_bytes(raw)
      with self.assertRaises(ModelFileError) as e:
        models.load_pretrained(path.parent)
      self.assertIn(f"{path}: {want}", str(e.exception))

  def test_shape_other_than_the_config_names_tensor_and_shapes(self):
    path = copy_hf("shape") / "model.safetensors"
    tensors = safetensors.numpy.load_file(path)
    tensors["model.embed_tokens.weight"] = np.zeros((V, D + 4), np.float32)
    safetensors.numpy.save_file(tensors, path)
    with self.assertRaises(ModelFileError) as e:
      models.load_pretrained(path.parent)
    self.assertEqual(str(e.exception),
                     f"{path}: tensor 'model.embed_tokens.weight' has shape "
                     f"({V}, {D + 4}), the config expects ({V}, {D})")

  def test_sharded_index_errors(self):
    path = copy_hf("sharded", sharded=True)
    index = path / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    self.assertGreater(len(shards), 2)
    models.load_pretrained(path)
    # A missing shard.
    (path / shards[1]).rename(path / "moved")
    names = [k for k, v in weight_map.items() if v == shards[1]]
    with self.assertRaises(ModelFileError) as e:
      models.load_pretrained(path)
    self.assertEqual(str(e.exception),
                     f"{path / shards[1]}: no such file "
                     f"(model.safetensors.index.json maps {len(names)} "
                     f"tensor(s) to it, e.g. {names[0]!r})")
    (path / "moved").rename(path / shards[1])
    # A tensor the index puts in the wrong shard.
    wrong = dict(weight_map, **{names[0]: shards[0]})
    index.write_text(json.dumps({"weight_map": wrong}))
    with self.assertRaisesRegex(
        ModelFileError, f"^{path / shards[0]}: has no tensor '{names[0]}' "
                        r"\(1 of the \d+ tensors model.safetensors.index.json "
                        "maps to this file are absent\\)$"):
      models.load_pretrained(path)
    # A truncated index, an index without its map, a bad entry.
    text = json.dumps({"weight_map": weight_map}, indent=2)
    assert_truncations_raise(
        self, lambda p: models.load_pretrained(p.parent), index,
        text.encode(), range(0, len(text), 7))
    for value, want in [
        ({"metadata": {}}, "'weight_map' must be an object mapping tensor "
                           "names to files, found null"),
        ({"weight_map": {names[0]: 3}},
         f"weight_map[{names[0]!r}] must be a file name, found 3")]:
      index.write_text(json.dumps(value))
      with self.assertRaises(ModelFileError) as e:
        models.load_pretrained(path)
      self.assertEqual(str(e.exception), f"{index}: {want}")

  def test_no_weights(self):
    path = copy_hf("empty")
    (path / "model.safetensors").unlink()
    with self.assertRaisesRegex(
        ModelFileError,
        f"^{path}: no \\*.safetensors files in this directory$"):
      models.load_pretrained(path)


class ConfigJsonTest(parameterized.TestCase):

  def test_every_truncation_names_config_json_and_the_position(self):
    path = copy_hf("cfg_cut") / "config.json"
    data = path.read_bytes()
    messages = assert_truncations_raise(
        self, lambda p: models.pretrained_config(p.parent), path, data,
        range(len(data)))
    self.assertRegex(messages[len(data) - 1],
                     rf"^{path}: invalid JSON at line \d+ column \d+ \(the "
                     rf"end of the {len(data) - 1}-byte JSON: truncated\?\): ")
    self.assertIn(f"{path}: invalid JSON at line 1 column 1 (the end of the "
                  "0-byte JSON: truncated?): Expecting value", messages[0])

  @parameterized.named_parameters(
      ("garbage", b"\x00\xff\x10garbage", "JSON is not UTF-8 text: byte 0xff "
                                          "at offset 1"),
      ("syntax", b'{"vocab_size": 32,\n  "hidden_size": 32 x}',
       "invalid JSON at line 2 column 21: Expecting ',' delimiter"),
      ("list", b"[1, 2]", "expected a JSON object, found an array"),
  )
  def test_unreadable(self, raw, want):
    path = copy_hf("cfg_bad") / "config.json"
    path.write_bytes(raw)
    for load in (models.pretrained_config, models.load_pretrained):
      with self.assertRaises(ModelFileError) as e:
        load(path.parent)
      self.assertEqual(str(e.exception), f"{path}: {want}")

  @parameterized.named_parameters(
      ("missing", {"hidden_size": None}, "lacks required key 'hidden_size'"),
      ("string", {"hidden_size": "32"},
       "'hidden_size' must be an integer, found a string '32'"),
      ("float", {"num_hidden_layers": 1.5},
       "'num_hidden_layers' must be an integer, found a number 1.5"),
      ("bool", {"tie_word_embeddings": "yes"},
       "'tie_word_embeddings' must be true or false, found a string 'yes'"),
      ("eps", {"rms_norm_eps": -1}, "'rms_norm_eps' must be a non-negative "
                                    "number, found a number -1"),
      ("rope", {"rope_scaling": [1]},
       "'rope_scaling' must be an object, found an array [1]"),
      ("negative", {"vocab_size": -3}, "vocab_size must be positive, got -3"),
      ("heads", {"num_attention_heads": 0},
       "num_attention_heads must be positive, got 0"),
      ("model_type", {"model_type": ["llama"]},
       "'model_type' must be a string, found an array ['llama']"),
  )
  def test_missing_or_mistyped_key_is_named(self, change, want):
    path = copy_hf("cfg_key") / "config.json"
    hf = json.loads(path.read_text())
    for key, value in change.items():
      if value is None:
        del hf[key]
      else:
        hf[key] = value
    path.write_text(json.dumps(hf))
    for load in (models.pretrained_config, models.load_pretrained):
      with self.assertRaises(ModelFileError) as e:
        load(path.parent)
      self.assertEqual(str(e.exception), f"{path}: {want}")

  def test_missing_directory_and_file(self):
    with self.assertRaisesRegex(ModelFileError, f"^{TMP}/nowhere: no such "
                                                "directory"):
      models.load_pretrained(TMP / "nowhere")
    path = copy_hf("cfg_none")
    (path / "config.json").unlink()
    with self.assertRaisesRegex(
        ModelFileError, f"^{path}: no config.json in this directory$"):
      models.pretrained_config(path)

  def test_bad_overrides_are_the_callers_not_the_files(self):
    path = copy_hf("cfg_override")
    with self.assertRaisesRegex(ValueError, "attention must be one of") as e:
      models.pretrained_config(path, attention="bogus")
    self.assertNotIsInstance(e.exception, ModelFileError)


class TokenizerFileTest(absltest.TestCase):

  def test_sentencepiece_truncated_anywhere(self):
    sp = tokenizers.train_sentencepiece(
        ["what is 12 + 7 ?", "the answer is 19", "abc def"] * 20, 40)
    data = sp.serialized_model()
    path = TMP / "sp.model"
    messages = assert_truncations_raise(
        self, tokenizers.SentencePieceTokenizer, path, data, range(len(data)))
    # Cut between two pieces, sentencepiece itself loads a smaller model.
    between = [n for n, m in messages.items() if "no normalizer spec" in m]
    self.assertNotEmpty(between)
    self.assertRegex(messages[between[-1]],
                     rf"^{path}: not a sentencepiece model \({between[-1]} "
                     r"bytes\): truncated or incomplete: no normalizer spec "
                     r"after the \d+ pieces")
    path.write_bytes(data)
    self.assertEqual(tokenizers.SentencePieceTokenizer(path).vocab_size, 40)
    with self.assertRaisesRegex(ValueError, "not a sentencepiece model"):
      tokenizers.SentencePieceTokenizer(data[:between[-1]])

  def test_hf_tokenizer_json_truncated(self):
    try:
      import transformers  # pylint: disable=g-import-not-at-top
      from tokenizers import models as tok_models  # pylint: disable=g-import-not-at-top
      from tokenizers import Tokenizer as RawTokenizer  # pylint: disable=g-import-not-at-top
    except ImportError:
      self.skipTest("transformers / tokenizers not installed")
    vocab = ["<pad>", "<unk>", "</s>"] + list("abc")
    raw = RawTokenizer(tok_models.WordLevel(
        {c: i for i, c in enumerate(vocab)}, unk_token="<unk>"))
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>",
        eos_token="</s>")
    path = TMP / "hf_tok"
    hf.save_pretrained(path)
    self.assertEqual(tokenizers.HFTokenizer.from_pretrained(path).vocab_size,
                     6)
    for name in ("tokenizer.json", "tokenizer_config.json"):
      f = path / name
      data = f.read_bytes()
      assert_truncations_raise(
          self, lambda p: tokenizers.HFTokenizer.from_pretrained(p.parent), f,
          data, range(0, len(data), max(1, len(data) // 12)))
      f.write_bytes(data)
    # Valid JSON that is not a tokenizer: reported against the directory.
    (path / "tokenizer.json").write_text('{"model": 3}')
    with self.assertRaisesRegex(
        ModelFileError, f"^{path}: transformers could not load the tokenizer"):
      tokenizers.HFTokenizer.from_pretrained(path)


class SentencepieceProblemTest(absltest.TestCase):

  def test_field_walk(self):
    self.assertIsNone(model_files.sentencepiece_problem(b"\x1a\x00"))
    self.assertIn("no normalizer spec after the 1 pieces",
                  model_files.sentencepiece_problem(b"\x0a\x01x"))
    self.assertIn("field 1 at byte 0 needs bytes up to 7 but there are 3",
                  model_files.sentencepiece_problem(b"\x0a\x05x"))
    self.assertIn("wire type 7", model_files.sentencepiece_problem(b"\x0f"))


if __name__ == "__main__":
  absltest.main()
