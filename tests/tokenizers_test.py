"""Tokenizers: char-level, sentencepiece trained offline, HF adapter, pads."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np

from entropy_rl import tokenizers

CORPUS = [f"{a}+{b}={a + b}" for a in range(60) for b in range(0, 60, 7)] + [
    f"Question: What is {a} * {b}? Answer: {a * b}"
    for a in range(20) for b in range(5)]


def _sp(model_type="bpe", vocab_size=96, **kw):
  key = (model_type, vocab_size, tuple(sorted(kw.items())))
  if key not in _SP_CACHE:
    _SP_CACHE[key] = tokenizers.train_sentencepiece(
        CORPUS, vocab_size, model_type=model_type, **kw)
  return _SP_CACHE[key]


_SP_CACHE = {}


class CharTokenizerTest(absltest.TestCase):

  def test_ids(self):
    tok = tokenizers.CharTokenizer()
    self.assertEqual((tok.pad_id, tok.bos_id, tok.eos_id, tok.end_ids),
                     (0, 2, 3, (3,)))
    # Digit d is id 4 + d; "+" follows the digits, "=" is 18.
    self.assertEqual(tok.encode("12+7="), [5, 6, 14, 11, 18])
    self.assertEqual(tok.vocab_size, 4 + len(tokenizers.DEFAULT_CHARS))
    self.assertIsInstance(tok, tokenizers.Tokenizer)

  def test_round_trip_and_specials(self):
    tok = tokenizers.CharTokenizer()
    text = "3,5,7:24=(3*5)+9 -1/2.?"
    self.assertEqual(tok.decode(tok.encode(text)), text)
    self.assertEqual(tok.decode([tok.bos_id, 5, tok.eos_id, tok.pad_id, 99]),
                     "<bos>1<eos><pad><unk>")
    self.assertEqual(tok.encode("x"), [1])  # Unknown -> <unk>.

  def test_chat_template_joins_contents(self):
    tok = tokenizers.CharTokenizer()
    self.assertEqual(tok.apply_chat_template(
        [{"role": "user", "content": "1+1="}]), "1+1=")

  def test_bad_alphabet(self):
    with self.assertRaisesRegex(ValueError, "unique"):
      tokenizers.CharTokenizer("aa")

  @settings(max_examples=50, deadline=None, derandomize=True)
  @given(st.text(tokenizers.DEFAULT_CHARS, max_size=40))
  def test_round_trip_property(self, text):
    tok = tokenizers.CharTokenizer()
    self.assertEqual(tok.decode(tok.encode(text)), text)


class SentencePieceTest(parameterized.TestCase):

  @parameterized.parameters("bpe", "unigram", "char")
  def test_train_round_trip(self, model_type):
    sp = _sp(model_type)
    self.assertIsInstance(sp, tokenizers.Tokenizer)
    self.assertEqual((sp.pad_id, sp.bos_id, sp.eos_id, sp.end_ids),
                     (0, 2, 3, (3,)))
    self.assertLessEqual(sp.vocab_size, 96)
    for line in CORPUS[::37] + [" 12 +  7 = 19 ", "Answer:  3"]:
      self.assertEqual(sp.decode(sp.encode(line)), line)
    # Digits are split (split_digits=True).
    pieces = [sp.sp.id_to_piece(i) for i in sp.encode("1234")]
    self.assertEqual(pieces, ["1", "2", "3", "4"])

  def test_tokens_concatenate(self):
    # token_text(i) is what token i adds inside a decoded sequence.
    sp = _sp("bpe")
    ids = sp.encode(" What is 12 * 4? Answer: 48 ")
    self.assertEqual("".join(sp.token_text(i) for i in ids), sp.decode(ids))
    self.assertEqual(sp.token_text(sp.bos_id), "")

  def test_save_load_file_and_bytes(self):
    sp = _sp("bpe")
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "tok.model")
      sp.save(path)
      again = tokenizers.SentencePieceTokenizer(path)
    from_bytes = tokenizers.SentencePieceTokenizer(sp.serialized_model())
    for tok in (again, from_bytes):
      self.assertEqual(tok.encode("12+7=19"), sp.encode("12+7=19"))
      self.assertEqual(tok.vocab_size, sp.vocab_size)

  def test_out_of_range_ids_do_not_raise(self):
    sp = _sp("bpe")
    self.assertIsInstance(sp.decode([5, 10**6, -3]), str)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "model_type"):
      tokenizers.train_sentencepiece(CORPUS, 64, model_type="wordpiece")
    with self.assertRaisesRegex(ValueError, "empty"):
      tokenizers.train_sentencepiece(["", ""], 64)
    with self.assertRaisesRegex(ValueError, "no sentencepiece file"):
      tokenizers.SentencePieceTokenizer("/nonexistent/x.model")
    with self.assertRaisesRegex(ValueError, "not a sentencepiece model"):
      tokenizers.SentencePieceTokenizer(b"garbage")

  def test_chat_template(self):
    sp = _sp("bpe")
    self.assertEqual(
        sp.apply_chat_template([{"role": "user", "content": "hi"}]),
        "User: hi\nAssistant:")


class HFTokenizerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    try:
      from tokenizers import decoders  # pylint: disable=g-import-not-at-top
      from tokenizers import models
      from tokenizers import pre_tokenizers
      from tokenizers import Tokenizer as RawTokenizer
      import transformers  # pylint: disable=g-import-not-at-top
    except ImportError:
      self.skipTest("transformers / tokenizers not installed")
    vocab = ["<pad>", "<s>", "</s>", "<unk>", "<|im_end|>"] + list(
        "abcdefghijklmnopqrstuvwxyz0123456789 +=:?")
    raw = RawTokenizer(models.WordLevel({c: i for i, c in enumerate(vocab)},
                                        unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    raw.decoder = decoders.Fuse()
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=["<|im_end|>"])
    hf.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}"
        "<|im_end|>{% endfor %}{% if add_generation_prompt %}<s>assistant:"
        "{% endif %}")
    self.tok = tokenizers.HFTokenizer(hf)

  def test_protocol(self):
    tok = self.tok
    self.assertIsInstance(tok, tokenizers.Tokenizer)
    self.assertEqual((tok.pad_id, tok.bos_id, tok.eos_id), (0, 1, 2))
    self.assertEqual(tok.end_ids, (2, 4))  # eos and <|im_end|>.
    self.assertEqual(tok.vocab_size, 5 + 41)

  def test_encode_decode(self):
    ids = self.tok.encode("what is 12+7?")
    self.assertNotIn(self.tok.bos_id, ids)  # No special tokens added.
    self.assertEqual(self.tok.decode(ids), "what is 12+7?")
    self.assertEqual(self.tok.decode(ids[:2] + [2]), "wh</s>")

  def test_chat_template(self):
    text = self.tok.apply_chat_template([{"role": "user", "content": "hi"}])
    self.assertEqual(text, "<s>user: hi<|im_end|><s>assistant:")
    ids = self.tok.encode(text)
    self.assertEqual(ids[0], 1)
    self.assertIn(4, ids)


class BatchEncodeTest(absltest.TestCase):

  def test_left_and_right(self):
    tok = tokenizers.CharTokenizer()
    ids, mask = tokenizers.batch_encode(tok, ["1+1=", "12+7="], 6)
    np.testing.assert_array_equal(ids, [[0, 0, 5, 14, 5, 18],
                                        [0, 5, 6, 14, 11, 18]])
    np.testing.assert_array_equal(mask, ids != 0)
    self.assertEqual((ids.dtype, mask.dtype), (np.int32, np.bool_))
    ids, mask = tokenizers.batch_encode(tok, ["1+1=", "12+7="], 6,
                                        pad="right", add_bos=True)
    np.testing.assert_array_equal(ids, [[2, 5, 14, 5, 18, 0],
                                        [2, 5, 6, 14, 11, 18]])
    np.testing.assert_array_equal(mask.sum(1), [5, 6])

  def test_default_length_and_truncation(self):
    tok = tokenizers.CharTokenizer()
    ids, _ = tokenizers.batch_encode(tok, ["1", "123"])
    self.assertEqual(ids.shape, (2, 3))
    with self.assertRaisesRegex(ValueError, "max_len=2"):
      tokenizers.batch_encode(tok, ["123"], 2)
    ids, _ = tokenizers.batch_encode(tok, ["123"], 2, truncate="left")
    np.testing.assert_array_equal(ids, [[6, 7]])
    ids, _ = tokenizers.batch_encode(tok, ["123"], 2, truncate="right")
    np.testing.assert_array_equal(ids, [[5, 6]])
    with self.assertRaisesRegex(ValueError, "pad"):
      tokenizers.batch_encode(tok, ["1"], 2, pad="middle")
    with self.assertRaisesRegex(ValueError, "sequence of strings"):
      tokenizers.batch_encode(tok, "12", 2)

  def test_trim_and_decode_batch(self):
    tok = tokenizers.CharTokenizer()
    self.assertEqual(tokenizers.trim_at_end([5, 6, 3, 7], (3,)), [5, 6])
    self.assertEqual(tokenizers.trim_at_end([5, 3, 6, 3], (3,),
                                            [1, 0, 1, 1]), [5, 6])
    rows = np.array([[5, 6, 3, 9], [7, 3, 3, 3]])
    self.assertEqual(tokenizers.decode_batch(tok, rows), ["12", "3"])


if __name__ == "__main__":
  absltest.main()
