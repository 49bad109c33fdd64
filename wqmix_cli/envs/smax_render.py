"""Frames of one SMAX battle, drawn with matplotlib's Agg canvas (no window, no pyplot state).

U units: the first ``n_allies`` are the allies (the learning agents, blue), the rest the
enemies (red). A live unit is a circle twice its collision radius, lettered with its type
(jaxmarl's shorthand: m marine, s stalker, z zergling, ...) and topped by a health bar; a
dead unit is a cross in its team's grey; a line joins each live unit to the unit it was
ordered to attack in the last step. The whole map is shown, so frames of one battle line up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

FRAME_PX = 512
DPI = 128
DRAW_SCALE = 2.0  # circles are drawn at twice the collision radius, to be seen on the map
BAR_WIDTH, BAR_HEIGHT, BAR_GAP = 1.2, 0.25, 0.2  # health bar, in map units
TEAM_COLOURS = ("#1f5fbf", "#c8322b")  # allies, enemies
DEAD_COLOURS = ("#8d9bb3", "#b39391")  # greys tinted with each team's colour
OUTCOME_COLOURS = {"won": TEAM_COLOURS[0], "lost": TEAM_COLOURS[1], "draw": "black"}
HEALTH_COLOUR, BAR_BACK = "#2e9e44", "#3a3a3a"
GROUND, WALL = "#f4f1e8", "#4a4a4a"
LEGEND = "letter: unit type   bar: health   x: dead   line: attack order"


@dataclass(frozen=True)
class Arena:
    """What stays fixed during a battle: the map's size, the team split and, for K unit
    types, their radius ``[K]``, full health ``[K]`` and one-letter names (K of them)."""

    width: float
    height: float
    n_allies: int
    n_movement_actions: int
    type_radius: np.ndarray
    type_health: np.ndarray
    type_letter: tuple[str, ...]


@dataclass(frozen=True)
class Battle:
    """One moment of a battle of U units: ``positions [U, 2]`` float (map units),
    ``alive [U]`` bool, ``health [U]`` float (fraction of full health), ``types [U]`` int,
    ``targets [U]`` int (the unit attacked in the last step, -1 for none) and ``step``."""

    positions: np.ndarray
    alive: np.ndarray
    health: np.ndarray
    types: np.ndarray
    targets: np.ndarray
    step: int


def arena_of(env: Any) -> Arena:
    """The Arena of a jaxmarl SMAX env (``SMAX`` or a ``HeuristicEnemySMAX`` around one)."""
    return Arena(
        width=float(env.map_width),
        height=float(env.map_height),
        n_allies=int(env.num_allies),
        n_movement_actions=int(env.num_movement_actions),
        type_radius=np.asarray(env.unit_type_radiuses, dtype=np.float64),
        type_health=np.asarray(env.unit_type_health, dtype=np.float64),
        type_letter=tuple(env.unit_type_shorthands),
    )


def attack_targets(actions: np.ndarray, n_allies: int, n_movement_actions: int) -> np.ndarray:
    """The unit each unit attacks, ``[U]`` int (-1: it moved or stopped), from jaxmarl's
    last attack actions ``[U]``.

    An attack action is ``n_movement_actions + k``: an ally's k counts the enemies from the
    first, an enemy's k counts the allies from the last (the order each side sees them in).
    """
    actions = np.asarray(actions, dtype=np.int64)
    k = actions - n_movement_actions
    is_ally = np.arange(len(actions)) < n_allies
    target = np.where(is_ally, n_allies + k, n_allies - 1 - k)
    return np.where(k >= 0, target, -1)


def battle_of(state: Any, arena: Arena) -> Battle:
    """The Battle of one (unbatched) jaxmarl SMAX ``State``."""
    types = np.asarray(state.unit_types, dtype=np.int64)
    return Battle(
        positions=np.asarray(state.unit_positions, dtype=np.float64),
        alive=np.asarray(state.unit_alive, dtype=bool),
        health=np.clip(np.asarray(state.unit_health, dtype=np.float64) / arena.type_health[types], 0.0, 1.0),
        types=types,
        targets=attack_targets(np.asarray(state.prev_attack_actions), arena.n_allies, arena.n_movement_actions),
        step=int(state.step),
    )


def outcome(battle: Battle, n_allies: int) -> str:
    """The allies' ``"won"``, ``"lost"`` or ``"draw"`` once a side is wiped out; ``""`` while both stand."""
    allies, enemies = battle.alive[:n_allies].any(), battle.alive[n_allies:].any()
    if allies and enemies:
        return ""
    return "won" if allies else "lost" if enemies else "draw"


