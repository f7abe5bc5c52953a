"""The console shows progress without flooding a log, a line per task and the results tables."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from sample_run import complete
from metalearn.results import RunResults
from metalearn.tracking import ConsoleReporter, comparison_table, results_table


def render(table) -> str:
    console = Console(file=io.StringIO(), width=120)
    console.print(table)
    return console.file.getvalue()


def test_results_table_has_every_task_and_the_metrics_in_percent(finished) -> None:
    text = render(results_table(finished))
    for expected in ("0/1", "2/3", "4/5", "after task 2", "before training",
                     "97.00", "50.00",  # R[2, 2] and b[0]
                     "acc", "72.33", "bwt", "-38.50", "forgetting", "42.00"):
        assert expected in text, expected


def test_results_table_of_a_partial_run_shows_the_last_completed_row(partial) -> None:
    text = render(results_table(partial))
    assert "after task 1" in text
    assert "stopped after 2 of 3 tasks" in " ".join(text.split())  # the title wraps
    assert "98.00" in text and "25.00" in text  # row 1 of R


def test_results_table_shows_confidence_intervals_of_episodic_runs() -> None:
    results = RunResults.empty("omniglot", "maml", None, 0, ["omniglot"], [600], episodic=True)
    results.accuracy[0, 0], results.interval[0, 0], results.completed_tasks = 0.9512, 0.0043, 1
    results.metrics = {"acc": 0.9512, "acc_ci95": 0.0043, "bwt": None}  # None: NaN after JSON
    text = render(results_table(results))
    assert "95.12 ± 0.43" in text and "acc_ci95" in text and "bwt" in text


def test_comparison_table_has_a_row_per_run(finished) -> None:
    other = complete(RunResults.from_dict(finished.to_dict()))
    other.learner, other.scenario, other.metrics = "joint", None, {"acc": 0.9, "fwt": 0.01}
    text = render(comparison_table([finished, other]))
    for expected in ("finetune", "joint", "class", "3/3", "72.33", "90.00", "fwt", "1.00"):
        assert expected in text, expected


def test_reporter_in_a_log_file_prints_a_few_lines_and_the_table(tmp_path: Path, drive) -> None:
    output = io.StringIO()  # not a terminal, like CI logs
    drive(ConsoleReporter(Console(file=output, width=120)), tmp_path)
    text = output.getvalue()
    lines = text.splitlines()
    assert f"run folder: {tmp_path}" in text
    assert "before training: mean accuracy 40.00% over 3 tasks" in text
    assert "after task 2 (4/5), 3 of 3: mean accuracy 72.33% on seen tasks" in text
    progress = [line for line in lines if line.startswith("step ")]
    assert 5 <= len(progress) <= 11  # about one line per tenth of the 60 steps, not one per step
    assert "step 1/60: task 0 (0/1)  loss 1.0000" in progress[0]
    assert "\r" not in text and "\x1b" not in text  # no cursor movement in a log
    assert "60/60" in text  # the final state of the bar, printed once
    assert "72.33" in text.split("60/60")[1]  # the results table comes after the bar
    validation = [line for line in lines if line.startswith("validation")]
    assert len(validation) == 6  # every 10 of the 60 steps
    assert validation[1] == ("validation at step 20: 0/1 60.00%, 2/3 50.00%, 4/5 40.00%; "
                             "mean over seen tasks 60.00%")  # task 0 is the only one seen
    assert validation[3].endswith("mean over seen tasks 65.00%")  # step 40, task 1: (70 + 60) / 2
    assert lines[-1] == f"results, figures and checkpoint in: {tmp_path}"  # the closing line


def test_validation_of_a_single_task_has_no_mean(tmp_path: Path) -> None:
    output = io.StringIO()
    reporter = ConsoleReporter(Console(file=output, width=120))
    reporter.log_validation(0, 500, {"omniglot": 0.9125})
    assert output.getvalue() == "validation at step 500: omniglot 91.25%\n"


def test_reporter_on_a_terminal_draws_the_bar_instead_of_lines(tmp_path: Path, drive) -> None:
    output = io.StringIO()
    drive(ConsoleReporter(Console(file=output, width=120, force_terminal=True)), tmp_path)
    text = output.getvalue()
    assert "step 1/60" not in text and "60/60" in text and "task 2 (4/5)" in text


def test_a_resumed_run_starts_the_bar_where_it_stopped(tmp_path: Path, partial) -> None:
    output = io.StringIO()
    reporter = ConsoleReporter(Console(file=output, width=120))
    reporter.start(tmp_path, {}, {}, total_steps=60)
    reporter.log_train(2, 0, 41, {"loss": 0.5})  # no log_task(-1): b was measured before
    assert reporter.progress.tasks[0].completed == 41
    reporter.finish(complete(partial))
    reporter.close()  # after finish: nothing left to stop
    assert "step 41/60: task 2  loss 0.5000" in output.getvalue()
