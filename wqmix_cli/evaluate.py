"""Greedy evaluation: the code path for test episodes during training and for
``wqmix evaluate``."""
from __future__ import annotations

import math

import numpy as np

from wqmix_cli.collector import Collector
from wqmix_cli.runner import EpisodeRunner


def run_greedy(runner: EpisodeRunner | Collector, n_episodes: int, seed: int, epsilon: float = 0.0) -> dict[str, np.ndarray]:
    """``n_episodes`` greedy episodes (or epsilon-greedy: 1.0 is a uniformly random
    baseline) -> ``returns [n]`` and, where the env has battles, ``battle_won [n]``."""
    returns, won = [], []
    for i in range(math.ceil(n_episodes / runner.n_envs)):
        episodes = runner.run(epsilon=epsilon, seed=seed + i * runner.n_envs)
        returns.append(episodes.returns)
        if episodes.battle_won is not None:
            won.append(episodes.battle_won)
    out = {"returns": np.concatenate(returns)[:n_episodes]}
    if won:
        out["battle_won"] = np.concatenate(won)[:n_episodes]
    return out


def summarise(results: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    """Mean return (and win rate) under TensorBoard tags ``<prefix>/return_mean`` etc."""
    out = {f"{prefix}/return_mean": float(results["returns"].mean())}
    if "battle_won" in results:
        out[f"{prefix}/battle_won_mean"] = float(results["battle_won"].mean())
    return out
