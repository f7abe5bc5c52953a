"""Memory over many MAML meta-training iterations: does it grow, and how much does the batched
path hold at its peak per episode beside the loop?

Each path (second-order MAML looped or vmapped over episodes, first-order MAML looped) is the
real learner (``get_learner("maml")``) taking ``train_step`` on a new meta-batch of random
Omniglot-sized episodes (5-way 1-shot, 15 queries per class, 1x28x28 images; random pixels are
enough for memory) every iteration, so a reference our code keeps from one step to the next
shows here. After ``--warmup`` iterations (Adam's state and the allocator's pools exist by
then) memory is read every ``--every`` iterations:

- the memory in use: on CUDA the allocator's ``memory_allocated``; on a CPU the process's
  resident set (``/proc/self/statm``, Linux) after freed heap went back to the OS
  (``malloc_trim``), so that what the allocator merely caches is not counted;
- the peak since the last reading: ``max_memory_allocated`` on CUDA, the resident set's
  high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) on a CPU;
- the tensors Python can reach (``gc``): their number and the bytes of their storages.

Growth is the least-squares slope of each against the iteration (bytes per iteration) and the
growth that slope makes over the measured iterations; a path grows when live tensors grow at
all (their count and bytes repeat exactly from step to step when nothing leaks) or when the
fitted memory growth exceeds ``--tolerance-mib``. Peak per episode is the peak above the memory
in use after warm-up, divided by the meta-batch: vmap holds every episode's graph at once, the
loop one episode's at a time (so its figure per episode shrinks as the meta-batch grows).

    python benchmarks/memory_growth.py --device cpu --threads 2 --hidden 16 --meta-batch 4 \\
        --iterations 1000 --out benchmarks/results/memory_growth_cpu.json
    python benchmarks/memory_growth.py --device cuda --iterations 1000   # Conv4 64, meta-batch 32
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from metalearn.learners import Learner, LearnerContext, get_learner
from metalearn.models import Conv4
from metalearn.tasks import EpisodeBatch

from maml_speed import Memory, cpu_name  # benchmarks/ is on the path of its scripts

RESULTS = Path(__file__).parent / "results"
N_WAY, K_SHOT, Q_QUERY, SIZE = 5, 1, 15, 28
PATHS = {  # name: MAML's options beside the inner learning rate and steps
    "maml-vmap": {"batching": "vmap"},
    "maml-loop": {"batching": "loop"},
    "fomaml-loop": {"batching": "loop", "first_order": True},
}
MiB = 2**20


def build_learner(path: str, hidden: int, inner_steps: int, device: torch.device) -> Learner:
    """MAML as a run builds it (Conv4 with ``hidden`` filters), with the options of ``path``."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose from {sorted(PATHS)}")
    torch.manual_seed(0)
    cls = get_learner("maml")
    return cls(Conv4(N_WAY, hidden=hidden).to(device),
               cls.Options(inner_lr=0.4, inner_steps=inner_steps, **PATHS[path]),
               LearnerContext(None, None, device, 0))


