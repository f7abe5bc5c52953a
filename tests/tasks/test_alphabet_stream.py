"""The Omniglot alphabet stream's options for continual meta-learning: validation characters
held out of each group, and joint meta-training on every group seen so far."""

import pytest

from metalearn.tasks import omniglot_alphabet_stream


@pytest.fixture(scope="module")
def plain(data_root):
    return omniglot_alphabet_stream(n_tasks=5, seed=0, data_root=data_root)


def test_validation_characters_come_out_of_training_only(data_root, plain):
    held_out = omniglot_alphabet_stream(n_tasks=5, seed=0, validation_fraction=0.1,
                                        data_root=data_root)
    assert all(task.validation is None for task in plain)
    for before, after in zip(plain, held_out):
        train, validation = set(after.train.names), set(after.validation.names)
        assert after.test.names == before.test.names  # the test characters stay the same
        assert not train & validation and train | validation == set(before.train.names)
        assert abs(len(validation) - 0.1 * (len(before.train) + len(before.test))) <= 1


def test_joint_trains_task_i_on_the_training_characters_of_groups_0_to_i(data_root, plain):
    joint = omniglot_alphabet_stream(n_tasks=5, seed=0, joint=True, data_root=data_root)
    for i, task in enumerate(joint):
        expected = set().union(*(plain[j].train.names for j in range(i + 1)))
        assert set(task.train.names) == expected and len(task.train) == len(expected)
        assert task.test.names == plain[i].test.names


def test_fractions_that_leave_no_training_characters_are_refused(data_root):
    with pytest.raises(ValueError, match="validation_fraction in"):
        omniglot_alphabet_stream(test_fraction=0.5, validation_fraction=0.5, data_root=data_root)
