"""MNIST benchmarks: digit-split few-shot tasks and the Split / Permuted / Rotated MNIST streams.

Permuted and Rotated MNIST also take the setting of GEM (Lopez-Paz & Ranzato 2017) and MER
(Riemer et al. 2019): ``train_samples_per_task`` examples per task, a different random subset
for each task (1000 in both papers, 200 for MER's Many Permutations), and for rotations GEM's
angles, task t's drawn uniformly in [180 t / T, 180 (t + 1) / T) degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from metalearn.data import MNISTData, load_mnist
from metalearn.tasks.omniglot import omniglot_pools
from metalearn.tasks.pools import ClassPool
from metalearn.tasks.streams import (
    ClassificationTask,
    EpisodicTask,
    LabelledImages,
    Scenario,
    Stream,
)

ALL_SCENARIOS = frozenset(Scenario)
DIGITS = tuple(range(10))


def _digit_pool(images: torch.Tensor, labels: torch.Tensor, digits: Sequence[int]) -> ClassPool:
    return ClassPool.from_labelled(images, labels, digits, [f"digit-{d}" for d in digits])


def _load(variant: str, data_root: str | Path | None, device: torch.device | str,
          validation: float = 0.0) -> tuple[MNISTData, LabelledImages | None]:
    """The data on ``device``, and with ``validation`` > 0 that fraction of the training set (a
    fixed random subset) held out of it as validation data, to choose settings and states on."""
    data = load_mnist(variant, data_root)
    held_out = None
    if validation:
        if not 0 < validation < 1:
            raise ValueError(f"validation is the fraction of the training set held out, in (0, 1); "
                             f"got {validation}")
        order = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(0))
        size = round(validation * len(order))
        if size == 0:
            raise ValueError(f"validation={validation} holds out no image; use at least {1 / len(order):.1e}")
        held, kept = order[:size], order[size:]
        held_out = LabelledImages(data.train_images[held].to(device),
                                  data.train_labels[held].to(device))
        data = MNISTData(data.train_images[kept], data.train_labels[kept],
                         data.test_images, data.test_labels)
    return MNISTData(*(t.to(device) for t in (data.train_images, data.train_labels,
                                              data.test_images, data.test_labels))), held_out


def mnist_few_shot(
    train_digits: Sequence[int] = (0, 1, 2, 3, 4),
    test_digits: Sequence[int] = (5, 6, 7, 8, 9),
    variant: str = "mnist",
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Stream:
    """Few-shot episodes over digits: meta-train on ``train_digits`` from the training set,
    test on ``test_digits`` from the test set (the classic 0-4 / 5-9 transfer setting)."""
    if set(train_digits) & set(test_digits):
        raise ValueError(f"train and test digits overlap: {sorted(set(train_digits) & set(test_digits))}")
    data, _ = _load(variant, data_root, device)
    task = EpisodicTask(
        f"{variant}-{''.join(map(str, train_digits))}-to-{''.join(map(str, test_digits))}",
        train=_digit_pool(data.train_images, data.train_labels, train_digits),
        test=_digit_pool(data.test_images, data.test_labels, test_digits),
    )
    return Stream(task.name, (task,), frozenset())


def omniglot_to_mnist(
    split: str = "maml",
    rotations: tuple[int, ...] = (0, 1, 2, 3),
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Stream:
    """Cross-domain few-shot: meta-train on Omniglot's training characters, test on MNIST digits."""
    pools = omniglot_pools(split, rotations, data_root, device)
    data, _ = _load("mnist", data_root, device)
    task = EpisodicTask(
        "omniglot-to-mnist",
        train=pools["train"],
        test=_digit_pool(data.test_images, data.test_labels, DIGITS),
        validation=pools.get("validation"),
    )
    return Stream(task.name, (task,), frozenset())


def split_mnist(
    classes_per_task: int = 2,
    variant: str = "mnist",
    validation: float = 0.0,
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Stream:
    """Split MNIST: the digits in order, ``classes_per_task`` per task (5 tasks of 2 by default).

    ``validation``: the fraction of the training set held out as each task's validation set
    (``ClassificationTask.validation``); the test set stays MNIST's test set.
    """
    if classes_per_task < 1 or len(DIGITS) % classes_per_task:
        raise ValueError(f"classes_per_task must divide 10, got {classes_per_task}")
    data, held_out = _load(variant, data_root, device, validation)
    tasks = []
    for first in range(0, len(DIGITS), classes_per_task):
        digits = DIGITS[first : first + classes_per_task]
        tasks.append(ClassificationTask(
            name="/".join(map(str, digits)),
            n_classes=len(digits),
            train=_digits_only(data.train_images, data.train_labels, digits),
            test=_digits_only(data.test_images, data.test_labels, digits),
            validation=None if held_out is None else
            _digits_only(held_out.images, held_out.labels, digits),
        ))
    return Stream(f"split-{variant}", tuple(tasks), ALL_SCENARIOS)


def _digits_only(images: torch.Tensor, labels: torch.Tensor, digits: Sequence[int]) -> LabelledImages:
    """The examples of ``digits``, relabelled 0..len(digits)-1 in the given order."""
    local = torch.full((10,), -1, dtype=torch.int64, device=labels.device)
    local[list(digits)] = torch.arange(len(digits), device=labels.device)
    keep = local[labels] >= 0
    return LabelledImages(images[keep], local[labels[keep]])


@dataclass(frozen=True)
class PixelPermutation:
    """Shuffles the pixels of [b, 1, H, W] images by one fixed permutation of H*W."""

    permutation: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)[:, :, self.permutation].view_as(x)


