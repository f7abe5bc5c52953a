"""Reporting a run: console progress and tables, the run folder and its plots, wandb.

The protocol calls a :class:`Tracker`; nothing here imports the rest of metalearn except the
plain :class:`metalearn.results.RunResults` and the file helpers of :mod:`metalearn.files`,
so results can be reported and compared without the protocol.
"""

from metalearn.tracking.base import Tracker, Trackers
from metalearn.tracking.console import ConsoleReporter, comparison_table, results_table
from metalearn.tracking.plots import plot_accuracy_matrix, plot_learning_curves, plot_loss_curves
from metalearn.tracking.run_folder import RunFolder, claim_run_dir, load_results
from metalearn.tracking.wandb_tracker import WandbTracker, has_credentials, resolve_mode

__all__ = [
    "ConsoleReporter",
    "RunFolder",
    "Tracker",
    "Trackers",
    "WandbTracker",
    "claim_run_dir",
    "comparison_table",
    "has_credentials",
    "load_results",
    "plot_accuracy_matrix",
    "plot_learning_curves",
    "plot_loss_curves",
    "resolve_mode",
    "results_table",
]
