"""Architecture searchers: each proposes architectures of a space and learns from their
validation scores (docs/architecture_search.md). They know nothing of runs or Ray: the sweep
engine trains each proposal as a trial and tells the searcher its score.

A searcher is deterministic given its seed and the scores it is told, in order: a search
started again after a kill proposes the same architectures, whose runs are then reused.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import deque
from typing import Literal

import pydantic
import torch
from torch import nn

from metalearn.nas.space import Architecture, ArchitectureSpace


class _Options(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class RandomOptions(_Options):
    name: Literal["random"] = "random"


class EvolutionOptions(_Options):
    name: Literal["evolution"] = "evolution"
    population: int = pydantic.Field(10, ge=2)  # P: the architectures alive, youngest last
    sample: int = pydantic.Field(3, ge=1)  # S: the tournament's size

    @pydantic.model_validator(mode="after")
    def _sample_within_population(self) -> EvolutionOptions:
        if self.sample > self.population:
            raise ValueError(f"sample ({self.sample}) must not exceed population ({self.population})")
        return self


class ReinforceOptions(_Options):
    """Defaults: Zoph & Le (2017): Adam at 0.0006, a 35-unit LSTM; the baseline an exponential
    moving average of the scores."""

    name: Literal["reinforce"] = "reinforce"
    lr: float = pydantic.Field(6e-4, gt=0)
    baseline_decay: float = pydantic.Field(0.9, ge=0, lt=1)
    hidden: int = pydantic.Field(35, ge=1)


class ArchitectureSearcher(ABC):
    """Proposes architectures within ``space``; ``observe`` tells it one's validation score."""

    def __init__(self, space: ArchitectureSpace, seed: int) -> None:
        self.space, self.rng = space, random.Random(seed)

    @abstractmethod
    def propose(self) -> Architecture: ...

    def observe(self, architecture: Architecture, score: float) -> None:
        """Learn from ``score`` (higher is better) of a proposed ``architecture``."""


class RandomSearch(ArchitectureSearcher):
    """Uniform draws from the space: the baseline every searcher answers to (Li & Talwalkar
    2019, "Random Search and Reproducibility for Neural Architecture Search")."""

    def propose(self) -> Architecture:
        return self.space.sample(self.rng)


class RegularisedEvolution(ArchitectureSearcher):
    """Regularised (ageing) evolution: Real, Aggarwal, Huang & Le (2019), "Regularized
    Evolution for Image Classifier Architecture Search". The first ``population`` proposals are
    random; then each is a mutation of the best of ``sample`` architectures drawn from the
    population, and every scored child joins it while the *oldest* member leaves (not the
    worst: a lucky score cannot live forever)."""

    def __init__(self, space: ArchitectureSpace, seed: int, options: EvolutionOptions = EvolutionOptions()) -> None:
        super().__init__(space, seed)
        self.options = options
        self.population: deque[tuple[Architecture, float]] = deque(maxlen=options.population)
        self.proposed = 0

    def propose(self) -> Architecture:
        self.proposed += 1
        if self.proposed <= self.options.population or not self.population:
            return self.space.sample(self.rng)
        contestants = self.rng.sample(list(self.population), min(self.options.sample, len(self.population)))
        parent = max(contestants, key=lambda member: member[1])[0]
        return self.space.mutate(parent, self.rng)

    def observe(self, architecture: Architecture, score: float) -> None:
        self.population.append((architecture, score))  # the deque drops its oldest when full


