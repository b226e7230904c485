"""Model presets shared by the benchmarks, as in ``hf_peer.py``.

name: (vocab, hidden, layers, heads, kv_heads, intermediate, tied); the
peer's Qwen2Config defaults give rope_theta 10000, eps 1e-6 and q/k/v biases.
"""

import pathlib

PRESETS = {
    "tiny": (512, 256, 4, 4, 4, 1024, True),
    "small": (32000, 512, 8, 8, 4, 1536, True),
    "qwen2.5-0.5b": (151936, 896, 24, 14, 2, 4864, True),
    "qwen2.5-1.5b": (151936, 1536, 28, 12, 2, 8960, True),
}
# The peer script beside the checkout (``../shared/bench/hf_peer.py``).
DEFAULT_PEER = (pathlib.Path(__file__).resolve().parent.parent.parent
                / "shared" / "bench" / "hf_peer.py")
