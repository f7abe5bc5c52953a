"""Meta-training iterations per second of second-order MAML: ours (processes, loop, vmap, compiled)
against a plain per-episode autograd loop, learn2learn's MAML wrapper, higher's innerloop_ctx and
TorchOpt's MetaSGD.

Omniglot 5-way 1-shot, 15 queries per class, Conv4, meta-batch 32, one inner SGD step at 0.4,
outer Adam 1e-3 (Finn et al. 2017). Every implementation starts from the same weights and gets
the same episodes. Before any timing, each computes the first meta-gradient in float64, which
must equal ours (loop) to 1e-10 of its norm; one that disagrees is reported and not timed. The
float32 meta-gradient is not a test of agreement: some 1-shot episodes amplify roundoff ~10^4
times through the inner step's BatchNorm (two in this benchmark's first meta-batch are 6e-4 and
2e-4 off in float32, the others about 1e-6), so each implementation's float32 error against the float64
meta-gradient is reported beside it instead, with our loop's float32 error on each episode of
the first meta-batch alone. The result goes to benchmarks/results/ with the
machine, the median time of an iteration (the implementations take turns, so drift in the
machine's speed falls on all of them alike), FLOPs per iteration (counted by PyTorch's
FlopCounterMode), the achieved rate against a measured matrix-multiply peak, and each
implementation's peak memory while it computes that first meta-gradient (every implementation,
agreeing or not): on CUDA the allocator's peak; on a Linux CPU the resident set's high-water mark above the resident memory just before.

``--tf32 off`` runs float32 convolutions and matrix products in full float32 on a GPU (PyTorch
lets cuDNN convolutions use TF32 by default; docs/precision.md), ``--tf32 on`` allows TF32 for
both; the float64 agreement is unaffected either way, the float32 errors are what change.
``ours-compiled`` is the vmap path with the meta-batch's loss compiled by torch.compile (its
first iteration compiles, minutes on a CPU). ``ours-processes`` (CPU only) is MAML's distributed
meta-gradient over ``--processes`` processes (default 2) with one intra-op thread each, joined by
gloo: each differentiates its share of the meta-batch and the shares' gradients are summed in
rank order (metalearn.distributed), how a run uses several CPU cores. Its processes
are started once, by torch.multiprocessing, and take their turn like the others: this process
sends each of them the command, they meet at a barrier before and after the step, and their
rank 0 returns the wall time of the whole step between the two barriers; its peak memory is
rank 0's alone.

    python benchmarks/maml_speed.py --iterations 20            # CPU or GPU, whichever is there
    python benchmarks/maml_speed.py --device cpu --threads 2 --iterations 5
    python benchmarks/maml_speed.py --device cpu --threads 2 --iterations 20 \
        --implementations ours-processes ours-loop learn2learn higher
    python benchmarks/maml_speed.py --implementations ours-vmap ours-loop --iterations 0 \
        --n-way 20 --meta-batch 16 --inner-steps 5          # memory only
    python benchmarks/maml_speed.py --tf32 off --out benchmarks/results/maml_speed_cuda_tf32_off.json
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import dataclasses
import functools
import json
import os
import platform
import queue
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from metalearn.learners import LearnerContext, adam
from metalearn.learners.maml import MAML
from metalearn.models import Conv4
from metalearn.tasks import EpisodeBatch, EpisodeSampler, omniglot_few_shot

RESULTS = Path(__file__).parent / "results"
INNER_LR, OUTER_LR = 0.4, 1e-3
AGREEMENT = 1e-10  # largest error of a float64 meta-gradient, relative to its norm

MetaStep = Callable[[EpisodeBatch], None]  # accumulates one meta-batch's meta-gradient into .grad
Iteration = Callable[[int], float]  # one whole meta-iteration on meta-batch k; its seconds


def ours(model: nn.Module, steps: int, batching: str, device: torch.device) -> MetaStep:
    learner = MAML(model, MAML.Options(inner_lr=INNER_LR, inner_steps=steps, batching=batching),
                   LearnerContext(None, None, device, 0))
    return learner.meta_gradient


def ours_compiled(model: nn.Module, steps: int, device: torch.device) -> MetaStep:
    """Our vmap path under torch.compile: the meta-batch's loss, inner loop included, becomes one
    graph, and AOTAutograd traces its backward (second-order terms included) ahead of time."""
    learner = MAML(model, MAML.Options(inner_lr=INNER_LR, inner_steps=steps, batching="vmap"),
                   LearnerContext(None, None, device, 0))
    return torch.compile(learner.meta_gradient)


def autograd_loop(model: nn.Module, steps: int) -> MetaStep:
    """The textbook loop with nothing but autograd: per episode, ``autograd.grad`` with
    ``create_graph`` for the inner steps, ``functional_call`` with the adapted weights, backward."""
    names = [name for name, _ in model.named_parameters()]

    def meta_step(batch: EpisodeBatch) -> None:
        for i in range(len(batch)):
            weights = list(model.parameters())
            for _ in range(steps):
                loss = F.cross_entropy(torch.func.functional_call(model, dict(zip(names, weights)),
                                                                  (batch.support_x[i],)), batch.support_y[i])
                gradients = torch.autograd.grad(loss, weights, create_graph=True)
                weights = [w - INNER_LR * g for w, g in zip(weights, gradients)]
            logits = torch.func.functional_call(model, dict(zip(names, weights)), (batch.query_x[i],))
            (F.cross_entropy(logits, batch.query_y[i]) / len(batch)).backward()

    return meta_step


def learn2learn(model: nn.Module, steps: int) -> MetaStep:
    """learn2learn's documented loop: clone, adapt on the support loss, backward the query loss."""
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(model, lr=INNER_LR, first_order=False)

    def meta_step(batch: EpisodeBatch) -> None:
        for i in range(len(batch)):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(batch.support_x[i]), batch.support_y[i]))
            (F.cross_entropy(learner(batch.query_x[i]), batch.query_y[i]) / len(batch)).backward()

    return meta_step


