"""CW-QMIX on the paper's matrix game with a hand-written loop and only the public API.

Uniform exploration (every joint action equally often, as in the paper's table), one
gradient step per collected step on a batch of transitions drawn from our own list.
Run: ``python examples/custom_loop.py`` (about a minute on 2 CPU cores).
"""
import argparse

import numpy as np

from wqmix_cli import Actor, Config, LearnerConfig, MatrixConfig, WQMIXLearner, WQMIXPolicy, make_env


def main(steps: int = 3000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    env = make_env(MatrixConfig())
    config = Config(env=MatrixConfig(), learner=LearnerConfig(recurrent=False, target_update_interval=50))
    policy = WQMIXPolicy(env.info(), config.learner, central=True)
    learner = WQMIXLearner.from_config(config, policy)

    transitions = []
    for step in range(steps):
        first = env.reset(seed=step)
        actions = rng.integers(env.info().n_actions, size=env.info().n_agents)
        reward, terminated, _, _ = env.step(actions)
        after = env.observe()
        transitions.append((first, actions, reward, terminated, after))
        picked = [transitions[i] for i in rng.integers(len(transitions), size=32)]
        stats = learner.update({
            "obs": np.stack([t[0].obs for t in picked]),
            "state": np.stack([t[0].state for t in picked]),
            "actions": np.stack([t[1] for t in picked]),
            "rewards": np.array([t[2] for t in picked], dtype=np.float32),
            "terminals": np.array([t[3] for t in picked], dtype=np.float32),
            "obs_next": np.stack([t[4].obs for t in picked]),
            "state_next": np.stack([t[4].state for t in picked]),
        })
        if step % 500 == 0:
            print(f"step {step:5d}  loss {stats['loss']:.3f}  Q_tot {stats['predict_q']:.2f}  w {stats['w_mean']:.2f}")

    actor = Actor(policy, learner.device)
    actor.start(1)
    first = env.reset(seed=0)
    greedy = actor.act(first.obs[None], first.avail[None], epsilon=0.0)[0]
    reward = env.step(greedy)[0]
    print(f"greedy joint action {tuple(int(a) for a in greedy)} -> return {reward}")
    return reward


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.steps, args.seed)
