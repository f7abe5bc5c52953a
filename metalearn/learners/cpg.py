"""CPG (Hung et al. 2019, "Compacting, Picking and Growing for Unforgetting Continual
Learning", NeurIPS): one network whose weights tasks own, as in PackNet; each new task also
picks, with a learned binary mask, which of the earlier tasks' frozen weights it uses, and the
hidden layers widen when a task misses its accuracy goal.

Every weight of an ``nn.Linear`` or ``nn.Conv2d`` (the head included) has an owner: free, or
the task that kept it (``packnet.FREE``, task t: t + 1). Task t is predicted with its own
weights and the earlier tasks' weights it picked, at the width the network had after task t,
so later tasks (and later growth) cannot change its predictions.
"""

from __future__ import annotations

import math
from typing import Any

import pydantic
import torch
from torch import nn
from torch.func import functional_call

from metalearn.learners.base import (
    CLASSIFICATION,
    Learner,
    LearnerContext,
    Phase,
    adam,
    masked_cross_entropy,
)
from metalearn.learners.finetune import FineTuneOptions
from metalearn.learners.packnet import FREE, largest_kept
from metalearn.learners.registry import register
from metalearn.models import MLP, Conv4
from metalearn.seeding import derive_generator
from metalearn.tasks import Batch, Scenario

GROWTH_STREAM = "cpg.growth"  # the initial values of the weights growth adds


class CPGOptions(FineTuneOptions):
    """``lr`` trains the free weights (Adam, as PackNet here; the reference code uses SGD)."""

    mask_lr: float = pydantic.Field(5e-4, gt=0)  # Adam on the mask scores, the reference's
    mask_init: float = 1e-2  # every earlier weight starts picked (score above the threshold)
    mask_threshold: float = 5e-3  # a score above it picks its weight
    accuracy_goal: float = pydantic.Field(0.99, gt=0, le=1)  # on the task's validation set
    grow_steps: int = pydantic.Field(1000, ge=0)  # training after the goal check; 0: no growth
    width_step: float = pydantic.Field(0.5, gt=0)  # parameters added per growth, x the original
    max_width: float = pydantic.Field(1.5, ge=1)  # the most parameters, x the original
    prune_fraction: float = pydantic.Field(0.5, ge=0, lt=1)  # of the weights each task trained
    compact_steps: int = pydantic.Field(1000, ge=0)  # gradual pruning, then the survivors train
    prune_every: int = pydantic.Field(10, ge=1)  # steps between pruning rounds
    compact_lr: float = 1e-4  # a tenth of lr, as the reference's gradual pruning
    retrain_steps: int = pydantic.Field(500, ge=0)  # the survivors and the mask, after compacting
    retrain_lr: float = 1e-4
    retrain_mask_lr: float = 1e-4  # the reference's piggymask retraining rate


