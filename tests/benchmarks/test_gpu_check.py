"""scripts/gpu_check.sh runs every step end to end on a CPU with its tiny budget (about 30 s on 2
cores), so the GPU check cannot rot between the rare sessions that have a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
STEPS = ["maml_speed", "maml_speed_compiled", "maml_speed_tf32_off", "maml_speed_20way", "maml_ops",
         "maml_ops_compiled", "plasticity_speed", "memory_growth", "nccl_2proc"]


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})


def test_tiny_budget_writes_every_figure_it_names(tmp_path, data_root):
    done = gpu_check("--device", "cpu", "--budget", "tiny", "--out", str(tmp_path),
                     "--logs", str(tmp_path / "logs"))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    statuses = {step["step"]: step["status"] for step in summary["steps"]}
    assert list(statuses) == STEPS
    logs = {name: (tmp_path / "logs" / f"{name}.log") for name in statuses}
    failed = {name: logs[name].read_text()[-2000:] for name, status in statuses.items() if status == "failed"}
    assert not failed
    # torch.compile and NCCL are for --budget full on GPUs; each says why it was skipped
    assert {name for name, status in statuses.items() if status == "skipped"} == {
        "maml_speed_compiled", "maml_ops_compiled", "nccl_2proc"}
    assert all(step["note"] for step in summary["steps"] if step["status"] == "skipped")
    outputs = {step["step"]: json.loads(Path(step["output"]).read_text())
               for step in summary["steps"] if step["status"] == "ok"}
    assert all(Path(step["output"]).parent == tmp_path for step in summary["steps"] if step["output"])
    for name in ("maml_speed", "maml_speed_tf32_off", "maml_speed_20way"):
        rows = outputs[name]["results"]
        assert all(row["float64_error"] <= 1e-10 for row in rows.values()), rows
    assert outputs["maml_speed"]["results"]["ours-processes"]["iterations_per_s"] > 0  # 2 gloo processes
    assert outputs["maml_speed_tf32_off"]["tf32"] == {"cudnn_conv": "ieee", "cuda_matmul": "ieee"}
    ops = outputs["maml_ops"]["results"]
    assert 0 < ops["ours-vmap"]["kernel_ops"] < ops["ours-loop"]["kernel_ops"]
    assert outputs["plasticity_speed"]["si"]["ours"]["median_s"] > 0
    growth = outputs["memory_growth"]["results"]
    assert set(growth) == {"maml-vmap", "maml-loop"}
    assert all(row["iterations_run"] == 6 and row["peak_per_episode_mib"] > 0 for row in growth.values())


def test_refuses_an_unknown_budget_before_running_anything(tmp_path):
    done = gpu_check("--budget", "huge", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "--budget is full or tiny, not 'huge'" in done.stderr
    assert not list(tmp_path.iterdir())
