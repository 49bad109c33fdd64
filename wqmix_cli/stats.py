"""Confidence intervals shared by `wqmix plot` and `wqmix evaluate`."""
from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95


def bootstrap_ci(
    values: np.ndarray,
    confidence: float = CONFIDENCE,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over the first axis.

    `values` is [samples, columns] (seeds x steps for a curve, episodes x 1 for returns);
    returns (low, high), each [columns]. Samples are resampled with replacement, the same
    resamples for every column, from a fixed-seed generator.
    """
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    # How often each sample is drawn in each resample: the resampled means are then one
    # matrix product, without materialising [resamples, samples, columns].
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    means = counts @ values / n
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return low, high
