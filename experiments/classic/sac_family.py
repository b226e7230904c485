"""Seed-vmapped comparison of the SAC family on gymnax Pendulum-v1 (CPU).

    python -m experiments.classic.sac_family [--steps 15000] [--seeds 4]
        [--hidden 64] [--jobs 2] [--out experiments/classic/out]

Runs SAC (auto-α), SAC-ERA, band-limited SAC, ACE and MaxInfoRL with the same
budget, each as one ``jit(vmap(train))`` over seeds, and writes
``sac_family.png`` (mean episode return ± 95% CI over seeds, and the policy
entropy: SAC's −log π tracks its target −|A|, ERA's Gaussian entropy sits on
its floor D·h and its realised truncated-normal entropy below it) plus
``sac_family.json`` (final returns, timings).

Cost: the updates are matmul-bound, so ``--hidden 64`` (the default; 128
before) cuts the run time about 2.5× with the same qualitative result, and
``--jobs 2`` compiles and runs two variants at a time in threads (XLA
releases the GIL), which uses both cores of a 2-core machine.
"""

import argparse
import concurrent.futures
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import sac

VARIANTS = ("sac", "era", "bandlimited", "ace", "maxinfo")
LABELS = dict(sac="SAC (auto α)", era="SAC-ERA", bandlimited="band-limited SAC",
              ace="ACE", maxinfo="MaxInfoRL")


def config_for(variant, steps, tiny=False, hidden=64):
  return sac.SACConfig(
      env_name="Pendulum-v1", variant=variant, total_steps=steps,
      buffer_size=steps, batch_size=64 if tiny else 128,
      learning_starts=500 if tiny else 1000, hidden=32 if tiny else hidden,
      lr=1e-3, era_h=0.25 if not tiny else 0.0,
      ace_causal_interval=1000, ace_causal_sample=1000,
      ace_reset_interval=0)


def mean_ci(x):
  """Mean and 95% t-interval half-width over axis 0 (seeds)."""
  n = x.shape[0]
  m = np.nanmean(x, 0)
  t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 8: 2.36}.get(n, 2.0)
  return m, t * np.nanstd(x, 0, ddof=1) / np.sqrt(n)


def smooth(x, w):
  if w <= 1:
    return x
  k = np.ones(w) / w
  return np.stack([np.convolve(np.nan_to_num(r, nan=r[~np.isnan(r)][0]
                                             if (~np.isnan(r)).any() else 0.0),
                               k, mode="same") for r in x])


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=15_000)
  ap.add_argument("--seeds", type=int, default=4)
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--hidden", type=int, default=64)
  ap.add_argument("--jobs", type=int, default=2,
                  help="variants compiled and run at once (threads)")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                "out"))
  args = ap.parse_args()
  os.makedirs(args.out, exist_ok=True)
  keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)
  results, summary = {}, {}
  t_all, cpu_all = time.time(), time.process_time()

  def run_one(v):
    cfg = config_for(v, args.steps, args.tiny, args.hidden)
    t0 = time.time()
    _, m = jax.jit(jax.vmap(sac.make_train(cfg)))(keys)
    return jax.tree.map(np.asarray, jax.block_until_ready(m)), time.time() - t0

  variants = args.variants.split(",")
  with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
    futures = {v: pool.submit(run_one, v) for v in variants}
  for v in variants:
    m, dt = futures[v].result()
    results[v] = m
    ret = m["episode_return"]
    final = np.nanmean(ret[:, -1000:], 1)  # per seed
    summary[v] = dict(final_return_mean=float(final.mean()),
                      final_return_per_seed=final.tolist(),
                      seconds=dt, entropy_final=float(
                          np.nanmean(m["entropy"][:, -500:])),
                      gauss_entropy_final=float(
                          np.nanmean(m["gauss_entropy"][:, -500:])))
    print(f"{v:12s} final return {final.mean():8.1f} "
          f"(seeds {np.round(final, 1)})  {dt:6.1f}s", flush=True)
  summary["total_seconds"] = time.time() - t_all
  summary["total_cpu_seconds"] = time.process_time() - cpu_all
  summary["config"] = dict(steps=args.steps, seeds=args.seeds,
                           hidden=args.hidden, jobs=args.jobs,
                           device=str(jax.devices()[0]))

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
  for v, m in results.items():
    x = np.arange(m["episode_return"].shape[1])
    mu, ci = mean_ci(m["episode_return"])
    ax[0].plot(x, mu, label=LABELS.get(v, v))
    ax[0].fill_between(x, mu - ci, mu + ci, alpha=0.2)
    ent = m["gauss_entropy"] if v == "era" else m["entropy"]
    mu, ci = mean_ci(smooth(ent, 200))
    lab = LABELS.get(v, v) + (" (Gaussian H)" if v == "era" else " (−log π)")
    ax[1].plot(x, mu, label=lab)
    ax[1].fill_between(x, mu - ci, mu + ci, alpha=0.2)
    if v == "era" and "era_entropy" in m:  # truncated normal: below D·h
      mu, _ = mean_ci(smooth(m["era_entropy"], 200))
      ax[1].plot(x, mu, color=ax[1].lines[-1].get_color(), ls="--",
                 label="SAC-ERA (realised H, truncated)")
  ax[1].axhline(-1.0, color="k", ls="--", lw=0.8, label="SAC target −|A|")
  ax[1].axhline(config_for("era", 1, args.tiny).era_h, color="grey", ls=":",
                lw=0.8, label="ERA floor D·h")
  ax[0].set(xlabel="environment steps", ylabel="episode return",
            title=f"Pendulum-v1, mean ± 95% CI over {args.seeds} seeds")
  ax[1].set(xlabel="environment steps", ylabel="policy entropy (nats)",
            title="entropy", ylim=(-3, 2))
  ax[0].legend(fontsize=8)
  ax[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "sac_family.png"), dpi=120)
  with open(os.path.join(args.out, "sac_family.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(f"total {summary['total_seconds']:.1f}s wall, "
        f"{summary['total_cpu_seconds']:.1f}s CPU -> "
        f"{args.out}/sac_family.png")


if __name__ == "__main__":
  main()
