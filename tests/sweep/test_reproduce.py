"""metalearn reproduce: a suite spec at a budget runs as sweep trials, then its report (HTML,
Markdown, data) holds the mean ± s.e. over seeds of the runs' own results; bad entries are
refused before any trial starts; the report's links are checked; the README's learner table is
the one the committed report data give."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from metalearn.results import RunResults
from metalearn.sweep.comparison import (TABLE_END, broken_links, readme_table, readme_table_source,
                                        write_readme_table)
from metalearn.sweep.reproduce import SUITE, reproduce
from metalearn.sweep.suite import load_suite, suite_trials

REPO = Path(__file__).resolve().parents[2]
FAKE = (sys.executable, str(Path(__file__).with_name("fake_metalearn.py")))


def tiny_suite(tmp_path: Path, tiny_config, **changes) -> Path:
    """Fine-tuning and joint training on tiny Split MNIST, class-IL, 2 seeds, one external run."""
    base = yaml.safe_load(tiny_config(protocol__steps_per_task=50).read_text())
    configs = []
    for learner in ("finetune", "joint"):
        path = tmp_path / f"{learner}.yaml"
        path.write_text(yaml.safe_dump({**base, "learner": {"name": learner, "options": {"lr": 0.001}}}))
        configs.append(path)
    published = tmp_path / "published.yaml"
    published.write_text(yaml.safe_dump({"source": "a test", "accuracy": {"finetune": {"class": 19.9}}}))
    external = RunResults.empty("split_mnist", "joint", "class", 0, list("abcde"), [1] * 5, False)
    external.accuracy[:] = 0.9
    external.metrics, external.completed_tasks = {"acc": 0.9}, 5
    (tmp_path / "long").mkdir(exist_ok=True)
    (tmp_path / "long" / "joint-class-seed0.json").write_text(json.dumps(external.to_dict()))
    suite = {
        "budgets": {"smoke": "seconds", "paper": "the configs' own"},
        "seeds": [0, 1], "output_dir": str(tmp_path / "runs"),
        "sections": [{
            "name": "tiny", "title": "Tiny Split MNIST", "published": str(published), "scenarios": ["class"],
            "budgets": {"smoke": ["protocol.steps_per_task=5"], "paper": []},
            "entries": [{"config": str(configs[0]), "paper": "baseline", "docs": "docs/baselines.md"},
                        {"config": str(configs[1]), "paper": "baseline"}],
            "external": [{"schedule": "a longer one", "runs": [str(tmp_path / "long" / "*.json")]}]}]}
    suite.update(changes)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason='the sweep extra: pip install "metalearn[sweep]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_smoke_budget_runs_the_suite_and_reports_each_rows_mean_and_error_over_seeds(
        tmp_path, tiny_config, ray_session, monkeypatch):
    from metalearn.cli.main import main

    suite = tiny_suite(tmp_path, tiny_config)
    out = tmp_path / "report"
    monkeypatch.chdir(REPO)  # docs links are relative to the repository
    assert main(["reproduce", "--budget", "smoke", "--suite", str(suite), "--out", str(out)]) == 0

    folders = sorted((tmp_path / "runs" / "smoke" / "split_mnist").iterdir())
    assert len(folders) == 4  # 2 learners x 2 seeds, each run a run folder of its own
    results = [json.loads((folder / "results.json").read_text()) for folder in folders]
    assert {yaml.safe_load((f / "config.yaml").read_text())["protocol"]["steps_per_task"] for f in folders} == {5}
    report = json.loads((out / "report.json").read_text())
    [section] = report["sections"]
    [part] = section["scenarios"]
    rows = {(row["learner"], row["schedule"]): row for row in part["rows"]}
    assert set(rows) == {("finetune", "smoke budget"), ("joint", "smoke budget"), ("joint", "a longer one")}
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for learner in ("finetune", "joint"):
        acc = 100 * np.array([r["metrics"]["acc"] for r in results if r["learner"] == learner])
        mean, error = acc.mean(), acc.std(ddof=1) / np.sqrt(2)  # by hand, from the runs' files
        row = rows[(learner, "smoke budget")]
        assert (row["acc_mean"], row["acc_sem"]) == (round(mean, 2), round(error, 2))
        assert f"| {learner} | smoke budget | 2 | {mean:.2f} ± {error:.2f} |" in markdown
        assert f"<td>{mean:.2f} ± {error:.2f}</td>" in page
    finetune = rows[("finetune", "smoke budget")]
    assert finetune["published"] == 19.9 and finetune["difference"] == round(finetune["acc_mean"] - 19.9, 2)
    assert rows[("joint", "a longer one")]["acc_mean"] == 90.0 and rows[("joint", "a longer one")]["seeds"] == [0]
    # every run's command, versions and device, read from its environment.json
    suite_runs = [run for run in section["runs"] if run["schedule"] == "smoke budget"]
    assert len(suite_runs) == 4 and all(run["command"].startswith("metalearn run ") and run["torch"]
                                        and run["device"] == "cpu" for run in suite_runs)
    # self-contained: 3 R heatmaps (2 learners, 1 external), the curves and accuracy against
    # model size (the suite's runs record it), all embedded; docs linked
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 5
    assert "accuracy against model size" in page
    assert broken_links(out / "report.html") == []
    assert "docs/baselines.md" in page

    # run again: every run is reused, none trained again
    stamps = {folder: (folder / "results.json").stat().st_mtime_ns for folder in folders}
    assert reproduce(suite, "smoke", out) == 0
    assert stamps == {folder: (folder / "results.json").stat().st_mtime_ns for folder in folders}


def test_a_bad_entry_or_budget_is_refused_before_any_trial_starts_naming_it(tmp_path, tiny_config, capsys):
    suite = tiny_suite(tmp_path, tiny_config)
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "joint.yaml").read_text().replace("name: joint", "name: jiont"))
    spec = yaml.safe_load(suite.read_text())
    spec["sections"][0]["entries"][1]["config"] = str(bad)
    suite.write_text(yaml.safe_dump(spec))
    assert reproduce(suite, "smoke", tmp_path / "report", command=FAKE) == 1
    error = capsys.readouterr().err
    assert f"sections.0 (tiny), entries.1 ({bad})" in error and "unknown learner 'jiont'" in error

    suite = tiny_suite(tmp_path, tiny_config)
    assert reproduce(suite, "gpu", tmp_path / "report", command=FAKE) == 1
    assert "has the budgets ['paper', 'smoke'], not 'gpu'" in capsys.readouterr().err

    spec = yaml.safe_load(suite.read_text())
    spec["sections"][0]["entries"][0]["budgets"] = {"smok": ["protocol.steps_per_task=1"]}
    suite.write_text(yaml.safe_dump(spec))
    assert reproduce(suite, "smoke", tmp_path / "report", command=FAKE) == 1
    error = capsys.readouterr().err
    assert "entries.0" in error and "unknown budget 'smok'" in error
    assert not (tmp_path / "runs").exists() and not (tmp_path / "report").exists()


def test_the_real_suite_names_valid_runs_at_every_budget_with_three_seeds_or_more(monkeypatch):
    monkeypatch.chdir(REPO)
    suite = load_suite(SUITE)
    assert len(suite.seeds) >= 3 and set(suite.budgets) == {"smoke", "cpu", "paper"}
    counts = {budget: len(suite_trials(suite, budget, SUITE)) for budget in suite.budgets}
    assert len(set(counts.values())) == 1  # the same runs at every budget, sized differently


def test_the_link_check_finds_what_a_reader_would_find_broken(tmp_path):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 10).decode()
    (tmp_path / "there.png").write_bytes(b"")
    page = tmp_path / "page.html"
    page.write_text(f'<h2 id="top">x</h2><img src="data:image/png;base64,{png}"><img src="there.png">'
                    '<a href="#top">up</a><a href="https://example.org">out</a><a href="page.html">me</a>'
                    '<img src="gone.png"><img src="data:image/png;base64,bm90IGEgcG5n">'
                    '<a href="missing.md">x</a><a href="#nowhere">y</a>')
    assert broken_links(page) == [
        "image gone.png: no such file", "image data:image/png;base64,bm90IGEgcG5n...: not a PNG data URI",
        "link missing.md: no such file", "link #nowhere: no such anchor"]


def test_the_readme_learner_table_is_the_one_the_committed_report_gives(tmp_path):
    readme = REPO / "README.md"
    source = readme_table_source(readme)
    assert source, "README.md has no generated learner table: run metalearn reproduce --readme"
    expected = readme_table(json.loads((REPO / source).read_text()), source)
    assert expected in readme.read_text(), ("README.md's learner table differs from the one "
                                            f"{source} gives: run metalearn reproduce --readme")
    copy = tmp_path / "README.md"
    copy.write_text(readme.read_text().replace(expected, f"<!-- learner table: x -->\nold\n{TABLE_END}"))
    write_readme_table(copy, REPO / source)
    assert readme_table(json.loads((REPO / source).read_text()), (REPO / source).as_posix()) in copy.read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_run_stops_when_the_trial_that_started_it_is_killed(tmp_path):
    """So a suite killed between sittings leaves no run training on beside the one that the
    next sitting resumes in the same folder."""
    import subprocess
    import time

    flag = tmp_path / "stopped"
    run = (f"import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: "
           f"(open({str(flag)!r}, 'w').close(), sys.exit(0))); print('ready', flush=True); time.sleep(60)")
    trial = ("import subprocess, sys, time; from metalearn.sweep.engine import _trial_process; "
             f"p = subprocess.Popen([sys.executable, '-c', {run!r}], preexec_fn=_trial_process); "
             "print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", trial], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert parent.stdout.readline() == "ready\n"  # the run (its stdout the trial's) handles SIGTERM
    niceness = int(open(f"/proc/{child}/stat").read().split()[18])
    assert niceness == 10 or (os.getuid() != 0 and niceness == os.nice(0) > 10)  # only root may raise it
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert flag.exists()  # SIGTERM: a real run saves its checkpoint and stops
