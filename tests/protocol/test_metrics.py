"""Metrics against hand-computed matrices and independent float64 references."""

from __future__ import annotations

import math
import re
import statistics
import warnings

import numpy as np
import pytest

from metalearn.protocol.metrics import (
    average_accuracy,
    backward_transfer,
    few_shot_accuracy,
    forgetting,
    forward_transfer,
    summarize,
)

nan = math.nan

# Each case: R, b, sizes and the values worked out by hand.
CASES = {
    # ACC = (0.7 + 0.8) / 2 = 0.75; weighted (3*0.7 + 1*0.8) / 4 = 2.9 / 4 = 0.725
    # BWT sum = R[1,0] - R[0,0] = 0.7 - 0.9 = -0.2; paper /1 = -0.2; code /2 = -0.1
    # FWT sum = R[0,1] - b[1] = 0.4 - 0.1 = 0.3; paper /1 = 0.3; code /2 = 0.15
    # forgetting: f_0 = max(R[0,0]) - R[1,0] = 0.9 - 0.7 = 0.2
    "2x2": (
        [[0.9, 0.4], [0.7, 0.8]], [0.5, 0.1], [3, 1],
        dict(acc=0.75, acc_weighted=0.725, bwt=-0.2, bwt_code=-0.1, fwt=0.3, fwt_code=0.15,
             forgetting=0.2),
    ),
    # ACC = (0.5 + 0.7 + 0.95) / 3 = 2.15 / 3 = 0.71666...
    # weighted (100*0.5 + 300*0.7 + 600*0.95) / 1000 = (50 + 210 + 570) / 1000 = 0.83
    # BWT sum = (0.5 - 0.8) + (0.7 - 0.9) = -0.5; paper /2 = -0.25; code /3 = -0.1666...
    # FWT sum = (R[0,1] - b[1]) + (R[1,2] - b[2]) = (0.3 - 0.2) + (0.4 - 0.25) = 0.25;
    #   paper /2 = 0.125; code /3 = 0.08333...
    # forgetting: f_0 = max(0.8, 0.6) - 0.5 = 0.3; f_1 = max(0.3, 0.9) - 0.7 = 0.2; mean 0.25
    "3x3 max on the diagonal": (
        [[0.8, 0.3, 0.2], [0.6, 0.9, 0.4], [0.5, 0.7, 0.95]], [0.1, 0.2, 0.25], [100, 300, 600],
        dict(acc=2.15 / 3, acc_weighted=0.83, bwt=-0.25, bwt_code=-0.5 / 3, fwt=0.125,
             fwt_code=0.25 / 3, forgetting=0.25),
    ),
    # The max of forgetting is off the diagonal: task 0 improves after task 1 (R[1,0] = 0.9),
    # and task 1 scored best before it was trained (R[0,1] = 0.7 > R[1,1] = 0.5).
    # ACC = (0.4 + 0.3 + 0.8) / 3 = 0.5; weighted (0.4 + 0.3 + 2*0.8) / 4 = 2.3 / 4 = 0.575
    # BWT sum = (0.4 - 0.6) + (0.3 - 0.5) = -0.4; paper /2 = -0.2; code /3 = -0.1333...
    # FWT sum = (0.7 - 0.5) + (0.2 - 0.5) = -0.1; paper /2 = -0.05; code /3 = -0.0333...
    # forgetting: f_0 = max(0.6, 0.9) - 0.4 = 0.5; f_1 = max(0.7, 0.5) - 0.3 = 0.4; mean 0.45
    #   (a max over l >= j only would give f_1 = 0.2 and 0.35; over the diagonal only, 0.2)
    "3x3 max off the diagonal": (
        [[0.6, 0.7, 0.1], [0.9, 0.5, 0.2], [0.4, 0.3, 0.8]], [0.5, 0.5, 0.5], [1, 1, 2],
        dict(acc=0.5, acc_weighted=0.575, bwt=-0.2, bwt_code=-0.4 / 3, fwt=-0.05,
             fwt_code=-0.1 / 3, forgetting=0.45),
    ),
}