def random_episodes(meta_batch: int, generator: torch.Generator) -> EpisodeBatch:
    """A meta-batch of 5-way 1-shot episodes of random 28x28 images, on the generator's device."""
    device = generator.device

    def part(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(meta_batch, N_WAY * per_class, 1, SIZE, SIZE, generator=generator, device=device)
        y = torch.arange(N_WAY, device=device).repeat_interleave(per_class).expand(meta_batch, -1)
        return x, y

    return EpisodeBatch(*part(K_SHOT), *part(Q_QUERY))


def training(learner: Learner, meta_batch: int, device: torch.device) -> Callable[[int], object]:
    """One meta-training iteration of ``learner`` per call, each on a new random meta-batch."""
    generator = torch.Generator(device).manual_seed(0)
    return lambda iteration: learner.train_step(random_episodes(meta_batch, generator))


def live_tensors() -> tuple[int, int]:
    """(number, bytes) of the tensors Python can reach, each storage counted once."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance on deprecated torch.distributed objects warns
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    storages = {}
    for tensor in tensors:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return len(tensors), sum(storages.values())


def slope(xs: list[int], ys: list[int]) -> float:
    """Least-squares slope of ``ys`` against ``xs``; 0 for fewer than two points."""
    return statistics.linear_regression(xs, ys).slope if len(xs) > 1 else 0.0


def measure_growth(step: Callable[[int], object], device: torch.device, iterations: int, warmup: int,
                   every: int, max_seconds: float | None = None) -> dict:
    """Run ``step(k)`` for k < ``iterations`` and read memory after ``warmup`` iterations and
    every ``every`` after (stopping at a reading once ``max_seconds`` have passed): the readings,
    the slope and fitted growth of each quantity, and the peak above the memory in use after
    warm-up."""
    if not 0 <= warmup < iterations or every < 1:
        raise ValueError(f"need 0 <= warmup < iterations and every >= 1, got warmup={warmup}, "
                         f"iterations={iterations}, every={every}")
    memory = Memory(device)
    readings, peak = [], 0
    start = time.perf_counter()
    for k in range(iterations + 1):
        if k >= warmup and (k - warmup) % every == 0 or k == iterations:
            count, nbytes = live_tensors()
            window_peak = memory.peak() if readings else None
            readings.append({"iteration": k, "memory_bytes": memory.in_use(), "window_peak_bytes": window_peak,
                             "live_tensors": count, "live_tensor_bytes": nbytes})
            peak = max(peak, window_peak or 0)
            memory.reset_peak()
            if k == iterations or max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
        step(k)
    seconds = time.perf_counter() - start
    xs = [r["iteration"] for r in readings]
    span = xs[-1] - xs[0]
    report = {"iterations_run": xs[-1], "first_reading": xs[0], "seconds": round(seconds, 1),
              "peak_above_start_mib": round((peak - readings[0]["memory_bytes"]) / MiB, 2), "growth": {}}
    for key in ("memory_bytes", "live_tensors", "live_tensor_bytes"):
        values = [r[key] for r in readings]
        fitted = slope(xs, values)
        report["growth"][key] = {"slope_per_iteration": round(fitted, 3), "fitted": round(fitted * span, 1),
                                 "end_minus_start": values[-1] - values[0]}
    in_use = report["growth"]["memory_bytes"]
    report["memory_growth_mib"] = {"fitted": round(in_use["fitted"] / MiB, 2),
                                   "end_minus_start": round(in_use["end_minus_start"] / MiB, 2)}
    report["readings"] = readings
    return report


def growth_problems(report: dict, tolerance_mib: float) -> list[str]:
    """Why ``report`` shows growth: live tensors that grow at all, or memory whose fitted growth
    over the run exceeds ``tolerance_mib``; empty where it is flat."""
    growth = report["growth"]
    tensors, tensor_bytes, memory = growth["live_tensors"], growth["live_tensor_bytes"], growth["memory_bytes"]
    problems = []
    if tensors["end_minus_start"] > 0 or tensors["fitted"] >= 1:
        problems.append(f"{tensors['end_minus_start']} more live tensors at the end than after warm-up "
                        f"({tensors['slope_per_iteration']} per iteration)")
    if tensor_bytes["end_minus_start"] > 0:
        problems.append(f"live tensors hold {tensor_bytes['end_minus_start']} bytes more at the end")
    if memory["fitted"] > tolerance_mib * MiB:
        problems.append(f"memory grew {memory['fitted'] / MiB:.1f} MiB over the run (fitted "
                        f"{memory['slope_per_iteration']:.0f} bytes per iteration), more than {tolerance_mib} MiB")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--every", type=int, default=50, help="iterations between readings")
    parser.add_argument("--max-seconds", type=float,
                        help="per path: stop at the first reading after this long (default: never)")
    parser.add_argument("--hidden", type=int, default=64, help="Conv4's filters per layer")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--tolerance-mib", type=float, default=8.0,
                        help="fitted memory growth over the run above which a path grows")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    out = args.out or RESULTS / f"memory_growth_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    result = {
        "command": "python " + shlex.join(sys.argv),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "memory_in_use": "torch.cuda.memory_allocated" if device.type == "cuda"
        else "resident set after malloc_trim (/proc/self/statm)",
        "setup": {"n_way": N_WAY, "k_shot": K_SHOT, "q_query": Q_QUERY, "image": [1, SIZE, SIZE],
                  "inputs": "random, a new meta-batch every iteration", "model": f"conv4 ({args.hidden} filters)",
                  "meta_batch": args.meta_batch, "inner_steps": args.inner_steps, "inner_lr": 0.4,
                  "iterations": args.iterations, "warmup": args.warmup, "every": args.every,
                  "max_seconds": args.max_seconds, "tolerance_mib": args.tolerance_mib},
        "results": results,
    }
    for path in args.paths:
        learner = build_learner(path, args.hidden, args.inner_steps, device)
        report = measure_growth(training(learner, args.meta_batch, device), device, args.iterations,
                                args.warmup, args.every, args.max_seconds)
        del learner
        report["peak_per_episode_mib"] = round(report["peak_above_start_mib"] / args.meta_batch, 2)
        report["problems"] = growth_problems(report, args.tolerance_mib)
        report["grows"] = bool(report["problems"])
        results[path] = report
        growth = report["growth"]
        print(f"{path}: {report['iterations_run']} iterations in {report['seconds']} s; memory "
              f"{report['memory_growth_mib']['fitted']:+.2f} MiB fitted "
              f"({report['memory_growth_mib']['end_minus_start']:+.2f} MiB end - start), live tensors "
              f"{growth['live_tensors']['end_minus_start']:+d}; peak {report['peak_above_start_mib']} MiB, "
              f"{report['peak_per_episode_mib']} MiB per episode; "
              f"{'GROWS: ' + '; '.join(report['problems']) if report['grows'] else 'flat'}", flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # after each path: a run cut short keeps its paths
    print(f"written to {out}")


if __name__ == "__main__":
    main()
