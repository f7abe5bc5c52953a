"""Selective synaptic plasticity: the quadratic penalty shared by EWC, online EWC, SI and MAS.

Each of these learners protects the parameters that mattered for earlier tasks by adding

    scale * sum_k A_k (theta_k - mu_k)^2

to the task's loss, A the importance kept from earlier tasks and mu an anchor. They differ in
how one task's importance is estimated (each in its own file) and in how it joins what was kept:

- EWC keeps one penalty per earlier task, sum_t Omega_t (theta - theta_t)^2. That sum is itself
  one quadratic form, A (theta - mu)^2 + c with A = sum_t Omega_t and mu = sum_t Omega_t theta_t / A,
  and is stored as such, so the cost of a training step does not grow with the number of tasks.
- Online EWC, SI and MAS keep one running importance anchored at the latest parameters:
  A <- decay * A + Omega, mu <- theta.

The penalty's gradient, 2 * scale * A (theta - mu), is added to the task's gradients after the
backward pass instead of through autograd: the same update, for a few elementwise passes.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from metalearn.distributed import shard, sum_in_order, world_size
from metalearn.learners.base import LearnerContext, batch_part, minibatch_gradient
from metalearn.learners.finetune import FineTune, FineTuneOptions
from metalearn.tasks import Batch

PER_EXAMPLE_CHUNK = 256  # examples per importance pass (per_example_gradients holds their gradients)


class QuadraticPenalty:
    """``sum_k A_k (theta_k - mu_k)^2 + offset`` over a list of parameters, as one quadratic form."""

    def __init__(self, parameters: Sequence[torch.Tensor]) -> None:
        self.parameters = list(parameters)
        self.precision = [torch.zeros_like(p, requires_grad=False) for p in self.parameters]
        self.anchor = [p.detach().clone() for p in self.parameters]
        self.offset = 0.0  # the constant of the summed terms, kept in float64 (a Python float)
        self.terms = 0  # importance estimates folded in so far

    @torch.no_grad()
    def add_term(self, importance: Sequence[torch.Tensor]) -> None:
        """Add ``importance * (theta - theta_now)^2`` as one more term (EWC: one per task)."""
        for precision, anchor, omega, theta in zip(self.precision, self.anchor, importance,
                                                   self.parameters):
            total = precision + omega
            # no term yet (or none weighs): anchored exactly at theta, so the penalty is 0 there
            mean = torch.where(precision > 0, (precision * anchor + omega * theta) / total, theta)
            a, m, o, t, n = (x.detach().cpu().double() for x in (precision, anchor, omega, theta, mean))
            self.offset += float((a * m**2 + o * t**2 - (a + o) * n**2).sum())
            precision.copy_(total)
            anchor.copy_(mean)
        self.terms += 1

    @torch.no_grad()
    def reanchor(self, importance: Sequence[torch.Tensor], decay: float = 1.0) -> None:
        """``A <- decay * A + importance`` and anchor at the current parameters."""
        torch._foreach_mul_(self.precision, decay)
        torch._foreach_add_(self.precision, list(importance))
        torch._foreach_copy_(self.anchor, [p.detach() for p in self.parameters])
        self.offset = 0.0
        self.terms += 1

    @torch.no_grad()
    def add_gradient_(self, scale: float) -> torch.Tensor:
        """Add ``scale *`` the penalty's gradient to every parameter's ``.grad``; return
        ``scale *`` the penalty's value."""
        difference = torch._foreach_sub([p.detach() for p in self.parameters], self.anchor)
        weighted = torch._foreach_mul(difference, self.precision)
        torch._foreach_add_([p.grad for p in self.parameters], weighted, alpha=2 * scale)
        quadratic = torch.stack([torch.vdot(w.flatten(), d.flatten()) for w, d in zip(weighted, difference)])
        return scale * (quadratic.sum() + self.offset)

    def state_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "anchor": self.anchor, "offset": self.offset,
                "terms": self.terms}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch._foreach_copy_(self.precision, state["precision"])
        torch._foreach_copy_(self.anchor, state["anchor"])
        self.offset = float(state["offset"])
        self.terms = state["terms"]


Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(logits [b, outputs], allowed [b, outputs], target [b]) -> one value per example [b]."""


def per_example_gradients(model: nn.Module, objective: Objective, inputs: torch.Tensor,
                          allowed: torch.Tensor, target: torch.Tensor,
                          parameters: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients [b, *p.shape] of each example's objective with respect to ``parameters``, by
    ``vmap`` over ``grad``. The examples must not interact: no batch statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
                module.training or not module.track_running_stats):
            raise ValueError(f"{type(module).__name__} normalises with batch statistics, so an "
                             "example's gradient depends on the others; per-example gradients need "
                             "running statistics (track_running_stats=True, eval mode)")
    wanted = {id(p) for p in parameters}
    names = {id(p): name for name, p in model.named_parameters()}
    constants = {name: p.detach() for name, p in model.named_parameters() if id(p) not in wanted}
    constants.update(model.named_buffers())
    variables = {names[id(p)]: p.detach() for p in parameters}

    def one(variables: dict[str, torch.Tensor], x: torch.Tensor, allowed: torch.Tensor,
            target: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (variables, constants), (x.unsqueeze(0),))
        return objective(logits, allowed.unsqueeze(0), target.unsqueeze(0))[0]

    gradients = vmap(grad(one), in_dims=(None, 0, 0, 0))(variables, inputs, allowed, target)
    return [gradients[names[id(p)]] for p in parameters]


def _linear_gradient_powers(model: nn.Module, objective: Objective, batch: Batch,
                            target: Callable[[torch.Tensor, Batch], torch.Tensor], power: int,
                            parameters: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
    """The factored sum for networks whose ``parameters`` all sit in ``nn.Linear`` layers each
    called once on [b, features] inputs; None where that does not hold."""
    owner = {id(p): m for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters()}
    if any(id(p) not in owner for p in parameters):
        return None
    layers = list({id(owner[id(p)]): owner[id(p)] for p in parameters}.values())
    seen: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor, int]]] = {m: [] for m in layers}
    # (input, output, output's version) of each call

    def keep(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen[module].append((args[0].detach(), output, output._version))

    hooks = [m.register_forward_hook(keep) for m in layers]
    try:
        logits = model(batch.x)
    finally:
        for hook in hooks:
            hook.remove()
    if any(len(calls) != 1 for calls in seen.values()):  # a layer reused (or unused): not factorable
        return None
    inputs, outputs, versions = zip(*(seen[m][0] for m in layers))
    if any(x.dim() != 2 for x in inputs) or any(
            y._version != v or not y.requires_grad for y, v in zip(outputs, versions)):
        return None  # fed sequences, changed in place, or cut off from the graph
    values = objective(logits, batch.allowed, target(logits.detach(), batch))
    deltas = torch.autograd.grad(values.sum(), outputs)
    powers: dict[int, torch.Tensor] = {}
    for layer, layer_inputs, delta in zip(layers, inputs, deltas):
        delta_power = delta.abs().pow(power)
        powers[id(layer.weight)] = delta_power.T @ layer_inputs.abs().pow(power)
        if layer.bias is not None:
            powers[id(layer.bias)] = delta_power.sum(0)
    return [powers[id(p)] for p in parameters]


def summed_gradient_powers(model: nn.Module, objective: Objective, batch: Batch,
                           target: Callable[[torch.Tensor, Batch], torch.Tensor], power: int,
                           parameters: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``sum_n |d objective_n / d theta|^power`` for each of ``parameters`` over a batch.

    ``target(logits, batch)`` gives each example's target (a label to score, sampled or not).
    For ``nn.Linear`` networks an example's weight gradient is the outer product of its output
    gradient delta_n and input a_n, so ``sum_n |delta_n a_n^T|^p = (|delta|^p)^T |a|^p``: one
    backward pass and one matrix product per layer, no per-example gradient in memory. Other
    models take ``per_example_gradients``.
    """
    factored = _linear_gradient_powers(model, objective, batch, target, power, parameters)
    if factored is not None:
        return factored
    with torch.no_grad():
        targets = target(model(batch.x), batch)
    gradients = per_example_gradients(model, objective, batch.x, batch.allowed, targets, parameters)
    return [g.abs().pow(power).sum(0) for g in gradients]


