import shutil
import zipfile

import pytest
import torch

from metalearn.data import CorruptDataError, MissingDataError, load_omniglot


def test_loads_all_1623_characters(data_root):
    data = load_omniglot(data_root=data_root, download=False)
    assert data.images.shape == (1623, 20, 28, 28) and data.images.dtype == torch.uint8
    assert len(set(data.characters)) == 1623 and data.n_background == 964
    assert len(set(data.alphabets[:964])) == 30 and len(set(data.alphabets[964:])) == 20
    # Sorted names, background first: ids do not depend on the filesystem's listing order.
    assert data.characters[:964] == sorted(data.characters[:964])
    assert data.characters[964:] == sorted(data.characters[964:])
    assert data.characters[0] == "Alphabet_of_the_Magi/character01"
    assert data.characters[964] == "Angelic/character01"
    # Ink is high and sparse; no two characters are the same.
    assert 0.05 < data.images.float().mean() / 255 < 0.3
    assert not torch.equal(data.images[0], data.images[1])


def test_matches_a_direct_decode_of_one_drawing(data_root):
    from PIL import Image
    import numpy as np

    data = load_omniglot(data_root=data_root, download=False)
    index = data.characters.index("Tifinagh/character54")
    with zipfile.ZipFile(data_root / "omniglot-py" / "images_background.zip") as archive:
        with archive.open("images_background/Tifinagh/character54/0963_05.png") as handle:
            image = Image.open(handle).convert("L").resize((28, 28), Image.LANCZOS)
    expected = 255 - torch.from_numpy(np.array(image, dtype=np.uint8))
    assert torch.equal(data.images[index, 4], expected)


def _copy_omniglot(data_root, tmp_path):
    target = tmp_path / "root" / "omniglot-py"
    shutil.copytree(data_root / "omniglot-py", target)
    return target


def test_corrupt_zip_error_names_the_file(data_root, tmp_path, fresh_cache):
    folder = _copy_omniglot(data_root, tmp_path)
    victim = folder / "images_background.zip"
    content = bytearray(victim.read_bytes())
    for offset in range(len(content) // 20, len(content) // 10, 997):  # inside early members
        content[offset] ^= 0xFF
    victim.write_bytes(bytes(content))
    with pytest.raises(CorruptDataError, match="images_background.zip"):
        load_omniglot(data_root=tmp_path / "root", download=False)


def test_truncated_zip_error_names_the_file(data_root, tmp_path, fresh_cache):
    folder = _copy_omniglot(data_root, tmp_path)
    victim = folder / "images_evaluation.zip"
    victim.write_bytes(victim.read_bytes()[:100_000])
    with pytest.raises(CorruptDataError, match="images_evaluation.zip.*not a readable zip"):
        load_omniglot(data_root=tmp_path / "root", download=False)


def test_incomplete_archive_is_rejected(data_root, tmp_path, fresh_cache):
    folder = _copy_omniglot(data_root, tmp_path)
    source = data_root / "omniglot-py" / "images_evaluation.zip"
    with zipfile.ZipFile(source) as full, zipfile.ZipFile(folder / source.name, "w") as partial:
        for entry in full.infolist():
            if "/ULOG/" not in entry.filename:
                partial.writestr(entry, full.read(entry))
    with pytest.raises(CorruptDataError, match="20 alphabets and 659 characters.*found 19"):
        load_omniglot(data_root=tmp_path / "root", download=False)


def test_missing_archive_names_the_file(tmp_path, fresh_cache):
    with pytest.raises(MissingDataError, match="images_background.zip"):
        load_omniglot(data_root=tmp_path, download=False)
