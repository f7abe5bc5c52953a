"""OML: meta-learn a representation on which online SGD learns new classes and forgets little.

Javed & White (2019), "Meta-Learning Representations for Continual Learning" (NeurIPS). The
network splits into a representation (RLN: every layer but the last ``inner_layers``) and a
prediction network (PLN: those; OML's is the linear head). Each meta-step draws a trajectory
from the training classes: ``trajectory_classes`` classes of ``trajectory_shots`` images,
presented class by class, one image per inner SGD step on the PLN alone, after the head rows of
those classes are reset (as the reference code does). The meta-loss is the adapted network's
cross-entropy on ``query_shots`` other images of the trajectory's classes (its own images when
0, as ANML) plus a "remember set" of ``remember_size`` images of the whole pool; its gradient
reaches, through the inner steps (second order unless ``first_order``), the RLN and the PLN's
initial weights. The RLN so learns features on which online updates of the PLN learn a new
class without overwriting the others.

Meta-test (``predict_episodes``) is the papers' continual stream: an N-way K-shot episode's
support set, grouped by class, is learned in one pass, one image per step, by a fresh N-output
head (Kaiming-normal weights, zero biases) with ``test_optimizer`` at ``test_lr`` (Adam in both
papers' code); the queries are held-out drawings of the same classes. As in both papers only
the head learns at meta-test, so each image's features are computed once.

The head trained in meta-training has one output per training class (the reference code's
1000 covers Omniglot's 964); it is not used at meta-test, so a trained run is evaluated at
any N (``metalearn evaluate RUN protocol.n_way=600``).
"""

from __future__ import annotations

from typing import Any, Iterator, Literal, NamedTuple

import pydantic
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from metalearn.learners.base import EPISODIC, Learner, LearnerContext, LearnerOptions, adam
from metalearn.learners.inner_loop import Parameters
from metalearn.learners.registry import register
from metalearn.seeding import derive_generator
from metalearn.tasks import EpisodeBatch


class OMLOptions(LearnerOptions):
    """Defaults: OML's Omniglot meta-training as its reference code runs it (three classes of
    five images per trajectory, five more each and 15 remembered images in the meta-loss, inner
    SGD at 0.03 on the head, outer Adam 1e-4)."""

    inner_lr: float = 0.03
    # the model's last layers with parameters that the inner loop adapts (None: all of them)
    inner_layers: int | None = pydantic.Field(1, ge=1)
    first_order: bool = False
    lr: float = 1e-4  # outer Adam
    trajectory_classes: int = pydantic.Field(3, ge=1)
    trajectory_shots: int = pydantic.Field(5, ge=1)
    query_shots: int = pydantic.Field(5, ge=0)
    remember_size: int = pydantic.Field(15, ge=0)
    test_lr: float = 1e-3
    test_optimizer: Literal["adam", "sgd"] = "adam"


class Trajectory(NamedTuple):
    """One meta-step's data: the trajectory ``x``/``y`` in presentation order (class by class),
    the meta-loss's ``query_x``/``query_y`` (the trajectory's classes and the remember set), and
    fresh head rows ``reset`` [classes, features] for the trajectory's ``classes``."""

    x: torch.Tensor
    y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    reset: torch.Tensor


