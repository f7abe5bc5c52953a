import pytest
import torch

from metalearn.tasks import (
    ClassificationTask,
    LabelledImages,
    Scenario,
    Stream,
    mnist_few_shot,
    permuted_mnist,
    rotated_mnist,
    split_mnist,
)


def test_split_mnist_tasks_are_digit_pairs_with_local_labels(split, data_root):
    assert [t.name for t in split] == ["0/1", "2/3", "4/5", "6/7", "8/9"]
    assert split.scenarios == frozenset(Scenario)
    assert sum(len(t.train) for t in split) == 60000 and sum(len(t.test) for t in split) == 10000
    assert len(split[1].test) == 1032 + 1010  # digits 2 and 3 of the test set
    assert set(split[1].train.labels.unique().tolist()) == {0, 1}


@pytest.mark.parametrize(
    "scenario,outputs,targets,task_slice,seen_slice",
    [
        ("task", 10, [4, 5], slice(4, 6), slice(4, 6)),
        ("domain", 2, [0, 1], slice(0, 2), slice(0, 2)),
        ("class", 10, [4, 5], slice(0, 10), slice(0, 6)),
    ],
)
def test_scenarios_map_labels_and_outputs(split, scenario, outputs, targets, task_slice, seen_slice):
    assert split.n_outputs(scenario) == outputs
    assert split.targets(scenario, 2, torch.tensor([0, 1])).tolist() == targets
    assert split.output_slice(scenario, 2) == task_slice
    assert split.output_slice(scenario, 2, seen=3) == seen_slice


def test_reordering_moves_class_labels_with_the_tasks(split):
    reordered = split.reordered([4, 3, 2, 1, 0])
    assert reordered[0].name == "8/9"
    assert reordered.targets("class", 0, torch.tensor([0, 1])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="not a permutation"):
        split.reordered([0, 0, 1, 2, 3])


def test_unsupported_scenario_is_refused_with_the_supported_ones():
    task = ClassificationTask("t", 2, *(LabelledImages(torch.zeros(1, 2, 2, dtype=torch.uint8),
                                                       torch.zeros(1, dtype=torch.int64)),) * 2)
    stream = Stream("toy", (task,), frozenset({Scenario.DOMAIN}))
    with pytest.raises(ValueError, match="does not support the class-incremental.*\\['domain'\\]"):
        stream.n_outputs("class")
    with pytest.raises(ValueError, match="unknown scenario 'tasks'"):
        stream.check_scenario("tasks")


def toy_stream(sizes=(6, 4)):
    """Two tasks whose images hold (task, index) so batches can be traced back."""
    tasks = []
    for t, n in enumerate(sizes):
        images = (10 * t + torch.arange(n, dtype=torch.uint8)).view(n, 1, 1)
        data = LabelledImages(images, torch.arange(n) % 2)
        tasks.append(ClassificationTask(f"t{t}", 2, data, data))
    return Stream("toy", tuple(tasks), frozenset(Scenario))


def pixel_ids(batch):
    return [round(v * 255) for v in batch.x.flatten().tolist()]


def test_an_epoch_visits_every_training_example_once():
    stream = toy_stream()
    batches = stream.train_batches("class", [0], 3, torch.Generator().manual_seed(0), seen=1)
    seen = pixel_ids(next(batches)) + pixel_ids(next(batches))
    assert sorted(seen) == list(range(6))


def test_mixed_batches_draw_from_every_task_with_their_own_labels_and_masks():
    stream = toy_stream()
    batches = stream.train_batches("task", [0, 1], 5, torch.Generator().manual_seed(0), seen=2)
    first, second = next(batches), next(batches)
    ids = pixel_ids(first) + pixel_ids(second)
    assert sorted(ids) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13]
    for batch in (first, second):
        for pixel, y, allowed, task in zip(pixel_ids(batch), batch.y, batch.allowed, batch.task_ids):
            assert task == pixel // 10
            assert y == 2 * task + (pixel % 10) % 2  # task-IL: the task's offset + local label
            assert allowed.nonzero().flatten().tolist() == [2 * task, 2 * task + 1]


def test_test_batches_cover_the_test_set_in_order():
    stream = toy_stream()
    batches = list(stream.ordered_batches("class", 1, 3, seen=1))
    assert [pixel_ids(b) for b in batches] == [[10, 11, 12], [13]]
    # Class-IL: task 1's outputs are always allowed, even before it is trained.
    assert batches[0].allowed[0].tolist() == [True] * 4


def test_permuted_mnist_draws_fixed_permutations_from_the_seed(data_root):
    stream = permuted_mnist(n_tasks=3, seed=5, data_root=data_root)
    again = permuted_mnist(n_tasks=3, seed=5, data_root=data_root)
    other = permuted_mnist(n_tasks=3, seed=6, data_root=data_root)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(stream[0].transform(x), x)  # task 0 is plain MNIST
    assert not torch.equal(stream[1].transform(x), stream[2].transform(x))
    assert torch.equal(stream[2].transform(x), again[2].transform(x))
    assert not torch.equal(stream[2].transform(x), other[2].transform(x))
    permuted = stream[1].transform(x)
    assert torch.equal(permuted.flatten(1).sort().values, x.flatten(1).sort().values)
    assert stream.n_outputs("class") == 30 and stream.n_outputs("domain") == 10
    # Tasks share one copy of the images.
    assert stream[1].train.images.data_ptr() == stream[2].train.images.data_ptr()


