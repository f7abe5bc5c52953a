"""Continual- and few-shot-learning metrics as pure functions of plain arrays.

``R[i, j]`` is the accuracy on task j after training on tasks 0..i, ``b[j]`` the accuracy of
the untrained model on task j, ``sizes[j]`` the number of test examples of task j. Anything
``np.asarray`` accepts will do; every function returns a plain Python float. With T = 1,
BWT, FWT and forgetting are undefined and returned as NaN. A NaN entry that a metric needs
raises a ValueError naming it; entries it does not need may be NaN.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Divisor = Literal["paper", "code"]


def _matrix(R: ArrayLike) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R must be a square T x T matrix with T >= 1, got shape {R.shape}")
    return R


def _vector(name: str, values: ArrayLike, T: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (T,):
        raise ValueError(
            f"{name} must have one entry per task (length T={T}), got shape {values.shape}"
        )
    return values


def _divisor(divisor: str, T: int) -> int:
    if divisor not in ("paper", "code"):
        raise ValueError(f"divisor must be 'paper' or 'code', got {divisor!r}")
    return T - 1 if divisor == "paper" else T


def _r(R: np.ndarray, i: int, j: int) -> float:
    if math.isnan(R[i, j]):
        raise ValueError(f"R[{i}, {j}] is missing: evaluate task {j} after training on task {i}")
    return float(R[i, j])


def _b(b: np.ndarray, j: int) -> float:
    if math.isnan(b[j]):
        raise ValueError(f"b[{j}] is missing: evaluate task {j} with the untrained model")
    return float(b[j])


def average_accuracy(R: ArrayLike, sizes: ArrayLike | None = None) -> float:
    """ACC = 1/T * sum_j R[T-1, j] (Lopez-Paz & Ranzato 2017, GEM).

    With ``sizes``, the sample-weighted mean sum_j n_j R[T-1, j] / sum_j n_j instead
    (Avalanche's "stream accuracy": accuracy over the pooled test examples of all tasks).
    """
    R = _matrix(R)
    T = R.shape[0]
    last = np.array([_r(R, T - 1, j) for j in range(T)])
    if sizes is None:
        return float(last.mean())
    n = _vector("sizes", sizes, T)
    if not (np.all(n >= 0) and n.sum() > 0):
        raise ValueError(f"sizes must be non-negative with a positive total, got {n.tolist()}")
    return float((n * last).sum() / n.sum())


def backward_transfer(R: ArrayLike, divisor: Divisor = "paper") -> float:
    """BWT = 1/(T-1) * sum_{i=0}^{T-2} (R[T-1, i] - R[i, i]) (Lopez-Paz & Ranzato 2017, GEM).

    ``divisor="code"`` divides the same sum by T, as the GEM reference code does (it averages
    over all T tasks, the last contributing 0). NaN when T = 1. Negative means forgetting.
    """
    R = _matrix(R)
    T = R.shape[0]
    d = _divisor(divisor, T)
    if T == 1:
        return math.nan
    return sum(_r(R, T - 1, i) - _r(R, i, i) for i in range(T - 1)) / d


def forward_transfer(R: ArrayLike, b: ArrayLike, divisor: Divisor = "paper") -> float:
    """FWT = 1/(T-1) * sum_{i=1}^{T-1} (R[i-1, i] - b[i]) (Lopez-Paz & Ranzato 2017, GEM).

    The accuracy on task i just before training on it, relative to the untrained model.
    ``divisor="code"`` divides the same sum by T, as the GEM reference code does. NaN when T = 1.
    """
    R = _matrix(R)
    T = R.shape[0]
    b = _vector("b", b, T)
    d = _divisor(divisor, T)
    if T == 1:
        return math.nan
    return sum(_r(R, i - 1, i) - _b(b, i) for i in range(1, T)) / d


def forgetting(R: ArrayLike) -> float:
    """Average forgetting (Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning").

    f_j = max_{l in 0..T-2} R[l, j] - R[T-1, j] for each task j in 0..T-2; returns the mean
    of the f_j. As in the paper's definition, the max runs over every evaluation before the
    last one, including those made before task j was trained (l < j), so all of rows
    0..T-2 in columns 0..T-2 are needed. NaN when T = 1.
    """
    R = _matrix(R)
    T = R.shape[0]
    if T == 1:
        return math.nan
    f = [max(_r(R, l, j) for l in range(T - 1)) - _r(R, T - 1, j) for j in range(T - 1)]
    return sum(f) / (T - 1)


def few_shot_accuracy(
    per_episode_accuracies: ArrayLike, confidence: float = 0.95
) -> tuple[float, float]:
    """Mean accuracy over episodes and the half-width of its confidence interval.

    half-width = z * s / sqrt(n), s the sample standard deviation (ddof=1) of the n episode
    accuracies and z the standard normal quantile at (1 + confidence) / 2 (1.96 for 0.95):
    the "mean +- 95% CI over 600 episodes" of MAML (Finn et al. 2017) and Prototypical
    Networks (Snell et al. 2017). With a single episode the half-width is NaN.
    """
    a = np.asarray(per_episode_accuracies, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("per_episode_accuracies is empty: evaluate at least one episode")
    if np.isnan(a).any():
        missing = np.flatnonzero(np.isnan(a)).tolist()
        raise ValueError(f"per_episode_accuracies has NaN at episodes {missing}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if a.size == 1:
        return float(a[0]), math.nan
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    return float(a.mean()), float(z * a.std(ddof=1) / math.sqrt(a.size))


def summarize(R: ArrayLike, b: ArrayLike, sizes: ArrayLike) -> dict[str, float]:
    """ACC (plain and sample-weighted), BWT, FWT (paper divisors) and forgetting of a run."""
    return {
        "acc": average_accuracy(R),
        "acc_weighted": average_accuracy(R, sizes),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, b),
        "forgetting": forgetting(R),
    }
