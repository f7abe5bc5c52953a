"""``metalearn sweep SPEC [--address ADDR]``: validate the spec, run its trials, print and write
the summary and the best setting."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console

from metalearn.sweep.engine import METALEARN, SweepError, run_sweep
from metalearn.sweep.report import summary_table, write_best, write_summary
from metalearn.sweep.spec import SpecError, load_spec


def sweep(spec_path: Path, address: str | None = None, command: Sequence[str] = METALEARN) -> int:
    """0 when every trial finished, 1 when one failed (each failure is in the summary) or the
    sweep could not start. ``command`` starts a run (tests give a stand-in)."""
    try:
        spec = load_spec(spec_path)
        rows = run_sweep(spec, command, address)
    except (SpecError, SweepError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    invocation = "metalearn " + shlex.join(["sweep", str(spec_path)])
    console = Console()
    console.print(summary_table(rows, spec.metric))
    console.print(f"summary written to {write_summary(rows, spec, invocation)}")
    if spec.best is not None:
        write_best(rows, spec, invocation)
        console.print(f"best setting written to {spec.best}")
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        print(f"error: {len(failed)} of {len(rows)} trials failed (see the summary)", file=sys.stderr)
    return 1 if failed else 0