@pytest.mark.parametrize("R,b,sizes,expected", CASES.values(), ids=CASES.keys())
def test_hand_computed_matrices(R, b, sizes, expected):
    got = dict(
        acc=average_accuracy(R),
        acc_weighted=average_accuracy(R, sizes),
        bwt=backward_transfer(R),
        bwt_code=backward_transfer(R, divisor="code"),
        fwt=forward_transfer(R, b),
        fwt_code=forward_transfer(R, b, divisor="code"),
        forgetting=forgetting(R),
    )
    assert got == pytest.approx(expected, abs=1e-12)
    assert all(type(v) is float for v in got.values())


@pytest.mark.parametrize("R,b,sizes,expected", CASES.values(), ids=CASES.keys())
def test_summarize_uses_the_paper_conventions(R, b, sizes, expected):
    keys = ("acc", "acc_weighted", "bwt", "fwt", "forgetting")
    got = summarize(np.array(R), np.array(b), np.array(sizes))
    assert got == pytest.approx({k: expected[k] for k in keys}, abs=1e-12)
    assert all(type(v) is float for v in got.values())


def test_entries_a_metric_does_not_need_may_be_nan():
    # The "3x3 max on the diagonal" case with every unneeded entry blanked out.
    R = [[0.8, nan, nan], [0.6, 0.9, nan], [0.5, 0.7, 0.95]]  # BWT: last row and diagonal
    assert backward_transfer(R) == pytest.approx(-0.25)
    assert average_accuracy([[nan] * 3, [nan] * 3, [0.5, 0.7, 0.95]]) == pytest.approx(2.15 / 3)
    R = [[nan, 0.3, nan], [nan, nan, 0.4], [nan] * 3]  # FWT: the superdiagonal and b[1:]
    assert forward_transfer(R, [nan, 0.2, 0.25]) == pytest.approx(0.125)
    R = [[0.8, 0.3, nan], [0.6, 0.9, nan], [0.5, 0.7, nan]]  # forgetting: not the last column
    assert forgetting(R) == pytest.approx(0.25)


def test_t_equals_one_gives_nan_except_acc():
    R, b, sizes = [[0.6]], [0.1], [10]
    assert average_accuracy(R) == 0.6 and average_accuracy(R, sizes) == 0.6
    for value in (backward_transfer(R), backward_transfer(R, "code"), forward_transfer(R, b),
                  forward_transfer(R, b, "code"), forgetting(R)):
        assert type(value) is float and math.isnan(value)
    got = summarize(R, b, sizes)
    assert got["acc"] == 0.6 and got["acc_weighted"] == 0.6
    assert all(math.isnan(got[k]) for k in ("bwt", "fwt", "forgetting"))


FULL = np.array(CASES["3x3 max on the diagonal"][0])
B = np.array(CASES["3x3 max on the diagonal"][1])


def _blank(i: int, j: int) -> np.ndarray:
    R = FULL.copy()
    R[i, j] = nan
    return R


