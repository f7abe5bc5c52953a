"""Deep generative replay (Shin, Lee, Kim & Kim 2017, "Continual Learning with Deep Generative
Replay"), with the distillation variant of van de Ven & Tolias (2019, "Three scenarios for
continual learning").

Beside the classifier (the solver) a VAE learns to generate the inputs seen so far. From the
second task on, every step also draws a batch from the generator as it was after the previous
task and labels it with the solver as it was then; solver and generator each train on the
current batch and the replayed one, weighted 1/t and 1 - 1/t after t tasks, so every task seen
counts equally. Replayed inputs are labelled with hard targets (the old solver's prediction),
or, with ``distill``, with its softened output distribution (temperature T, loss scaled by T²,
Hinton et al. 2015).
"""

from __future__ import annotations

import copy

import pydantic
import torch
import torch.nn.functional as F

from metalearn.learners.base import LearnerContext, adam, masked_cross_entropy
from metalearn.learners.finetune import FineTune, FineTuneOptions
from metalearn.learners.registry import register
from metalearn.models.vae import VAE
from metalearn.seeding import reserved
from metalearn.tasks import Batch

SAMPLE_GRID = reserved("dgr.sample_grid")  # the samples shown after each task


class DGROptions(FineTuneOptions):
    distill: bool = False
    temperature: float = 2.0
    generator_hidden: tuple[int, ...] = pydantic.Field((400, 400), min_length=1)
    latent: int = 100
    generator_lr: float = 1e-3
    samples_shown: int = 64  # generator samples saved with the run after each task


@register
class DeepGenerativeReplay(FineTune):
    """A solver and a VAE trained on the current task plus replay from their previous copies.

    Works in all three scenarios. Replayed inputs are scored over the outputs their tasks
    compete over now, against targets over the outputs they competed over before: in task-IL
    once per previous task, each in its own outputs, the losses averaged; in domain-IL over the
    shared head; in class-IL over every class seen so far, labelled among the classes seen
    before this task.
    """

    name = "dgr"
    Options = DGROptions
    distributed = False  # its replay and VAE steps are not sharded (FineTune's are)

    def __init__(self, model: torch.nn.Module, options: DGROptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        first = context.stream[0]
        image_shape = first.inputs(first.train.images[:1]).shape[1:]  # after any transform
        self.generator = VAE(image_shape, options.generator_hidden, options.latent).to(context.device)
        self.generator_optimizer = adam(self.generator.parameters(), options.generator_lr,
                                        options.betas)
        self.previous_solver: torch.nn.Module | None = None
        self.previous_generator: VAE | None = None
        self.tasks_seen = 0
        self._replay_spaces: list[tuple[torch.Tensor, torch.Tensor]] = []  # set by begin_task

    def begin_task(self, task_index: int) -> None:
        self.tasks_seen = task_index + 1
        previous = torch.arange(task_index, device=self.context.device)
        stream, scenario = self.context.stream, self.context.scenario
        now = stream.allowed_outputs(scenario, previous, seen=task_index + 1)
        before = stream.allowed_outputs(scenario, previous, seen=task_index)
        self._replay_spaces = []  # (output columns, which of them the previous solver knew)
        for outputs, known in zip(now, before):
            columns = outputs.nonzero().squeeze(1)
            if not any(torch.equal(columns, other) for other, _ in self._replay_spaces):
                self._replay_spaces.append((columns, known[outputs]))

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        self.generator.train()
        solver_loss = masked_cross_entropy(self.model(batch.x), batch)
        generator_loss = self.generator.loss(batch.x)
        if self.previous_generator is not None:
            replayed = self.previous_generator.sample(len(batch))
            with torch.no_grad():
                old_logits = self.previous_solver(replayed)
            current = 1 / self.tasks_seen
            solver_loss = (current * solver_loss
                           + (1 - current) * self._replay_loss(self.model(replayed), old_logits))
            generator_loss = (current * generator_loss
                              + (1 - current) * self.generator.loss(replayed))
        self.optimizer.zero_grad()
        solver_loss.backward()
        self.optimizer.step()
        self.generator_optimizer.zero_grad()
        generator_loss.backward()
        self.generator_optimizer.step()
        return {"loss": solver_loss.detach(), "generator_loss": generator_loss.detach()}

    def _replay_loss(self, logits: torch.Tensor, old_logits: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the previous solver's labels, averaged over label spaces.

        Replayed inputs compete over today's outputs; the previous solver's targets put no
        mass on the outputs it did not know (class-IL: this task's classes), as in van de
        Ven & Tolias's code, so old inputs are taught not to be new classes.
        """
        losses = []
        for outputs, known in self._replay_spaces:
            new = logits[:, outputs]
            old = old_logits[:, outputs].masked_fill(~known, float("-inf"))
            if self.options.distill:
                T = self.options.temperature
                losses.append(T**2 * F.cross_entropy(new / T, F.softmax(old / T, dim=1)))
            else:
                losses.append(F.cross_entropy(new, old.argmax(1)))
        return torch.stack(losses).mean()

    def end_task(self, task_index: int) -> None:
        self._freeze_teachers()

    def _freeze_teachers(self) -> None:
        """Freeze copies of solver and generator: the teachers of the next tasks."""
        self.previous_solver = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.previous_generator = copy.deepcopy(self.generator).eval().requires_grad_(False)

    def report(self, task_index: int) -> dict[str, torch.Tensor]:
        """The generator's samples after this task (the same latent draws every time)."""
        self.generator.eval()
        generator = SAMPLE_GRID.generator(self.context.seed)
        return {"generator_samples": self.generator.sample(self.options.samples_shown, generator)}

    def state_dict(self) -> dict:
        previous = {}
        if self.previous_solver is not None:
            previous = {"previous_solver": self.previous_solver.state_dict(),
                        "previous_generator": self.previous_generator.state_dict()}
        return {**super().state_dict(), **previous, "generator": self.generator.state_dict(),
                "generator_optimizer": self.generator_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        if "previous_solver" in state:
            self._freeze_teachers()  # copies of the right shape, then their saved weights
            self.previous_solver.load_state_dict(state["previous_solver"])
            self.previous_generator.load_state_dict(state["previous_generator"])
