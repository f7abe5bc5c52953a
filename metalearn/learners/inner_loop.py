"""The functional inner loop shared by MAML, Meta-SGD and Reptile.

``torch.func.functional_call`` turns the model into a pure function of (parameters, inputs),
so adapting to an episode (a few gradient steps on its support set, taken with
``torch.func.grad``) is a pure function of (parameters, episode). A meta-batch is then one
``vmap`` over episodes, and ordinary autograd differentiates through the adaptation: MAML's
exact second-order meta-gradient with no patched modules (Finn et al. 2017; the torch.func
MAML example). ``batching="loop"`` runs the same function once per episode, for models
``vmap`` cannot handle. Several CPU cores are used by several processes, each taking its
share of the meta-batch (``metalearn run --nproc N``; ``docs/distributed.md``).

BatchNorm: every forward pass normalises with the statistics of its own batch (support steps
with the support set's, queries with the query set's), as in the reference MAML code; Conv4
does this with ``track_running_stats=False``. Running statistics are refused: updating them is
a side effect a pure inner loop cannot have. ``transductive=False`` instead classifies each
query in a batch with the support set alone, so no query sees the others (Nichol et al. 2018's
non-transductive evaluation).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.overrides import TorchFunctionMode

Parameters = dict[str, torch.Tensor]
Batching = Literal["auto", "vmap", "loop"]


def resolve_batching(batching: Batching) -> Literal["vmap", "loop"]:
    """``auto``: the loop, on every device; vmap is not chosen until it is shown right and
    faster there:

    - CPU: vmap ran at 0.44x learn2learn's speed and the loop at 0.86x (Conv4, Omniglot 5-way
      1-shot, meta-batch 32, 2 threads; benchmarks/results/maml_speed_cpu.json). A multi-core
      CPU is used by processes instead: 2 processes with one thread each ran at 1.53x
      learn2learn in two runs, the loop at 0.97x and 0.94x (2 cores, 20 iterations;
      benchmarks/results/maml_speed_cpu_processes.json and maml_speed_cpu_processes_repeat.json);
    - CUDA: vmap's first meta-gradient differed from the loop's by 4.4% on an H100 with torch
      2.11, where the loop agreed with ``higher`` to 7e-5 (benchmarks/results/maml_speed_cuda.json).
    """
    return "loop" if batching == "auto" else batching


def check_batch_statistics(model: nn.Module) -> None:
    """Refuse BatchNorm layers with running statistics (see the module docstring)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            raise ValueError(
                f"BatchNorm layer {name!r} keeps running statistics, which the functional inner "
                "loop cannot update; it normalises every batch with its own statistics instead "
                "(the reference MAML setting). Build the model with track_running_stats=False "
                "(model.options.track_running_stats: false)")


def batch_norm_arithmetic(input: torch.Tensor, running_mean: None, running_var: None,
                          weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                          training: bool = True, momentum: float = 0.1,
                          eps: float = 1e-5) -> torch.Tensor:
    """``F.batch_norm`` with batch statistics, as plain mean/variance arithmetic."""
    dims = [0, *range(2, input.dim())]
    shape = [1, -1] + [1] * (input.dim() - 2)
    mean = input.mean(dims, keepdim=True)
    variance = input.var(dims, unbiased=False, keepdim=True)
    output = (input - mean) * torch.rsqrt(variance + eps)
    if weight is not None:
        output = output * weight.view(shape)
    return output if bias is None else output + bias.view(shape)


class BatchNormAsArithmetic(TorchFunctionMode):
    """Inside vmap, evaluate BatchNorm as ``batch_norm_arithmetic``: vmap's batching rule for
    the fused kernel's backward gives wrong second derivatives through the BatchNorm input when
    its weight is batched (0.6% off for a conv followed by an adapted BatchNorm;
    pytorch/functorch#534), which is exactly MAML's meta-gradient. The arithmetic costs more
    than the fused kernel, only on the vmap path."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        if func is F.batch_norm:
            return batch_norm_arithmetic(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _combine(outputs: list[Any], combine: Callable[[list[torch.Tensor]], torch.Tensor]) -> Any:
    """``combine`` the tensors at each place of ``outputs`` (alike nests of dicts and tuples)."""
    first = outputs[0]
    if isinstance(first, dict):
        return {key: _combine([output[key] for output in outputs], combine) for key in first}
    if isinstance(first, tuple):
        return tuple(_combine(list(parts), combine) for parts in zip(*outputs))
    return combine(outputs)


def _sum(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The sum of the tensors; None where all are None (a parameter no episode reaches)."""
    present = [tensor for tensor in tensors if tensor is not None]
    return sum(present[1:], present[0]) if present else None


