"""Progressive Neural Networks (Rusu et al. 2016, "Progressive Neural Networks",
arXiv:1606.04671): a new column of the network for each task, the earlier ones frozen and read
through lateral connections.

Column k is the config's model (``mlp`` or ``conv4``) drawn afresh; the runner's model, as it
was initialised, is column 0. A column is read as its ``features`` followed by its ``head``,
cut into layers at each weighted module (``nn.Linear``, ``nn.Conv2d``): a layer is that module
and what follows it up to the next one (activation; BatchNorm, pooling, flattening), and
``h_l`` is its output. Layer l + 1 of column k adds to its weighted module's output a lateral
from every earlier column j < k (the paper's Eq. 1):

    h_{l+1}^(k) = post_{l+1}( W_{l+1}^(k) h_l^(k) + sum_{j<k} U_{l+1}^(k:j) h_l^(j) ),

where ``U`` is a module of the same kind and shape as ``W`` without a bias (a linear map for
an MLP, a convolution with W's kernel, stride and padding for Conv4). These linear laterals
are the paper's Eq. 1; its non-linear adapter (a learned scale, a projection of the
concatenated earlier columns to the layer's width, a non-linearity, then U) is not used: it
exists to reduce the input of U for wide inputs (Atari's convolutions), and for layers of equal
width, as our MLP's and Conv4's are, the projection has as many parameters as the U's it
replaces. Parameters grow by one column and k lateral sets for task k: quadratically in the
number of tasks, the laterals' share growing (see ``model_size_bits``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from metalearn.learners.base import (
    CLASSIFICATION,
    Learner,
    LearnerContext,
    adam,
    masked_cross_entropy,
)
from metalearn.learners.finetune import FineTuneOptions
from metalearn.learners.registry import register
from metalearn.models import reinitialise
from metalearn.seeding import derive_seed
from metalearn.tasks import Batch, Scenario

WEIGHTED = (nn.Linear, nn.Conv2d)


def layers(column: nn.Module) -> tuple[list[nn.Module], list[list[nn.Module]]]:
    """``column``'s modules in the order its forward applies them (``features``, then
    ``head``), cut at each weighted module: the modules before the first (flattening), and each
    layer's modules, the weighted one first."""
    features, head = getattr(column, "features", None), getattr(column, "head", None)
    if not isinstance(features, nn.Sequential) or not isinstance(head, nn.Linear):
        raise ValueError(f"progressive columns are read as features (nn.Sequential) then head "
                         f"(nn.Linear), which {type(column).__name__} lacks: use the model "
                         "mlp or conv4")
    before: list[nn.Module] = []
    cut: list[list[nn.Module]] = []
    for module in [*features, head]:
        if isinstance(module, WEIGHTED):
            cut.append([module])
        else:
            (cut[-1] if cut else before).append(module)
    return before, cut


def lateral_like(layer: nn.Module) -> nn.Module:
    """A lateral into ``layer``: a module of its kind and shape without a bias, which reads
    an earlier column's input to the layer."""
    if isinstance(layer, nn.Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         layer.padding, bias=False)
    return nn.Linear(layer.in_features, layer.out_features, bias=False)


