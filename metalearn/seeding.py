"""Every random stream of a run, by name, derived from the run's seed: each reproducible on its
own, so a run resumes exactly and one stream's draws never shift another's.

``STREAMS`` below is the table of the reserved streams: metalearn's own (the runner's, the
protocol's, the built-in learners' and benchmarks'), reached with ``reserved(name)``. A
learner of your own (a plug-in) names its streams itself, ``derive_generator(context.seed,
"my_learner.draws", task_index)``; a reserved name is refused there, so a plug-in never
draws the protocol's batches or the evaluation episodes by accident.

Derivation: a stream with a ``key`` is ``SeedSequence([seed, *indices, *key])``, the integers
every stream had before streams had names, kept so that stored runs reproduce bit for bit. A
stream without one (plug-ins' streams, and any reserved stream added since) mixes a hash of
its name into the sequence as NumPy's ``spawn_key``, which no keyed stream can equal.
Because SeedSequence pads short entropy with zeros ([s, 1] draws as [s, 1, 0]), a few keyed
streams share seeds; they are kept for the stored runs: the training batches of task 1, 2, 5
and 6 share theirs with ``model_init``, ``task_order``, ``reptile.inner_batches`` and
``reptile.eval_inner_batches``; ``learned_optimizer_mnist.init`` of phase p and optimisee k
with any keyed stream drawn as [s, p, k] (the LSTM optimizer's optimisees 11 and 12); and
streams of learners that never share a run with each other (``pretrain_finetune.batches`` and
``ewc.fisher_labels``; ``packnet.retrain_batches`` of task 0 and ``dgr.sample_grid``).
tests/test_seeding.py holds that list and fails on any other shared seed.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RandomStream:
    """One named random stream: what it draws, where, and how its seed is derived."""

    name: str
    what: str
    owner: str  # the file that draws from it
    indices: tuple[str, ...] | None = ()  # what each index is; None: any number (plug-ins)
    key: tuple[int, ...] | None = None  # the derivation's integers, kept from before names

    def seed(self, run_seed: int, *indices: int) -> int:
        """An independent 63-bit seed for this stream at ``indices`` (e.g. a task index)."""
        if self.indices is not None and len(indices) != len(self.indices):
            raise TypeError(f"random stream {self.name!r} takes {len(self.indices)} index(es) "
                            f"({', '.join(self.indices) or 'none'}), got {len(indices)}")
        if self.key is None:
            name = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:16], "little")
            sequence = np.random.SeedSequence([run_seed, *indices], spawn_key=(name,))
        else:
            sequence = np.random.SeedSequence([run_seed, *indices, *self.key])
        state = sequence.generate_state(2, dtype=np.uint32)
        return int(state[0]) << 31 | int(state[1]) >> 1

    def generator(self, run_seed: int, *indices: int) -> torch.Generator:
        """A CPU generator seeded with ``seed(run_seed, *indices)``."""
        return torch.Generator().manual_seed(self.seed(run_seed, *indices))


STREAMS: dict[str, RandomStream] = {stream.name: stream for stream in (
    RandomStream("model_init", "the model's initial weights (the global generator, seeded once "
                 "before the model is built)", "metalearn/cli/runner.py", key=(1,)),
    RandomStream("task_order", "the task order of task_order: random", "metalearn/cli/runner.py",
                 key=(2,)),
    RandomStream("train_batches", "the protocol's training minibatches or episodes of a task",
                 "metalearn/protocol/loop.py", ("task",), key=(0,)),
    RandomStream("eval_episodes", "a few-shot task's evaluation episodes, from "
                 "protocol.eval_seed (keyed [eval_seed, task] up to commit 88f2d0b)",
                 "metalearn/protocol/loop.py", ("task",)),
    RandomStream("validation_episodes", "a few-shot task's validation episodes, from "
                 "protocol.eval_seed", "metalearn/protocol/loop.py", ("task",)),
    RandomStream("joint.batches", "joint training's minibatches over the tasks seen so far",
                 "metalearn/learners/joint.py", ("task",), key=(1,)),
    RandomStream("pretrain_finetune.batches", "pretraining minibatches over a pool's classes",
                 "metalearn/learners/pretrain_finetune.py", ("task",), key=(2,)),
    RandomStream("ewc.fisher_labels", "labels sampled from the model for the Fisher",
                 "metalearn/learners/ewc.py", ("task",), key=(2,)),
    RandomStream("packnet.retrain_batches", "the minibatches that retrain a task after pruning",
                 "metalearn/learners/packnet.py", ("task",), key=(3,)),
    RandomStream("dgr.sample_grid", "the generator samples shown after each task",
                 "metalearn/learners/dgr.py", key=(0, 3)),
    RandomStream("reptile.inner_batches", "Reptile's inner minibatch order in training",
                 "metalearn/learners/reptile.py", key=(5,)),
    RandomStream("reptile.eval_inner_batches", "Reptile's inner minibatch order in evaluation",
                 "metalearn/learners/reptile.py", key=(6,)),
    RandomStream("lstm_optimizer.optimisee_init", "each meta-training optimisee's weights",
                 "metalearn/learners/lstm_optimizer.py", ("optimisee",), key=(7,)),
    RandomStream("lstm_optimizer.selection_init", "each held-out selection optimisee's weights",
                 "metalearn/learners/lstm_optimizer.py", ("optimisee",), key=(8,)),
    RandomStream("lstm_optimizer.selection_batches", "each selection optimisee's minibatches",
                 "metalearn/learners/lstm_optimizer.py", ("optimisee",), key=(9,)),
    RandomStream("learned_optimizer_mnist.init", "the weights of each tuning (phase 11) and "
                 "test (phase 12) optimisee", "benchmarks/learned_optimizer_mnist.py",
                 ("phase", "optimisee"), key=(0,)),
    RandomStream("learned_optimizer_mnist.batches", "each tuning and test optimisee's "
                 "minibatches", "benchmarks/learned_optimizer_mnist.py", ("phase", "optimisee"),
                 key=(1,)),
)}


def reserved(name: str) -> RandomStream:
    """The reserved stream ``name`` of ``STREAMS``, for metalearn's own code."""
    if name not in STREAMS:
        close = difflib.get_close_matches(name, STREAMS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no reserved random stream {name!r}{hint} The reserved streams are in "
                       "metalearn.seeding.STREAMS; a learner's own stream is "
                       "derive_generator(seed, 'my_learner.purpose', ...)")
    return STREAMS[name]


def _own(name: str) -> RandomStream:
    """A learner's own stream: any name but a reserved one."""
    if name in STREAMS:
        stream = STREAMS[name]
        raise ValueError(f"random stream {name!r} is reserved for {stream.what} "
                         f"({stream.owner}); give your learner's stream a name of its own, "
                         f"e.g. 'my_learner.{name}'")
    if not name:
        raise ValueError("a random stream needs a name, e.g. 'my_learner.draws'")
    return RandomStream(name, "a learner's own stream", "a learner", indices=None)


def derive_seed(seed: int, stream: str, *indices: int) -> int:
    """A 63-bit seed for a learner's own ``stream`` (a name not in ``STREAMS``) at ``indices``,
    e.g. ``derive_seed(context.seed, "my_learner.init", task_index)``."""
    return _own(stream).seed(seed, *indices)


def derive_generator(seed: int, stream: str, *indices: int) -> torch.Generator:
    """A CPU generator for a learner's own ``stream`` (a name not in ``STREAMS``) at
    ``indices``, e.g. ``derive_generator(context.seed, "my_learner.draws", task_index)``."""
    return _own(stream).generator(seed, *indices)