def higher_ctx(model: nn.Module, steps: int) -> MetaStep:
    """higher's innerloop_ctx with a differentiable SGD, one episode at a time."""
    import higher

    inner = torch.optim.SGD(model.parameters(), lr=INNER_LR)

    def meta_step(batch: EpisodeBatch) -> None:
        for i in range(len(batch)):
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(F.cross_entropy(fmodel(batch.support_x[i]), batch.support_y[i]))
                (F.cross_entropy(fmodel(batch.query_x[i]), batch.query_y[i]) / len(batch)).backward()

    return meta_step


def torchopt_meta_sgd(model: nn.Module, steps: int) -> MetaStep:
    """TorchOpt's MAML example: MetaSGD steps on the module, its state restored after each task."""
    import torchopt

    inner = torchopt.MetaSGD(model, lr=INNER_LR)

    def meta_step(batch: EpisodeBatch) -> None:
        model_state = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
        inner_state = torchopt.extract_state_dict(inner, by="reference")
        losses = []
        for i in range(len(batch)):
            for _ in range(steps):
                inner.step(F.cross_entropy(model(batch.support_x[i]), batch.support_y[i]))
            losses.append(F.cross_entropy(model(batch.query_x[i]), batch.query_y[i]))
            torchopt.recover_state_dict(model, model_state)
            torchopt.recover_state_dict(inner, inner_state)
        torch.stack(losses).mean().backward()

    return meta_step


def build(name: str, model: nn.Module, steps: int, device: torch.device) -> MetaStep:
    """The meta-step called ``name`` (ours-<batching>, ours-compiled or a peer) over ``model``;
    ImportError where a peer is not installed."""
    if name == "ours-compiled":
        return ours_compiled(model, steps, device)
    if name.startswith("ours-"):
        return ours(model, steps, name.removeprefix("ours-"), device)
    peers = {"autograd": autograd_loop, "learn2learn": learn2learn, "higher": higher_ctx,
             "torchopt": torchopt_meta_sgd}
    return peers[name](model, steps)