def _b_blank(j: int) -> np.ndarray:
    b = B.copy()
    b[j] = nan
    return b


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: average_accuracy(_blank(2, 1)),
            "R[2, 1] is missing: evaluate task 1 after training on task 2",
        ),
        (lambda: average_accuracy(_blank(2, 0), [1, 1, 1]), "R[2, 0] is missing"),
        (
            lambda: backward_transfer(_blank(1, 1)),
            "R[1, 1] is missing: evaluate task 1 after training on task 1",
        ),
        (lambda: backward_transfer(_blank(2, 0), "code"), "R[2, 0] is missing"),
        (
            lambda: forward_transfer(_blank(1, 2), B),
            "R[1, 2] is missing: evaluate task 2 after training on task 1",
        ),
        (
            lambda: forward_transfer(FULL, _b_blank(2)),
            "b[2] is missing: evaluate task 2 with the untrained model",
        ),
        (
            lambda: forgetting(_blank(0, 1)),
            "R[0, 1] is missing: evaluate task 1 after training on task 0",
        ),
        (lambda: forgetting(_blank(2, 1)), "R[2, 1] is missing"),
        (lambda: summarize(_blank(0, 1), B, [1, 1, 1]), "R[0, 1] is missing"),
    ],
)
def test_a_missing_needed_entry_is_named(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: average_accuracy([[0.5, 0.6]]), "R must be a square T x T matrix"),
        (lambda: backward_transfer([0.5, 0.6]), "got shape (2,)"),
        (lambda: forgetting(np.zeros((0, 0))), "T >= 1"),
        (lambda: forgetting(np.zeros((2, 2, 2))), "got shape (2, 2, 2)"),
        (lambda: forward_transfer(FULL, [0.1, 0.2]), "b must have one entry per task (length T=3)"),
        (lambda: average_accuracy(FULL, [1, 2]), "sizes must have one entry per task (length T=3)"),
        (lambda: average_accuracy(FULL, [1, -1, 2]), "sizes must be non-negative"),
        (lambda: average_accuracy(FULL, [0, 0, 0]), "positive total"),
        (lambda: backward_transfer(FULL, "mean"), "divisor must be 'paper' or 'code', got 'mean'"),
        (lambda: forward_transfer([[0.5]], [0.1], divisor="T"), "got 'T'"),  # checked even at T = 1
        (lambda: summarize(FULL, B, [1, 2]), "sizes must have one entry per task"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def _reference(R: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Vectorised float64 forms, written independently of the loops in the module."""
    gap = R[-1, :-1] - np.diag(R)[:-1]
    gain = np.diag(R, 1) - b[1:]
    T = len(R)
    return dict(
        bwt=gap.mean(), bwt_code=gap.sum() / T, fwt=gain.mean(), fwt_code=gain.sum() / T,
        forgetting=(R[:-1, :-1].max(axis=0) - R[-1, :-1]).mean(),
    )


@pytest.mark.parametrize("T", [2, 3, 5, 8])
def test_random_matrices_match_a_reference(T):
    rng = np.random.default_rng(T)
    R, b = rng.uniform(size=(T, T)), rng.uniform(size=T)
    got = dict(
        bwt=backward_transfer(R), bwt_code=backward_transfer(R, "code"),
        fwt=forward_transfer(R, b), fwt_code=forward_transfer(R, b, "code"),
        forgetting=forgetting(R),
    )
    assert got == pytest.approx(_reference(R, b), abs=1e-12)
    # GEM's code divisor is the paper's scaled by (T-1)/T.
    assert got["bwt_code"] == pytest.approx(got["bwt"] * (T - 1) / T)


def test_few_shot_accuracy_by_hand():
    # mean 0.7; sample std sqrt((0.2^2 + 0 + 0.2^2) / 2) = 0.2; half-width 1.96 * 0.2 / sqrt(3)
    # (the population std, sqrt(0.08 / 3) = 0.163, would give 0.185 and fail)
    mean, half = few_shot_accuracy([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7, abs=1e-12)
    assert half == pytest.approx(1.96 * 0.2 / math.sqrt(3), rel=1e-4)  # z is 1.95996...
    assert type(mean) is float and type(half) is float


@pytest.mark.parametrize("confidence,z", [(0.90, 1.6448536), (0.95, 1.9599640), (0.99, 2.5758293)])
def test_few_shot_accuracy_matches_a_scipy_free_reference(confidence, z):
    # z from a standard normal table; mean and sample std from the statistics module.
    values = np.random.default_rng(0).uniform(0.2, 1.0, size=600).astype(np.float32)
    mean, half = few_shot_accuracy(values, confidence)
    floats = [float(v) for v in values]
    assert mean == pytest.approx(statistics.fmean(floats), rel=1e-12)
    assert half == pytest.approx(z * statistics.stdev(floats) / math.sqrt(600), rel=1e-6)


def test_few_shot_accuracy_edge_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one episode: NaN half-width without a numpy warning
        mean, half = few_shot_accuracy([0.4])
    assert mean == 0.4 and math.isnan(half)
    with pytest.raises(ValueError, match="empty"):
        few_shot_accuracy([])
    with pytest.raises(ValueError, match=re.escape("NaN at episodes [1]")):
        few_shot_accuracy([0.5, nan, 0.7])
    message = "confidence must lie strictly between 0 and 1, got 1.0"
    with pytest.raises(ValueError, match=re.escape(message)):
        few_shot_accuracy([0.5, 0.7], confidence=1.0)
