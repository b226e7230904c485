"""Kernel-level summary of a ``jax.profiler`` trace, as one JSON record.

``traced(fn, out_dir, calls)`` runs ``fn`` under the profiler and returns the
device time per call of the busiest kernels (GPU kernels where the trace has
a GPU, XLA CPU thunks otherwise), so a benchmark can print where its time
goes next to its tokens/s. The raw trace stays in ``out_dir`` for Perfetto.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re


def summarize(trace_dir: str, calls: int = 1, top: int = 25) -> dict:
  """Aggregates the newest trace under ``trace_dir`` by kernel name."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"),
                           recursive=True), key=os.path.getmtime)
  if not files:
    return {"what": "profile", "error": f"no trace under {trace_dir}"}
  events = json.load(gzip.open(files[-1]))["traceEvents"]
  names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  gpu = {pid for pid, n in names.items() if "GPU" in n or "gpu" in n}
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") != "X":
      continue
    if gpu:
      if e["pid"] not in gpu:
        continue
    elif e["name"].startswith(("$", "Thunk", "Slinky", "ThreadPool")):
      continue
    total[e["name"]] += e.get("dur", 0.0)
    count[e["name"]] += 1
  grouped = collections.Counter()
  for name, us in total.items():  # fusion.12, fusion.13 -> fusion
    grouped[re.sub(r"[._]\d+$", "", name)] += us
  busy = sum(total.values())
  return {
      "what": "profile", "device": "gpu" if gpu else "cpu", "calls": calls,
      "busy_ms_per_call": busy / 1e3 / calls,
      "kernels_per_call": sum(count.values()) / calls,
      "top": [[name[:120], round(us / 1e3 / calls, 4), count[name] // calls]
              for name, us in total.most_common(top)],
      "top_grouped": [[name[:120], round(us / 1e3 / calls, 4)]
                      for name, us in grouped.most_common(top)],
  }


def traced(fn, trace_dir: str, calls: int = 1, top: int = 25) -> dict:
  """Runs ``fn()`` ``calls`` times under the profiler; see `summarize`."""
  import jax  # pylint: disable=import-outside-toplevel
  os.makedirs(trace_dir, exist_ok=True)
  jax.profiler.start_trace(trace_dir)
  try:
    for _ in range(calls):
      jax.block_until_ready(fn())
  finally:
    jax.profiler.stop_trace()
  return summarize(trace_dir, calls, top)