@dataclass(frozen=True)
class Rotation:
    """Rotates [b, 1, H, W] images by a fixed angle (degrees, counter-clockwise, bilinear)."""

    degrees: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # imported here: torchvision's transforms take seconds to import, only rotations need them
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        return tvf.rotate(x, self.degrees, interpolation=InterpolationMode.BILINEAR)


def _training_sets(train: LabelledImages, n_tasks: int, samples: int | None,
                   seed: int) -> list[LabelledImages]:
    """Each task's training set: all of ``train``, or with ``samples`` a random subset of that
    many examples, drawn for each task independently (as GEM's and MER's code draw them), from
    a generator of its own seeded by ``seed``, so the subsets never shift other draws."""
    if samples is None:
        return [train] * n_tasks
    if not 0 < samples <= len(train):
        raise ValueError(f"train_samples_per_task must be in 1..{len(train)} (the training "
                         f"images), got {samples}")
    generator = torch.Generator().manual_seed(seed)
    subsets = [torch.randperm(len(train), generator=generator)[:samples].to(train.labels.device)
               for _ in range(n_tasks)]
    return [LabelledImages(train.images[index], train.labels[index]) for index in subsets]


def permuted_mnist(
    n_tasks: int = 10,
    seed: int = 0,
    identity_first: bool = True,
    padding: int = 0,
    train_samples_per_task: int | None = None,
    variant: str = "mnist",
    validation: float = 0.0,
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Stream:
    """Permuted MNIST: every task is all ten digits under its own fixed pixel permutation.

    The permutations are drawn once, here, from ``seed``; with ``identity_first`` task 0 is
    plain MNIST (as in van de Ven & Tolias), otherwise it is permuted too (as in GEM and MER).
    ``padding`` zero-pads the images first (2 gives their 32x32). ``train_samples_per_task``:
    each task trains on its own random subset of that many images (drawn from ``seed`` too);
    all of them by default. ``validation`` as in :func:`split_mnist`.
    """
    data, held_out = _load(variant, data_root, device, validation)
    if padding:
        data = MNISTData(F.pad(data.train_images, (padding,) * 4), data.train_labels,
                         F.pad(data.test_images, (padding,) * 4), data.test_labels)
        if held_out is not None:
            held_out = LabelledImages(F.pad(held_out.images, (padding,) * 4), held_out.labels)
    generator = torch.Generator().manual_seed(seed)
    n_pixels = data.train_images[0].numel()
    permutations = [torch.randperm(n_pixels, generator=generator) for _ in range(n_tasks)]
    if identity_first:
        permutations[0] = torch.arange(n_pixels)
    train = _training_sets(LabelledImages(data.train_images, data.train_labels), n_tasks,
                           train_samples_per_task, seed + 1)  # not the permutations' generator
    test = LabelledImages(data.test_images, data.test_labels)
    tasks = tuple(
        ClassificationTask(f"permutation-{i}", 10, train[i], test, PixelPermutation(p.to(device)),
                           held_out)
        for i, p in enumerate(permutations)
    )
    return Stream(f"permuted-{variant}-{n_tasks}", tasks, ALL_SCENARIOS)


def rotated_mnist(
    n_tasks: int = 5,
    angles: Sequence[float] | Literal["even", "gem"] = "even",
    seed: int = 0,
    train_samples_per_task: int | None = None,
    variant: str = "mnist",
    validation: float = 0.0,
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Stream:
    """Rotated MNIST: every task is all ten digits rotated by its own angle.

    ``angles``: the list of angles in degrees, or ``"even"``, ``n_tasks`` evenly spaced angles
    in [0, 180): 0, 180/T, 2*180/T, ..., or ``"gem"``, GEM's (Lopez-Paz & Ranzato 2017): task
    t's angle drawn uniformly in [180 t / T, 180 (t + 1) / T) from ``seed``.
    ``train_samples_per_task`` as in :func:`permuted_mnist`; ``validation`` as in
    :func:`split_mnist`.
    """
    if angles == "even":
        angles = [i * 180.0 / n_tasks for i in range(n_tasks)]
    elif angles == "gem":
        offsets = torch.rand(n_tasks, generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64)
        angles = [(i + float(u)) * 180.0 / n_tasks for i, u in enumerate(offsets)]
    elif isinstance(angles, str):
        raise ValueError(f"angles is a list of degrees, 'even' or 'gem', got {angles!r}")
    angles = list(angles)
    data, held_out = _load(variant, data_root, device, validation)
    train = _training_sets(LabelledImages(data.train_images, data.train_labels), len(angles),
                           train_samples_per_task, seed + 1)  # not the angles' generator
    test = LabelledImages(data.test_images, data.test_labels)
    tasks = tuple(
        ClassificationTask(f"rotation-{a:g}", 10, train[i], test, Rotation(a), held_out)
        for i, a in enumerate(angles)
    )
    return Stream(f"rotated-{variant}-{len(tasks)}", tasks, ALL_SCENARIOS)
