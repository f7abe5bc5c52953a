"""metalearn sweep: grids and searches of ordinary runs on Ray Tune, reuse of finished runs,
failing trials isolated, tuning on validation only, and specs refused before any trial.

Most tests start ``tests/sweep/fake_metalearn.py`` in place of ``python -m metalearn`` (a run
folder in milliseconds, its calls logged); one grid trains real tiny Split MNIST runs."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.tune", reason='the sweep extra: pip install "metalearn[sweep]"')
import ray  # noqa: E402

from metalearn.cli.main import main  # noqa: E402
from metalearn.sweep import SpecError, SweepError, load_spec, run_sweep  # noqa: E402
from metalearn.sweep import engine  # noqa: E402
from metalearn.sweep.command import sweep  # noqa: E402

FAKE = (sys.executable, str(Path(__file__).with_name("fake_metalearn.py")))


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def fake_config(tmp_path: Path, **protocol) -> Path:
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump({
        "benchmark": {"name": "split_mnist", "options": {"validation": 0.1}},
        "learner": {"name": "finetune", "options": {"lr": 0.001}},
        "model": {"name": "mlp"}, "scenario": "class",
        "protocol": {"steps_per_task": 5, "validate_every": 5, **protocol}}))
    return path


def write_spec(tmp_path: Path, **entries) -> Path:
    path = tmp_path / "spec.yaml"
    spec = {"configs": [str(fake_config(tmp_path))], "output_dir": str(tmp_path / "out"), **entries}
    path.write_text(yaml.safe_dump(spec))
    return path


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "out" / "calls.txt"
    return sorted(log.read_text().splitlines()) if log.exists() else []


def by_seed(rows: list[dict]) -> dict[int, dict]:
    return {row["seed"]: row for row in rows}


def test_a_grid_of_real_runs_makes_one_run_folder_each_and_reuses_them_all(tmp_path, tiny_config):
    config = tiny_config(protocol__steps_per_task=5, protocol__validate_every=5,
                         benchmark__options={"validation": 0.1}, model__options={"hidden": [16]})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "configs": [str(config)], "grid": {"learner.options.lr": [0.001, 0.01]}, "seeds": [0, 1],
        "output_dir": str(tmp_path / "sweep"), "best": str(tmp_path / "tuned.yaml")}))
    assert main(["sweep", str(spec_path)]) == 0
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    rows = summary["trials"]
    for row in rows:  # the metric is the run's own validation accuracy, not its test ACC
        metrics = json.loads((Path(row["run_dir"]) / "results.json").read_text())["metrics"]
        assert row["val_acc"] == metrics["val_acc"] != metrics["acc"]
    mean = {lr: sum(r["val_acc"] for r in rows if r["settings"]["learner.options.lr"] == lr) / 2
            for lr in (0.001, 0.01)}
    assert yaml.safe_load((tmp_path / "tuned.yaml").read_text()) == {
        "config": {"class": {"lr": max(mean, key=mean.get)}}}
    assert sorted((row["settings"]["learner.options.lr"], row["seed"]) for row in rows) == [
        (0.001, 0), (0.001, 1), (0.01, 0), (0.01, 1)]
    assert {row["status"] for row in rows} == {"ran"}
    folders = {Path(row["run_dir"]) for row in rows}
    assert len(folders) == 4 and all(folder.parent == tmp_path / "sweep" / "split_mnist" for folder in folders)
    for row in rows:
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert results["completed_tasks"] == 5 and results["seed"] == row["seed"]
        saved = yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())
        assert saved["learner"]["options"]["lr"] == row["settings"]["learner.options.lr"]
    written = {folder: (folder / "results.json").stat().st_mtime_ns for folder in folders}

    assert main(["sweep", str(spec_path)]) == 0
    again = json.loads((tmp_path / "sweep" / "summary.json").read_text())["trials"]
    assert {row["status"] for row in again} == {"reused"}
    assert {folder: (folder / "results.json").stat().st_mtime_ns for folder in folders} == written
    assert len(list((tmp_path / "sweep" / "split_mnist").iterdir())) == 4


def test_a_sweep_run_again_after_a_kill_runs_only_what_is_missing(tmp_path):
    grid = {"learner.options.lr": [0.01]}
    run_sweep(load_spec(write_spec(tmp_path, grid=grid, seeds=[0, 1])), command=FAKE)
    assert calls(tmp_path) == ["run 0 0.01", "run 1 0.01"]
    # Killed mid-run: seed 1's folder holds the results of its first task only, seed 2 never began.
    stopped = Path(by_seed(run_sweep(load_spec(write_spec(tmp_path, grid=grid, seeds=[1])),
                                     command=FAKE))[1]["run_dir"])
    results = json.loads((stopped / "results.json").read_text())
    (stopped / "results.json").write_text(json.dumps({**results, "completed_tasks": 1}))

    rows = by_seed(run_sweep(load_spec(write_spec(tmp_path, grid=grid, seeds=[0, 1, 2])), command=FAKE))
    assert {seed: row["status"] for seed, row in rows.items()} == {0: "reused", 1: "resumed", 2: "ran"}
    assert calls(tmp_path) == ["resume 1 0.01", "run 0 0.01", "run 1 0.01", "run 2 0.01"]


def test_a_failing_trial_is_reported_with_its_message_and_the_others_finish(tmp_path):
    spec = load_spec(write_spec(tmp_path, grid={"learner.options.lr": [0.01, 1e9, 0.1]}))
    rows = {row["settings"]["learner.options.lr"]: row for row in run_sweep(spec, command=FAKE)}
    assert rows[1e9]["status"] == "failed"
    assert "the loss is NaN at step 3 of task 0" in rows[1e9]["error"]
    assert rows[1e9]["val_acc"] is None
    assert rows[0.01]["status"] == rows[0.1]["status"] == "ran"
    assert rows[0.01]["val_acc"] == pytest.approx(1.0) and rows[0.1]["val_acc"] == pytest.approx(0.99)


def test_the_sweep_command_exits_1_and_writes_the_summary_when_a_trial_fails(tmp_path, capsys):
    spec = write_spec(tmp_path, grid={"learner.options.lr": [0.01, 1e9]})
    assert sweep(spec, command=FAKE) == 1
    assert "1 of 2 trials failed" in capsys.readouterr().err
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "the loss is NaN" in markdown and f"sweep {spec}" in markdown


def test_a_search_tunes_on_validation_and_writes_the_best_setting_with_its_command(tmp_path):
    best = tmp_path / "tuned.yaml"
    best.write_text("ewc:\n  class:\n    strength: 5.0\n")  # others' entries stay
    spec = write_spec(tmp_path, best=str(best), search={
        "space": {"learner.options.lr": {"loguniform": [1e-4, 1.0]}}, "samples": 4})
    assert sweep(spec, command=FAKE) == 0
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["trials"]
    assert len(rows) == 4 and {row["status"] for row in rows} == {"ran"}
    top = max(rows, key=lambda row: row["val_acc"])  # the fake's test accuracy ranks them the other way
    written = yaml.safe_load(best.read_text())
    assert written == {"ewc": {"class": {"strength": 5.0}},
                       "finetune": {"class": {"lr": top["settings"]["learner.options.lr"]}}}
    header = best.read_text().splitlines()[:2]
    assert header[0] == f"# written by metalearn sweep {spec}"
    assert "val_acc" in header[1] and "never on the test set" in header[1]

    ran = calls(tmp_path)
    assert sweep(spec, command=FAKE) == 0  # started again: the same draws, their runs reused
    again = json.loads((tmp_path / "out" / "summary.json").read_text())["trials"]
    assert {row["status"] for row in again} == {"reused"} and calls(tmp_path) == ran


def test_a_search_finds_a_spec_s_relative_paths_from_the_folder_it_was_started_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Tune makes each searched point's trial in a folder of its own
    fake_config(tmp_path)
    Path("spec.yaml").write_text(yaml.safe_dump({
        "configs": ["finetune.yaml"], "output_dir": "out",
        "search": {"space": {"learner.options.lr": {"choice": [0.01]}}, "samples": 1}}))
    rows = run_sweep(load_spec("spec.yaml"), command=FAKE)
    assert [row["status"] for row in rows] == ["ran"] and calls(tmp_path) == ["run 0 0.01"]
    assert Path(rows[0]["run_dir"]).parent == tmp_path / "out" / "split_mnist"


def test_asha_stops_the_trial_that_validates_below_the_other_and_the_sweep_resumes_it_later(tmp_path):
    spec = write_spec(tmp_path, grid={"learner.options.lr": [0.01, 100.0]}, resources={"cpus": 2},
                      scheduler={"name": "asha", "grace_period": 5, "reduction_factor": 2})
    fake_config(tmp_path, steps_per_task=20)  # 8 validation points, 5 steps and 0.3 s apart
    # One trial at a time (2 CPUs each), in grid order: lr=0.01 (val_acc 1.0) runs alone to
    # its end; lr=100 (0.84) reaches the first rung (step 5) below it and is stopped there.
    rows = {row["settings"]["learner.options.lr"]: row for row in run_sweep(load_spec(spec), command=FAKE)}
    assert rows[0.01]["status"] == "ran" and rows[0.01]["val_acc"] == pytest.approx(1.0)
    assert rows[100.0]["status"] == "stopped early at step 5 (val_acc 0.8400)"
    assert rows[100.0]["val_acc"] is None  # its score at step 5 is not the run's
    stops = [line.split() for line in calls(tmp_path) if line.startswith("stopped")]
    assert [stop[:3] for stop in stops] == [["stopped", "0", "100.0"]]  # by SIGTERM, as Ctrl-C stops a run
    assert int(stops[0][3]) < 40  # before its last step
    folder = Path(rows[100.0]["run_dir"])
    assert (folder / "config.yaml").is_file() and not (folder / "results.json").exists()

    # Started again: the finished run is reused, the stopped one resumed from its folder (this
    # sweep's ASHA has no other trial's points at step 5 to stop it on: it runs to its end).
    again = {row["settings"]["learner.options.lr"]: row for row in run_sweep(load_spec(spec), command=FAKE)}
    assert again[0.01]["status"] == "reused"
    assert again[100.0]["status"] == "resumed" and again[100.0]["val_acc"] == pytest.approx(0.84)
    assert calls(tmp_path).count("resume 0 100.0") == 1


def test_a_search_tells_optuna_a_trial_stopped_early_as_pruned_not_as_its_score_then():
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    from metalearn.sweep.early_stopping import FinishedRunsSearch

    told = {}
    for searcher_type in (OptunaSearch, FinishedRunsSearch):
        searcher = searcher_type(space={"lr": FloatDistribution(1e-4, 1.0, log=True)},
                                 metric="val_acc", mode="max", seed=0)
        for trial_id in ("finished", "stopped"):
            searcher.suggest(trial_id)
        point = {"step": 5, "val_acc": 0.99, "training_iteration": 1}  # on task 0 alone
        searcher.on_trial_result("stopped", point)
        searcher.on_trial_complete("finished", {"status": "ran", "val_acc": 0.8})
        searcher.on_trial_complete("stopped", point)  # its last result: the point it was stopped at
        told[searcher_type] = [(trial.state, trial.value if trial.state == TrialState.COMPLETE else None)
                               for trial in searcher._ot_study.get_trials()]
    # Tune's own takes the early score as the run's, above the finished run's; ours prunes it
    assert told[OptunaSearch] == [(TrialState.COMPLETE, 0.8), (TrialState.COMPLETE, 0.99)]
    assert told[FinishedRunsSearch] == [(TrialState.COMPLETE, 0.8), (TrialState.PRUNED, None)]


@pytest.mark.parametrize("entries, protocol, message", [
    ({"grid": {"learner.name": ["finetune", "finetuen"]}}, {},
     "at learner.name=finetuen: learner.name: unknown learner 'finetuen'; did you mean 'finetune'?"),
    ({"grid": {"benchmark.name": ["split_mnits"]}}, {}, "unknown benchmark 'split_mnits'"),
    ({"grid": {"learner.name": ["packnet"]}}, {}, "scenario: packnet supports ['task'] only, not class-IL"),
    ({"grid": {"learner.options.lrr": [0.1]}}, {}, "unknown config key 'learner.options.lrr'"),
    ({"grid": {"protocol.step_per_task": [5]}}, {}, "did you mean 'steps_per_task'?"),
    ({"grid": {"protocol.steps_per_task": ["many"]}}, {}, "config key 'protocol.steps_per_task'"),
    ({"search": {"space": {"learner.options.lr": {"loguniform": [0, 1]}}, "samples": 2}}, {},
     "entry 'search.space.learner.options.lr'"),
    ({"search": {"space": {"learner.options.lr": {"normal": [0, 1]}}, "samples": 2}}, {},
     "entry 'search.space.learner.options.lr.normal': Extra inputs are not permitted"),
    ({"search": {"space": {"learner.options.lr": {"choice": ["fast"]}}, "samples": 2}}, {},
     "at learner.options.lr=fast"),
    ({"search": {"space": {"learner.options.lr": {"choice": [0.1]}}, "samples": 2}},
     {"validate_every": 0}, "do not validate; add to overrides protocol.validate_every=N"),
    ({"grid": {"learner.options.lr": [0.1]}, "best": "tuned.yaml", "metric": "acc"}, {},
     "'acc' is measured on the test set"),
    ({"grdi": {"learner.options.lr": [0.1]}}, {}, "entry 'grdi': Extra inputs are not permitted"),
    ({"scheduler": "hyperband"}, {}, "entry 'scheduler.name': Input should be 'asha'"),
    ({"scheduler": "asha"}, {}, "entry 'scheduler.grace_period': Field required"),
    ({"scheduler": {"name": "asha", "grace_period": 5, "reduction_factor": 1}}, {},
     "entry 'scheduler.reduction_factor': Input should be greater than 1"),
    ({"scheduler": {"name": "asha", "grace_period": 5}, "metric": "acc"}, {},
     "entry 'metric': the asha scheduler stops trials on their validation points, which score val_acc"),
    ({"scheduler": {"name": "asha", "grace_period": 5}}, {"validate_every": 0},
     "the asha scheduler stops trials on their runs' validation points, and runs of finetune.yaml "
     "do not validate"),
])
def test_a_bad_spec_is_refused_before_any_trial_naming_the_entry(tmp_path, entries, protocol, message):
    spec = write_spec(tmp_path, **entries)
    fake_config(tmp_path, **protocol)
    with pytest.raises(SpecError, match="spec.yaml") as error:
        load_spec(spec)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_without_ray_the_command_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["sweep", str(write_spec(tmp_path))]) == 1
    assert 'pip install "metalearn[sweep]"' in capsys.readouterr().err


def test_a_cluster_that_does_not_answer_fails_within_seconds_naming_its_address(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.socket() as silent:  # accepts connections and never replies: ray.init would hang
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        for address, reason in [("127.0.0.1:9", "Connection refused"),  # nothing listens
                                (f"127.0.0.1:{port}", "no reply within 5 s")]:
            started = time.monotonic()
            with pytest.raises(SweepError, match=f"the Ray cluster at {address} does not answer"
                                                 rf" \(.*{reason}"):
                engine.start_ray(address)
            assert time.monotonic() - started < engine.ADDRESS_TIMEOUT_S + 2