def set_tf32(mode: str) -> dict[str, str | bool]:
    """Allow (``on``) or forbid (``off``) TF32 in float32 cuDNN convolutions and CUDA matrix
    products, or leave PyTorch's defaults (``default``); the settings then in force."""
    if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9, where allow_tf32 is deprecated
        if mode != "default":
            precision = "tf32" if mode == "on" else "ieee"
            torch.backends.cudnn.conv.fp32_precision = precision
            torch.backends.cuda.matmul.fp32_precision = precision
        # "none" defers to the parent setting: for matmuls, full float32 unless set otherwise
        return {"cudnn_conv": torch.backends.cudnn.conv.fp32_precision,
                "cuda_matmul": torch.backends.cuda.matmul.fp32_precision}
    if mode != "default":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = mode == "on"
    return {"cudnn_conv_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


def setup(device: torch.device, n_way: int, meta_batch: int) -> tuple[list[EpisodeBatch], nn.Module]:
    """The benchmark's four meta-batches and initial weights: every implementation gets the same."""
    train = omniglot_few_shot("maml", device=device)[0].train
    sampler = EpisodeSampler(train, n_way, 1, 15, seed=0)
    batches = [sampler.sample(meta_batch) for _ in range(4)]
    torch.manual_seed(0)
    return batches, Conv4(n_way).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def meta_gradient(meta_step: MetaStep, model: nn.Module, batch: EpisodeBatch) -> list[torch.Tensor]:
    model.zero_grad()
    meta_step(batch)
    return [p.grad.detach().clone() for p in model.parameters()]


class Memory:
    """The memory in use and its peak since the last reset: CUDA's allocator on a GPU, the
    resident set on a Linux CPU (an error naming the fix elsewhere)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cpu":
            if not Path("/proc/self/statm").is_file():
                raise RuntimeError("the resident set is read from /proc/self (Linux); on this "
                                   "system measure with --device cuda")
            self.libc = ctypes.CDLL("libc.so.6")

    def _settle(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        else:
            self.libc.malloc_trim(0)  # freed heap back to the OS: the resident set is what is live

    def in_use(self) -> int:
        self._settle()
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")

    def reset_peak(self) -> None:
        self._settle()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # the high-water mark VmHWM := VmRSS

    def peak(self) -> int:
        self._settle()
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) * 1024


def peak_memory_mib(device: torch.device, block: Callable[[], object]) -> tuple[object, int | None]:
    """``block()``'s result and its peak memory in MiB: on a GPU the allocator's peak, on a CPU
    the resident set's rise above where it was (None without Linux's /proc). Freed heap goes back
    to the OS first, so memory an earlier block freed does not hide this one's growth."""
    try:
        memory = Memory(device)
    except RuntimeError:
        return block(), None
    memory.reset_peak()
    before = memory.in_use() if device.type == "cpu" else 0
    result = block()
    return result, round((memory.peak() - before) / 2**20)


def as_float64(batch: EpisodeBatch) -> EpisodeBatch:
    return dataclasses.replace(batch, support_x=batch.support_x.double(),
                               query_x=batch.query_x.double())


