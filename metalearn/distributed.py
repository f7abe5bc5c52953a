"""One run over several processes: the rank, the shard of a batch and the sums across processes.

``torchrun --nproc-per-node N -m metalearn run CONFIG`` starts N processes with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in their environment; :func:`init_from_environment` joins them into
one process group (gloo on CPUs, NCCL on GPUs, one GPU per process). Every process draws the same
batches from the run's seed, takes its :func:`shard` of them, and the results are combined with
:func:`sum_in_order` and :func:`gather_in_order`, which add and concatenate in rank order
(never ``all_reduce``, whose order of addition is not fixed), so a result does not depend on
timing. With one process (``WORLD_SIZE`` unset or 1) nothing is started and every function here
returns its input: a single process runs exactly as without this module. docs/distributed.md
says how to launch runs and what each learner supports.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

# The longest a process waits for the others at a collective (evaluations and checkpoints of
# one process make the others wait); past it the run stops with ProcessLost.
TIMEOUT = timedelta(minutes=10)
Result = TypeVar("Result")
_device = torch.device("cpu")  # where the process group's collectives take their tensors


class ProcessLost(RuntimeError):
    """Another process of the run died or stopped answering; ``run_dir`` (set by the protocol)
    keeps the last checkpoint."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"process {rank()} of {world_size()} lost contact with the other processes of the run "
            f"({reason}): one of them died (its own output says why) or did not answer within "
            f"{TIMEOUT.total_seconds():.0f} s")
        self.run_dir = None


def init_from_environment(device: torch.device) -> None:
    """Join the process group torchrun's environment describes (nothing with one process, or if
    joined already): NCCL when ``device`` is a GPU (``process_device`` chose it), else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    # Imported before the group exists, torch._dynamo (which every torch.optim optimizer
    # imports) leaves it alone; imported after, it keeps a reference that stops
    # destroy_process_group from joining gloo's threads, and a thread still releasing a
    # collective's tensors when the interpreter exits aborts the process (about one exit in
    # ten on 2 CPUs; tests/distributed/test_shutdown.py).
    import torch._dynamo  # noqa: F401

    global _device
    if device.type == "cuda":
        torch.cuda.set_device(device)
        _device = device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)


def process_device(device: torch.device) -> torch.device:
    """This process's GPU (``cuda:LOCAL_RANK``) for a device of ``cuda`` without an index when
    torchrun started several processes; ``device`` otherwise."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that alone writes the run folder, checkpoints and trackers."""
    return rank() == 0


def shard(count: int) -> slice:
    """This process's consecutive share of ``count`` items (episodes, batches); the shares of
    ranks 0, 1, ... follow each other and differ in size by at most one."""
    size, me = world_size(), rank()
    return slice(count * me // size, count * (me + 1) // size)


def _collective(operation: Callable[..., object], *args: object) -> None:
    """Run a torch.distributed collective; a dead or silent peer becomes :class:`ProcessLost`."""
    try:
        operation(*args)
    except RuntimeError as error:  # gloo and NCCL raise DistError or plain RuntimeError
        raise ProcessLost(_reason(error)) from error


def _reason(error: RuntimeError) -> str:
    """The first sentence of a backend's error, without its source location: ``[pair.cc:561]
    Connection closed by peer [127.0.0.1]:7347. This is typically...`` gives ``Connection
    closed by peer [127.0.0.1]:7347``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]


def _all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    _collective(dist.all_gather, parts, tensor)
    return parts


def sum_in_order(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over the processes, rank 0's first, the same on every process; one
    collective for all of them (they are flattened into one vector)."""
    if world_size() == 1:
        return list(tensors)
    parts = _all_gather(torch.cat([t.reshape(-1) for t in tensors]))
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return [s.view_as(t).to(t.dtype) for s, t in zip(total.split([t.numel() for t in tensors]), tensors)]


def sum_gradients(parameters: Sequence[torch.Tensor], values: torch.Tensor) -> torch.Tensor:
    """Replace each parameter's ``.grad`` by its sum over the processes (None stays None only
    where it is None on every process) and return ``values`` (e.g. loss sums) summed likewise."""
    if world_size() == 1:
        return values
    parameters = [p for p in parameters if p.requires_grad]
    reached = torch.tensor([p.grad is not None for p in parameters], dtype=values.dtype,
                           device=values.device)
    gradients = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
    *gradients, reached, values = sum_in_order([*gradients, reached, values])
    for parameter, gradient, present in zip(parameters, gradients, reached):
        parameter.grad = gradient if present else None
    return values


def gather_in_order(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dimension 0 in rank order (their first
    dimensions may differ, e.g. per-episode accuracies of shards of unequal size)."""
    if world_size() == 1:
        return tensor
    sizes = _all_gather(torch.tensor([len(tensor)], device=tensor.device))
    padded = tensor.new_zeros((int(max(sizes)), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    return torch.cat([part[: int(size)] for part, size in zip(_all_gather(padded), sizes)])


def largest(value: int) -> int:
    """The largest of the processes' ``value`` (e.g. a stop request), on every process."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], device=_device)
    _collective(dist.all_reduce, tensor, dist.ReduceOp.MAX)
    return int(tensor)


def on_main(function: Callable[[], Result]) -> Result:
    """``function()`` run on rank 0 alone (claiming the run folder, reading the checkpoint), its
    result or its exception handed to every process."""
    if world_size() == 1:
        return function()
    outcome: list[object] = [None]
    if is_main():
        try:
            outcome[0] = (True, function())
        except Exception as error:  # every process raises it, not only rank 0
            outcome[0] = (False, error)
    _collective(dist.broadcast_object_list, outcome, 0)
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value
