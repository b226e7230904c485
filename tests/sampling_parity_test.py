"""Greedy decoding parity with transformers' ``generate``.

Small random Llama and Qwen2 models are built with transformers (float32),
saved, loaded with ``entropy_rl.models.load_pretrained``; greedy decoding with
``entropy_rl.sampling.sample`` must reproduce ``generate(do_sample=False)``
token for token for 32 new tokens, on equal-length prompts and on a
left-padded batch.
"""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropy_rl import sampling

try:
  # pylint: disable=g-import-not-at-top
  import torch
  import transformers
  from entropy_rl import models
except ImportError:  # pragma: no cover
  if os.environ.get("CI") == "true":
    raise
  pytest.skip("torch/transformers (the test extra) or entropy_rl.models "
              "missing", allow_module_level=True)

VOCAB = 128
NEW = 32
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, max_position_embeddings=256,
              initializer_range=0.1, bos_token_id=None, eos_token_id=None,
              pad_token_id=0)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(tie_word_embeddings=False, rope_theta=5_000.0)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(tie_word_embeddings=True, rope_theta=20_000.0)),
}
# Left-padded prompts: lengths 9, 5 and 2 in a width of 9.
LENGTHS = (9, 5, 2)


def _prompts(seed):
  rs = np.random.RandomState(seed)
  width = max(LENGTHS)
  tokens = np.zeros((len(LENGTHS), width), np.int64)
  mask = np.zeros((len(LENGTHS), width), np.int64)
  for r, n in enumerate(LENGTHS):
    tokens[r, width - n:] = rs.randint(1, VOCAB, n)
    mask[r, width - n:] = 1
  return tokens, mask


class GreedyParityTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def _models(self, family, seed):
    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(seed)
    hf = model_cls(config_cls(**COMMON, **extra)).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    path = os.path.join(self.tmp.name, family)
    hf.save_pretrained(path)
    ours = models.load_pretrained(path, dtype=jnp.float32)
    return hf, models.as_functions(ours)

  def _hf_greedy(self, hf, tokens, mask):
    with torch.no_grad():
      out = hf.generate(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                        do_sample=False, max_new_tokens=NEW,
                        pad_token_id=0, eos_token_id=None)
    return out[:, tokens.shape[1]:].numpy()

  @parameterized.parameters("llama", "qwen2")
  def test_greedy_matches_generate(self, family):
    hf, (fns, params) = self._models(family, seed=1)
    tokens, mask = _prompts(seed=2)
    cases = {"left-padded": (tokens, mask),
             "no padding": (tokens[:1], mask[:1])}
    for name, (tok, msk) in cases.items():
      want = self._hf_greedy(hf, tok, msk)
      out = sampling.sample(fns, params, tok.astype(np.int32),
                            msk.astype(bool), jax.random.key(0),
                            max_new_tokens=NEW, sampling=sampling.greedy())
      np.testing.assert_array_equal(out.tokens, want,
                                    err_msg=f"{family}, {name}")
      self.assertTrue(bool(np.asarray(out.mask).all()))


if __name__ == "__main__":
  absltest.main()
