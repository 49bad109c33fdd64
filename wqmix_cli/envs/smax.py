"""SMAX (jaxmarl's JAX StarCraft-like battles) as a batch of E envs stepped in one jitted call,
and as one env that can draw its battle (``SMAXEnv``, for ``wqmix evaluate render=true``).

The allies are the learning agents; the enemies follow jaxmarl's heuristic policy
(``HeuristicEnemySMAX``). Episodes stay whole: the step is jaxmarl's ``step_env`` (no
auto-reset), and an env that is inactive or whose battle is over keeps its final state.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from wqmix_cli.config import SMAXConfig
from wqmix_cli.envs.base import BatchStep, EnvInfo, Observation

if TYPE_CHECKING:
    from wqmix_cli.envs.smax_render import BattleCanvas

# jax logs at INFO that it found no TPU; not news on a CPU or GPU machine.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """Swallow what ``import jaxmarl`` prints to stdout.

    ``contextlib.redirect_stdout`` is not enough: jaxmarl's mabrax module sets
    ``sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__`` while importing, which also
    undoes any capture (pytest's). So the real streams are swapped too, and all four are
    put back afterwards.
    """
    saved = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
    sys.stdout = sys.__stdout__ = io.StringIO()
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved


# With a CUDA build of jax, jax would take 75% of the GPU's memory at its first call and
# leave the learner's torch tensors too little; the battles need a few MiB.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

with _quiet_import():
    import jax
    import jax.numpy as jnp
    from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO


def known_maps() -> list[str]:
    """The map names jaxmarl's ``map_name_to_scenario`` accepts, sorted."""
    return sorted(MAP_NAME_TO_SCENARIO)


def jax_platforms() -> list[str]:
    """The values ``env.jax_device`` may take with this jax: ``cpu``, and ``gpu`` where jax sees one."""
    platforms = ["cpu"]
    try:
        jax.devices("gpu")
    except RuntimeError:  # jax built for the CPU only, or no GPU visible
        return platforms
    return [*platforms, "gpu"]


def _strong_types(tree):
    """Drop JAX weak types (Python ints in the reset state), so the step compiles once."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


def _observation(view) -> Observation:
    # Copies: numpy views of JAX buffers are read-only, which torch.as_tensor warns about.
    obs, state, avail = view
    return Observation(obs=np.array(obs), state=np.array(state), avail=np.array(avail))


class SMAXVectorEnv:
    """E SMAX battles of one map, reset and stepped together by ``jax.jit(jax.vmap(...))``.

    ``reset(seed)`` gives env e the PRNG key ``PRNGKey(seed + e)``; each env then splits its
    own key every step it is active, so its battle depends only on its seed and its actions.

    Arrays handed back (numpy copies): obs ``[E, N, O]`` float32, state ``[E, S]`` float32
    (``obs["world_state"]``), avail ``[E, N, A]`` bool, reward ``[E]`` float32,
    terminated/truncated ``[E]`` bool, ``info["battle_won"]`` ``[E]`` float32.

    Team reward: agent 0's reward (jaxmarl gives every ally the same team reward: enemy
    health removed this step, normalised, plus 1.0 for a win). ``terminated``: the battle
    ended by elimination (one side, or both, all dead). ``truncated``: it reached the step
    limit (jaxmarl's ``max_steps``, 100 steps) with both sides still standing. jaxmarl itself
    only ends a battle one step later (it checks ``state.step >= max_steps`` before counting
    the step), so the limit is applied here: an episode has at most 100 steps.
    ``battle_won``: every enemy dead and at least one ally alive (jaxmarl's own win rule; a
    mutual wipe-out is a draw, as in SMAC). Dead allies see zeros and may only stop
    (action 4).
    """

    def __init__(self, cfg: SMAXConfig) -> None:
        if cfg.map_name not in MAP_NAME_TO_SCENARIO:
            raise ValueError(
                f"unknown SMAX map {cfg.map_name!r}; known maps: {', '.join(known_maps())}"
            )
        self.n_envs = cfg.n_envs
        self._env = HeuristicEnemySMAX(scenario=map_name_to_scenario(cfg.map_name))
        self._agents = list(self._env.agents)
        self._n_allies = self._env.num_allies
        self._info = EnvInfo(
            n_agents=self._n_allies,
            obs_dim=int(self._env.obs_size),
            state_dim=int(self._env.state_size),
            n_actions=int(self._env.num_ally_actions),
            episode_limit=int(self._env.max_steps),
        )
        # The first device of the kind: reset commits the battles' state there, and each jitted
        # step follows its state. On the CPU by default: a step of a few small battles is
        # launch-bound on a GPU.
        self._device = jax.devices(cfg.jax_device)[0]
        self._reset_fn = jax.jit(jax.vmap(self._reset_one))
        self._step_fn = jax.jit(jax.vmap(self._step_one))
        self._keys = None
        self._state = None

    def info(self) -> EnvInfo:
        return self._info

    def _view(self, state):
        """One env's (obs [N, O], world state [S], avail [N, A] bool) from its state."""
        obs = self._env.get_obs(state)
        avail = self._env.get_avail_actions(state)
        return (
            jnp.stack([obs[a] for a in self._agents]).astype(jnp.float32),
            self._env.get_world_state(state).astype(jnp.float32),
            jnp.stack([avail[a] for a in self._agents]).astype(bool),
        )

    def _reset_one(self, seed):
        key, reset_key = jax.random.split(jax.random.PRNGKey(seed))
        _, state = self._env.reset(reset_key)
        state = _strong_types(state)
        return key, state, self._view(state)

    def _finished(self, inner):
        # jaxmarl tests its step limit before counting the step, so on its own a battle could
        # run episode_limit + 1 steps; the limit is applied here on the counted steps.
        return inner.done | (inner.step >= self._info.episode_limit)

    def _step_one(self, key, state, actions, active):
        # A battle that is over never moves again, even if the caller still marks it active.
        active = active & ~self._finished(state.state)
        next_key, step_key = jax.random.split(key)
        _, new_state, rewards, _, _ = self._env.step_env(
            step_key, state, {a: actions[i] for i, a in enumerate(self._agents)}
        )
        state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
        key = jnp.where(active, next_key, key)
        reward = jnp.where(active, rewards[self._agents[0]], 0.0).astype(jnp.float32)

        alive = state.state.unit_alive
        allies_dead = ~jnp.any(alive[: self._n_allies])
        enemies_dead = ~jnp.any(alive[self._n_allies :])
        eliminated = allies_dead | enemies_dead
        finished = self._finished(state.state)
        won = (enemies_dead & ~allies_dead).astype(jnp.float32)
        return key, state, self._view(state), reward, finished & eliminated, finished & ~eliminated, won

    def reset(self, seed: int) -> Observation:
        """Reset all E envs (env e seeded with ``seed + e``); arrays ``[E, N, O]``, ``[E, S]``, ``[E, N, A]``."""
        seeds = (int(seed) + np.arange(self.n_envs, dtype=np.int64)) % 2**32
        self._keys, self._state, view = self._reset_fn(jax.device_put(seeds.astype(np.uint32), self._device))
        return _observation(view)

    def step(self, actions: np.ndarray, active: np.ndarray) -> BatchStep:
        """Step the active envs with ``actions [E, N]`` (ints); ``active [E]`` bool.

        Inactive envs (and envs whose battle is over) keep their state, report the same
        observation and end flags as before, and reward 0.
        """
        if self._state is None:
            raise RuntimeError("SMAXVectorEnv.step called before reset")
        # numpy goes straight into the jitted call: a separate jnp.asarray costs more here.
        actions = np.asarray(actions, dtype=np.int32).reshape(self.n_envs, self._n_allies)
        active = np.asarray(active, dtype=bool).reshape(self.n_envs)
        self._keys, self._state, view, reward, terminated, truncated, won = self._step_fn(
            self._keys, self._state, actions, active
        )
        return BatchStep(
            observation=_observation(view),
            reward=np.array(reward),
            terminated=np.array(terminated),
            truncated=np.array(truncated),
            info={"battle_won": np.array(won)},
        )

    def battle_state(self, e: int) -> Any:
        """Env e's jaxmarl SMAX ``State`` (unbatched: unit arrays ``[U, ...]``), for drawing."""
        if self._state is None:
            raise RuntimeError("SMAXVectorEnv.battle_state called before reset")
        return jax.tree.map(lambda x: x[e], self._state.state)

    def close(self) -> None:
        """Nothing to release: the battles live in JAX arrays."""


class SMAXEnv:
    """One SMAX battle behind the MultiAgentEnv interface, for ``wqmix evaluate render=true``.

    It is an SMAXVectorEnv of one env, so ``reset(seed)`` starts the battle that env 0 of a
    batch reset with ``seed`` plays. Arrays: obs ``[N, O]``, state ``[S]``, avail ``[N, A]``;
    ``step`` returns the team reward, terminated, truncated and ``{"battle_won": 0.0 | 1.0}``.
    With ``render_mode="rgb_array"``, ``render()`` draws the battle now as RGB uint8
    ``[512, 512, 3]`` (titled with the map, the step and the return so far); the drawing
    module (matplotlib) is imported only then.
    """

    def __init__(self, cfg: SMAXConfig, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"SMAX renders only with render_mode='rgb_array', not {render_mode!r}")
        self._vec = SMAXVectorEnv(replace(cfg, n_envs=1))
        self._map_name = cfg.map_name
        self._canvas: BattleCanvas | None = None
        if render_mode == "rgb_array":
            from wqmix_cli.envs.smax_render import BattleCanvas, arena_of

            self._canvas = BattleCanvas(arena_of(self._vec._env))
        self._last: Observation | None = None
        self._return = 0.0
        self._time_up = False

    def info(self) -> EnvInfo:
        return self._vec.info()

    def reset(self, seed: int | None = None) -> Observation:
        view = self._vec.reset(0 if seed is None else seed)
        self._last = Observation(obs=view.obs[0], state=view.state[0], avail=view.avail[0])
        self._return, self._time_up = 0.0, False
        return self.observe()

    def observe(self) -> Observation:
        if self._last is None:
            raise RuntimeError("SMAXEnv.observe called before reset")
        return Observation(obs=self._last.obs.copy(), state=self._last.state.copy(), avail=self._last.avail.copy())

    def step(self, actions: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Step the battle with ``actions [N]`` (ints)."""
        out = self._vec.step(np.asarray(actions)[None], np.ones(1, dtype=bool))
        view = out.observation
        self._last = Observation(obs=view.obs[0], state=view.state[0], avail=view.avail[0])
        reward = float(out.reward[0])
        self._return += reward
        self._time_up = bool(out.truncated[0])
        return reward, bool(out.terminated[0]), self._time_up, {"battle_won": float(out.info["battle_won"][0])}

    def render(self) -> np.ndarray:
        """The battle now as RGB uint8 ``[512, 512, 3]``."""
        if self._canvas is None:
            raise RuntimeError("this SMAX env was made without render_mode='rgb_array'")
        if self._last is None:
            raise RuntimeError("call reset() before render()")
        from wqmix_cli.envs.smax_render import battle_of

        battle = battle_of(self._vec.battle_state(0), self._canvas.arena)
        title = f"SMAX {self._map_name}   step {battle.step}   return {self._return:.2f}"
        return self._canvas.draw(battle, title + ("   time limit" if self._time_up else ""))

    def close(self) -> None:
        self._vec.close()
