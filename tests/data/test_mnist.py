import gzip
import shutil
from pathlib import Path

import pytest
import torch

from metalearn.data import CorruptDataError, MissingDataError, load_mnist

# Label histograms of the canonical release (shared/data/SOURCES.md).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_loads_the_real_mnist(data_root):
    data = load_mnist(data_root=data_root, download=False)
    assert data.train_images.shape == (60000, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10000, 28, 28)
    assert data.train_labels.bincount().tolist() == TRAIN_COUNTS
    assert data.test_labels.bincount().tolist() == TEST_COUNTS
    # Ink is high: the background (most pixels) is 0.
    assert (data.train_images[:100] == 0).float().mean() > 0.7


def test_second_load_comes_from_the_cache(data_root, fresh_cache, monkeypatch):
    first = load_mnist(data_root=data_root, download=False)
    monkeypatch.setattr("metalearn.data.mnist._read_idx", _fail_if_called)
    second = load_mnist(data_root=data_root, download=False)
    assert torch.equal(first.test_images, second.test_images)


def _fail_if_called(*args, **kwargs):
    raise AssertionError("decoded again although a cache exists")


def _copy_mnist(data_root: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "root" / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw)
    return raw


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_archive_error_names_the_file(data_root, tmp_path, fresh_cache, damage):
    raw = _copy_mnist(data_root, tmp_path)
    victim = raw / "t10k-images-idx3-ubyte.gz"
    content = bytearray(victim.read_bytes())
    if damage == "truncate":
        content = content[: len(content) // 2]
    else:
        content[len(content) // 2] ^= 0xFF
    victim.write_bytes(bytes(content))
    with pytest.raises(CorruptDataError, match="t10k-images-idx3-ubyte.gz") as error:
        load_mnist(data_root=tmp_path / "root", download=False)
    assert "replace it" in str(error.value)


def test_wrong_header_is_reported(data_root, tmp_path, fresh_cache):
    raw = _copy_mnist(data_root, tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(content[:-10]))  # valid gzip, but 10 labels short
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz.*IDX header"):
        load_mnist(data_root=tmp_path / "root", download=False)


def test_missing_file_says_where_to_put_it(tmp_path, fresh_cache):
    with pytest.raises(MissingDataError) as error:
        load_mnist(data_root=tmp_path, download=False)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "METALEARN_DATA" in message and "--data-root" in message


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_mnist("kmnist")


def test_fashion_mnist_when_present(fresh_cache):
    """Runs where a FashionMNIST/raw folder is on the data path (CI installs Debian's copy)."""
    try:
        data = load_mnist("fashion-mnist", download=False)
    except MissingDataError:
        pytest.skip("Fashion-MNIST not installed")
    assert data.train_images.shape == (60000, 28, 28)
    assert data.train_labels.bincount().tolist() == [6000] * 10
