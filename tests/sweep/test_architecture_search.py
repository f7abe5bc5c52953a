"""Architecture search on the sweep engine: candidates are trials scored on validation data
only, proposed in rounds so that a search started again proposes the same candidates and
reuses their runs; DARTS trains its supernet and then the architecture derived from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.tune", reason='the sweep extra: pip install "metalearn[sweep]"')
import ray  # noqa: E402

from metalearn.cli.main import main  # noqa: E402
from metalearn.nas import CONV4, as_blocks  # noqa: E402
from metalearn.sweep import SpecError, load_spec, run_sweep  # noqa: E402

FAKE = (sys.executable, str(Path(__file__).with_name("fake_metalearn.py")))
SMALL_SPACE = {"depths": [1, 2], "operations": ["conv3x3", "sep3x3", "skip"], "widths": [8, 16]}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def candidate_config(tmp_path: Path, steps: int = 4, **model_options) -> Path:
    path = tmp_path / "candidate.yaml"
    path.write_text(yaml.safe_dump({
        "benchmark": {"name": "omniglot", "options": {"split": "vinyals"}},
        "learner": {"name": "protonet", "options": {"lr": 0.001, "train_way": 5}},
        "model": {"name": "searchable", "options": model_options},
        "protocol": {"steps_per_task": steps, "validate_every": steps, "validation_episodes": 4,
                     "meta_batch_size": 1, "eval_episodes": 4}}))
    return path


def write_spec(tmp_path: Path, searcher: dict, candidates: int = 6, **entries) -> Path:
    """A spec whose paths are relative to ``tmp_path``, the folder the tests run in."""
    candidate_config(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "configs": ["candidate.yaml"], "output_dir": "out",
        "architecture": {"searcher": searcher, "candidates": candidates, "space": SMALL_SPACE},
        **entries}))
    return path


def search_file(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "search.json").read_text())


@pytest.mark.parametrize("searcher", [{"name": "random"}, {"name": "evolution", "population": 2, "sample": 2},
                                      {"name": "reinforce", "lr": 0.05}], ids=lambda s: s["name"])
def test_a_search_trains_each_candidate_on_validation_only_and_a_rerun_reuses_them(tmp_path, searcher):
    spec = load_spec(write_spec(tmp_path, searcher))
    rows = run_sweep(spec, FAKE)
    search = search_file(tmp_path)
    candidates = search["candidates"]
    assert [c["candidate"] for c in candidates] == list(range(1, 7))
    for candidate in candidates:
        config = yaml.safe_load((Path(candidate["run_dir"]) / "config.yaml").read_text())
        assert config["model"]["options"]["blocks"] == candidate["blocks"]
        assert config["protocol"]["test"] is False  # the test characters are never read
        assert candidate["val_acc"] == pytest.approx(
            sum(b["op"] == "conv3x3" for b in candidate["blocks"]) / len(candidate["blocks"]))
        assert candidate["flops"] <= search["flops_limit"]
    scores = [c["val_acc"] for c in candidates]
    assert [c["best_so_far"] for c in candidates] == [max(scores[: i + 1]) for i in range(6)]
    assert {row["status"] for row in rows} <= {"ran", "reused"}  # a repeat of an earlier round reuses
    calls = (tmp_path / "out" / "calls.txt").read_text()
    run_sweep(spec, FAKE)  # started again: the same proposals, every run reused
    assert (tmp_path / "out" / "calls.txt").read_text() == calls
    again = search_file(tmp_path)["candidates"]
    assert [(c["blocks"], c["val_acc"]) for c in again] == [(c["blocks"], c["val_acc"]) for c in candidates]
    assert {c["status"] for c in again} == {"reused"}


def test_a_failed_candidate_is_told_to_the_searcher_as_the_worst_score_and_the_search_goes_on(tmp_path):
    spec = load_spec(write_spec(tmp_path, {"name": "random"}, candidates=4))
    config = tmp_path / "candidate.yaml"
    data = yaml.safe_load(config.read_text())
    data["learner"]["options"]["lr"] = 5000  # the stand-in fails every run with lr > 1000
    config.write_text(yaml.safe_dump(data))
    rows = run_sweep(spec, FAKE)
    assert len(rows) == 4 and {row["status"] for row in rows} == {"failed"}
    assert all("NaN" in row["error"] for row in rows)
    assert len(search_file(tmp_path)["candidates"]) == 4


def test_darts_trains_its_supernet_then_the_derived_architecture_within_the_cap(tmp_path):
    spec_path = write_spec(tmp_path, {"name": "darts", "supernet_steps": 2, "depth": 2, "width": 8},
                           candidates=1)
    assert main(["sweep", str(spec_path)]) == 0
    search = search_file(tmp_path)
    supernet = search["supernet"]
    assert supernet["steps"] == 2 and supernet["train_s"] > 0
    assert len(supernet["architecture_weights"]) == 2
    (derived,) = search["candidates"]
    assert len(derived["blocks"]) == 2 and {b["width"] for b in derived["blocks"]} == {8}
    assert derived["flops"] <= search["flops_limit"] and derived["val_acc"] is not None
    results = json.loads((Path(derived["run_dir"]) / "results.json").read_text())
    assert set(results["metrics"]) == {"val_acc"}  # scored on validation data, never tested


@pytest.mark.parametrize("entries, message", [
    ({"architecture": {"searcher": {"name": "annealing"}, "candidates": 2}}, "annealing"),
    ({"architecture": {"searcher": {"name": "evolution", "population": 2, "sample": 3}, "candidates": 2}},
     "sample \\(3\\) must not exceed population \\(2\\)"),
    ({"architecture": {"searcher": {"name": "random"}, "candidates": 2, "space": {"operations": ["conv7x7"]}}},
     "architecture.space.operations.0.*'conv3x3'"),
    ({"architecture": {"searcher": {"name": "random"}, "candidates": 2}, "seeds": [0, 1]}, "one config at one seed"),
])
def test_a_bad_architecture_spec_is_refused_naming_the_entry(tmp_path, entries, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"configs": [str(candidate_config(tmp_path))],
                                    "output_dir": str(tmp_path / "out"), **entries}))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_an_architecture_search_of_a_config_of_another_model_is_refused(tmp_path):
    config = candidate_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["model"] = {"name": "conv4"}
    config.write_text(yaml.safe_dump(data))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"configs": [str(config)], "output_dir": str(tmp_path / "out"),
                                    "architecture": {"searcher": {"name": "random"}, "candidates": 2}}))
    with pytest.raises(SpecError, match="set model.name: searchable"):
        load_spec(path)


def test_conv4s_blocks_are_the_searchable_models_default():
    assert as_blocks(CONV4) == [{"op": "conv3x3", "width": 64, "reduce": "stride"}] * 4
