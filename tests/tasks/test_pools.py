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
