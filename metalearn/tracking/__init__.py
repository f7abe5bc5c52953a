"""Reporting a run: console progress and tables, the run folder and its plots, wandb.

The protocol calls a :class:`Tracker`; nothing here imports the rest of metalearn except the
plain :class:`metalearn.results.RunResults` and the file helpers of :mod:`metalearn.files`,
so results can be reported and compared without the protocol.
"""

from metalearn.tracking.base import Tracker, Trackers
from metalearn.tracking.console import ConsoleReporter, comparison_table, results_table
from metalearn.tracking.plots import (
    accuracy_matrix_figure,
    accuracy_per_task_figure,
    learning_curves_figure,
    plot_loss_curves,
    save_run_figures,
)
from metalearn.tracking.run_folder import RunFolder, claim_run_dir, load_results
from metalearn.tracking.wandb_tracker import WandbTracker, has_credentials, resolve_mode

__all__ = [
    "ConsoleReporter",
    "RunFolder",
    "Tracker",
    "Trackers",
    "WandbTracker",
    "accuracy_matrix_figure",
    "accuracy_per_task_figure",
    "claim_run_dir",
    "comparison_table",
    "has_credentials",
    "learning_curves_figure",
    "load_results",
    "plot_loss_curves",
    "resolve_mode",
    "results_table",
    "save_run_figures",
]