def test_permuted_mnist_can_permute_task_zero(data_root):
    stream = permuted_mnist(n_tasks=2, seed=0, identity_first=False, data_root=data_root)
    x = torch.rand(1, 1, 28, 28)
    assert not torch.equal(stream[0].transform(x), x)


def test_rotated_mnist_rotates_by_the_task_angle(data_root):
    stream = rotated_mnist(n_tasks=4, data_root=data_root)
    assert [t.name for t in stream] == ["rotation-0", "rotation-45", "rotation-90", "rotation-135"]
    rotated = next(stream.ordered_batches("domain", 2, 8, seen=1)).x
    plain = next(stream.ordered_batches("domain", 0, 8, seen=1)).x
    assert torch.allclose(rotated, torch.rot90(plain, 1, dims=(2, 3)), atol=1e-5)


def test_mnist_few_shot_splits_digits(data_root):
    task = mnist_few_shot(data_root=data_root)[0]
    assert task.train.names == tuple(f"digit-{d}" for d in range(5))
    assert task.test.names == tuple(f"digit-{d}" for d in range(5, 10))
    with pytest.raises(ValueError, match="overlap: \\[4\\]"):
        mnist_few_shot(train_digits=(0, 4), test_digits=(4, 5), data_root=data_root)


def test_validation_holds_out_part_of_the_training_set_beside_the_test_set(data_root):
    full = split_mnist(data_root=data_root)
    tuning = split_mnist(validation=0.1, data_root=data_root)
    assert sum(len(t.validation) for t in tuning) == 6000
    assert sum(len(t.train) for t in tuning) == 54000
    assert all(task.validation is None for task in full)
    for held_out, whole in zip(tuning, full):
        assert torch.equal(held_out.test.images, whole.test.images)  # the real test set
        original = {bytes(image.numpy()) for image in whole.train.images}
        kept = {bytes(image.numpy()) for image in held_out.train.images}
        validation = held_out.validation
        assert all(bytes(image.numpy()) in original for image in validation.images[:200])
        leaked = sum(bytes(image.numpy()) in kept for image in validation.images)
        assert leaked <= 2  # MNIST's training set repeats a few images; nothing else may overlap
        # the labels are task-local, like the training set's
        assert set(validation.labels.tolist()) == set(whole.train.labels.tolist())
    with pytest.raises(ValueError, match="fraction of the training set"):
        split_mnist(validation=1.5, data_root=data_root)


def test_permuted_mnist_pads_before_permuting(data_root):
    stream = permuted_mnist(n_tasks=2, padding=2, data_root=data_root)
    assert stream[0].train.images.shape[1:] == (32, 32)
    assert stream[0].train.images[:, :2].sum() == 0  # the border is zeros
    images = stream[0].train.images[:16]
    plain, permuted = stream[0].inputs(images), stream[1].inputs(images)
    assert permuted.shape == (16, 1, 32, 32)
    # the permutation moves the 1024 padded pixels: the same values, elsewhere
    assert torch.equal(plain.flatten(1).sort(1).values, permuted.flatten(1).sort(1).values)
    assert not torch.equal(plain, permuted)
    assert permuted[:, 0, :2].sum() > 0  # border zeros moved into the image, digit pixels out


@pytest.mark.parametrize(
    "task_indices,batch_size,message",
    [
        ([0], 7, "protocol.batch_size=7 is larger than the training set of task 't0' of toy, "
                 "which has 6 examples, so no full batch can be drawn; set protocol.batch_size "
                 "to at most 6"),
        ([0, 1], 11, "larger than the training sets of tasks 't0', 't1' together of toy, which "
                     "has 10 examples.*at most 10"),
        ([0], 0, "protocol.batch_size must be at least 1, got 0 \\(batches of the training set "
                 "of task 't0' of toy\\); set protocol.batch_size to a positive number"),
        ([0], -3, "protocol.batch_size must be at least 1, got -3"),
    ],
)
def test_impossible_training_batches_are_refused_at_the_call(task_indices, batch_size, message):
    """Once a loop over epochs with no full batch: it spun forever at 100% CPU."""
    stream = toy_stream()
    with pytest.raises(ValueError, match=message):
        stream.train_batches("class", task_indices, batch_size, torch.Generator(), seen=2,
                             setting="protocol.batch_size")


def test_the_whole_training_set_is_one_batch_per_epoch():
    batches = toy_stream().train_batches("class", [0], 6, torch.Generator().manual_seed(0), seen=1)
    assert sorted(pixel_ids(next(batches))) == sorted(pixel_ids(next(batches))) == list(range(6))


@pytest.mark.parametrize("batch_size", [0, -1])
def test_ordered_batches_refuse_a_batch_size_below_one(batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be at least 1, got {batch_size} "
                                         "\\(batches of the test set of task 't1' of toy\\)"):
        toy_stream().ordered_batches("class", 1, batch_size, seen=2)
