"""Operators dispatched per second-order MAML meta-iteration, counted with torch.profiler: how
launch-bound each path will be on a GPU, measured on any device.

The setup is benchmarks/maml_speed.py's (Omniglot 5-way 1-shot, Conv4, meta-batch 32, one inner
SGD step, the same episodes and weights for every path); one whole meta-iteration (zero_grad,
meta-gradient, Adam step) is profiled after one iteration of warm-up, which is where torch.compile
compiles. For each path the profiler's events give:

- ``aten_ops``: ATen operators called from outside any other ATen operator: what Python and the
  autograd engine dispatched;
- ``aten_ops_nested``: every ATen operator event, those that other operators call included;
- ``kernel_ops``: the operators that would launch a kernel on a GPU: ATen operators that are
  not views or allocations (``NO_KERNEL``) and call no other operator that launches one (a
  convolution that allocates its output with ``aten::empty`` counts once; ``aten::zeros``, which
  calls ``aten::fill_``, counts as its ``fill_``), plus the fused kernels torch.compile
  generated. On a CPU this includes the copies oneDNN makes to reorder a convolution's data,
  which a GPU does not; on CUDA the kernels actually launched are counted as well
  (``cuda_kernel_launches``: the runtime's launch calls).

Counts do not depend on the machine's speed or load, so they may be measured beside other work.
On the CPU (torch 2.14.1, benchmarks/results/maml_ops_cpu.json) one meta-iteration launches
21,203 kernel operators in our loop (21,025 in a plain autograd loop, 21,601 in higher), 814 with
vmap (26x fewer) and 124 compiled (50 of them fused kernels; 171x fewer): on a GPU, where each
launch costs microseconds whatever its size, the loop is launch-bound and the batched paths are
what can keep it busy.
torch.compile (``ours-compiled``) compiles for minutes on a CPU; a path that fails is reported
with its error.

    python benchmarks/maml_ops.py                     # writes benchmarks/results/maml_ops_cpu.json
    python benchmarks/maml_ops.py --device cuda       # writes benchmarks/results/maml_ops_cuda.json
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config
from torch.profiler import ProfilerActivity, profile

from maml_speed import OUTER_LR, RESULTS, build, set_tf32, setup, synchronize  # benchmarks/ is on the path
from metalearn.learners import adam

# ATen leaves that only make a tensor's metadata or storage: no kernel runs for them
NO_KERNEL = frozenset(f"aten::{name}" for name in (
    "empty", "empty_strided", "empty_like", "view", "_unsafe_view", "reshape", "_reshape_alias",
    "as_strided", "expand", "permute", "t", "transpose", "unsqueeze", "squeeze", "select",
    "slice", "alias", "detach", "lift_fresh", "unbind", "split", "chunk", "narrow", "resize_",
    "as_strided_", "resolve_conj", "resolve_neg", "_conj", "_neg_view", "expand_as", "view_as",
    "reshape_as", "movedim", "moveaxis", "flatten", "unflatten", "contiguous", "broadcast_to",
    "split_with_sizes", "unsafe_split", "swapaxes", "type_as",
    "set_", "result_type", "is_nonzero", "item", "_local_scalar_dense", "to", "_to_copy_noop",
    "size", "stride", "numel", "dim", "is_same_size", "_has_compatible_shallow_copy_type"))
CUDA_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                 "cudaGraphLaunch", "cudaLaunchCooperativeKernel")
DEFAULT_PATHS = ["ours-loop", "ours-vmap", "ours-compiled", "autograd", "higher", "learn2learn",
                 "torchopt"]


def is_aten(event) -> bool:
    return event.name.startswith("aten::")


def under_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if is_aten(parent):
            return True
        parent = parent.cpu_parent
    return False


def is_compiled_kernel(event) -> bool:
    """A kernel torch.compile's Inductor generated (C++ on a CPU, Triton on a GPU)."""
    return "cpp_fused" in event.name or event.name.startswith("triton_")


def launches_below(event) -> bool:
    """Whether ``event`` or an operator it calls launches a kernel."""
    return (is_aten(event) and event.name not in NO_KERNEL) or any(map(launches_below, event.cpu_children))


