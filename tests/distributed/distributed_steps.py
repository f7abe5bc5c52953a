"""Three training steps of an episodic learner on small random float64 episodes, as one
process (imported by the tests) or as each process of a torchrun (run as a script, it writes
rank 0's learner state to the file given)."""

from __future__ import annotations

import sys

import torch

from metalearn import distributed
from metalearn.learners import LearnerContext, get_learner
from metalearn.models import MLP
from metalearn.tasks import EpisodeBatch

N_WAY, K_SHOT, Q_QUERY, SIZE = 3, 2, 2, 6
META_BATCH = 5  # odd: the two processes' shards differ in size
STEPS = 3
OPTIONS = {
    "maml": {"inner_steps": 2, "batching": "loop"},
    "meta_sgd": {"inner_steps": 2, "batching": "loop"},
    "meta_lstm": {"inner_steps": 2, "hidden": 4, "grad_clip": 0.01, "batching": "loop"},
    "reptile": {"inner_steps": 3, "inner_batch_size": 2, "inner_state": "fresh",
                "train_shots": 4, "batching": "loop"},
}


def episodes(step: int) -> EpisodeBatch:
    """Meta-batch ``step``, the same on every process (drawn from its own seed)."""
    generator = torch.Generator().manual_seed(step)

    def part(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(META_BATCH, N_WAY * per_class, 1, SIZE, SIZE, generator=generator,
                       dtype=torch.float64)
        return x, torch.arange(N_WAY).repeat_interleave(per_class).expand(META_BATCH, -1)

    return EpisodeBatch(*part(K_SHOT), *part(Q_QUERY))


def train(name: str) -> tuple[dict, list[dict[str, float]], int]:
    """The learner's state, logged values and the number of episodes this process adapted to
    in training, after ``STEPS`` steps in this process's group."""
    torch.manual_seed(0)
    model = MLP(SIZE * SIZE, N_WAY, hidden=(8,)).to(torch.float64)
    cls = get_learner(name)
    learner = cls(model, cls.Options(**OPTIONS[name]),
                  LearnerContext(None, None, torch.device("cpu"), 0))
    adapt, adapted = learner.adapt, []

    def counted(*args, **kwargs):
        adapted.append(1)
        return adapt(*args, **kwargs)

    learner.adapt = counted
    logged = [{k: float(v) for k, v in learner.train_step(episodes(step)).items()}
              for step in range(STEPS)]
    return learner.state_dict(), logged, len(adapted)


if __name__ == "__main__":
    learner_name, out = sys.argv[1:]
    distributed.init_from_environment(torch.device("cpu"))
    state, values, adapted = train(learner_name)
    if distributed.is_main():
        torch.save({"state": state, "logged": values, "adapted": adapted,
                    "world_size": distributed.world_size()}, out)
    distributed.shutdown()
