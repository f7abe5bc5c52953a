"""Meta-LSTM: an LSTM whose cell state is the learner's parameters learns how to train it.

Ravi & Larochelle (2017), "Optimization as a model for few-shot learning" (ICLR). A gradient
step ``theta_t = theta_{t-1} - lr * g_t`` is the cell update of an LSTM with forget gate 1,
input gate ``lr`` and candidate ``-g_t``. The meta-learner makes both gates learned functions
of the learner's gradient and loss, per parameter entry (coordinate), and learns the cell's
initial state, i.e. the learner's initialisation:

    h_t = LSTM([log_and_sign(g_t), log_and_sign(L_t)], h_{t-1})   (one cell for all coordinates)
    f_t = sigmoid(W_F [h_t, c_{t-1}, f_{t-1}] + b_F)
    i_t = sigmoid(W_I [h_t, c_{t-1}, i_{t-1}] + b_I)
    c_t = f_t * c_{t-1} - i_t * g_t

with ``c_0`` the model's own parameters, ``f_0 = i_0 = 0``, and ``L_t``, ``g_t`` the support
loss and gradient of the learner at ``theta_{t-1} = c_{t-1}``. The meta-loss is the query loss
at ``c_T``, averaged over the meta-batch; one Adam step with the meta-gradient's norm clipped
trains the LSTM, the gates and ``c_0``.

As in the paper, ``L_t`` and ``g_t`` enter the meta-learner as constants: the meta-gradient
ignores how they depend on ``c_{t-1}`` (no second derivatives of the learner), but still flows
through ``c_{t-1}`` in ``f_t * c_{t-1}`` and into the gates. The gate biases start so that the
update is gradient descent with a small step (``f ~ 1``, ``i ~ sigmoid(-4.5)``).
"""

from __future__ import annotations

from typing import Any

import pydantic
import torch
from torch import nn

from metalearn.learners.base import LearnerContext, LearnerOptions
from metalearn.learners.coordinatewise import flatten, log_and_sign, lstm_step, unflatten
from metalearn.learners.inner_loop import Batching, Parameters
from metalearn.learners.maml import EpisodicMetaLearner
from metalearn.learners.registry import register

Range = tuple[float, float]


class MetaLSTMOptions(LearnerOptions):
    """Defaults: the reference code's Omniglot/miniImageNet 1-shot setting (see the doc page)."""

    inner_steps: int = pydantic.Field(12, ge=1)  # updates on the support set in meta-training
    eval_inner_steps: int = pydantic.Field(12, ge=0)  # and at test
    lr: float = pydantic.Field(1e-3, gt=0)  # outer Adam
    grad_clip: float | None = pydantic.Field(0.25, gt=0)  # meta-gradient norm; None: no clip
    hidden: int = pydantic.Field(20, ge=1)  # units of the first LSTM layer
    preprocess_p: float = pydantic.Field(10.0, gt=0)  # p of log_and_sign
    forget_bias: Range = (4.0, 6.0)  # b_F ~ U(range): f starts near 1
    input_bias: Range = (-5.0, -4.0)  # b_I ~ U(range): i starts as a small learning rate
    gate_weight_scale: float = pydantic.Field(0.01, ge=0)  # W_F, W_I ~ U(-scale, scale)
    transductive: bool = True  # queries normalised together (see inner_loop)
    batching: Batching = "auto"

    @pydantic.field_validator("forget_bias", "input_bias")
    @classmethod
    def _ordered(cls, value: Range) -> Range:
        if value[0] > value[1]:
            raise ValueError(f"a range (low, high) needs low <= high, got {value}")
        return value


class MetaLearnerCell(nn.Module):
    """The two-layer meta-learner, applied to all coordinates at once (batch = coordinates)."""

    def __init__(self, options: MetaLSTMOptions) -> None:
        super().__init__()
        self.p = options.preprocess_p
        self.lstm = nn.LSTMCell(4, options.hidden)
        self.forget = nn.Linear(options.hidden + 2, 1)
        self.input = nn.Linear(options.hidden + 2, 1)
        with torch.no_grad():
            for gate, bias in ((self.forget, options.forget_bias), (self.input, options.input_bias)):
                gate.weight.uniform_(-options.gate_weight_scale, options.gate_weight_scale)
                gate.bias.uniform_(*bias)

    def forward(self, c: torch.Tensor, gradient: torch.Tensor, loss: torch.Tensor,
                state: tuple[Any, torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, tuple[Any, torch.Tensor, torch.Tensor]]:
        """One update of the cell state ``c`` [n]; ``state`` is (LSTM state or None, f, i)."""
        lstm_state, f, i = state
        inputs = torch.cat([log_and_sign(gradient, self.p),
                            log_and_sign(loss, self.p).expand(len(gradient), 2)], dim=1)
        lstm_state = lstm_step(self.lstm, inputs, lstm_state)
        h = lstm_state[0]
        f = torch.sigmoid(self.forget(torch.cat([h, c[:, None], f[:, None]], dim=1)).squeeze(1))
        i = torch.sigmoid(self.input(torch.cat([h, c[:, None], i[:, None]], dim=1)).squeeze(1))
        return f * c - i * gradient, (lstm_state, f, i)


@register
class MetaLSTM(EpisodicMetaLearner):
    """The meta-LSTM learner; MAML's episode loop with the LSTM's update as the inner step."""

    name = "meta_lstm"
    Options = MetaLSTMOptions

    def __init__(self, model: nn.Module, options: MetaLSTMOptions, context: LearnerContext) -> None:
        dtype = next(model.parameters()).dtype
        self.cell = MetaLearnerCell(options).to(context.device, dtype)
        super().__init__(model, options, context)

    def meta_parameters(self) -> list[torch.Tensor]:
        """c_0 (the model's parameters), then the LSTM layer and the gates."""
        return [*super().meta_parameters(), *self.cell.parameters()]

    def adapt(self, params: Parameters, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int) -> Parameters:
        """``steps`` meta-learner updates from ``params`` (c_0) on one episode's support set;
        the learner's loss and gradient enter detached (see the module docstring)."""
        c = flatten(params)
        state = (None, torch.zeros_like(c), torch.zeros_like(c))
        for _ in range(steps):
            detached = unflatten(c.detach(), params)
            gradients, loss = self.functional.gradient(detached, support_x, support_y)
            c, state = self.cell(c, flatten(gradients), loss, state)
        return unflatten(c, params)

    def meta_gradient(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The episode loop's accumulated meta-gradient, its norm clipped to ``grad_clip``."""
        loss, accuracy = super().meta_gradient(batch)
        if self.options.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.meta_parameters(), self.options.grad_clip)
        return loss, accuracy

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "meta_learner": self.cell.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.cell.load_state_dict(state["meta_learner"])
