"""``metalearn sweep``: grids and searches of ordinary runs as Ray Tune trials (docs/sweeps.md).

Ray is imported only when a sweep starts, so the package loads (and validates specs) without
the ``sweep`` extra.
"""

from metalearn.sweep.engine import SweepError, run_sweep, run_trial
from metalearn.sweep.report import best_settings, write_best, write_summary
from metalearn.sweep.spec import SpecError, SweepSpec, Trial, load_spec, trials

__all__ = ["SpecError", "SweepError", "SweepSpec", "Trial", "best_settings", "load_spec",
           "run_sweep", "run_trial", "trials", "write_best", "write_summary"]
