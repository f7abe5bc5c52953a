"""``metalearn reproduce [--budget B] [--suite PATH] [--out DIR] [--address ADDR] [--readme]``:
the whole comparison of a suite spec at one budget, run as sweep trials on Ray Tune (finished
runs reused, stopped ones resumed), then its report (docs/report.md)."""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from metalearn.sweep.comparison import (Run, broken_links, html_report, markdown, report_data,
                                        write_readme_table)
from metalearn.sweep.engine import METALEARN, SweepError, run_trials, trial_run_dir
from metalearn.sweep.spec import SpecError
from metalearn.sweep.suite import Entry, Suite, SuiteTrial, load_suite, suite_trials
from metalearn.sweep.summary import read_results, unfinished
from metalearn.tracking.run_folder import RESULTS_FILE

SUITE = Path("benchmarks/suites/learners/suite.yaml")
README = Path("README.md")


def reproduce(suite_path: Path | None = None, budget: str = "smoke", out: Path | None = None,
              address: str | None = None, readme: bool = False, command: Sequence[str] = METALEARN,
              report_only: bool = False) -> int:
    """0 when every trial finished and the report was written, 1 otherwise (each failure is
    in the report). ``command`` starts a run (tests give a stand-in); ``report_only`` starts
    none and reports the runs finished so far."""
    suite_path = suite_path or SUITE
    out = out or Path(f"benchmarks/results/report_{budget}")
    try:
        suite = load_suite(suite_path)
        trials = suite_trials(suite, budget, suite_path)
        rows = (_finished_rows(trials) if report_only else
                run_trials(trials, suite.resources, suite.output_dir / budget, command, address))
    except (SpecError, SweepError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    left_out: list[str] = []
    runs = _suite_runs(trials, rows, f"{budget} budget", suite, left_out) + _external_runs(suite, left_out)
    invocation = "metalearn " + shlex.join(["reproduce", "--budget", budget, "--suite", str(suite_path),
                                            "--out", str(out), *(["--readme"] if readme else []),
                                            *(["--report-only"] if report_only else [])])
    header = {"suite": str(suite_path), "budget": budget, "budget_description": suite.budgets[budget],
              "schedule": f"{budget} budget", "command": invocation, "left_out": left_out}
    sections = [section.model_dump(mode="json") for section in suite.sections]
    data = report_data(sections, runs, header)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "report.md").write_text(markdown(data))
    page = out / "report.html"
    page.write_text(html_report(data, runs, out))
    problems = broken_links(page)
    counts = Counter(row["status"] or "stopped" for row in rows)  # no status: stopped by Ctrl-C
    print(f"{len(trials)} trials: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    print(f"report written to {page}, {out / 'report.md'} and {out / 'report.json'}")
    if readme:
        write_readme_table(README, out / "report.json")
        print(f"the learner table of {README} written from {out / 'report.json'}")
    for problem in problems:
        print(f"error: {page}: {problem}", file=sys.stderr)
    if counts["failed"]:
        print(f"error: {counts['failed']} of {len(trials)} trials failed (see the report's left-out list)",
              file=sys.stderr)
    if counts["stopped"] or len(rows) < len(trials):
        print(f"error: {counts['stopped'] + len(trials) - len(rows)} of {len(trials)} trials were stopped or "
              "did not start: run the same command again to run them, reusing the finished ones", file=sys.stderr)
    return 1 if counts["failed"] or counts["stopped"] or problems or len(rows) < len(trials) else 0


def _finished_rows(trials: list[SuiteTrial]) -> list[dict]:
    """Rows of the trials whose runs have finished, as a sweep reusing them would give."""
    rows = []
    for trial in trials:
        folder = trial_run_dir(trial)
        if (folder / RESULTS_FILE).is_file() and not unfinished(folder, read_results(folder)):
            rows.append({"run_dir": str(folder), "status": "reused", "error": None})
    return rows


def _suite_runs(trials: list[SuiteTrial], rows: list[dict], schedule: str, suite: Suite,
                left_out: list[str]) -> list[Run]:
    """The suite's finished runs, in the suite's order; failed and unfinished ones noted."""
    by_folder = {str(trial_run_dir(trial)): trial for trial in trials}
    rows_by_folder = {row["run_dir"]: row for row in rows}
    runs = []
    for folder, trial in by_folder.items():
        row = rows_by_folder.get(folder)
        if row is None:
            left_out.append(f"{folder}: not run (the suite was stopped; run the same command again)")
            continue
        if row["status"] in (None, "failed"):
            why = f"failed: {row['error']}" if row["error"] else "stopped before it finished"
            left_out.append(f"{trial.label} ({row['scenario'] or 'few-shot'}, seed {row['seed']}): {why}")
            continue
        results = read_results(folder)
        note = unfinished(folder, results)
        if note:
            left_out.append(note)
            continue
        entry = _entry(suite, trial.section, trial.label)
        runs.append(Run(results, trial.section, trial.label, schedule, _relative(Path(folder)),
                        entry.paper if entry else "", _docs(entry)))
    return runs


def _external_runs(suite: Suite, left_out: list[str]) -> list[Run]:
    """The runs made outside the suite, each labelled with its schedule."""
    runs = []
    for section in suite.sections:
        for external in section.external:
            for path in external.paths():
                results = read_results(path)
                note = unfinished(path, results)
                if note:
                    left_out.append(note)
                    continue
                label = external.label or (path.name.split("-")[0] if path.is_file() else results.learner)
                entry = _entry(suite, section.name, label)
                runs.append(Run(results, section.name, label, external.schedule, path,
                                entry.paper if entry else "", _docs(entry)))
    return runs


def _entry(suite: Suite, section: str, label: str) -> Entry | None:
    for candidate in suite.sections:
        if candidate.name == section:
            return next((entry for entry in candidate.entries if entry.label == label), None)
    return None


def _docs(entry: Entry | None) -> str | None:
    return entry.docs.as_posix() if entry and entry.docs else None


def _relative(path: Path) -> Path:
    """``path`` from the working folder (the repository) where it lies inside it."""
    try:
        return path.absolute().relative_to(Path.cwd())
    except ValueError:
        return path