def kaiming_normal(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Kaiming-normal weights (fan-in, ReLU gain) drawn from ``generator``, as both papers'
    initialisation."""
    return nn.init.kaiming_normal_(torch.empty(shape), nonlinearity="relu", generator=generator)


def linear(weight: torch.Tensor) -> nn.Linear:
    """A linear layer of ``weight`` [outputs, inputs] and zero biases (no global random draw)."""
    layer = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], device=weight.device,
                               dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.zero_()
    return layer


class Predictor(nn.Module):
    """The model's head over its features, gated element-wise by ``modulator(x)`` if there is
    one (ANML's neuromodulation)."""

    def __init__(self, model: nn.Module, modulator: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.modulator = modulator

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.features(x)
        return features if self.modulator is None else features * self.modulator(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.embed(x))


@register
class OML(Learner):
    """Online-aware meta-learning: the inner loop trains the PLN online, the meta-gradient
    trains the RLN (and the PLN's initial weights)."""

    name = "oml"
    task_kinds = frozenset({EPISODIC})
    Options = OMLOptions
    resumes_mid_task = True  # all its state is in state_dict; trajectories are redrawn

    def __init__(self, model: nn.Module, options: OMLOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.network = Predictor(self.model, self.modulator()).to(context.device)
        self.inner_names = self._inner_names()
        self._new_optimizer()

    def modulator(self) -> nn.Module | None:
        """The network that gates the features (None: no gate)."""
        return None

    def _inner_names(self) -> list[str]:
        """Names, in ``network``, of the parameters of the model's last ``inner_layers``
        layers with parameters."""
        layers = [name for name, module in self.model.named_modules()
                  if next(module.parameters(recurse=False), None) is not None]
        count = self.options.inner_layers or len(layers)
        if count > len(layers):
            raise ValueError(f"learner.options.inner_layers={count} but the model has "
                             f"{len(layers)} layers with parameters; use at most {len(layers)}")
        return [f"model.{layer}.{name}" for layer in layers[-count:]
                for name, _ in self.model.get_submodule(layer).named_parameters(recurse=False)]

    def _new_optimizer(self) -> None:
        self.optimizer = adam(self.network.parameters(), self.options.lr)

    def _resize_head(self, n_outputs: int, task_index: int) -> None:
        """A new head of ``n_outputs`` (Kaiming-normal weights, zero biases) unless it has them."""
        head = self.model.head
        if head.out_features != n_outputs:
            generator = derive_generator(self.context.seed, f"{self.name}.head", task_index)
            weight = kaiming_normal((n_outputs, head.in_features), generator)
            self.model.head = linear(weight.to(head.weight))
            self._new_optimizer()

    def begin_task(self, task_index: int) -> None:
        """Give the head one output per training class (the trajectories' labels)."""
        self._resize_head(len(self.episodic_task(task_index).train), task_index)

    def training_batches(self, task_index: int, phase: str = "train") -> Iterator[Trajectory]:
        """Endless trajectories from the task's training classes (see the module docstring)."""
        options, pool = self.options, self.episodic_task(task_index).train
        classes, shots = options.trajectory_classes, options.trajectory_shots
        if classes > len(pool):
            raise ValueError(f"learner.options.trajectory_classes={classes} exceeds the "
                             f"{len(pool)} training classes; use at most {len(pool)}")
        smallest = int(pool.sizes.min())
        if shots + options.query_shots > smallest:
            raise ValueError(f"trajectory_shots + query_shots = {shots + options.query_shots} "
                             f"images per class, but the smallest training class has {smallest}; "
                             "lower learner.options.trajectory_shots or query_shots")
        generator = derive_generator(self.context.seed, f"{self.name}.trajectories", task_index)
        labels = torch.repeat_interleave(torch.arange(len(pool)), pool.sizes)
        width = self.model.head.in_features

        def images(index: torch.Tensor) -> torch.Tensor:
            return pool.images[index.to(pool.images.device)].unsqueeze(1).float().div_(255)

        def draw() -> Trajectory:
            chosen = torch.randperm(len(pool), generator=generator)[:classes]
            drawings = torch.stack([torch.randperm(int(pool.sizes[c]), generator=generator)
                                    for c in chosen.tolist()])[:, :shots + options.query_shots]
            index = pool.offsets[chosen][:, None] + drawings
            trajectory, query = index[:, :shots].flatten(), index[:, shots:].flatten()
            if not options.query_shots:
                query = trajectory
            remembered = torch.randint(len(labels), (options.remember_size,), generator=generator)
            query = torch.cat([query, remembered])
            reset = kaiming_normal((classes, width), generator)
            device = self.context.device
            return Trajectory(images(trajectory).to(device), labels[trajectory].to(device),
                              images(query).to(device), labels[query].to(device),
                              chosen.to(device), reset.to(device))

        return iter(draw, None)

    def adapt(self, params: Parameters, x: torch.Tensor, y: torch.Tensor) -> Parameters:
        """The inner loop: from ``params``, one SGD step on the inner parameters per image of
        ``x`` in order (one pass); returns all parameters, the inner ones adapted."""
        fixed = {name: p for name, p in params.items() if name not in self.inner_names}
        fast = {name: params[name] for name in self.inner_names}

        def loss(fast: Parameters, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            logits = functional_call(self.network, {**fixed, **fast}, (image[None],))
            return F.cross_entropy(logits, label[None])

        for image, label in zip(x, y):
            gradients = grad(loss)(fast, image, label)
            if self.options.first_order:
                gradients = {name: g.detach() for name, g in gradients.items()}
            fast = {name: p - self.options.inner_lr * gradients[name] for name, p in fast.items()}
        return {**fixed, **fast}

    def train_step(self, batch: Trajectory) -> dict[str, torch.Tensor]:
        self.network.train()
        head = self.model.head
        with torch.no_grad():  # the trajectory's classes start from fresh head rows
            head.weight[batch.classes] = batch.reset
            head.bias[batch.classes] = 0
        adapted = self.adapt(dict(self.network.named_parameters()), batch.x, batch.y)
        logits = functional_call(self.network, adapted, (batch.query_x,))
        loss = F.cross_entropy(logits, batch.query_y)
        self.optimizer.zero_grad()
        loss.backward()
        accuracy = (logits.argmax(-1) == batch.query_y).float().mean()
        return {"loss": loss.detach(), "accuracy": accuracy,
                **self.take_step(self.optimizer.step)}

    @torch.no_grad()
    def predict_episodes(self, batch: EpisodeBatch) -> torch.Tensor:
        """For each episode, a fresh head learns the support set online (class by class, one
        image per step, one pass); its logits [B, N*Q, N] for the queries."""
        self.network.eval()
        support = torch.stack([self._embed(x) for x in batch.support_x])
        query = torch.stack([self._embed(x) for x in batch.query_x])
        n_way, width = int(batch.support_y.max()) + 1, support.shape[-1]
        generator = derive_generator(self.context.seed, f"{self.name}.test_heads")
        weight = torch.stack([kaiming_normal((n_way, width), generator) for _ in range(len(batch))])
        weight, bias = self.learn_online(weight.to(support), support, batch.support_y)
        return torch.baddbmm(bias[:, None], query, weight.transpose(1, 2))

    def _embed(self, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
        """Features of one episode's images, ``chunk`` at a time (a 600-way support set holds
        9000 images)."""
        return torch.cat([self.network.embed(part) for part in x.split(chunk)])

    def learn_online(self, weight: torch.Tensor, features: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear heads (weights [B, N, D], biases [B, N]) learned from ``weight`` and zero
        biases by one ``test_optimizer`` step per example of ``features`` [B, S, D] in order,
        the B streams side by side (the optimizers are elementwise, so one over the stacked
        heads is one per stream). The cross-entropy's gradient is written out ((softmax -
        one-hot) times the features), so the thousands of steps of a 600-way stream build no
        graph."""
        weight = weight.clone()
        bias = weight.new_zeros(weight.shape[:2])
        optimizer_class = torch.optim.Adam if self.options.test_optimizer == "adam" else torch.optim.SGD
        optimizer = optimizer_class([weight, bias], lr=self.options.test_lr)
        for feature, label in zip(features.unbind(1), labels.unbind(1)):
            logits = torch.baddbmm(bias[:, None], feature[:, None], weight.transpose(1, 2))[:, 0]
            error = logits.softmax(-1) - F.one_hot(label, weight.shape[1]).to(logits)
            weight.grad, bias.grad = error[:, :, None] * feature[:, None], error
            optimizer.step()
        return weight, bias

    def model_size_bits(self) -> int:
        return sum(p.numel() * p.element_size() * 8 for p in self.network.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resize_head(state["network"]["model.head.weight"].shape[0], 0)  # then overwritten
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
