"""Three training steps of an episodic learner on small random float64 episodes, or two tasks
of three steps each of a classification learner on small random images (float64 model), as
one process (imported by the tests) or as each process of a torchrun (run as a script, it
writes rank 0's learner state to the file given)."""

from __future__ import annotations

import sys

import torch

from metalearn import distributed
from metalearn.learners import LearnerContext, get_learner
from metalearn.models import MLP
from metalearn.tasks import ClassificationTask, EpisodeBatch, LabelledImages, Scenario, Stream

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


CLASSIFIERS = {"finetune": {}, "ewc": {"strength": 100.0}, "online_ewc": {"strength": 100.0, "gamma": 0.5},
               "si": {"strength": 10.0}, "mas": {"strength": 10.0}}
BATCH = 7  # odd: the shards differ in size
TRAIN_EXAMPLES = 300  # more than plasticity.PER_EXAMPLE_CHUNK: the importance takes two chunks


class Float64(torch.nn.Module):
    """The MLP in float64 on the stream's float32 images."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP(SIZE * SIZE, 4, hidden=(8,)).to(torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.double())


def stream() -> Stream:
    """Two tasks of two classes of random SIZE x SIZE images, the same on every process."""
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> LabelledImages:
        return LabelledImages(torch.randint(0, 256, (n, SIZE, SIZE), generator=generator,
                                            dtype=torch.uint8),
                              torch.randint(0, 2, (n,), generator=generator))

    tasks = tuple(ClassificationTask(name, 2, images(TRAIN_EXAMPLES), images(10)) for name in "AB")
    return Stream("random", tasks, frozenset(Scenario))


def train_classifier(name: str) -> tuple[dict, list[dict[str, float]], int]:
    """The learner's state (importances included) and logged values after ``STEPS`` steps on
    each of two tasks in class-IL (its ``end_task`` after each), and its training examples."""
    torch.manual_seed(0)
    cls, tasks = get_learner(name), stream()
    learner = cls(Float64(), cls.Options(**CLASSIFIERS[name]),
                  LearnerContext(tasks, Scenario.CLASS, torch.device("cpu"), 0))
    forward, examples = learner.model.forward, []
    learner.model.forward = lambda x: examples.append(len(x)) or forward(x)
    logged, trained = [], 0
    for task in range(len(tasks)):
        learner.begin_task(task)
        batches = tasks.train_batches(Scenario.CLASS, [task], BATCH,
                                      torch.Generator().manual_seed(task), seen=task + 1)
        for _ in range(STEPS):
            examples.clear()
            logged.append({k: float(v) for k, v in learner.train_step(next(batches)).items()})
            trained += sum(examples)
        learner.end_task(task)
    return learner.state_dict(), logged, trained


if __name__ == "__main__":
    learner_name, out = sys.argv[1:]
    distributed.init_from_environment(torch.device("cpu"))
    steps = train_classifier if learner_name in CLASSIFIERS else train
    state, values, adapted = steps(learner_name)
    if distributed.is_main():
        torch.save({"state": state, "logged": values, "adapted": adapted,
                    "world_size": distributed.world_size()}, out)
    distributed.shutdown()