class BattleCanvas:
    """Draws Battles of one Arena as RGB uint8 frames ``[512, 512, 3]``; one figure, reused."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self._figure = Figure(figsize=(FRAME_PX / DPI, FRAME_PX / DPI), dpi=DPI, facecolor="white")
        self._canvas = FigureCanvasAgg(self._figure)
        self._ax = self._figure.add_axes((0.02, 0.06, 0.96, 0.80))

    def draw(self, battle: Battle, title: str) -> np.ndarray:
        """The battle under ``title`` (one line), with each side's live units counted below it."""
        self._figure.texts.clear()
        self._ax.clear()
        self._draw_map()
        self._draw_attacks(battle)
        self._draw_units(battle)
        self._draw_header(battle, title)
        self._canvas.draw()
        return np.array(self._canvas.buffer_rgba())[..., :3]

    def _draw_map(self) -> None:
        ax, arena = self._ax, self.arena
        ax.set_xlim(0.0, arena.width)
        ax.set_ylim(0.0, arena.height)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor(GROUND)
        for spine in ax.spines.values():
            spine.set_color(WALL)
            spine.set_linewidth(2.0)

    def _draw_attacks(self, battle: Battle) -> None:
        for shooter in np.flatnonzero(battle.alive & (battle.targets >= 0)):
            (x0, y0), (x1, y1) = battle.positions[shooter], battle.positions[battle.targets[shooter]]
            colour = TEAM_COLOURS[int(shooter >= self.arena.n_allies)]
            self._ax.plot([x0, x1], [y0, y1], color=colour, linewidth=1.0, alpha=0.6, zorder=1)

    def _draw_units(self, battle: Battle) -> None:
        ax, arena = self._ax, self.arena
        for unit, ((x, y), alive) in enumerate(zip(battle.positions, battle.alive)):
            radius = DRAW_SCALE * arena.type_radius[battle.types[unit]]
            if not alive:
                colour = DEAD_COLOURS[int(unit >= arena.n_allies)]
                ax.plot(x, y, marker="x", color=colour, markersize=7, markeredgewidth=2.0,
                        zorder=2, clip_on=False)
                continue
            colour = TEAM_COLOURS[int(unit >= arena.n_allies)]
            ax.add_patch(Circle((x, y), radius, facecolor=colour, edgecolor="black", linewidth=0.6, zorder=3))
            ax.text(x, y, arena.type_letter[battle.types[unit]], color="white", fontsize=6,
                    fontweight="bold", ha="center", va="center", zorder=4)
            left, bottom = x - BAR_WIDTH / 2, y + radius + BAR_GAP
            ax.add_patch(Rectangle((left, bottom), BAR_WIDTH, BAR_HEIGHT, facecolor=BAR_BACK, zorder=3))
            ax.add_patch(Rectangle((left, bottom), BAR_WIDTH * battle.health[unit], BAR_HEIGHT,
                                   facecolor=HEALTH_COLOUR, zorder=4))

    def _draw_header(self, battle: Battle, title: str) -> None:
        figure, n = self._figure, self.arena.n_allies
        figure.text(0.5, 0.955, title, ha="center", va="center", fontsize=9, fontweight="bold")
        figure.text(0.03, 0.895, f"allies {battle.alive[:n].sum()}/{n} alive", ha="left", va="center",
                    fontsize=8, color=TEAM_COLOURS[0])
        figure.text(0.97, 0.895, f"enemies {battle.alive[n:].sum()}/{len(battle.alive) - n} alive", ha="right",
                    va="center", fontsize=8, color=TEAM_COLOURS[1])
        end = outcome(battle, n)
        if end:
            figure.text(0.5, 0.895, f"battle {end}", ha="center", va="center", fontsize=8, fontweight="bold",
                        color=OUTCOME_COLOURS[end])
        figure.text(0.5, 0.03, LEGEND, ha="center", va="center", fontsize=6, color="#555555")
