"""benchmarks/plasticity_speed.py alternates ours and Avalanche and reports each one's median wall
time with its spread (the whole runs take minutes, so the runs themselves are stand-ins here)."""

import argparse
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_ours_and_avalanche_take_turns_and_report_median_and_spread(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import plasticity_speed

    calls, walls = [], iter([3.0, 10.0, 12.0, 1.0, 2.0, 11.0])

    def ours(name, data_root, runs, device, steps_per_task):
        calls.append(("ours", name, device, steps_per_task))
        return {"wall_s": next(walls)}

    def avalanche(name, **options):
        calls.append(("avalanche", name, options["strength"], options.get("iterations_per_task")))
        return {"wall_s": next(walls), "accuracy_matrix": [[1.0]]}

    monkeypatch.setattr(plasticity_speed, "ours", ours)
    args = argparse.Namespace(repeats=3, data_root="", runs=Path("runs"), device="cuda", steps_per_task=7)
    report = plasticity_speed.interleaved("ewc", args, avalanche)

    # the order swaps every round; Avalanche gets its convention's strength (no 1/2: half ours)
    assert calls == [("ours", "ewc", "cuda", 7), ("avalanche", "ewc", 0.5e8, 7),
                     ("avalanche", "ewc", 0.5e8, 7), ("ours", "ewc", "cuda", 7),
                     ("ours", "ewc", "cuda", 7), ("avalanche", "ewc", 0.5e8, 7)]
    assert (report["ours"]["median_s"], report["ours"]["min_s"], report["ours"]["max_s"]) == (2.0, 1.0, 3.0)
    assert (report["avalanche"]["median_s"], report["avalanche"]["min_s"], report["avalanche"]["max_s"]) == (
        11.0, 10.0, 12.0)
    assert report["avalanche_over_ours"] == 5.5
    assert all("accuracy_matrix" not in run for run in report["avalanche"]["runs"])


def test_without_avalanche_times_ours_alone(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import plasticity_speed

    monkeypatch.setattr(plasticity_speed, "ours", lambda *args: {"wall_s": 4.0})
    args = argparse.Namespace(repeats=2, data_root="", runs=Path("runs"), device="cpu", steps_per_task=None)
    report = plasticity_speed.interleaved("si", args, None)
    assert set(report) == {"strength", "ours"}
    assert [run["wall_s"] for run in report["ours"]["runs"]] == [4.0, 4.0]
