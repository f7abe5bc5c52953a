"""A process of a run leaves the process group cleanly: after ``shutdown`` gloo's threads are
gone, even when torch._dynamo (imported by every torch.optim optimizer) is first imported
after the group was joined. A thread left behind aborts about one exit in ten."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_episodic import torchrun

SCRIPT = '''
import os, sys, torch
from metalearn import distributed
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
distributed.init_from_environment(torch.device("cpu"))
torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)  # imports torch._dynamo
distributed.sum_in_order([torch.ones(3)])
distributed.shutdown()
with open(os.path.join(sys.argv[1], "rank" + os.environ["RANK"]), "w") as out:
    out.write(f"{before} {threads()}")
'''


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_leaving_the_group_joins_its_threads(tmp_path):
    script = tmp_path / "leave.py"
    script.write_text(SCRIPT)
    finished = torchrun(str(script), str(tmp_path))
    assert finished.returncode == 0, finished.stderr[-3000:]
    counts = [(tmp_path / f"rank{rank}").read_text().split() for rank in (0, 1)]
    assert all(before == after for before, after in counts), \
        f"threads before joining and after leaving, per process: {counts}"
