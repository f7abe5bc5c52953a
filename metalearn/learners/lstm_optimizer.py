"""The LSTM optimizer: an update rule learned by gradient descent.

Andrychowicz, Denil, Gomez, Hoffman, Pfau, Schaul, Shillingford & de Freitas (2016), "Learning
to learn by gradient descent by gradient descent". A two-layer LSTM with 20 units per layer,
shared by every coordinate of the optimisee but with its own state per coordinate, reads each
coordinate's preprocessed gradient (``log_and_sign``, their Appendix A) and outputs its update,
times ``output_scale``. It is meta-trained with Adam on the optimisee's loss summed along its
trajectory, by truncated backpropagation through time: each optimisee starts from a fresh
initialisation and takes ``horizon`` steps, and the LSTM is updated after every ``unroll`` of
them. ``second_derivatives=False`` (their code's default) treats the optimisee's gradients as
inputs rather than as functions of the LSTM's earlier updates, dropping the Hessian terms.
``select_every`` keeps the best rule seen, as their training script does: every so many
optimisees the current rule trains ``select_trajectories`` held-out optimisees (the same
initialisations and minibatches each time), and the rule with the lowest mean final loss is the
one the task ends with, so a late instability of meta-training does not decide the result.

On a classification stream each training step is one optimisee step on the protocol's
minibatch, and the model evaluated after a task is the latest optimisee, trained from a fresh
initialisation by the learned rule. ``benchmarks/learned_optimizer_mnist.py`` compares the rule
with tuned hand-designed optimizers from many initialisations (:meth:`LSTMOptimizer.trajectory`).
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import Any, Iterable

import numpy as np
import pydantic
import torch
from torch import nn
from torch.func import functional_call

from metalearn.learners.base import (
    CLASSIFICATION, Learner, LearnerContext, LearnerOptions, adam, masked_cross_entropy)
from metalearn.learners.coordinatewise import Parameters, flatten, log_and_sign, lstm_step, unflatten
from metalearn.learners.registry import register
from metalearn.models import reinitialise
from metalearn.seeding import reserved
from metalearn.tasks import Batch

OPTIMISEE_INIT = reserved("lstm_optimizer.optimisee_init")  # (seed, optimisee number)
SELECTION_INIT = reserved("lstm_optimizer.selection_init")  # (seed, k): the k-th held-out
SELECTION_BATCHES = reserved("lstm_optimizer.selection_batches")  # selection optimisee

StackedState = tuple[torch.Tensor, torch.Tensor]  # (h, c) of all layers: [layers, coordinates, hidden]


def leaves(params: Parameters) -> Parameters:
    """Detached copies that require grad: where a truncated unroll (or a plain run) starts."""
    return {name: p.detach().requires_grad_() for name, p in params.items()}


class CoordinatewiseLSTM(nn.Module):
    """Gradient in, update out, for every coordinate at once: stacked LSTM cells over a batch of
    all coordinates (each its own batch row, so its own state) and a linear output."""

    def __init__(self, hidden: int = 20, layers: int = 2, preprocess_p: float = 10.0,
                 output_scale: float = 0.01) -> None:
        super().__init__()
        self.cells = nn.ModuleList(nn.LSTMCell(2 if k == 0 else hidden, hidden) for k in range(layers))
        self.output = nn.Linear(hidden, 1)
        self.preprocess_p, self.output_scale = preprocess_p, output_scale

    def initial_state(self, coordinates: torch.Tensor) -> StackedState:
        """Zero state for a vector of coordinates."""
        zeros = coordinates.new_zeros(len(self.cells), len(coordinates), self.cells[0].hidden_size)
        return zeros, zeros.clone()

    def forward(self, gradient: torch.Tensor, state: StackedState) -> tuple[torch.Tensor, StackedState]:
        """The update of each coordinate [n] from its gradient [n], and the next state."""
        x, hs, cs = log_and_sign(gradient, self.preprocess_p), [], []
        for cell, h, c in zip(self.cells, *state):
            x, c = lstm_step(cell, x, (h, c))
            hs.append(x)
            cs.append(c)
        return self.output_scale * self.output(x).squeeze(-1), (torch.stack(hs), torch.stack(cs))


class LSTMOptimizerOptions(LearnerOptions):
    """Defaults: the paper's MNIST setup."""

    hidden: int = pydantic.Field(20, ge=1)  # units per LSTM layer
    layers: int = pydantic.Field(2, ge=1)
    preprocess_p: float = pydantic.Field(10.0, gt=0)
    output_scale: float = pydantic.Field(0.01, gt=0)  # the update is the LSTM's output times this
    unroll: int = pydantic.Field(20, ge=1)  # optimisee steps per meta-update (truncated BPTT)
    horizon: int = pydantic.Field(100, ge=1)  # steps per optimisee before a fresh one
    lr: float = pydantic.Field(1e-3, gt=0)  # meta-optimizer Adam
    second_derivatives: bool = False
    select_every: int = pydantic.Field(0, ge=0)  # optimisees between selections; 0: keep the last rule
    select_trajectories: int = pydantic.Field(20, ge=1)  # held-out optimisees per selection

    @pydantic.model_validator(mode="after")
    def _whole_unrolls(self) -> LSTMOptimizerOptions:
        if self.horizon % self.unroll:
            raise ValueError(f"horizon ({self.horizon}) must be a multiple of unroll ({self.unroll}), "
                             "so that every meta-update sees a whole unroll of one optimisee")
        return self


