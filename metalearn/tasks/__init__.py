"""Tasks: N-way K-shot episode samplers, fixed evaluation episodes and continual streams."""

from metalearn.tasks.episodes import EpisodeBatch, EpisodeSampler, EvaluationEpisodes
from metalearn.tasks.mnist import (
    mnist_few_shot,
    omniglot_to_mnist,
    permuted_mnist,
    rotated_mnist,
    split_mnist,
)
from metalearn.tasks.omniglot import omniglot_alphabet_stream, omniglot_few_shot, omniglot_split
from metalearn.tasks.pools import ClassPool
from metalearn.tasks.streams import (
    Batch,
    ClassificationTask,
    EpisodicTask,
    LabelledImages,
    Scenario,
    Stream,
)

BENCHMARKS = {
    "omniglot": omniglot_few_shot,
    "omniglot_alphabets": omniglot_alphabet_stream,
    "omniglot_to_mnist": omniglot_to_mnist,
    "mnist_few_shot": mnist_few_shot,
    "split_mnist": split_mnist,
    "permuted_mnist": permuted_mnist,
    "rotated_mnist": rotated_mnist,
}
"""Benchmark builders by name; each takes its own options plus ``data_root`` and ``device``."""

__all__ = [
    "BENCHMARKS",
    "Batch",
    "ClassPool",
    "ClassificationTask",
    "EpisodeBatch",
    "EpisodeSampler",
    "EpisodicTask",
    "EvaluationEpisodes",
    "LabelledImages",
    "Scenario",
    "Stream",
    "mnist_few_shot",
    "omniglot_alphabet_stream",
    "omniglot_few_shot",
    "omniglot_split",
    "omniglot_to_mnist",
    "permuted_mnist",
    "rotated_mnist",
    "split_mnist",
]
