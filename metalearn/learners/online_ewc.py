"""Online EWC (Schwarz et al. 2018, "Progress & Compress: A scalable framework for continual
learning", ICML): one running Fisher instead of one penalty per task.

After task t the running Fisher becomes F* <- gamma F* + F_t and the anchor theta* the current
parameters; later tasks train on

    loss + strength / 2 * gamma * sum_k F*_k (theta_k - theta*_k)^2,

the penalty of the paper (and of van de Ven & Tolias's code), whose gamma < 1 lets old tasks'
importance fade. The Fisher is estimated as in :mod:`metalearn.learners.ewc`.
"""

from __future__ import annotations

import pydantic
import torch

from metalearn.learners.ewc import EWC, EWCOptions
from metalearn.learners.registry import register


class OnlineEWCOptions(EWCOptions):
    gamma: float = pydantic.Field(1.0, gt=0.0, le=1.0)  # decay of the running Fisher


@register
class OnlineEWC(EWC):
    """EWC with a single decaying Fisher anchored at the latest parameters."""

    name = "online_ewc"
    Options = OnlineEWCOptions

    @property
    def penalty_scale(self) -> float:
        return self.options.strength / 2 * self.options.gamma

    def consolidate(self, importance: list[torch.Tensor]) -> None:
        self.penalty.reanchor(importance, decay=self.options.gamma)
