"""Omniglot few-shot benchmarks: the MAML, Vinyals and Lake character splits, and an alphabet
stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metalearn.data import OmniglotData, load_omniglot
from metalearn.tasks.pools import ClassPool
from metalearn.tasks.streams import EpisodicTask, Stream

# The MAML split (Finn et al. 2017): characters shuffled once, then 1100 / 100 / 423. NumPy's
# legacy RandomState is used because its stream is frozen (NEP 19): the split never changes.
MAML_SPLIT_SEED = 0
MAML_SPLIT_SIZES = {"train": 1100, "validation": 100, "test": 423}

# The Vinyals et al. (2016) split by alphabet (1028 / 172 / 423), as distributed with Torchmeta.
VINYALS_VALIDATION_ALPHABETS = frozenset(
    {"Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)"}
)
VINYALS_TEST_ALPHABETS = frozenset({
    "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
    "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG",
})
# ...plus the last four characters of Gurmukhi (the rest of Gurmukhi is training data).
VINYALS_TEST_CHARACTERS = frozenset(f"Gurmukhi/character{i}" for i in (42, 43, 44, 45))

SPLITS = ("maml", "vinyals", "lake")


def omniglot_split(data: OmniglotData, split: str = "maml") -> dict[str, list[int]]:
    """Character ids of the train / validation / test parts of a named split.

    ``lake``: Lake et al. (2015)'s own split, the archives as distributed: the 964 characters of
    images_background to train, the 659 of images_evaluation to test, no validation part. OML
    and ANML meta-test on up to 600 classes of it, more than any other split holds.
    """
    if split == "maml":
        order = np.random.RandomState(MAML_SPLIT_SEED).permutation(len(data.characters)).tolist()
        n_train, n_validation = MAML_SPLIT_SIZES["train"], MAML_SPLIT_SIZES["validation"]
        return {
            "train": sorted(order[:n_train]),
            "validation": sorted(order[n_train : n_train + n_validation]),
            "test": sorted(order[n_train + n_validation :]),
        }
    if split == "vinyals":
        parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
        for i, (character, alphabet) in enumerate(zip(data.characters, data.alphabets)):
            if alphabet in VINYALS_TEST_ALPHABETS or character in VINYALS_TEST_CHARACTERS:
                parts["test"].append(i)
            elif alphabet in VINYALS_VALIDATION_ALPHABETS:
                parts["validation"].append(i)
            else:
                parts["train"].append(i)
        return parts
    if split == "lake":
        n = len(data.characters)
        return {"train": list(range(data.n_background)), "validation": [],
                "test": list(range(data.n_background, n))}
    raise ValueError(f"unknown Omniglot split {split!r}; choose one of {list(SPLITS)}")


def omniglot_pools(
    split: str = "maml",
    rotations: tuple[int, ...] = (0, 1, 2, 3),
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
    image_size: int = 28,
) -> dict[str, ClassPool]:
    """Train / validation / test class pools (a part the split leaves empty is absent);
    ``rotations`` (quarter turns) augment train only; images ``image_size`` pixels square."""
    data = load_omniglot(data_root, image_size)
    everything = ClassPool.from_grouped(data.images, data.characters).to(device)
    pools = {part: everything.subset(ids) for part, ids in omniglot_split(data, split).items()
             if ids}
    if rotations:
        pools["train"] = pools["train"].with_rotations(rotations)
    return pools


def omniglot_few_shot(
    split: str = "maml",
    rotations: tuple[int, ...] = (0, 1, 2, 3),
    image_size: int = 28,
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Stream:
    """The standard Omniglot few-shot benchmark: one episodic task over a character split, of
    ``image_size``-pixel images (28 as MAML; OML's network takes 84)."""
    pools = omniglot_pools(split, rotations, data_root, device, image_size)
    task = EpisodicTask(f"omniglot-{split}", pools["train"], pools["test"], pools.get("validation"))
    return Stream(f"omniglot-{split}", (task,), frozenset())


def omniglot_alphabet_stream(
    n_tasks: int = 5,
    test_fraction: float = 0.25,
    seed: int = 0,
    rotations: tuple[int, ...] = (),
    validation_fraction: float = 0.0,
    joint: bool = False,
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Stream:
    """A continual few-shot stream: task i is a group of alphabets.

    The 50 alphabets are shuffled with ``seed`` and dealt into ``n_tasks`` groups of nearly
    equal size. In each group a ``test_fraction`` of the characters (chosen with ``seed``) is
    held out as that task's test classes, so R[i, j] measures few-shot accuracy on unseen
    characters of group j after meta-training on groups 0..i; a ``validation_fraction`` more
    are held out as its validation classes (to choose settings and states on). ``joint``
    meta-trains task i on the training characters of groups 0..i together (joint training on
    everything seen so far: the upper bound of a continual meta-learner), tests as without.
    """
    data = load_omniglot(data_root)
    alphabets = sorted(set(data.alphabets))
    if not 1 <= n_tasks <= len(alphabets):
        raise ValueError(f"n_tasks must be between 1 and {len(alphabets)} (one alphabet per task)")
    if not 0 < test_fraction < 1 or not 0 <= validation_fraction < 1 - test_fraction:
        raise ValueError(f"test_fraction must be in (0, 1) and validation_fraction in [0, 1 - "
                         f"test_fraction), got {test_fraction} and {validation_fraction}")
    state = np.random.RandomState(seed)
    groups = np.array_split(state.permutation(len(alphabets)), n_tasks)
    everything = ClassPool.from_grouped(data.images, data.characters).to(device)
    tasks, seen_train = [], []
    for i, group in enumerate(groups):
        members = {alphabets[a] for a in group}
        ids = [c for c, alphabet in enumerate(data.alphabets) if alphabet in members]
        shuffled = state.permutation(ids).tolist()
        n_test = max(1, round(test_fraction * len(ids)))
        n_validation = round(validation_fraction * len(ids))
        seen_train += shuffled[n_test + n_validation:]
        train = everything.subset(sorted(seen_train if joint else shuffled[n_test + n_validation:]))
        tasks.append(EpisodicTask(
            name=f"alphabets-{i}",
            train=train.with_rotations(rotations) if rotations else train,
            test=everything.subset(sorted(shuffled[:n_test])),
            validation=everything.subset(sorted(shuffled[n_test:n_test + n_validation]))
            if n_validation else None,
        ))
    return Stream(f"omniglot-alphabets-{n_tasks}", tuple(tasks), frozenset())