def picked(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The binary mask ``scores > threshold`` (exactly 0 or 1), whose gradient passes to the
    scores unchanged (straight-through, as Piggyback's binarizer)."""
    return (scores > threshold).to(scores.dtype) + (scores - scores.detach())


@register
class CPG(Learner):
    """Hung et al. (2019): pick from the earlier tasks' weights, train the free ones, grow if the
    task misses its goal, compact by gradual pruning, retrain; the survivors are the task's.

    Each task trains in four phases (those of zero steps are left out):

    - ``train``: the free weights (Adam, ``lr``) and a real-valued score per earlier task's
      weight (Adam, ``mask_lr``), thresholded into the binary pick mask with a straight-through
      gradient; the earlier weights themselves stay frozen.
    - ``grow``: first the task's accuracy on its validation set (``benchmark.options.validation``
      must hold some out, as the reference code checks on held-out data) is compared with
      ``accuracy_goal``; if it misses it and the network may still grow, every hidden layer
      widens so the network has ``width_step`` more of its original parameters
      (width x sqrt(multiplier), the reference's rule; it grows 1.0 -> 1.5, once), the new
      weights free for this task. Either way training then goes on for ``grow_steps``: the
      phase is fixed by the options and its steps are never wasted, whether the network grew
      or not. The reference instead restarts the task on the wider network; we continue.
    - ``compact``: gradual pruning (Zhu & Gupta's cubic schedule, as the reference's
      ``gradually_prune``) of the weights the task trained, every ``prune_every`` steps over the
      phase's first half up to ``prune_fraction``, then the survivors train on (mask frozen, as
      the reference's prune mode). The reference searches the sparsity, keeping the largest
      whose accuracy stays at the goal; we prune to a fixed ``prune_fraction``, as PackNet does.
    - ``retrain``: the survivors and the pick mask train again at lower rates (the reference's
      "retrain piggymask and weight"; it restarts the mask at ``mask_init`` and keeps the
      result only if validation improves; we continue from the mask as it is).

    The goal is checked once per task, before compacting, as in the reference code. Biases and
    BatchNorm train on the first task only and are frozen afterwards, as in PackNet; the units
    growth adds get zero biases. Task-incremental only: a prediction needs the task's identity
    to choose its weights and mask.
    """

    name = "cpg"
    task_kinds = frozenset({CLASSIFICATION})
    scenarios = frozenset({Scenario.TASK})
    Options = CPGOptions

    def __init__(self, model: nn.Module, options: CPGOptions, context: LearnerContext) -> None:
        if not isinstance(model, (MLP, Conv4)):
            raise ValueError(f"CPG grows the hidden layers of the mlp and conv4 models, not a "
                             f"{type(model).__name__}: choose model.name mlp or conv4")
        missing = [task.name for task in context.stream if task.validation is None]
        if missing and options.grow_steps:
            raise ValueError(
                f"CPG checks each task's accuracy goal on its validation set, but tasks "
                f"{missing} hold none: set benchmark.options.validation (e.g. 0.1), or "
                "learner.options.grow_steps=0 to turn growth off")
        super().__init__(model, options, context)
        self.layers: list[tuple[str, nn.Module]] = []  # prunable layers, input to head
        self.normalised_by: dict[str, int] = {}  # BatchNorm module -> the layer it follows
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                self.layers.append((name, module))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                self.normalised_by[name] = len(self.layers) - 1
        self.original_widths = self._widths()
        self.width = 1.0  # the network's parameters, x the original's
        self.owners = [torch.zeros_like(m.weight, dtype=torch.int32) for _, m in self.layers]
        self.picks: list[list[torch.Tensor]] = []  # per task, per layer (task 0: none)
        self.task_widths: list[list[int]] = []  # per task, each layer's outputs after it
        self.goal_checks: list[float] = []  # per task, the validation accuracy at the check
        self.tasks_trained = 0
        self.task_index = 0

    # -- shapes -------------------------------------------------------------------------------

    def _widths(self) -> list[int]:
        return [m.weight.shape[0] for _, m in self.layers]

    def _weights(self) -> list[torch.Tensor]:
        return [m.weight for _, m in self.layers]

    @torch.no_grad()
    def _resize(self, widths: list[int], generator: torch.Generator) -> None:
        """Widen the hidden layers to ``widths`` outputs (the head keeps its own): new weights
        drawn as PyTorch's default U(±1/sqrt(fan_in)), new biases 0, new BatchNorm channels the
        identity; existing entries unchanged, owners of the new weights free."""
        widths = [*widths[:-1], self.original_widths[-1]]
        for k, (_, layer) in enumerate(self.layers):
            old = layer.weight
            inputs = old.shape[1] if k == 0 else widths[k - 1]
            shape = (widths[k], inputs, *old.shape[2:])
            bound = 1 / math.sqrt(math.prod(shape[1:]))
            new = (torch.rand(shape, generator=generator, dtype=old.dtype) * 2 - 1) * bound
            new = new.to(old.device)
            new[tuple(slice(0, n) for n in old.shape)] = old
            layer.weight = nn.Parameter(new, requires_grad=old.requires_grad)
            if layer.bias is not None:
                layer.bias = nn.Parameter(grown(layer.bias, (widths[k],), 0.0),
                                          requires_grad=layer.bias.requires_grad)
            if isinstance(layer, nn.Linear):
                layer.out_features, layer.in_features = shape[:2]
            else:
                layer.out_channels, layer.in_channels = shape[:2]
        for name, k in self.normalised_by.items():
            norm = self.model.get_submodule(name)
            norm.num_features = widths[k]
            for attribute, fill in (("weight", 1.0), ("bias", 0.0)):
                value = getattr(norm, attribute)
                setattr(norm, attribute, nn.Parameter(grown(value, (widths[k],), fill),
                                                      requires_grad=value.requires_grad))
            if norm.running_mean is not None:
                norm.running_mean = grown(norm.running_mean, (widths[k],), 0.0)
                norm.running_var = grown(norm.running_var, (widths[k],), 1.0)
        self.owners = [grown(owner, w.shape, FREE) for owner, w in zip(self.owners, self._weights())]

    def _at_width(self, widths: list[int]) -> dict[str, torch.Tensor]:
        """Every parameter and buffer of the network cut to the width it had with ``widths``."""
        outputs = {name: widths[k] for k, (name, _) in enumerate(self.layers)}
        inputs = {name: widths[k - 1] for k, (name, _) in enumerate(self.layers) if k > 0}
        outputs.update({name: widths[k] for name, k in self.normalised_by.items()})
        cut = {}
        for name, value in [*self.model.named_parameters(), *self.model.named_buffers()]:
            module = name.rpartition(".")[0]
            if value.dim() == 0 or module not in outputs:
                cut[name] = value
                continue
            cut[name] = value[:outputs[module]]
            if value.dim() > 1 and module in inputs:
                cut[name] = cut[name][:, :inputs[module]]
        return cut

    # -- training -----------------------------------------------------------------------------

    def begin_task(self, task_index: int) -> None:
        self.task_index = task_index
        for p in self.model.parameters():  # biases and BatchNorm: the first task's
            p.requires_grad_(task_index == 0 or any(p is w for w in self._weights()))
        self.trainable = [owner == FREE for owner in self.owners]
        self.at_start = [w.detach().clone() for w in self._weights()]
        self.scores = [torch.full_like(w, self.options.mask_init, requires_grad=True)
                       for w in self._weights()] if task_index > 0 else []
        self.candidates: list[torch.Tensor] | None = None  # what compacting prunes from

    def phases(self, task_index: int, steps: int) -> list[Phase]:
        """Pick and train, check the goal and grow, compact, retrain (phases of 0 steps left
        out: with ``grow_steps=0`` the network never grows, with ``compact_steps=0`` the task
        is pruned at once at its end)."""
        o = self.options
        phases = [Phase("train", steps), Phase("grow", o.grow_steps),
                  Phase("compact", o.compact_steps), Phase("retrain", o.retrain_steps)]
        return [phase for phase in phases if phase.steps > 0]

    def begin_phase(self, task_index: int, phase: str) -> None:
        if phase == "grow":
            accuracy = self._validation_accuracy(task_index)
            self.goal_checks.append(accuracy)
            if accuracy < self.options.accuracy_goal and self._may_grow():
                self._grow(task_index)
        elif phase == "compact":
            self._mark_candidates()
        elif phase == "retrain":
            self._prune(self.options.prune_fraction)
        self._start_phase(phase)

    def _start_phase(self, phase: str) -> None:
        """A fresh Adam for the phase's weights and one for the mask scores (none while
        compacting, which freezes the mask)."""
        self.phase, self.phase_step = phase, 0
        o = self.options
        lr, mask_lr = {"train": (o.lr, o.mask_lr), "grow": (o.lr, o.mask_lr),
                       "compact": (o.compact_lr, 0.0),
                       "retrain": (o.retrain_lr, o.retrain_mask_lr)}[phase]
        self.optimizer = adam([p for p in self.model.parameters() if p.requires_grad], lr,
                              o.betas)
        self.mask_optimizer = adam(self.scores, mask_lr, o.betas) if self.scores and mask_lr else None

    def _may_grow(self) -> bool:
        return bool(self.original_widths[:-1]) and \
            self.width + self.options.width_step <= self.options.max_width + 1e-9

    def _grow(self, task_index: int) -> None:
        """Widen the hidden layers by the next ``width_step`` of parameters; the new weights
        are free, for this task, and its mask scores over them are unused."""
        self.width += self.options.width_step
        scale = math.sqrt(self.width)
        widths = [round(n * scale) for n in self.original_widths]
        self._resize(widths, derive_generator(self.context.seed, GROWTH_STREAM, task_index))
        weights = self._weights()
        self.trainable = [grown(t, w.shape, True) for t, w in zip(self.trainable, weights)]
        self.at_start = [torch.where(grown(torch.ones_like(s, dtype=torch.bool), w.shape, False),
                                     grown(s, w.shape, 0.0), w.detach())
                         for s, w in zip(self.at_start, weights)]  # new weights: as drawn
        self.scores = [grown(s.detach(), w.shape, self.options.mask_init).requires_grad_()
                       for s, w in zip(self.scores, weights)]

    def _task_weights(self) -> dict[str, torch.Tensor]:
        """The weights training sees: the free ones this task trains, and the earlier tasks'
        (frozen) times their pick mask."""
        weights = {}
        for k, (name, layer) in enumerate(self.layers):
            w = layer.weight
            own = torch.where(self.trainable[k], w, 0)
            if self.scores:
                earlier = self.owners[k] > FREE
                own = own + torch.where(earlier, w.detach() * picked(
                    self.scores[k], self.options.mask_threshold), 0)
            weights[f"{name}.weight"] = own
        return weights

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.phase == "compact" and self.phase_step % self.options.prune_every == 0:
            ramp = max(1, self.options.compact_steps // 2)
            done = min(1.0, self.phase_step / ramp)
            self._prune(self.options.prune_fraction * (1 - (1 - done) ** 3))
        self.phase_step += 1
        self.model.train()
        for module in self.model.modules():  # running statistics, too, are the first task's
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(self.task_index == 0)
        loss = masked_cross_entropy(functional_call(self.model, self._task_weights(),
                                                    (batch.x,)), batch)
        self.optimizer.zero_grad()
        if self.mask_optimizer is not None:
            self.mask_optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.mask_optimizer is not None:
            self.mask_optimizer.step()
        return {"loss": loss.detach()}

    def _mark_candidates(self) -> None:
        """What compacting prunes from: the weights this task trained (moved from where the
        task started; a weight no gradient reached stays free for later tasks)."""
        self.candidates = [t & (w != s) for t, w, s in
                           zip(self.trainable, self._weights(), self.at_start)]

    @torch.no_grad()
    def _prune(self, fraction: float) -> None:
        """Prune ``fraction`` of the candidates, the smallest: zeroed, no longer trained."""
        if self.candidates is None:
            self._mark_candidates()
        for w, candidates, trainable in zip(self._weights(), self.candidates, self.trainable):
            kept = largest_kept(w, candidates, fraction)
            trainable &= kept
            w.masked_fill_(candidates & ~trainable, 0)

    @torch.no_grad()
    def end_task(self, task_index: int) -> None:
        """The survivors of pruning are the task's from now on, with its binary pick mask;
        every weight still free goes back to zero."""
        self._prune(self.options.prune_fraction)
        for w, owner, trainable, candidates in zip(self._weights(), self.owners, self.trainable,
                                                   self.candidates):
            owner[trainable & candidates] = task_index + 1
            w.masked_fill_(owner == FREE, 0)
        if task_index > 0:
            self.picks.append([(s > self.options.mask_threshold) & (o > FREE) & (o <= task_index)
                               for s, o in zip(self.scores, self.owners)])
        else:
            self.picks.append([])
        self.task_widths.append(self._widths())
        if len(self.goal_checks) < task_index + 1:
            self.goal_checks.append(math.nan)  # growth off: no check
        self.tasks_trained = task_index + 1
        del self.scores, self.trainable, self.at_start, self.candidates

    @torch.no_grad()
    def _validation_accuracy(self, task_index: int) -> float:
        """The task's accuracy on its validation set with the weights it trains now."""
        self.model.eval()
        weights = self._task_weights()
        correct = total = 0
        for batch in self.context.stream.ordered_batches(
                self.context.scenario, task_index, 1024, seen=task_index + 1, split="validation"):
            logits = functional_call(self.model, weights, (batch.x,))
            prediction = logits.masked_fill(~batch.allowed, float("-inf")).argmax(1)
            correct += int((prediction == batch.y).sum())
            total += len(batch)
        return correct / total

    # -- prediction, size, state --------------------------------------------------------------

    def task_network(self, task_index: int) -> dict[str, torch.Tensor]:
        """Task ``task_index``'s network: the weights it owns and those of earlier tasks it
        picked, every tensor at the width the network had after it."""
        network = self._at_width(self.task_widths[task_index])
        picks = self.picks[task_index]
        for k, (name, _) in enumerate(self.layers):
            w = network[f"{name}.weight"]
            owner = self.owners[k][tuple(slice(0, n) for n in w.shape)]
            use = owner == task_index + 1
            if picks:
                use = use | picks[k]
            network[f"{name}.weight"] = torch.where(use, w, 0)
        return network

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        if task_index is None:
            raise ValueError("CPG predicts with one task's weights and mask: it needs the task index")
        self.model.eval()  # a task not trained yet: the network as it stands
        network = self.task_network(task_index) if task_index < self.tasks_trained else {}
        return functional_call(self.model, network, (x,))

    def model_size_bits(self) -> int:
        """The network (32-bit floats), each prunable weight's owner (ceil(log2(tasks + 1))
        bits) and each task's pick mask (one bit per weight of the layer when it was learned)."""
        owner_bits = max(1, math.ceil(math.log2(self.tasks_trained + 1)))
        picks = sum(mask.numel() for task in self.picks for mask in task)
        return (super().model_size_bits() + owner_bits * sum(o.numel() for o in self.owners)
                + picks)

    def report(self, task_index: int) -> dict[str, float]:
        """The width (parameters x the original's), the validation accuracy at the goal check,
        the fraction of the prunable weights the task kept and the fraction left free, and the
        fraction of the earlier tasks' weights it picked."""
        total = sum(o.numel() for o in self.owners)
        earlier = sum(int(((o > FREE) & (o <= task_index)).sum()) for o in self.owners)
        chosen = sum(int(p.sum()) for p in self.picks[task_index])
        return {"width": self.width, "goal_check_accuracy": self.goal_checks[task_index],
                "capacity_used": sum(int((o == task_index + 1).sum()) for o in self.owners) / total,
                "capacity_free": sum(int((o == FREE).sum()) for o in self.owners) / total,
                "picked": chosen / earlier if earlier else math.nan}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "owners": self.owners, "picks": self.picks,
                "task_widths": self.task_widths, "goal_checks": self.goal_checks,
                "width": self.width, "tasks_trained": self.tasks_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the grown layers at their saved widths, then load."""
        widths = [state["model"][f"{name}.weight"].shape[0] for name, _ in self.layers]
        self._resize(widths, torch.Generator())
        super().load_state_dict(state)
        self.owners = [saved.clone() for saved in state["owners"]]
        self.picks = [list(task) for task in state["picks"]]
        self.task_widths = [list(w) for w in state["task_widths"]]
        self.goal_checks = list(state["goal_checks"])
        self.width = state["width"]
        self.tasks_trained = state["tasks_trained"]


def grown(tensor: torch.Tensor, shape: tuple[int, ...] | torch.Size, fill: float | bool) -> torch.Tensor:
    """``tensor`` in the top corner of a ``shape`` tensor filled with ``fill``."""
    new = torch.full(tuple(shape), fill, dtype=tensor.dtype, device=tensor.device)
    new[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return new