class FunctionalModel:
    """A module as pure functions of a parameter dict (logits, loss, gradient, SGD steps), and
    how to map a function over the episodes of a meta-batch."""

    def __init__(self, model: nn.Module, batching: Batching) -> None:
        check_batch_statistics(model)
        self.model = model
        self.batching = resolve_batching(batching)

    def map_episodes(self, function: Callable[..., Any], *episodes: torch.Tensor) -> Any:
        """``function`` of one episode's tensors, over the leading (episode) dimension of
        ``episodes``: one vmap, or a loop; outputs (tensors in dicts and tuples) stacked along a
        new first dimension."""
        if self.batching == "vmap":
            with BatchNormAsArithmetic():
                return vmap(function)(*episodes)
        return _combine([function(*(tensor[i] for tensor in episodes))
                         for i in range(len(episodes[0]))], torch.stack)

    def sum_episodes(self, function: Callable[..., Any], *episodes: torch.Tensor) -> Any:
        """The sum over episodes of ``function``'s outputs (tensors in dicts and tuples), one
        episode at a time and added in order, so the result is the same on every run. It never
        vmaps, so ``function`` may call autograd."""
        result = None
        for i in range(len(episodes[0])):
            output = function(*(tensor[i] for tensor in episodes))
            result = output if result is None else _combine([result, output], _sum)
        return result

    def parameters(self) -> Parameters:
        """The module's own parameters by name (autograd reaches them through every step)."""
        return dict(self.model.named_parameters())

    def logits(self, params: Parameters, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def loss(self, params: Parameters, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(params, x), y)

    def gradient(self, params: Parameters, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[Parameters, torch.Tensor]:
        """(d loss / d params, loss); differentiable by an enclosing autograd or torch.func."""
        return grad_and_value(self.loss)(params, x, y)

    def sgd(self, params: Parameters, x: torch.Tensor, y: torch.Tensor, steps: int,
            lrs: dict[str, float | torch.Tensor], first_order: bool = False) -> Parameters:
        """``steps`` full-batch steps ``p - lr_p * grad_p`` on (x, y). ``first_order`` cuts the
        gradients out of the graph (FOMAML): what remains differentiable is ``p`` and ``lr_p``."""
        for _ in range(steps):
            gradients, _ = self.gradient(params, x, y)
            if first_order:
                gradients = {name: g.detach() for name, g in gradients.items()}
            params = {name: p - lrs[name] * gradients[name] for name, p in params.items()}
        return params

    def query_logits(self, params: Parameters, support_x: torch.Tensor, query_x: torch.Tensor,
                     transductive: bool) -> torch.Tensor:
        """Logits of one episode's queries: normalised together (transductive), or each in a
        batch with the support set only."""
        if transductive:
            return self.logits(params, query_x)

        def alone(query: torch.Tensor) -> torch.Tensor:
            return self.logits(params, torch.cat([support_x, query[None]]))[-1]

        return self.map_episodes(alone, query_x)

    def adapted_query_logits(self, adapt: Callable[..., Parameters], support_x: torch.Tensor,
                             query_x: torch.Tensor, adapt_inputs: tuple[torch.Tensor, ...],
                             transductive: bool) -> torch.Tensor:
        """[B, N*Q, N] query logits after ``adapt(*inputs)`` on each episode, where
        ``adapt_inputs`` hold the episodes' data for ``adapt`` along their first dimension."""
        def episode(support: torch.Tensor, query: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
            return self.query_logits(adapt(*inputs), support, query, transductive)

        return self.map_episodes(episode, support_x, query_x, *adapt_inputs)