def count_operators(events) -> dict:
    """The counts of one profiled meta-iteration (see the module docstring)."""
    aten = [e for e in events if is_aten(e) and e.device_type == torch.autograd.DeviceType.CPU]
    dispatched = [e for e in aten if not under_aten(e)]
    kernels = [e for e in aten if e.name not in NO_KERNEL
               and not any(map(launches_below, e.cpu_children))]
    compiled = [e for e in events if is_compiled_kernel(e) and e.device_type == torch.autograd.DeviceType.CPU]
    counts = collections.Counter(e.name for e in kernels + compiled)
    return {"aten_ops": len(dispatched), "aten_ops_nested": len(aten),
            "kernel_ops": len(kernels) + len(compiled), "compiled_kernels": len(compiled),
            "cuda_kernel_launches": sum(e.name in CUDA_LAUNCHES for e in events),
            "top_kernel_ops": dict(counts.most_common(12))}


def profile_iteration(name: str, initial: torch.nn.Module, batch, steps: int,
                      device: torch.device) -> dict:
    """The operator counts of one meta-iteration of ``name``, after one of warm-up."""
    model = copy.deepcopy(initial)
    meta_step = build(name, model, steps, device)
    optimizer = adam(model.parameters(), OUTER_LR)

    def iteration() -> None:
        optimizer.zero_grad()
        meta_step(batch)
        optimizer.step()
        synchronize(device)

    start = time.perf_counter()
    iteration()  # warm-up: lazy initialisation, cuDNN's choices, torch.compile's compilation
    first_s = time.perf_counter() - start
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        iteration()
    return {**count_operators(profiler.events()), "first_iteration_s": round(first_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--implementations", nargs="+", default=DEFAULT_PATHS,
                        help="as in maml_speed.py; a peer that is not installed is skipped")
    parser.add_argument("--tf32", choices=["default", "on", "off"], default="default")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    tf32 = set_tf32(args.tf32)
    torch._inductor.config.cpp.enable_kernel_profile = True  # compiled C++ kernels as profiler events
    batches, initial = setup(device, args.n_way, args.meta_batch)

    rows = {}
    for name in args.implementations:
        try:
            rows[name] = profile_iteration(name, initial, batches[0], args.inner_steps, device)
        except ImportError as error:
            rows[name] = {"skipped": f"not installed: {error}"}
        except Exception as failure:  # torch.compile's, say: the row says so, the others still run
            rows[name] = {"skipped": f"failed: {type(failure).__name__}: {failure}"[:2000]}
        print(name, {k: v for k, v in rows[name].items() if k != "top_kernel_ops"}, flush=True)

    reference = rows.get("ours-loop", {}).get("kernel_ops")
    for row in rows.values():
        if reference and "kernel_ops" in row:
            row["kernel_ops_over_ours_loop"] = round(row["kernel_ops"] / reference, 3)
    result = {
        "command": "python " + shlex.join(sys.argv), "device": str(device),
        "torch": torch.__version__, "tf32": tf32,
        "setup": {"n_way": args.n_way, "k_shot": 1, "q_query": 15, "meta_batch": args.meta_batch,
                  "inner_steps": args.inner_steps, "model": "conv4 (64 filters)"},
        "counted": "one meta-iteration (zero_grad, meta-gradient, Adam step) after one of warm-up",
        "results": rows,
    }
    print(f"\n{'path':<15}{'aten ops':>10}{'nested':>10}{'kernels':>10}{'cuda launches':>15}{'vs loop':>9}")
    for name, row in rows.items():
        if "skipped" in row:
            print(f"{name:<15} {row['skipped'][:100]}")
        else:
            print(f"{name:<15}{row['aten_ops']:>10}{row['aten_ops_nested']:>10}{row['kernel_ops']:>10}"
                  f"{row['cuda_kernel_launches']:>15}{row.get('kernel_ops_over_ours_loop', ''):>9}")
    out = args.out or RESULTS / f"maml_ops_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
