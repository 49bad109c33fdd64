"""Grid predator-prey with a miscoordination punishment, as in the Weighted QMIX paper.

Rules of one step, in order:

1. Catch. A live prey is caught when at least ``min_catchers`` live agents in its
   4-neighbourhood choose catch (action 5): the team gets ``capture_reward`` and the prey
   and every agent that caught it leave the grid (frozen: they may only stay, and see
   zeros). An agent choosing catch counts toward every prey it is adjacent to, but joins
   at most one capture: prey are resolved in index order, and an agent used by a capture
   no longer counts for later prey. Afterwards every live prey with at least 1 but fewer
   than ``min_catchers`` still-counting catchers adjacent gives ``punishment``. Since each
   capture removes at least ``min_catchers`` agents, the best return is
   ``capture_reward * min(n_prey, n_agents // min_catchers)`` (40 at the defaults).
2. Move. Live agents move (0 right, 1 down, 2 left, 3 up; 4 stay) one at a time in a
   random order; a move off the grid or into an occupied cell leaves the agent in place.
3. Prey move, one at a time in a random order, to a uniform choice among staying and
   the free neighbouring cells.

The grid is not toroidal. The episode is terminated when all prey are caught or all
agents are frozen (nothing can happen afterwards), and truncated after
``episode_limit`` steps otherwise.

Observations use 3 channels per cell: agents, prey, and a third kind that this env
leaves empty. An agent sees a ``(2*sight+1)^2`` window centred on itself (cells off the
grid are 0), flattened from ``[2*sight+1, 2*sight+1, 3]``; the state is the whole grid
flattened from ``[grid, grid, 3]``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wqmix_cli.config import PredatorPreyConfig
from wqmix_cli.envs.base import EnvInfo, Observation

N_ACTIONS = 6
STAY, CATCH = 4, 5
N_CHANNELS = 3
# (row, col) offsets of actions 0-3: right, down, left, up
MOVES = ((0, 1), (1, 0), (0, -1), (-1, 0))

CELL_PX = 16
COLOURS = {
    "empty": (235, 235, 235),
    "line": (190, 190, 190),
    "agent": (31, 119, 180),
    "prey": (214, 39, 40),
}


class PredatorPrey:
    """The predator-prey env (rules in the module docstring).

    After ``reset`` the public attributes hold the scene: ``agent_pos [N, 2]`` and
    ``prey_pos [P, 2]`` (int64 ``(row, col)``; rows grow downwards), ``agent_alive [N]``
    and ``prey_alive [P]`` (bool). Treat them as read-only; use ``place`` to set a scene.
    """

    def __init__(self, cfg: PredatorPreyConfig) -> None:
        if cfg.n_agents + cfg.n_prey > cfg.grid_size**2:
            raise ValueError(
                f"{cfg.n_agents} agents and {cfg.n_prey} prey do not fit on a "
                f"{cfg.grid_size}x{cfg.grid_size} grid"
            )
        self.cfg = cfg
        self.n_agents, self.n_prey, self.grid = cfg.n_agents, cfg.n_prey, cfg.grid_size
        self.window = 2 * cfg.sight + 1
        self._rng = np.random.default_rng()
        self._t = 0
        self._started = False
        self._done = True
        self.agent_pos = np.zeros((self.n_agents, 2), dtype=np.int64)
        self.prey_pos = np.zeros((self.n_prey, 2), dtype=np.int64)
        self.agent_alive = np.zeros(self.n_agents, dtype=bool)
        self.prey_alive = np.zeros(self.n_prey, dtype=bool)

    def info(self) -> EnvInfo:
        return EnvInfo(
            n_agents=self.n_agents,
            obs_dim=self.window**2 * N_CHANNELS,
            state_dim=self.grid**2 * N_CHANNELS,
            n_actions=N_ACTIONS,
            episode_limit=self.cfg.episode_limit,
        )

    def reset(self, seed: int | None = None) -> Observation:
        """Place agents and prey on distinct random cells; a seed restarts the env's RNG."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        cells = self._rng.choice(self.grid**2, self.n_agents + self.n_prey, replace=False)
        rc = np.stack(np.divmod(cells, self.grid), axis=1).astype(np.int64)
        self.agent_pos, self.prey_pos = rc[: self.n_agents], rc[self.n_agents :]
        self.agent_alive = np.ones(self.n_agents, dtype=bool)
        self.prey_alive = np.ones(self.n_prey, dtype=bool)
        self._t = 0
        self._started = True
        self._done = False
        return self.observe()

    def place(self, agents: Sequence[tuple[int, int]], prey: Sequence[tuple[int, int]]) -> Observation:
        """Set the scene after ``reset``: ``agents [N, 2]`` and ``prey [P, 2]`` ``(row, col)`` cells.

        All agents and prey become live; the step count and the RNG are left alone. For
        tests and demonstrations. Raises ValueError on a wrong count, an off-grid or a
        shared cell.
        """
        if not self._started:
            raise RuntimeError("call reset() before place()")
        a = np.asarray(agents, dtype=np.int64).reshape(-1, 2)
        p = np.asarray(prey, dtype=np.int64).reshape(-1, 2)
        if len(a) != self.n_agents or len(p) != self.n_prey:
            raise ValueError(
                f"place needs {self.n_agents} agent and {self.n_prey} prey cells, got {len(a)} and {len(p)}"
            )
        both = np.concatenate([a, p])
        if np.any((both < 0) | (both >= self.grid)):
            raise ValueError(f"every cell must lie on the {self.grid}x{self.grid} grid")
        if len(np.unique(both, axis=0)) != len(both):
            raise ValueError("agents and prey must be on distinct cells")
        self.agent_pos, self.prey_pos = a, p
        self.agent_alive = np.ones(self.n_agents, dtype=bool)
        self.prey_alive = np.ones(self.n_prey, dtype=bool)
        return self.observe()

    def step(self, actions: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Apply ``actions [N]`` (ints); returns ``(team reward, terminated, truncated, {})``."""
        if self._done:
            raise RuntimeError("the episode is over (or never started): call reset() first")
        u = np.asarray(actions).reshape(-1).astype(np.int64)
        if u.shape != (self.n_agents,) or np.any((u < 0) | (u >= N_ACTIONS)):
            raise ValueError(f"actions must be {self.n_agents} integers in [0, {N_ACTIONS}), got {actions!r}")
        if not self._avail()[np.arange(self.n_agents), u].all():
            raise ValueError(
                f"actions {u.tolist()} include an unavailable one: frozen agents may only stay ({STAY})"
            )

        reward = self._catch(self.agent_alive & (u == CATCH))
        occupied = self._occupancy()
        self._move_agents(u, occupied)
        self._move_prey(occupied)

        self._t += 1
        terminated = not self.prey_alive.any() or not self.agent_alive.any()
        truncated = not terminated and self._t >= self.cfg.episode_limit
        self._done = terminated or truncated
        return reward, terminated, truncated, {}

    def _catch(self, catching: np.ndarray) -> float:
        """Resolve captures and punishments for ``catching [N]`` (bool); returns the reward."""
        dist = np.abs(self.prey_pos[:, None, :] - self.agent_pos[None, :, :]).sum(-1)
        near = (dist == 1) & self.prey_alive[:, None] & catching[None, :]  # [P, N]
        counting = catching.copy()
        reward = 0.0
        for p in np.flatnonzero(near.sum(1) >= self.cfg.min_catchers):
            team = near[p] & counting
            if team.sum() >= self.cfg.min_catchers:
                reward += self.cfg.capture_reward
                self.prey_alive[p] = False
                self.agent_alive[team] = False
                counting &= ~team
        # Caught prey have no counting catchers left, so they are never punished.
        left = (near & counting[None, :]).sum(1)
        n_failed = int(((left >= 1) & (left < self.cfg.min_catchers)).sum())
        return reward + self.cfg.punishment * n_failed

    def _occupancy(self) -> np.ndarray:
        """``[grid, grid]`` bool: cells holding a live agent or a live prey."""
        occupied = np.zeros((self.grid, self.grid), dtype=bool)
        a, p = self.agent_pos[self.agent_alive], self.prey_pos[self.prey_alive]
        occupied[a[:, 0], a[:, 1]] = True
        occupied[p[:, 0], p[:, 1]] = True
        return occupied

    def _move_agents(self, u: np.ndarray, occupied: np.ndarray) -> None:
        """Move live agents with move actions in a random order; updates ``occupied``."""
        g = self.grid
        movers = np.flatnonzero(self.agent_alive & (u < STAY))
        for i in self._rng.permutation(movers).tolist():
            r, c = self.agent_pos[i].tolist()
            dr, dc = MOVES[u[i]]
            nr, nc = r + dr, c + dc
            if 0 <= nr < g and 0 <= nc < g and not occupied[nr, nc]:
                occupied[r, c], occupied[nr, nc] = False, True
                self.agent_pos[i] = (nr, nc)

    def _move_prey(self, occupied: np.ndarray) -> None:
        """Move each live prey, in a random order, to staying or a free neighbour, uniformly."""
        g = self.grid
        live = np.flatnonzero(self.prey_alive)
        draws = self._rng.random(len(live)).tolist()
        for j, draw in zip(self._rng.permutation(live).tolist(), draws):
            r, c = self.prey_pos[j].tolist()
            options = [(r, c)] + [
                (r + dr, c + dc)
                for dr, dc in MOVES
                if 0 <= r + dr < g and 0 <= c + dc < g and not occupied[r + dr, c + dc]
            ]
            nr, nc = options[int(draw * len(options))]
            occupied[r, c], occupied[nr, nc] = False, True
            self.prey_pos[j] = (nr, nc)

    def _avail(self) -> np.ndarray:
        """``[N, 6]`` bool: every action for live agents, only stay for frozen ones."""
        avail = np.zeros((self.n_agents, N_ACTIONS), dtype=bool)
        avail[self.agent_alive] = True
        avail[~self.agent_alive, STAY] = True
        return avail

    def _grid(self) -> np.ndarray:
        """``[grid, grid, 3]`` float32: channel 0 live agents, 1 live prey, 2 empty."""
        grid = np.zeros((self.grid, self.grid, N_CHANNELS), dtype=np.float32)
        a, p = self.agent_pos[self.agent_alive], self.prey_pos[self.prey_alive]
        grid[a[:, 0], a[:, 1], 0] = 1.0
        grid[p[:, 0], p[:, 1], 1] = 1.0
        return grid

    def observe(self) -> Observation:
        """obs ``[N, (2*sight+1)^2 * 3]``, state ``[grid^2 * 3]`` (float32), avail ``[N, 6]``."""
        s, w = self.cfg.sight, self.window
        grid = self._grid()
        padded = np.zeros((self.grid + 2 * s, self.grid + 2 * s, N_CHANNELS), dtype=np.float32)
        padded[s : s + self.grid, s : s + self.grid] = grid
        # Agent at (r, c) sits at (r + s, c + s) in padded, so its window starts at (r, c).
        rows = self.agent_pos[:, 0, None] + np.arange(w)
        cols = self.agent_pos[:, 1, None] + np.arange(w)
        obs = padded[rows[:, :, None], cols[:, None, :]]  # [N, w, w, 3]
        obs[~self.agent_alive] = 0.0
        return Observation(obs=obs.reshape(self.n_agents, -1), state=grid.reshape(-1), avail=self._avail())

    def render(self) -> np.ndarray:
        """The grid as an RGB uint8 image ``[grid*16, grid*16, 3]``: agents blue, prey red."""
        if not self._started:
            raise RuntimeError("call reset() before render()")
        cells = np.empty((self.grid, self.grid, 3), dtype=np.uint8)
        cells[:] = COLOURS["empty"]
        a, p = self.agent_pos[self.agent_alive], self.prey_pos[self.prey_alive]
        cells[a[:, 0], a[:, 1]] = COLOURS["agent"]
        cells[p[:, 0], p[:, 1]] = COLOURS["prey"]
        image = cells.repeat(CELL_PX, axis=0).repeat(CELL_PX, axis=1)
        image[::CELL_PX, :] = COLOURS["line"]
        image[:, ::CELL_PX] = COLOURS["line"]
        return image

    def close(self) -> None:
        """Nothing to release."""
