"""The MOSS agent: CIC skills + DDPG, a mixture of surprises, on device.

"A Mixture of Surprises for Unsupervised Reinforcement Learning", Zhao,
Li, Yang, Wang, Song & Huang, NeurIPS 2022, https://arxiv.org/abs/2210.06702
(spec §B8; code ``LeapLabTHU/MOSS``:
``core/agents/ddpg_multimodal_skill_torch.py``,
``core/intrinsic/{cic,multimodal_cic}.py``, ``core/agents/ddpg.py``).

One skill-conditioned DDPG policy learns two behaviours. Each episode is cut
into ``partitions`` chunks; chunk c has mode m = c mod 2 (0: explore,
1: control). The skill is redrawn every ``skill_every`` steps and at every
chunk boundary; with ``skill_mode="half"`` it is [U(0,1)^{d/2}, 0] in
explore mode and [0, U(0,1)^{d/2}] in control mode, so the policy can read
its mode off the skill. Representations come from CIC (Laskin et al. 2022):
a state net φ, a skill projection and a predictor trained with
:func:`~entropy_rl.classic.moss.cpc_loss` on (s, s', z). The reward of a
replayed batch is the particle state-entropy of the CIC embeddings with
running normalisation (:func:`~entropy_rl.classic.moss.moss_reward`),
*negated* on control rows::

    d_ij = ‖φ(s_i) − φ(s'_j)‖₂,  D_i = k smallest d_ij
    r_i  = log(1 + mean_k max((D_ik − μ)/v − c, 0))        (v: the "std")
    r_i ← −r_i  if mode_i = 1                               (control)

so explore mode maximises surprise and control mode minimises it. The agent
is DrQ-v2-style DDPG with n-step returns: a = clip(μ_θ(s, z) + σ·ξ, −1, 1);
twin critics with a Polyak target; target action noise clipped to ±c_σ::

    a'  = clip(μ_θ(s'_n, z) + clip(σξ, ±c_σ), −1, 1)
    y   = r + γ^n (1 − d)·min_j Q̄_j(s'_n, a')
    L_Q = Σ_j E[(Q_j(s, a, z) − y)²],   L_μ = −E[min_j Q_j(s, ã, z)]

The intrinsic reward of an n-step sample is computed on (s, s'_n), with the
CIC parameters from before that step's CIC update (as in the code).

``reward="extrinsic"`` fine-tunes on the task reward (the n-step sum) with a
fixed skill: mode ``finetune_mode`` and every active entry 0.5. (MOSS's own
fine-tuning searches the skill by return; that search is not implemented.)

``make_train(config)`` returns ``train(rng, hyper=None) -> (state,
metrics)``: environment steps, the time-major on-device replay ring, the CIC
update and the DDPG update run inside one jitted ``lax.scan``;
``jax.vmap(train)(keys)`` vmaps over seeds and ``jax.vmap(train, (None,
0))(key, hypers)`` over the floats of :class:`MOSSHyper`.

Deviations, all for small CPU runs: plain ReLU MLPs (no LayerNorm/tanh
trunk), an explicit ``episode_len`` (PointMass and gymnax episodes are short,
so the skill is also redrawn at chunk boundaries; MOSS's 1000-step episodes
align 500-step chunks with the 50-step skill period anyway), and the batch
keeps its sampled order (MOSS collates mode-0 rows first; the k-NN reward is
order-free).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.classic import envs as envs_lib
from entropy_rl.classic import moss
from entropy_rl.classic import nets

Array = jax.Array
sg = jax.lax.stop_gradient
REWARDS = ("intrinsic", "extrinsic")


class MOSSConfig(NamedTuple):
  """Static configuration; floats are defaults of :class:`MOSSHyper`.

  Spec defaults (§B8e) where they fit a CPU: k = 16, c = 5e-4, CIC
  temperature 0.5, n-step 3, skill period 50, 2 partitions, ``std_is_var``.
  The paper's skill dim 32, hidden 1024, batch 1024 and lr 1e-4 are for
  DMC; the defaults here are smaller.
  """

  env_name: str = "PointMass"
  env_kwargs: tuple = (("horizon", 20),)
  episode_len: int | None = None  # None: inferred (PointMass horizon, gymnax)
  total_steps: int = 20_000  # environment steps, summed over envs
  num_envs: int = 4
  buffer_size: int = 20_000  # transitions (ring of buffer_size // num_envs)
  batch_size: int = 256
  learning_starts: int = 1_000  # uniform random actions before this
  update_every: int = 1  # iterations between gradient steps
  hidden: int = 128
  cic_hidden: int = 128
  skill_dim: int = 16
  skill_every: int = 50
  partitions: int = 2
  project_skill: bool = True
  n_step: int = 3
  gamma: float = 0.99
  lr: float = 1e-3  # actor and critic (paper 1e-4)
  cic_lr: float = 1e-3  # (paper 1e-4)
  critic_tau: float = 0.01
  stddev: float = 0.2
  stddev_clip: float = 0.3
  knn_k: int = 16
  knn_clip: float = 5e-4
  std_is_var: bool = True
  cic_temperature: float = 0.5
  reward: str = "intrinsic"
  finetune_mode: int = 0


class MOSSHyper(NamedTuple):
  """Float hyperparameters that may be traced (vmap over them)."""

  lr: Any
  cic_lr: Any
  gamma: Any
  critic_tau: Any
  stddev: Any
  control_sign: Any  # −1: MOSS; +1: no sign flip (CIC/APT-style ablation)


class Ring(NamedTuple):
  """Time-major replay ring: rows are iterations, columns environments."""

  obs: Array  # [C, E, O]
  action: Array  # [C, E, D]
  reward: Array  # [C, E]
  next_obs: Array  # [C, E, O] true next observation (before auto-reset)
  terminated: Array  # [C, E]
  done: Array  # [C, E] terminated or truncated
  skill: Array  # [C, E, S]
  mode: Array  # [C, E] int32
  ptr: Array  # next row to write
  size: Array  # rows written (≤ C)


class MOSSState(NamedTuple):
  actor: Any
  critic: Any  # twin Q, leading axis 2
  critic_target: Any
  cic: Any  # dict(state=φ, pred=..., skill=... or None)
  opt: Any  # dict of optimiser states
  stats: moss.KnnStats
  buffer: Ring
  env_state: Any
  obs: Array  # [E, O]
  ep_t: Array  # [E] step within the episode
  skill: Array  # [E, S]
  mode: Array  # [E]
  ep_return: Array  # [E] extrinsic return of the running episode
  last_return: Array  # [E]
  n_updates: Array
  rng: Array


def default_hyper(config: MOSSConfig) -> MOSSHyper:
  f = lambda x: jnp.asarray(x, jnp.float32)
  return MOSSHyper(f(config.lr), f(config.cic_lr), f(config.gamma),
                   f(config.critic_tau), f(config.stddev), f(-1.0))


def episode_length(config: MOSSConfig, env: envs_lib.Env) -> int:
  """The fixed episode length that the mode schedule splits into chunks."""
  if config.episode_len is not None:
    return int(config.episode_len)
  if config.env_name == "PointMass":
    return int(dict(config.env_kwargs).get("horizon", 10))
  n = getattr(env.params, "max_steps_in_episode", None)
  if n is None:
    raise ValueError(f"set episode_len for {config.env_name}")
  return int(n)


def episode_mode(ep_t: Array, episode_len: int, partitions: int) -> Array:
  """Mode of step ``ep_t``: (t // (T // partitions)) mod 2 (MOSS's
  ``episode_partition_mode_selector``); 0 explore, 1 control."""
  interval = max(episode_len // partitions, 1)
  return ((ep_t // interval) % 2).astype(jnp.int32)


def draw_skill(key: Array, mode: Array, skill_dim: int) -> Array:
  """``skill_mode="half"``: [u, 0] (explore) or [0, u] (control), u ~ U(0,1).

  Args:
    key: PRNG key.
    mode: [E] int modes.
    skill_dim: d (even).

  Returns:
    [E, d] skills.
  """
  half = skill_dim // 2
  u = jax.random.uniform(key, mode.shape + (half,))
  z = jnp.zeros_like(u)
  m = mode[..., None] == 0
  return jnp.where(m, jnp.concatenate([u, z], -1),
                   jnp.concatenate([z, u], -1))


def fixed_skill(mode: int, skill_dim: int) -> Array:
  """Fine-tuning skill: the active half of ``mode`` set to 0.5."""
  half = skill_dim // 2
  h, z = jnp.full((half,), 0.5), jnp.zeros((half,))
  return jnp.concatenate([h, z] if mode == 0 else [z, h])


def _check(config: MOSSConfig, env: envs_lib.Env):
  if env.discrete:
    raise ValueError(f"MOSS (DDPG) needs a continuous env; {env.name} has "
                     f"{env.num_actions} discrete actions")
  if config.reward not in REWARDS:
    raise ValueError(f"reward={config.reward!r}; valid: {REWARDS}")
  if config.skill_dim % 2:
    raise ValueError(f"skill_dim={config.skill_dim} must be even ('half')")
  rows = config.buffer_size // config.num_envs
  if rows < config.n_step + 1:
    raise ValueError(f"buffer of {rows} rows < n_step + 1")
  if config.batch_size < config.knn_k:
    raise ValueError(f"batch_size {config.batch_size} < knn_k "
                     f"{config.knn_k}")
  if config.learning_starts < config.n_step * config.num_envs:
    raise ValueError("learning_starts must cover n_step iterations")


# --- CIC ---------------------------------------------------------------------


def cic_init(key: Array, obs_dim: int, skill_dim: int, hidden: int,
             project_skill: bool = True):
  """CIC networks: φ (obs → d), predictor (2d → d), skill projection."""
  k1, k2, k3 = jax.random.split(key, 3)
  return dict(
      state=nets.mlp_init(k1, (obs_dim, hidden, hidden, skill_dim)),
      pred=nets.mlp_init(k2, (2 * skill_dim, hidden, hidden, skill_dim)),
      skill=(nets.mlp_init(k3, (skill_dim, hidden, hidden, skill_dim))
             if project_skill else None))


def cic_embed(cic, obs: Array) -> Array:
  """φ(s) [..., d]: the embedding the particle reward is computed on."""
  return nets.mlp_apply(cic["state"], obs)


def cic_query_key(cic, obs: Array, next_obs: Array, skill: Array):
  """(query, key): the skill projection and pred(φ(s), φ(s'))."""
  query = (nets.mlp_apply(cic["skill"], skill) if cic["skill"] is not None
           else skill)
  key = nets.mlp_apply(cic["pred"], jnp.concatenate(
      [cic_embed(cic, obs), cic_embed(cic, next_obs)], -1))
  return query, key


def cic_loss(cic, obs, next_obs, skill, temperature=0.5):
  """(CPC loss, skill accuracy): the fraction of rows whose own transition is
  the most similar of the batch (chance 1/N) measures discriminability."""
  q, k = cic_query_key(cic, obs, next_obs, skill)
  logits = moss.cpc_logits(q, k, temperature)
  acc = jnp.mean(jnp.argmax(logits, -1) == jnp.arange(q.shape[0]))
  return moss.cpc_loss(q, k, temperature), acc


def sample_nstep(buf: Ring, key: Array, batch_size: int, n_step: int,
                 gamma) -> dict:
  """Uniform n-step samples from the time-major ring.

  A sample starts at a uniformly drawn written row j (with n − 1 written rows
  after it) and environment e, and stops at the first episode end::

      R = Σ_{k<m} γ^k r_{j+k},   s'_n = s'_{j+m−1},   disc = γ^m (1 − term_{j+m−1})

  where m ≤ n is the number of steps up to and including the first done.

  Args:
    buf: the :class:`Ring`.
    key: PRNG key.
    batch_size: B.
    n_step: n.
    gamma: γ.

  Returns:
    dict of [B, ...] arrays: obs, action, skill, mode (of the first step),
    next_obs, ext_reward (R), discount.
  """
  C, E = buf.reward.shape
  n = n_step
  kr, ke = jax.random.split(key)
  j = jax.random.randint(kr, (batch_size,), 0,
                         jnp.maximum(buf.size - n + 1, 1))
  e = jax.random.randint(ke, (batch_size,), 0, E)
  oldest = (buf.ptr - buf.size) % C
  rows = (oldest + j[:, None] + jnp.arange(n)[None]) % C  # [B, n]
  ee = jnp.broadcast_to(e[:, None], rows.shape)
  done = buf.done[rows, ee]
  # alive_k: no episode end among steps 0..k−1 (the sample stops at one)
  alive = jnp.concatenate(
      [jnp.ones((batch_size, 1)), jnp.cumprod(1.0 - done, -1)[:, :-1]], -1)
  m = alive.sum(-1).astype(jnp.int32)  # steps used, 1..n
  last = jnp.take_along_axis(rows, (m - 1)[:, None], -1)[:, 0]
  gk = gamma ** jnp.arange(n, dtype=jnp.float32)
  ext = jnp.sum(gk * alive * buf.reward[rows, ee], -1)
  disc = gamma ** m.astype(jnp.float32) * (1.0 - buf.terminated[last, e])
  r0 = rows[:, 0]
  return dict(obs=buf.obs[r0, e], action=buf.action[r0, e],
              skill=buf.skill[r0, e], mode=buf.mode[r0, e],
              next_obs=buf.next_obs[last, e], ext_reward=ext, discount=disc)


# --- the agent -----------------------------------------------------------------


def make_train(config: MOSSConfig, env: envs_lib.Env | None = None):
  """Builds ``train(rng, hyper=None) -> (MOSSState, metrics)``.

  Args:
    config: a :class:`MOSSConfig`.
    env: a continuous :class:`~entropy_rl.classic.envs.Env` (default from
      ``config.env_name``).

  Returns:
    The train function (jit it; vmap it over keys or :class:`MOSSHyper`).
    Metrics are per iteration: ``cpc_loss``, ``cpc_acc`` (skill
    discriminability), ``intr_explore`` / ``intr_control`` (the particle
    reward before the sign flip, averaged over each mode's rows),
    ``intrinsic_reward`` (after the flip), ``critic_loss``, ``q``,
    ``episode_return`` (extrinsic).
  """
  env = (envs_lib.make(config.env_name, **dict(config.env_kwargs))
         if env is None else env)
  _check(config, env)
  E, O, D, S = config.num_envs, env.obs_dim, env.action_dim, config.skill_dim
  H, n = config.hidden, config.n_step
  C = config.buffer_size // E
  T_ep = episode_length(config, env)
  num_iters = config.total_steps // E
  finetune = config.reward == "extrinsic"

  tx = lambda lr: optax.adam(lr)

  def init(rng, hp):
    ks = jax.random.split(rng, 6)
    actor = nets.mlp_init(ks[0], (O + S, H, H, D))
    critic = nets.ensemble_init(ks[1], 2, (O + S + D, H, H, 1))
    cic = cic_init(ks[2], O, S, config.cic_hidden, config.project_skill)
    obs, env_state = jax.vmap(env.reset, (0, None))(
        jax.random.split(ks[3], E), env.params)
    opt = dict(actor=tx(hp.lr).init(actor), critic=tx(hp.lr).init(critic),
               cic=tx(hp.cic_lr).init(cic))
    z = lambda *s: jnp.zeros(s)
    buf = Ring(z(C, E, O), z(C, E, D), z(C, E), z(C, E, O), z(C, E),
               z(C, E), z(C, E, S), jnp.zeros((C, E), jnp.int32),
               jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    return MOSSState(
        actor=actor, critic=critic, critic_target=critic, cic=cic, opt=opt,
        stats=moss.knn_stats_init(), buffer=buf, env_state=env_state,
        obs=obs, ep_t=jnp.zeros((E,), jnp.int32), skill=jnp.zeros((E, S)),
        mode=jnp.zeros((E,), jnp.int32), ep_return=jnp.zeros((E,)),
        last_return=jnp.full((E,), jnp.nan),
        n_updates=jnp.zeros((), jnp.int32), rng=ks[4])

  def mean_action(actor, obs_a):
    return jnp.tanh(nets.mlp_apply(actor, obs_a))

  def noisy_action(actor, obs_a, key, std, clip=None):
    mu = mean_action(actor, obs_a)
    eps = std * jax.random.normal(key, mu.shape)
    if clip is not None:
      eps = jnp.clip(eps, -clip, clip)
    return jnp.clip(mu + eps, -1.0, 1.0)

  def q_all(critic, obs_a, a):
    return nets.ensemble_apply(critic, jnp.concatenate([obs_a, a], -1))[..., 0]

  # --- one gradient step -------------------------------------------------------
  def update(st: MOSSState, key, hp):
    k_s, k_t, k_a = jax.random.split(key, 3)
    b = sample_nstep(st.buffer, k_s, config.batch_size, n, hp.gamma)
    # CIC (representation and skill discriminator)
    (lc, acc), gc = jax.value_and_grad(
        lambda p: cic_loss(p, b["obs"], b["next_obs"], b["skill"],
                           config.cic_temperature), has_aux=True)(st.cic)
    u, opt_c = tx(hp.cic_lr).update(gc, st.opt["cic"], st.cic)
    cic = optax.apply_updates(st.cic, u)
    # MOSS reward, from the CIC parameters before this update
    src, tgt = cic_embed(st.cic, b["obs"]), cic_embed(st.cic, b["next_obs"])
    raw, stats = moss.particle_entropy_reward(src, tgt, st.stats,
                                              config.knn_k, config.knn_clip,
                                              config.std_is_var)
    # moss.moss_reward when control_sign = −1
    r_int = jnp.where(b["mode"] == 1, hp.control_sign * raw, raw)
    reward = b["ext_reward"] if finetune else r_int
    # critic
    obs_a = jnp.concatenate([b["obs"], b["skill"]], -1)
    nobs_a = jnp.concatenate([b["next_obs"], b["skill"]], -1)
    a2 = noisy_action(st.actor, nobs_a, k_t, hp.stddev, config.stddev_clip)
    y = sg(reward + b["discount"] * q_all(st.critic_target, nobs_a, a2).min(0))

    def critic_loss(c):
      return jnp.sum(jnp.mean((q_all(c, obs_a, b["action"]) - y) ** 2, -1))

    lq, gq = jax.value_and_grad(critic_loss)(st.critic)
    u, opt_q = tx(hp.lr).update(gq, st.opt["critic"], st.critic)
    critic = optax.apply_updates(st.critic, u)

    # actor, against the updated critic (DrQ-v2 order)
    def actor_loss(p):
      a = noisy_action(p, obs_a, k_a, hp.stddev, config.stddev_clip)
      return -jnp.mean(q_all(critic, obs_a, a).min(0))

    la, ga = jax.value_and_grad(actor_loss)(st.actor)
    u, opt_a = tx(hp.lr).update(ga, st.opt["actor"], st.actor)
    actor = optax.apply_updates(st.actor, u)
    critic_target = optax.incremental_update(critic, st.critic_target,
                                             hp.critic_tau)
    m0 = (b["mode"] == 0).astype(jnp.float32)
    mean_in = lambda x, w: jnp.sum(x * w) / jnp.maximum(w.sum(), 1.0)
    metrics = dict(cpc_loss=lc, cpc_acc=acc, critic_loss=lq, actor_loss=la,
                   q=jnp.mean(y), intrinsic_reward=jnp.mean(r_int),
                   intr_explore=mean_in(raw, m0),
                   intr_control=mean_in(raw, 1.0 - m0))
    new = st._replace(actor=actor, critic=critic,
                      critic_target=critic_target, cic=cic,
                      opt=dict(actor=opt_a, critic=opt_q, cic=opt_c),
                      stats=stats, n_updates=st.n_updates + 1)
    return new, metrics

  # --- environment step ----------------------------------------------------------
  def iteration(st: MOSSState, t, hp):
    rng, k_skill, k_act, k_env, k_upd = jax.random.split(st.rng, 5)
    interval = max(T_ep // config.partitions, 1)
    if finetune:
      mode = jnp.full((E,), config.finetune_mode, jnp.int32)
      skill = jnp.broadcast_to(fixed_skill(config.finetune_mode, S), (E, S))
    else:
      redraw = (st.ep_t % config.skill_every == 0) | (st.ep_t % interval == 0)
      new_mode = episode_mode(st.ep_t, T_ep, config.partitions)
      mode = jnp.where(redraw, new_mode, st.mode)
      skill = jnp.where(redraw[:, None], draw_skill(k_skill, new_mode, S),
                        st.skill)
    obs_a = jnp.concatenate([st.obs, skill], -1)
    a_pi = noisy_action(st.actor, obs_a, k_act, hp.stddev)
    a_rand = jax.random.uniform(k_act, (E, D), minval=-1.0, maxval=1.0)
    a = jnp.where(t * E < config.learning_starts, a_rand, a_pi)
    tr = jax.vmap(env.step, (0, 0, 0, None))(
        jax.random.split(k_env, E), st.env_state, a, env.params)
    done = tr.terminated | tr.truncated
    b = st.buffer
    p = b.ptr
    f = lambda x: x.astype(jnp.float32)
    buf = Ring(b.obs.at[p].set(st.obs), b.action.at[p].set(a),
               b.reward.at[p].set(tr.reward), b.next_obs.at[p].set(tr.next_obs),
               b.terminated.at[p].set(f(tr.terminated)),
               b.done.at[p].set(f(done)), b.skill.at[p].set(skill),
               b.mode.at[p].set(mode), (p + 1) % C,
               jnp.minimum(b.size + 1, C))
    ep = st.ep_return + tr.reward
    st = st._replace(buffer=buf, env_state=tr.state, obs=tr.obs,
                     ep_t=jnp.where(done, 0, st.ep_t + 1), skill=skill,
                     mode=mode, ep_return=jnp.where(done, 0.0, ep),
                     last_return=jnp.where(done, ep, st.last_return),
                     rng=rng)
    learn = (((t + 1) * E >= config.learning_starts)
             & (t % config.update_every == 0))
    nan_m = jax.tree.map(
        lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
        jax.eval_shape(lambda: update(st, k_upd, hp)[1]))
    st, m = jax.lax.cond(learn, lambda s: update(s, k_upd, hp),
                         lambda s: (s, nan_m), st)
    m = dict(m, episode_return=jnp.nanmean(st.last_return))
    return st, m

  def train(rng, hyper: MOSSHyper | None = None):
    hp = default_hyper(config) if hyper is None else hyper
    st = init(rng, hp)
    return jax.lax.scan(lambda s, t: iteration(s, t, hp), st,
                        jnp.arange(num_iters))

  return train


def mode_coverage(state: MOSSState, bins: int = 10, low: float = -1.0,
                  high: float = 1.0, last_rows: int | None = None) -> Array:
  """State coverage per mode: the fraction of a bins×bins grid over the first
  two observation dimensions that the replayed next-states of each mode
  visit (PointMass positions live in [−1, 1]²).

  Args:
    state: a (single-seed) :class:`MOSSState`.
    bins: cells per axis.
    low, high: the box the grid covers.
    last_rows: only the newest rows of the ring (default: all written).

  Returns:
    [2] coverage of mode 0 (explore) and mode 1 (control).
  """
  b = state.buffer
  C = b.obs.shape[0]
  k = C if last_rows is None else min(int(last_rows), C)
  age = (b.ptr - 1 - jnp.arange(C)) % C  # age of each physical row
  valid = jnp.broadcast_to((age < jnp.minimum(b.size, k))[:, None],
                           b.mode.shape).reshape(-1)
  pos = b.next_obs[..., :2]  # [C, E, 2]
  cell = jnp.clip(((pos - low) / (high - low) * bins).astype(jnp.int32), 0,
                  bins - 1)
  idx = (cell[..., 0] * bins + cell[..., 1]).reshape(-1)
  mode = b.mode.reshape(-1)
  w = valid
  out = []
  for m in (0, 1):
    hit = jnp.zeros((bins * bins,)).at[idx].add((w & (mode == m)) * 1.0)
    out.append(jnp.mean(hit > 0))
  return jnp.stack(out)


def mode_displacement(state: MOSSState, last_rows: int | None = None
                      ) -> Array:
  """Mean one-step movement ‖s' − s‖₂ per mode over the newest ring rows.

  A behavioural read-out of the mixture: explore mode (maximising surprise)
  moves, control mode (minimising it) keeps its state predictable.

  Args:
    state: a (single-seed) :class:`MOSSState`.
    last_rows: only the newest rows of the ring (default: all written).

  Returns:
    [2] mean displacement of mode 0 (explore) and mode 1 (control).
  """
  b = state.buffer
  C = b.obs.shape[0]
  k = C if last_rows is None else min(int(last_rows), C)
  valid = (((b.ptr - 1 - jnp.arange(C)) % C)[:, None]
           < jnp.minimum(b.size, k))  # age of each row < k
  valid = jnp.broadcast_to(valid, b.mode.shape)
  step = jnp.linalg.norm(b.next_obs - b.obs, axis=-1)  # [C, E]
  out = []
  for m in (0, 1):
    w = (valid & (b.mode == m)).astype(jnp.float32)
    out.append(jnp.sum(step * w) / jnp.maximum(w.sum(), 1.0))
  return jnp.stack(out)


def mode_surprise(state: MOSSState, last_rows: int, k: int = 10) -> Array:
  """Particle surprise per mode in raw observation space (a fixed metric).

  For each next-state s' of the newest ``last_rows`` ring rows,
  ``log(1 + mean of its k nearest distances ‖s' − s'_j‖)`` among all of
  them (both modes), averaged within each mode. Unlike the training reward it
  does not depend on the learned CIC embedding or the running statistics, so
  it compares runs: MOSS's control mode should be less surprising than the
  same mode of an agent that maximises surprise everywhere.

  Args:
    state: a (single-seed) :class:`MOSSState` whose ring holds at least
      ``last_rows`` rows.
    last_rows: how many of the newest rows to use (static).
    k: neighbours.

  Returns:
    [2] mean surprise of mode 0 (explore) and mode 1 (control).
  """
  b = state.buffer
  C = b.obs.shape[0]
  rows = (b.ptr - 1 - jnp.arange(min(last_rows, C))) % C
  x = b.next_obs[rows].reshape(-1, b.next_obs.shape[-1])
  mode = b.mode[rows].reshape(-1)
  d = jnp.linalg.norm(x[:, None] - x[None], axis=-1)
  knn = -jax.lax.top_k(-d, k + 1)[0][:, 1:]  # drop the point itself
  s = jnp.log1p(knn.mean(-1))
  out = []
  for m in (0, 1):
    w = (mode == m).astype(jnp.float32)
    out.append(jnp.sum(s * w) / jnp.maximum(w.sum(), 1.0))
  return jnp.stack(out)