def apply(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``x`` through ``modules`` in turn."""
    for module in modules:
        x = module(x)
    return x


def progressive_forward(x: torch.Tensor, columns: list[nn.Module],
                        laterals: list[nn.ModuleList]) -> torch.Tensor:
    """The output of the last of ``columns`` on ``x``: every column runs layer by layer, and
    layer m >= 1 (counted from 0) of column k adds ``laterals[k][m - 1][j]`` of column j's
    input to layer m, for each j < k."""
    before_and_layers = [layers(column) for column in columns]
    hidden = [apply(before, x) for before, _ in before_and_layers]
    for l in range(len(before_and_layers[0][1])):
        inputs, hidden = hidden, []
        for k, (_, column_layers) in enumerate(before_and_layers):
            weighted, *after = column_layers[l]
            z = weighted(inputs[k])
            if l > 0:
                for j, lateral in enumerate(laterals[k][l - 1]):
                    z = z + lateral(inputs[j])
            hidden.append(apply(after, z))
    return hidden[-1]


@register
class Progressive(Learner):
    """Rusu et al. (2016): a column per task, earlier columns frozen, lateral connections from
    each earlier column's layer l into the new column's layer l + 1 (the module docstring has
    the equations); task t is predicted by column t.

    Task-incremental only: a prediction needs the task's identity to choose its column. Each
    task trains its column and laterals with a fresh Adam; the earlier columns stay in
    evaluation mode (frozen BatchNorm statistics) and get no gradient, so their parameters and
    buffers are bitwise unchanged and BWT is exactly 0.

    Column k (k >= 1) and its laterals are drawn with PyTorch's layer initialisations from the
    seed ``progressive.column`` of k, so a resumed run rebuilds the same ones. A task not
    trained yet is predicted by the column of the next task to train, as its training starts
    (while a task trains, by that task's column). So ``b`` (before any training) is column 0
    as the runner built it, the same network, and the same ``b``, as every other learner's;
    R[i, j] for j > i scores the fresh column i + 1 over the trained columns 0..i, the network
    task i + 1 starts from, so FWT measures what the laterals give a column before it trains.
    """

    name = "progressive"
    task_kinds = frozenset({CLASSIFICATION})
    scenarios = frozenset({Scenario.TASK})
    Options = FineTuneOptions

    def __init__(self, model: nn.Module, options: FineTuneOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.columns = nn.ModuleList([self.model])
        # [k][m - 1][j]: from column j's input to layer m into column k's layer m (reading the
        # model's layers refuses one that cannot be a column, before training)
        self.laterals = nn.ModuleList([self._laterals(self.model, 0)])
        self.tasks_trained = 0
        self._fresh: tuple[int, nn.Module, nn.ModuleList] | None = None

    def _column(self, k: int) -> tuple[nn.Module, nn.ModuleList]:
        """Column k >= 1 and its laterals, as training on task k starts from them."""
        if self._fresh is None or self._fresh[0] != k:
            column = copy.deepcopy(self.model).requires_grad_(True)
            laterals = self._laterals(column, k)
            reinitialise(nn.ModuleList([column, laterals]),
                         derive_seed(self.context.seed, "progressive.column", k))
            self._fresh = (k, column, laterals)
        return self._fresh[1], self._fresh[2]

    def _laterals(self, column: nn.Module, k: int) -> nn.ModuleList:
        """For each layer of ``column`` after the first, a lateral from each of k earlier
        columns."""
        return nn.ModuleList(nn.ModuleList(lateral_like(weighted) for _ in range(k))
                             for weighted, *_ in layers(column)[1][1:]).to(self.context.device)

    def _grow_to(self, n_columns: int) -> None:
        """Add fresh columns (or drop the last ones) until there are ``n_columns``."""
        while len(self.columns) > n_columns:
            del self.columns[-1], self.laterals[-1]
        while len(self.columns) < n_columns:
            column, laterals = self._column(len(self.columns))
            self.columns.append(column)
            self.laterals.append(laterals)
            self._fresh = None

    def begin_task(self, task_index: int) -> None:
        if task_index != self.tasks_trained:
            raise ValueError(f"progressive networks train tasks in order: task {task_index} "
                             f"was begun after {self.tasks_trained} trained tasks")
        self._grow_to(task_index + 1)
        trainable = [*self.columns[task_index].parameters(),
                     *self.laterals[task_index].parameters()]
        self.optimizer = adam(trainable, self.options.lr, self.options.betas)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        for k, column in enumerate(self.columns):
            column.train(k == self.tasks_trained)  # earlier columns: frozen statistics
        loss = masked_cross_entropy(progressive_forward(batch.x, list(self.columns),
                                                        list(self.laterals)), batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def end_task(self, task_index: int) -> None:
        """Freeze the task's column and laterals."""
        self.columns[task_index].requires_grad_(False)
        self.laterals[task_index].requires_grad_(False)
        self.tasks_trained = task_index + 1

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        if task_index is None:
            raise ValueError("a progressive network predicts with the task's own column: "
                             "it needs the task index")
        k = min(task_index, self.tasks_trained)  # not trained yet: the next task's column
        if k < len(self.columns):
            columns, laterals = list(self.columns[:k + 1]), list(self.laterals[:k + 1])
        else:
            fresh, fresh_laterals = self._column(k)
            columns, laterals = [*self.columns, fresh], [*self.laterals, fresh_laterals]
        for column in columns:
            column.eval()
        return progressive_forward(x, columns, laterals)

    def model_size_bits(self) -> int:
        """Every column and lateral of the trained tasks (and of the task in training), at
        their precision: task k adds a column and k laterals per layer after the first."""
        return sum(p.numel() * p.element_size() * 8
                   for p in [*self.columns.parameters(), *self.laterals.parameters()])

    def state_dict(self) -> dict[str, Any]:
        return {"columns": self.columns.state_dict(), "laterals": self.laterals.state_dict(),
                "n_columns": len(self.columns), "tasks_trained": self.tasks_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild as many columns as the state holds, then load them."""
        self._grow_to(state["n_columns"])
        self.columns.load_state_dict(state["columns"])
        self.laterals.load_state_dict(state["laterals"])
        self.tasks_trained = state["tasks_trained"]
        for k in range(len(self.columns)):
            self.columns[k].requires_grad_(k >= self.tasks_trained)
            self.laterals[k].requires_grad_(k >= self.tasks_trained)
