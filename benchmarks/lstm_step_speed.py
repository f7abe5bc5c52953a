"""The learned optimizers' LSTM over many coordinates: our fused step against PyTorch's own.

Both learned optimizers run a small LSTM (20 units) over a batch of every coordinate of a
network: 15 910 rows for the LSTM optimizer's MNIST optimisee, 28 000 for the meta-LSTM's Conv4.
This times, in one run on the same inputs, a 2-layer stack's forward and backward pass with
``coordinatewise.lstm_step`` (one matmul and one sigmoid per layer), with ``nn.LSTMCell`` per
layer, and with ``nn.LSTM`` (oneDNN on the CPU), after checking that all three agree.

    python benchmarks/lstm_step_speed.py   # writes benchmarks/results/lstm_step_speed_<device>.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from metalearn.learners.coordinatewise import lstm_step

RESULTS = Path(__file__).parent / "results"


def stacked(step: Callable, cells: nn.ModuleList, x: torch.Tensor, state: list) -> torch.Tensor:
    """The top layer's h after one step of the stack, each layer stepped by ``step``."""
    for cell, (h, c) in zip(cells, state):
        x, _ = step(cell, x, (h, c))
    return x


def median_ms(function: Callable[[], None], device: torch.device, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinates", type=int, nargs="+", default=[15910, 28000])
    parser.add_argument("--hidden", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cells = nn.ModuleList(nn.LSTMCell(2 if k == 0 else args.hidden, args.hidden)
                          for k in range(2)).to(device)
    lstm = nn.LSTM(2, args.hidden, num_layers=2).to(device)
    with torch.no_grad():  # the same weights in nn.LSTM's layout
        for k, cell in enumerate(cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(lstm, f"{name}_l{k}").copy_(getattr(cell, name))
    report = {"command": "python benchmarks/lstm_step_speed.py", "device": str(device),
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "hidden": args.hidden, "layers": 2, "repeats": args.repeats, "rows": []}
    for n in args.coordinates:
        x = torch.randn(n, 2, device=device)
        state = [(torch.randn(n, args.hidden, device=device), torch.randn(n, args.hidden, device=device))
                 for _ in cells]
        h0, c0 = (torch.stack(s) for s in zip(*state))
        ways = {
            "fused lstm_step": lambda: stacked(lstm_step, cells, x, state),
            "nn.LSTMCell": lambda: stacked(lambda cell, x, s: cell(x, s), cells, x, state),
            "nn.LSTM": lambda: lstm(x[None], (h0, c0))[0][0],
        }
        with torch.no_grad():
            outputs = {name: way() for name, way in ways.items()}
        error = max(float((out - outputs["nn.LSTMCell"]).abs().max()) for out in outputs.values())
        row = {"coordinates": n, "max_abs_difference": error}
        for name, way in ways.items():
            row[f"{name} forward+backward ms"] = median_ms(lambda: way().sum().backward(), device,
                                                           args.repeats)
        fused = row["fused lstm_step forward+backward ms"]
        row["nn.LSTMCell / fused"] = row["nn.LSTMCell forward+backward ms"] / fused
        row["nn.LSTM / fused"] = row["nn.LSTM forward+backward ms"] / fused
        report["rows"].append(row)
        print(json.dumps(row))
    out = RESULTS / f"lstm_step_speed_{device.type}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