@register
class LSTMOptimizer(Learner):
    """Trains the model with an LSTM update rule while meta-training that rule."""

    name = "lstm_optimizer"
    task_kinds = frozenset({CLASSIFICATION})
    Options = LSTMOptimizerOptions
    # Exact when protocol.checkpoint_every is a multiple of ``unroll`` (the default 1000 of 20):
    # a checkpoint then falls between meta-updates, where nothing lives only in a graph.
    resumes_mid_task = True

    def __init__(self, model: nn.Module, options: LSTMOptimizerOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.network = CoordinatewiseLSTM(options.hidden, options.layers, options.preprocess_p,
                                          options.output_scale).to(context.device)
        self.meta_optimizer = adam(self.network.parameters(), options.lr)
        self.optimisees = 0  # optimisees started so far, each from its own fresh initialisation
        self.step = 0  # steps taken by the current optimisee
        self.params: Parameters = {}
        self.state: StackedState | None = None
        self.unroll_losses: list[torch.Tensor] = []
        self.task_index, self.batch_size = 0, 1  # where and how selection draws its minibatches
        self.best_score, self.best_network = None, None  # the selected rule, once there is one
        self.selections: list[tuple[int, float | None]] = []  # (optimisees so far, score;
        # None: rejected) of each

    def begin_task(self, task_index: int) -> None:
        self.task_index = task_index

    def loss(self, model: nn.Module, params: Parameters, batch: Batch) -> torch.Tensor:
        """The optimisee's loss: ``model`` with ``params`` on ``batch``."""
        return masked_cross_entropy(functional_call(model, params, (batch.x,)), batch)

    def update(self, params: Parameters, loss: torch.Tensor, state: StackedState,
               meta_train: bool) -> tuple[Parameters, StackedState]:
        """One step of the learned rule. ``meta_train`` keeps the graph from the LSTM's weights
        to the new parameters; otherwise nothing is recorded."""
        second_order = meta_train and self.options.second_derivatives
        gradients = torch.autograd.grad(loss, list(params.values()), retain_graph=meta_train,
                                        create_graph=second_order)
        with torch.set_grad_enabled(meta_train):
            step, state = self.network(flatten(dict(zip(params, gradients))), state)
            new = unflatten(flatten(params) + step, params)
        return (new if meta_train else leaves(new)), state

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.step == 0:
            self._fresh_optimisee()
        loss = self.loss(self.model, self.params, batch)
        self.unroll_losses.append(loss)
        self.params, self.state = self.update(self.params, loss, self.state, meta_train=True)
        self.step += 1
        self.batch_size = len(batch.x) if isinstance(batch, Batch) else 1
        values = {"loss": loss.detach()}
        if self.step % self.options.unroll == 0:
            values["meta_loss"] = self._meta_step(batch)
        if self.step == self.options.horizon:
            self.step = 0
            if self.options.select_every and self.optimisees % self.options.select_every == 0:
                score = self._select()
                if math.isfinite(score):  # a diverging rule is rejected, not a failed run
                    values["selection_loss"] = torch.tensor(score, dtype=torch.float64)
        return values

    def selection_batches(self, k: int) -> list[Batch]:
        """The minibatches of the k-th selection optimisee: ``horizon`` of the current task's
        training minibatches, drawn from the run's seed and k alone."""
        stream = self.context.stream
        batches = stream.train_batches(self.context.scenario, [self.task_index], self.batch_size,
                                       SELECTION_BATCHES.generator(self.context.seed, k),
                                       seen=self.task_index + 1)
        return list(itertools.islice(batches, self.options.horizon))

    def selection_score(self) -> float:
        """The current rule's mean final loss over the held-out selection optimisees."""
        finals = []
        for k in range(self.options.select_trajectories):
            reinitialise(self.model, SELECTION_INIT.seed(self.context.seed, k))
            finals.append(self.trajectory(self.model, self.selection_batches(k))[-1])
        return float(np.mean(finals))

    def _select(self) -> float:
        """Score the current rule; keep a copy if it is the best so far. A rule whose held-out
        optimisees diverge (a NaN or infinite final loss) is rejected with a warning."""
        score = self.selection_score()
        self.selections.append((self.optimisees, score if math.isfinite(score) else None))
        if not math.isfinite(score):
            warnings.warn(f"the LSTM optimizer's rule after {self.optimisees} optimisees drove its "
                          f"held-out optimisees to a final loss of {score}; it is rejected and "
                          "the best rule so far stays selected", stacklevel=2)
        elif self.best_score is None or score < self.best_score:
            self.best_score = score
            self.best_network = copy.deepcopy(self.network.state_dict())
        return score

    def _fresh_optimisee(self) -> None:
        """A new optimisee: the model drawn afresh, from the run's seed and its number."""
        reinitialise(self.model, OPTIMISEE_INIT.seed(self.context.seed, self.optimisees))
        self.optimisees += 1
        self.params = leaves({name: p.clone() for name, p in self.model.named_parameters()})
        self.state = self.network.initial_state(flatten(self.params))
        self.unroll_losses = []

    def _meta_step(self, batch: Batch) -> torch.Tensor:
        """Adam step on the unroll's mean loss, then truncate. The end point's loss is taken on
        the unroll's last minibatch, as the protocol hands a learner one batch per step (a fresh
        one would be unbiased); the first term, at the detached start, is a constant."""
        meta_loss = torch.stack([*self.unroll_losses, self.loss(self.model, self.params, batch)]).mean()
        self.meta_optimizer.zero_grad()
        meta_loss.backward(inputs=list(self.network.parameters()))
        self.meta_optimizer.step()
        self.params = leaves(self.params)
        self.state = tuple(s.detach() for s in self.state)
        self.unroll_losses = []
        return meta_loss.detach()

    def end_task(self, task_index: int) -> None:
        """The model becomes the latest optimisee (an unfinished unroll is dropped) and the rule
        the best one selected, if any; the next task starts a fresh optimisee."""
        if self.best_network is not None:
            self.network.load_state_dict(self.best_network)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(self.params[name])
        self.unroll_losses, self.step = [], 0

    def report(self, task_index: int) -> dict[str, float]:
        """The selected rule's score (kept per task in the results), when selecting."""
        return {"selected_rule_loss": self.best_score} if self.best_network is not None else {}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        """With the optimisee in training, so that validation inside a task scores it (after a
        task the model holds it; before any training there is none)."""
        self.model.eval()
        return functional_call(self.model, self.params, (x,)) if self.params else self.model(x)

    def trajectory(self, model: nn.Module, batches: Iterable[Batch]) -> list[float]:
        """Train ``model`` (any architecture; itself left unchanged) with the learned rule from
        its current weights, one step per batch, without meta-learning; the minibatch loss
        before each step."""
        params = leaves({name: p.clone() for name, p in model.named_parameters()})
        state, losses = self.network.initial_state(flatten(params)), []
        for batch in batches:
            loss = self.loss(model, params, batch)
            params, state = self.update(params, loss, state, meta_train=False)
            losses.append(loss.item())
        return losses

    def state_dict(self) -> dict[str, Any]:
        """With the optimisee in progress; an unfinished unroll's graph cannot be kept."""
        if self.unroll_losses:
            warnings.warn(
                f"checkpoint {len(self.unroll_losses)} steps into an unroll of {self.options.unroll}:"
                " a run resumed from it starts a new unroll there and differs from an uninterrupted"
                " one; make protocol.checkpoint_every a multiple of learner.options.unroll",
                stacklevel=2)
        return {**super().state_dict(), "network": self.network.state_dict(),
                "meta_optimizer": self.meta_optimizer.state_dict(), "optimisees": self.optimisees,
                "step": self.step, "optimisee": {k: p.detach() for k, p in self.params.items()},
                "lstm_state": [s.detach() for s in self.state] if self.state is not None else None,
                "task_index": self.task_index, "batch_size": self.batch_size,
                "best_score": self.best_score, "best_network": self.best_network,
                "selections": self.selections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.network.load_state_dict(state["network"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.optimisees, self.step = state["optimisees"], state["step"]
        self.params = leaves(state["optimisee"])
        self.state = tuple(state["lstm_state"]) if state["lstm_state"] is not None else None
        self.unroll_losses = []
        self.task_index, self.batch_size = state["task_index"], state["batch_size"]
        self.best_score, self.best_network = state["best_score"], state["best_network"]
        self.selections = [tuple(selection) for selection in state["selections"]]
