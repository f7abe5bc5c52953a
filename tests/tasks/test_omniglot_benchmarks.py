import hashlib

import numpy as np
import pytest
import torch

from metalearn.data import load_omniglot
from metalearn.tasks import omniglot_alphabet_stream, omniglot_split, omniglot_to_mnist


@pytest.fixture(scope="module")
def data(data_root):
    return load_omniglot(data_root=data_root, download=False)


def fingerprint(ids):
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:12]


@pytest.mark.parametrize("split,sizes", [("maml", (1100, 100, 423)), ("vinyals", (1028, 172, 423))])
def test_split_sizes_and_disjointness(data, split, sizes):
    parts = omniglot_split(data, split)
    assert tuple(len(parts[p]) for p in ("train", "validation", "test")) == sizes
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == list(range(1623))


def test_maml_split_is_frozen_and_ignores_global_state(data):
    np.random.seed(123)
    torch.manual_seed(123)
    parts = omniglot_split(data, "maml")
    # A changed split silently changes every published number: pin it.
    assert fingerprint(parts["test"]) == MAML_TEST_FINGERPRINT
    assert parts == omniglot_split(data, "maml")


def test_vinyals_split_is_by_alphabet(data):
    parts = omniglot_split(data, "vinyals")
    test_alphabets = {data.alphabets[i] for i in parts["test"]}
    assert len(test_alphabets) == 13 and "Gurmukhi" in test_alphabets
    assert {data.alphabets[i] for i in parts["validation"]} == {
        "Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)"}
    assert all(data.alphabets[i] in ("Gurmukhi",) or data.alphabets[i] not in test_alphabets
               for i in parts["train"])


def test_unknown_split_is_named(data):
    with pytest.raises(ValueError, match="'background'.*maml"):
        omniglot_split(data, "background")


def test_lake_split_is_the_two_archives(data):
    """Lake's split: images_background's 964 characters train, images_evaluation's 659 test,
    enough for OML's and ANML's 600-way meta-test; no character of a test alphabet trains."""
    parts = omniglot_split(data, "lake")
    assert (len(parts["train"]), len(parts["validation"]), len(parts["test"])) == (964, 0, 659)
    assert sorted(parts["train"] + parts["test"]) == list(range(1623))
    train_alphabets = {data.alphabets[i] for i in parts["train"]}
    test_alphabets = {data.alphabets[i] for i in parts["test"]}
    assert (len(train_alphabets), len(test_alphabets)) == (30, 20)
    assert not train_alphabets & test_alphabets and "Latin" in train_alphabets


def test_lake_benchmark_has_no_validation_pool_and_refuses_too_many_ways(data_root):
    from metalearn.tasks import EpisodeSampler, omniglot_few_shot

    task = omniglot_few_shot("lake", rotations=(), data_root=data_root)[0]
    assert (len(task.train), len(task.test), task.validation) == (964, 659, None)
    EpisodeSampler(task.test, 600, 15, 5, seed=0).sample(1)
    with pytest.raises(ValueError, match="660-way episodes need 660 classes.*has 659"):
        EpisodeSampler(task.test, 660, 15, 5, seed=0)


def test_rotations_augment_training_classes_only(omniglot):
    assert len(omniglot.train) == 4 * 1100
    assert len(omniglot.test) == 423 and not any("@" in n for n in omniglot.test.names)
    quarter = 1100
    assert omniglot.train.names[quarter] == omniglot.train.names[0].replace("@0", "@90")
    assert torch.equal(omniglot.train.images[quarter * 20], torch.rot90(omniglot.train.images[0], 1))


def test_alphabet_stream_partitions_alphabets_and_holds_out_characters(data_root, data):
    stream = omniglot_alphabet_stream(n_tasks=5, seed=0, data_root=data_root)
    assert len(stream) == 5 and stream.episodic and not stream.scenarios
    seen_alphabets = []
    for task in stream:
        train, test = set(task.train.names), set(task.test.names)
        assert not train & test
        alphabets = {n.split("/")[0] for n in train | test}
        seen_alphabets += sorted(alphabets)
        assert abs(len(test) - 0.25 * len(train | test)) <= 1
    assert sorted(seen_alphabets) == sorted(set(data.alphabets))


def test_cross_domain_tests_on_mnist_digits(data_root):
    task = omniglot_to_mnist(data_root=data_root)[0]
    assert len(task.train) == 4400 and task.test.names == tuple(f"digit-{d}" for d in range(10))
    assert task.test.sizes.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


MAML_TEST_FINGERPRINT = "5d14fa089634"
