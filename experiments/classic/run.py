"""Runs one classic config, seed-vmapped, and plots mean ± 95% CI.

    .venv/bin/python experiments/classic/run.py \
        --config experiments/configs/classic_sac.py:tiny [--out DIR]

Writes ``<name>.png`` and ``<name>.json`` (final metrics per seed). A
config's optional ``hlines`` dict ({curve name: y}) draws dashed reference
lines (e.g. DORAEMON's success threshold α).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import bobw  # pylint: disable=g-import-not-at-top
from entropy_rl.classic import doraemon
from entropy_rl.classic import envs
from entropy_rl.classic import maxent_exploration as mex
from entropy_rl.classic import mdqn
from entropy_rl.classic import mdvi
from entropy_rl.classic import moco
from entropy_rl.classic import moss_agent
from entropy_rl.classic import ppo
from entropy_rl.classic import sac
from entropy_rl.classic import tabular
from entropy_rl.classic import trpo


def load_config(spec):
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None), os.path.basename(path)[:-3] + (
      f"_{arg}" if arg else "")


def curves_sac(c, keys):
  cfg = sac.SACConfig(**c.kwargs.to_dict())
  _, m = jax.jit(jax.vmap(sac.make_train(cfg)))(keys)
  out = {"episode_return": m["episode_return"], "entropy": m["entropy"]}
  for k in ("gauss_entropy", "era_entropy", "era_delta", "alpha", "disc_acc",
            "lambda", "dormant"):
    if k in m:
      out[k] = m[k]
  if "causal_w" in m:  # ACE: spread of the causal weights, max w − min w
    out["causal_w_spread"] = m["causal_w"].max(-1) - m["causal_w"].min(-1)
  return out


def curves_pg(c, keys, lib, config_cls):
  cfg = config_cls(**c.kwargs.to_dict())
  _, m = jax.jit(jax.vmap(lib.make_train(cfg)))(keys)
  return {k: m[k] for k in ("episode_return", "entropy", "kl") if k in m}


def curves_doraemon(c, keys):
  kw = c.kwargs.to_dict()
  if "ppo" in kw:  # nested PPOConfig / DoraemonConfig fields
    kw["ppo"] = ppo.PPOConfig(**kw["ppo"])
  if "doraemon" in kw:
    kw["doraemon"] = doraemon.DoraemonConfig(**kw["doraemon"])
  cfg = doraemon.DoraemonTrainConfig(**kw)
  _, _, m = jax.jit(jax.vmap(doraemon.make_train(cfg)))(keys)
  return {k: m[k] for k in ("entropy", "success", "success_is", "kl_step",
                            "eval_return", "train_return")}


def curves_mdvi(c, keys):
  k = c.kwargs
  mdp = envs.random_mdp(jax.random.PRNGKey(0), k.num_states,
                        k.get("num_actions", 3), gamma=0.9)
  q = tabular.value_iteration(mdp, 500)
  v_star = tabular.policy_evaluation(mdp, jax.nn.one_hot(q.argmax(-1),
                                                         q.shape[-1]))[0]
  out = {}
  for lam in k.get("lams", (0.0, 2.0)):
    def one(key, lam=lam):
      _, pis = mdvi.mdvi(mdp, lam, k.get("tau", 0.05), k.iters, key,
                         k.get("noise_std", 1.0))
      vs = jax.vmap(lambda p: tabular.policy_evaluation(mdp, p)[0])(pis)
      return jnp.mean(v_star - vs, -1)
    out[f"suboptimality_lambda={lam}"] = jax.jit(jax.vmap(one))(keys)
  return out


def curves_mdqn(c, keys):
  cfg = mdqn.MDQNConfig(**c.kwargs.to_dict())
  _, m = jax.jit(jax.vmap(mdqn.make_train(cfg)))(keys)
  return {k: m[k] for k in ("episode_return", "policy_entropy", "loss")}


def curves_moss(c, keys):
  kw = c.kwargs.to_dict()
  kw["env_kwargs"] = tuple(tuple(p) for p in kw.get("env_kwargs", ()))
  cfg = moss_agent.MOSSConfig(**kw)
  _, m = jax.jit(jax.vmap(moss_agent.make_train(cfg)))(keys)
  return {k: m[k] for k in ("intr_explore", "intr_control",
                            "intrinsic_reward", "cpc_loss")}


def curves_maxent(c, keys):
  k = c.kwargs
  mdp = envs.gridworld_mdp(k.size, horizon=k.horizon)
  return {f"visitation_entropy_{a}": jax.jit(jax.vmap(
      lambda key, a=a: mex.run_exploration(mdp, a, k.episodes, key)[1]))(keys)
          for a in ("random", "entgame", "ucbvi_ent")}


def curves_bobw(c, keys):
  k = c.kwargs
  mdp = envs.chain_mdp(k.n, gamma=0.9, slip=0.1)
  out = {}
  for reg in bobw.REGULARIZERS:
    _, r = bobw.bobw_po(mdp, k.iters, reg, k.eta0)
    out[f"return_{reg}"] = jnp.broadcast_to(r, (keys.shape[0],) + r.shape)
  return out


def curves_moco(c, keys):
  k = c.kwargs

  def one(key):
    k1, k2 = jax.random.split(key)
    mdp = envs.random_mdp(k1, k.num_states, 2, gamma=0.9)
    p_hat = jax.random.dirichlet(k2, jnp.full(k.num_states, 1.0),
                                 (k.num_states, 2))
    v_true = tabular.value_iteration(mdp, 300).max(-1)
    _, vs = moco.mocovi(mdp, p_hat, k.iters, k.num_basis)

    def vi(v, _):
      v = jnp.max(mdp.R + mdp.gamma * p_hat @ v, -1)
      return v, v
    _, vs_hat = jax.lax.scan(vi, jnp.zeros(k.num_states), None, k.iters)
    return dict(moco_error=jnp.abs(vs - v_true).max(-1),
                vi_on_phat_error=jnp.abs(vs_hat - v_true).max(-1))
  return jax.jit(jax.vmap(one))(keys)


RUNNERS = dict(
    sac=curves_sac, doraemon=curves_doraemon, mdvi=curves_mdvi,
    mdqn=curves_mdqn, moss=curves_moss,
    maxent_exploration=curves_maxent, bobw=curves_bobw, moco=curves_moco,
    ppo=lambda c, k: curves_pg(c, k, ppo, ppo.PPOConfig),
    trpo=lambda c, k: curves_pg(c, k, trpo, trpo.TRPOConfig))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", required=True)
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                "out"))
  args = ap.parse_args()
  c, name = load_config(args.config)
  os.makedirs(args.out, exist_ok=True)
  keys = jax.random.split(jax.random.PRNGKey(0), c.seeds)
  t0 = time.time()
  curves = jax.tree.map(np.asarray, RUNNERS[c.algo](c, keys))
  dt = time.time() - t0
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.5),
                           squeeze=False)
  summary = {"seconds": dt, "seeds": c.seeds}
  hlines = c.get("hlines", None) or {}
  for ax, (k, v) in zip(axes[0], curves.items()):
    if k in hlines:
      ax.axhline(hlines[k], color="k", ls="--", lw=0.8)
    v = v.reshape(v.shape[0], v.shape[1], -1).mean(-1)
    m = np.nanmean(v, 0)
    ci = 1.96 * np.nanstd(v, 0) / np.sqrt(max(v.shape[0], 1))
    x = np.arange(v.shape[1])
    ax.plot(x, m)
    ax.fill_between(x, m - ci, m + ci, alpha=0.25)
    ax.set_title(k, fontsize=9)
    summary[k] = float(np.nanmean(v[:, -max(1, v.shape[1] // 10):]))
  fig.suptitle(f"{name}: mean ± 95% CI over {c.seeds} seeds")
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, f"{name}.png"), dpi=100)
  with open(os.path.join(args.out, f"{name}.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