def mean_gradient_power(model: nn.Module, batches: Iterable[Batch], objective: Objective,
                        target: Callable[[torch.Tensor, Batch], torch.Tensor], power: int,
                        parameters: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``mean_n |d objective_n / d theta|^power`` over every example of ``batches``, the model
    in eval mode: the importance of EWC (power 2, the Fisher's diagonal) and MAS (power 1).

    Over several processes each sums its shard of every chunk of examples and the sums are
    added in rank order, so every process holds one process's mean. The targets are still drawn
    for the whole chunk on each process, so a sampled target (EWC's sampled Fisher) takes the
    same draws from its generator as on one process.
    """
    total = [torch.zeros_like(p) for p in parameters]
    count = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            for start in range(0, len(batch), PER_EXAMPLE_CHUNK):
                chunk = batch_part(batch, slice(start, start + PER_EXAMPLE_CHUNK))
                mine, chunk_target = shard(len(chunk)), target
                if world_size() > 1:
                    with torch.no_grad():
                        targets = target(model(chunk.x), chunk)[mine]
                    chunk_target = lambda logits, batch: targets  # noqa: E731
                if mine.stop > mine.start:
                    torch._foreach_add_(total, summed_gradient_powers(
                        model, objective, batch_part(chunk, mine), chunk_target, power, parameters))
                count += len(chunk)
    finally:
        model.train(was_training)
    return torch._foreach_div(sum_in_order(total), max(count, 1))


class PlasticityOptions(FineTuneOptions):
    strength: float = 1.0  # the penalty's weight: lambda (EWC, MAS) or c (SI)


class SelectivePlasticity(FineTune):
    """Fine-tuning plus the quadratic penalty; a subclass says how importance is estimated
    (``importance``) and how it joins the earlier tasks' (``consolidate``: re-anchor by default).
    """

    Options = PlasticityOptions

    def __init__(self, model: nn.Module, options: PlasticityOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.penalty = QuadraticPenalty(self.parameters)

    @property
    def penalty_scale(self) -> float:
        """What multiplies ``sum A (theta - mu)^2`` in the loss."""
        return self.options.strength

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        self.optimizer.zero_grad()
        loss = minibatch_gradient(self.model, batch)  # summed across processes
        for p in self.parameters:  # unused by this loss, yet still pulled by the penalty
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        values = {"loss": loss}
        if self.penalty.terms:  # the same on every process: added once, after the sum
            values["penalty"] = self.penalty.add_gradient_(self.penalty_scale)
        self.optimizer_step()
        return values

    def optimizer_step(self) -> None:
        """Step with the task's gradient plus the penalty's (SI watches this step)."""
        self.optimizer.step()

    def end_task(self, task_index: int) -> None:
        self.consolidate(self.importance(task_index))

    @abc.abstractmethod
    def importance(self, task_index: int) -> list[torch.Tensor]:
        """Each parameter's importance for task ``task_index``, just trained on."""

    def consolidate(self, importance: list[torch.Tensor]) -> None:
        self.penalty.reanchor(importance)

    def task_batches(self, task_index: int) -> Iterable[Batch]:
        """The whole training set of task ``task_index``, with the outputs seen so far."""
        return self.context.stream.ordered_batches(self.context.scenario, task_index,
                                                   PER_EXAMPLE_CHUNK, seen=task_index + 1, split="train")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "penalty": self.penalty.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.penalty.load_state_dict(state["penalty"])