def relative_error(gradient: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    scale = torch.cat([r.flatten() for r in reference]).norm()
    return max(float((g - r).norm() / scale) for g, r in zip(gradient, reference))


def timed_iteration(meta_step: MetaStep, model: nn.Module, batches: list[EpisodeBatch],
                    finish: Callable[[], None]) -> Iteration:
    """A whole meta-iteration (zero_grad, meta-gradient, fused Adam step) on meta-batch k, timed
    until ``finish()`` returns (the GPU's queue drained, or every process done)."""
    optimizer = adam(model.parameters(), OUTER_LR)

    def iteration(k: int) -> float:
        start = time.perf_counter()
        optimizer.zero_grad()
        meta_step(batches[k % len(batches)])
        optimizer.step()
        finish()
        return time.perf_counter() - start

    return iteration


def time_interleaved(implementations: dict[str, Iteration], warmup: int,
                     iterations: int) -> dict[str, dict[str, float]]:
    """Meta-iterations per second, median over ``iterations``. The implementations take turns,
    one iteration each in a rotating order, so a machine that speeds up or slows down during the
    run affects them all alike."""
    names = list(implementations)
    for k in range(warmup):
        for name in names:
            implementations[name](k)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for k in range(iterations):
        for name in names[k % len(names):] + names[:k % len(names)]:
            seconds[name].append(implementations[name](k))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {name: {"s_per_iteration": round(median, 4), "iterations_per_s": round(1 / median, 3)}
            for name, median in medians.items()}


class Processes:
    """``ours-processes``: MAML's distributed meta-gradient over ``count`` processes started by
    torch.multiprocessing, one intra-op thread each, joined by gloo. This process (which runs the
    single-process implementations, outside any process group, so that they stay unsharded) only
    hands every process each command and reads rank 0's answer."""

    def __init__(self, count: int, initial: nn.Module, batches: list[EpisodeBatch], steps: int) -> None:
        context = mp.get_context("spawn")
        self.commands = [context.SimpleQueue() for _ in range(count)]
        self.answers = context.Queue()
        self.folder = tempfile.TemporaryDirectory()  # the processes' rendezvous: a FileStore
        self.processes = mp.spawn(  # daemons: they end with this process, even if it fails
            process_main, (count, f"file://{self.folder.name}/store", initial, batches, steps,
                           self.commands, self.answers), nprocs=count, join=False, daemon=True)

    def ask(self, *command: object) -> object:
        """Every process runs ``command``; rank 0's answer. A process that fails raises here
        with its traceback (the others are stopped)."""
        for commands in self.commands:
            commands.put(command)
        while True:
            try:
                return self.answers.get(timeout=1)
            except queue.Empty:
                if self.processes.join(timeout=0):  # raises if one of them failed
                    raise RuntimeError("the processes of ours-processes ended without answering")

    def first_meta_gradient(self, float64: bool) -> tuple[list[torch.Tensor], int | None]:
        """The first meta-batch's meta-gradient summed over the processes, and rank 0's peak
        memory meanwhile; in float64 on a fresh float64 copy of the initial weights."""
        return self.ask("first", float64)

    def iteration(self, k: int) -> float:
        return self.ask("iteration", k)

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        self.processes.join()
        self.folder.cleanup()


def process_main(rank: int, count: int, store: str, initial: nn.Module, batches: list[EpisodeBatch],
                 steps: int, commands: list, answers: mp.Queue) -> None:
    """One process of ``ours-processes``: our MAML (the loop, one thread) on its shard of each
    meta-batch, until it gets None."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=count)
    device = torch.device("cpu")
    model = copy.deepcopy(initial)
    meta_step = ours(model, steps, "loop", device)
    iteration = timed_iteration(meta_step, model, batches, dist.barrier)
    while (command := commands[rank].get()) is not None:
        kind, argument = command
        if kind == "first":
            copied = copy.deepcopy(initial).double() if argument else model
            step = ours(copied, steps, "loop", device) if argument else meta_step
            batch = as_float64(batches[0]) if argument else batches[0]
            answer = peak_memory_mib(device, lambda: meta_gradient(step, copied, batch))
        else:
            dist.barrier()  # the step's time starts when every process is ready
            answer = iteration(argument)
        if rank == 0:
            answers.put(answer)
    dist.destroy_process_group()


def flops_per_iteration(meta_step: MetaStep, model: nn.Module, batch: EpisodeBatch) -> int:
    with FlopCounterMode(display=False) as counter:
        meta_gradient(meta_step, model, batch)
    return counter.get_total_flops()


def matmul_peak_gflops(device: torch.device, size: int = 4096, repeats: int = 5) -> float:
    """Measured float32 matrix-multiply rate: the machine's practical peak for this workload."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--iterations", type=int, default=20, help="timed; 0: memory only")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--implementations", nargs="+",
                        default=["ours-processes", "ours-loop", "ours-vmap", "autograd", "learn2learn",
                                 "higher", "torchopt"],
                        help="ours-processes, ours-loop, ours-vmap, ours-compiled, "
                             "autograd, learn2learn, higher, torchopt")
    parser.add_argument("--processes", type=int, default=2,
                        help="processes of ours-processes, one thread each (default 2)")
    parser.add_argument("--matmul-size", type=int, default=4096,
                        help="side of the matrices that measure the peak rate (smaller: a quicker, lower peak)")
    parser.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                        help="TF32 in float32 convolutions and matmuls on a GPU (default: PyTorch's)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tf32 = set_tf32(args.tf32)
    batches, initial = setup(device, args.n_way, args.meta_batch)

    first64 = as_float64(batches[0])

    @functools.cache
    def first_meta_gradient64(name: str) -> list[torch.Tensor]:
        model = copy.deepcopy(initial).double()
        return meta_gradient(build(name, model, args.inner_steps, device), model, first64)

    reference = first_meta_gradient64("ours-loop")
    # the float32 error of each episode alone, for our loop: where the roundoff comes from
    episode_errors = []
    for i in range(len(batches[0])):
        model32, model64 = copy.deepcopy(initial), copy.deepcopy(initial).double()
        episode_errors.append(relative_error(
            [g.double() for g in meta_gradient(build("ours-loop", model32, args.inner_steps, device),
                                               model32, batches[0][i:i + 1])],
            meta_gradient(build("ours-loop", model64, args.inner_steps, device), model64,
                          first64[i:i + 1])))
    flop_model = copy.deepcopy(initial)
    flops = flops_per_iteration(build("ours-loop", flop_model, args.inner_steps, device),
                                flop_model, batches[0])
    peak = matmul_peak_gflops(device, args.matmul_size)

    rows, timed = {}, {}
    processes = None
    for name in args.implementations:
        if name == "ours-processes":
            if device.type != "cpu":
                rows[name] = {"skipped": "CPU only: its processes share one machine's cores over gloo"}
                continue
        else:
            model = copy.deepcopy(initial)
            try:
                meta_step = build(name, model, args.inner_steps, device)
            except ImportError as error:
                rows[name] = {"skipped": f"not installed: {error}"}
                continue
        try:  # a failure (torch.compile's, say) is this implementation's row, not the run's end
            if name == "ours-processes":
                processes = Processes(args.processes, initial, batches, args.inner_steps)
                gradient, memory = processes.first_meta_gradient(float64=False)
                error = relative_error(processes.first_meta_gradient(float64=True)[0], reference)
                iteration = processes.iteration
            else:
                gradient, memory = peak_memory_mib(
                    device, lambda: meta_gradient(meta_step, model, batches[0]))
                error = relative_error(first_meta_gradient64(name), reference)
                iteration = timed_iteration(meta_step, model, batches, lambda: synchronize(device))
        except Exception as failure:
            if name == "ours-processes":
                processes = None  # stopped already, or ended with this process (daemons)
            rows[name] = {"skipped": f"failed: {type(failure).__name__}: {failure}"[:2000]}
            print(name, rows[name], flush=True)
            continue
        rows[name] = {"float64_error": error, "peak_memory_mib": memory,
                      "float32_error": relative_error([g.double() for g in gradient], reference)}
        if error > AGREEMENT:
            rows[name]["skipped"] = f"float64 meta-gradient differs from ours by {error:.2e}"
            continue
        timed[name] = iteration
        print(name, rows[name], flush=True)

    if args.iterations:
        for name, timing in time_interleaved(timed, args.warmup, args.iterations).items():
            rows[name].update(timing, achieved_gflops=round(flops / 1e9 * timing["iterations_per_s"], 1))
    if processes is not None:
        processes.close()

    baseline = rows.get("learn2learn", {}).get("iterations_per_s")
    for row in rows.values():
        if baseline and "iterations_per_s" in row:
            row["speedup_over_learn2learn"] = round(row["iterations_per_s"] / baseline, 2)
    result = {
        "command": "python " + shlex.join(sys.argv),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "tf32": tf32,
        **({"processes": args.processes} if "ours-processes" in args.implementations else {}),
        "setup": {"n_way": args.n_way, "k_shot": 1, "q_query": 15, "meta_batch": args.meta_batch,
                  "inner_steps": args.inner_steps, "inner_lr": INNER_LR, "model": "conv4 (64 filters)"},
        "gflop_per_iteration": round(flops / 1e9, 2),
        "measured_matmul_peak_gflops": round(peak, 1),
        "ours_loop_float32_error_per_episode": [float(f"{e:.2e}") for e in episode_errors],
        "results": rows,
    }
    out = args.out or RESULTS / f"maml_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