class Controller(nn.Module):
    """Zoph & Le (2017)'s controller: an LSTM that makes one decision a step (the depth, then
    each block's operation, width and reduction), each decision's softmax read from its state
    and the chosen value's embedding its next input."""

    def __init__(self, space: ArchitectureSpace, hidden: int) -> None:
        super().__init__()
        self.choices = {"depth": list(space.depths), **space.block_choices()}
        self.cell = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.embeddings = nn.ModuleDict({kind: nn.Embedding(len(values), hidden)
                                         for kind, values in self.choices.items()})
        self.heads = nn.ModuleDict({kind: nn.Linear(hidden, len(values))
                                    for kind, values in self.choices.items()})

    def decide(self, generator: torch.Generator | None = None,
               architecture: Architecture | None = None) -> tuple[Architecture, torch.Tensor]:
        """Sample an architecture (with ``generator``), or score the given one; (the
        architecture, the sum of its decisions' log-probabilities)."""
        state, inputs, log_prob = None, self.start, torch.zeros(())

        def step(kind: str, given: object | None) -> object:
            nonlocal state, inputs, log_prob
            state = self.cell(inputs, state)
            logits = self.heads[kind](state[0])[0]
            index = (self.choices[kind].index(given) if given is not None else
                     int(torch.multinomial(logits.softmax(-1), 1, generator=generator)))
            log_prob = log_prob + logits.log_softmax(-1)[index]
            inputs = self.embeddings[kind](torch.tensor([index]))
            return self.choices[kind][index]

        depth = step("depth", None if architecture is None else len(architecture))
        blocks = tuple(tuple(step(kind, None if architecture is None else architecture[b][k])
                             for k, kind in enumerate(("op", "width", "reduce")))
                       for b in range(depth))
        return blocks, log_prob


class Reinforce(ArchitectureSearcher):
    """Neural architecture search with reinforcement learning: Zoph & Le (2017), "Neural
    Architecture Search with Reinforcement Learning". The controller's policy is trained by
    REINFORCE on the validation score, minus a moving-average baseline; proposals over the FLOPs
    cap are drawn again (the cap is a constraint of the space, not a reward)."""

    def __init__(self, space: ArchitectureSpace, seed: int, options: ReinforceOptions = ReinforceOptions()) -> None:
        super().__init__(space, seed)
        self.options = options
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.controller = Controller(space, options.hidden)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), options.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None

    def propose(self) -> Architecture:
        with torch.no_grad():
            return self.space.within_cap(lambda: self.controller.decide(self.generator)[0])

    def probability(self, architecture: Architecture) -> float:
        with torch.no_grad():
            return float(self.controller.decide(architecture=architecture)[1].exp())

    def observe(self, architecture: Architecture, score: float) -> None:
        if self.baseline is None:
            self.baseline = score
        advantage = score - self.baseline
        self.optimizer.zero_grad()
        (-advantage * self.controller.decide(architecture=architecture)[1]).backward()
        self.optimizer.step()
        decay = self.options.baseline_decay
        self.baseline = decay * self.baseline + (1 - decay) * score


class DartsOptions(_Options):
    """DARTS's relaxation (Liu, Simonyan & Yang 2019) meta-trained by the candidates' episodic
    learner, as MetaNAS (Elsken et al. 2020) meta-trains it with Reptile: one supernet of
    ``depth`` mixed blocks of ``width`` channels trained for ``supernet_steps``, then the most
    probable architecture within the FLOPs cap trained as a candidate. Not a proposer: the sweep
    engine runs its two trials (metalearn.sweep.architecture)."""

    name: Literal["darts"] = "darts"
    supernet_steps: int = pydantic.Field(ge=1)
    depth: int = pydantic.Field(4, ge=1)
    width: int = pydantic.Field(64, ge=1)
    reductions: list[str] = ["stride", "max", "avg"]


SearcherOptions = RandomOptions | EvolutionOptions | ReinforceOptions
SEARCHERS: dict[str, type[ArchitectureSearcher]] = {
    "random": RandomSearch, "evolution": RegularisedEvolution, "reinforce": Reinforce}


def build_searcher(options: SearcherOptions, space: ArchitectureSpace, seed: int) -> ArchitectureSearcher:
    searcher = SEARCHERS[options.name]
    return searcher(space, seed) if isinstance(options, RandomOptions) else searcher(space, seed, options)
