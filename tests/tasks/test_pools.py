import pytest
import torch

from metalearn.tasks import ClassPool


def test_from_labelled_groups_by_class_in_the_given_order():
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1)
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    pool = ClassPool.from_labelled(images, labels, [2, 0], ["two", "zero"])
    assert pool.sizes.tolist() == [3, 2]
    assert pool.images.flatten().tolist() == [0, 2, 5, 1, 4]


def test_subset_and_rotations_keep_images_with_their_class():
    images = torch.arange(3 * 2 * 4, dtype=torch.uint8).view(3, 2, 2, 2)
    pool = ClassPool.from_grouped(images, ["a", "b", "c"])
    sub = pool.subset([2, 0])
    assert sub.names == ("c", "a") and torch.equal(sub.images[:2], images[2])
    rotated = sub.with_rotations((0, 1))
    assert rotated.names == ("c@0", "a@0", "c@90", "a@90")
    assert torch.equal(rotated.images[4], torch.rot90(images[2, 0], 1, dims=(0, 1)))


def test_rejects_inconsistent_parts():
    with pytest.raises(ValueError, match="uint8"):
        ClassPool(torch.zeros(2, 2, 2), torch.tensor([2]), ("a",))
    with pytest.raises(ValueError, match="disagree"):
        ClassPool(torch.zeros(3, 2, 2, dtype=torch.uint8), torch.tensor([2]), ("a",))


@pytest.mark.parametrize(
    "batch_size,message",
    [
        (6, "learner.options.batch_size=6 is larger than the training classes \\(2 classes\\), "
            "which has 5 examples, so no full batch can be drawn; set learner.options.batch_size "
            "to at most 5"),
        (0, "learner.options.batch_size must be at least 1, got 0"),
        (-2, "learner.options.batch_size must be at least 1, got -2"),
    ],
)
def test_impossible_batches_are_refused_at_the_call(batch_size, message):
    """Once a loop over epochs with no full batch: it spun forever at 100% CPU."""
    pool = ClassPool.from_labelled(torch.zeros(5, 1, 1, dtype=torch.uint8),
                                   torch.tensor([0, 1, 0, 1, 0]), [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match=message):
        pool.batches(batch_size, torch.Generator(), name="the training classes",
                     setting="learner.options.batch_size")


def test_batches_visit_every_image_once_per_epoch_with_its_class():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1)
    pool = ClassPool.from_labelled(images, torch.tensor([0, 1, 0, 1, 0]), [0, 1], ["a", "b"])
    batches = pool.batches(2, torch.Generator().manual_seed(0))
    epoch = [next(batches) for _ in range(2)]  # 5 images: two full batches, one left over
    pixels = torch.cat([x.flatten() for x, _ in epoch]).mul(255).round().long()
    labels = torch.cat([y for _, y in epoch])
    assert len(set(pixels.tolist())) == 4
    assert labels.tolist() == [[0, 1, 0, 1, 0][p] for p in pixels.tolist()]
