"""Named random streams: the reserved table keeps every stored run's numbers, no two streams
share a seed beyond the documented legacy ones, and a plug-in cannot draw a reserved stream."""

from itertools import product

import pytest

from metalearn.seeding import STREAMS, derive_generator, derive_seed, reserved

SEEDS = range(3)
INDICES = {"task": range(20), "optimisee": range(40), "phase": (11, 12)}  # 11 tuning, 12 test
PLUGIN_STREAMS = ("replay_example.draws", "train_batches_of_mine", "my_learner.init")

# Keyed streams that have always shared seeds (docstring of metalearn.seeding), kept for the
# stored runs; any other pair is a new collision and fails the test.
LEGACY_SHARED = {frozenset(pair) for pair in [
    ("train_batches", "model_init"), ("train_batches", "task_order"),
    ("train_batches", "reptile.inner_batches"), ("train_batches", "reptile.eval_inner_batches"),
    ("pretrain_finetune.batches", "ewc.fisher_labels"),
    ("packnet.retrain_batches", "dgr.sample_grid"),
    *[("learned_optimizer_mnist.init", name) for name in (
        "train_batches", "joint.batches", "pretrain_finetune.batches", "ewc.fisher_labels",
        "packnet.retrain_batches", "lstm_optimizer.optimisee_init",
        "lstm_optimizer.selection_init", "lstm_optimizer.selection_batches")],
]}


def all_seeds() -> dict[int, set[str]]:
    """Every seed the streams draw for small run seeds and indices, with the streams drawing it."""
    drawn: dict[int, set[str]] = {}
    streams = [(stream.name, stream.indices, stream.seed) for stream in STREAMS.values()]
    streams += [(name, ("task",), lambda seed, *indices, name=name: derive_seed(seed, name, *indices))
                for name in PLUGIN_STREAMS]
    for name, index_names, seed_of in streams:
        for seed, indices in product(SEEDS, product(*(INDICES[i] for i in index_names))):
            drawn.setdefault(seed_of(seed, *indices), set()).add(name)
    return drawn


def test_no_two_streams_share_a_seed_but_the_documented_legacy_ones():
    shared = {frozenset(pair) for names in all_seeds().values() if len(names) > 1
              for pair in product(names, names) if pair[0] != pair[1]}
    assert shared == LEGACY_SHARED


def test_model_initialisation_never_shares_a_seed_with_evaluation_episodes():
    eval_episodes = {reserved("eval_episodes").seed(seed, task)
                     for seed, task in product(SEEDS, INDICES["task"])}
    assert not {reserved("model_init").seed(seed) for seed in SEEDS} & eval_episodes
    # Before names, task 1's episodes at eval_seed 0 were seeded as run seed 0's model.
    assert reserved("model_init").seed(0) == 8514611595135926838 not in eval_episodes


def test_stored_runs_keep_their_numbers():
    """Seeds computed with the integer keys of commit 88f2d0b."""
    assert reserved("model_init").seed(0) == 8514611595135926838
    assert reserved("train_batches").seed(3, 2) == 2062292614390019529
    assert reserved("ewc.fisher_labels").seed(1, 4) == 3644528366693810568
    assert reserved("learned_optimizer_mnist.batches").seed(0, 12, 5) == 4914111066964408701


def test_a_plugin_asking_for_a_reserved_stream_is_refused():
    with pytest.raises(ValueError, match=r"random stream 'train_batches' is reserved for the "
                       r"protocol's training minibatches .*metalearn/protocol/loop.py.*name of "
                       r"its own, e.g. 'my_learner.train_batches'"):
        derive_generator(0, "train_batches", 0)


def test_an_unknown_reserved_stream_is_an_error_with_a_suggestion():
    with pytest.raises(ValueError, match=r"no reserved random stream 'train_batch'; did you mean "
                       r"'train_batches'\?"):
        reserved("train_batch")


def test_a_stream_is_given_as_many_indices_as_its_table_entry_names():
    with pytest.raises(TypeError, match=r"'train_batches' takes 1 index\(es\) \(task\), got 0"):
        reserved("train_batches").seed(0)


def test_a_plugin_stream_is_reproducible_and_its_own():
    assert derive_seed(0, "my_learner.draws", 2) == derive_seed(0, "my_learner.draws", 2)
    assert derive_seed(0, "my_learner.draws", 2) != derive_seed(0, "my_learner.other", 2)
    first = derive_generator(5, "my_learner.draws", 1).initial_seed()
    assert first == derive_seed(5, "my_learner.draws", 1)
