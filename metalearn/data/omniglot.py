"""Omniglot (Lake et al. 2015): 1623 handwritten characters from 50 alphabets, 20 drawings each.

Read straight from the two archives in torchvision's layout, ``<root>/omniglot-py/
images_background.zip`` and ``images_evaluation.zip``; no unpacking. Characters are numbered
background first, then evaluation, each in sorted ``Alphabet/characterNN`` order, so class ids
are the same on every filesystem. Images are resized to ``image_size`` with Lanczos filtering
(as in the MAML reference code) and inverted so that ink is high, like MNIST.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.progress import track

from metalearn.data.archives import Resource, corrupt, load_cached, locate
from metalearn.data.roots import data_roots

_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
# background: 30 alphabets, 964 characters; evaluation: 20 alphabets, 659 characters.
_ARCHIVES = {
    "images_background": ("68d2efa1b9178cc56df9314c21c6e718", 30, 964),
    "images_evaluation": ("6b91aef0f799c5bb55b94e3f2daec811", 20, 659),
}
DRAWINGS_PER_CHARACTER = 20
_ORIGINAL_SIZE = 105


@dataclass(frozen=True)
class OmniglotData:
    """All characters as one CPU tensor plus their names.

    ``images`` is uint8 [1623, 20, size, size]; ``characters[i]`` is ``"Alphabet/characterNN"``
    and ``alphabets[i]`` its alphabet; the first ``n_background`` belong to images_background.
    """

    images: torch.Tensor
    characters: list[str]
    alphabets: list[str]
    n_background: int


def load_omniglot(
    data_root: str | Path | None = None, image_size: int = 28, download: bool = True
) -> OmniglotData:
    """Load all 1623 Omniglot characters, decoding the archives once and caching the tensors."""
    roots = data_roots(data_root)
    paths = [
        locate(Resource(f"omniglot-py/{name}.zip", (_URL + f"{name}.zip",), md5), roots, download)
        for name, (md5, _, _) in _ARCHIVES.items()
    ]

    def decode() -> dict:
        images, characters = [], []
        for path, (name, (_, n_alphabets, n_characters)) in zip(paths, _ARCHIVES.items()):
            names, pixels = _decode_archive(path, name, n_alphabets, n_characters, image_size)
            characters += names
            images.append(pixels)
        return {"images": torch.cat(images), "characters": characters}

    content = load_cached(f"omniglot-{image_size}px", paths, decode)
    characters = content["characters"]
    return OmniglotData(
        images=content["images"],
        characters=characters,
        alphabets=[c.split("/")[0] for c in characters],
        n_background=_ARCHIVES["images_background"][2],
    )


def _decode_archive(
    path: Path, top: str, n_alphabets: int, n_characters: int, image_size: int
) -> tuple[list[str], torch.Tensor]:
    """Check one archive's structure and CRCs while decoding it; return names and pixels."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise corrupt(path, f"not a readable zip: {error}") from None
    drawings: dict[str, list[str]] = defaultdict(list)
    with archive:
        for entry in archive.namelist():
            parts = entry.split("/")
            if len(parts) == 4 and parts[0] == top and parts[3].endswith(".png"):
                drawings[f"{parts[1]}/{parts[2]}"].append(entry)
        characters = sorted(drawings)
        n_found_alphabets = len({c.split("/")[0] for c in characters})
        if (n_found_alphabets, len(characters)) != (n_alphabets, n_characters):
            raise corrupt(
                path,
                f"expected {n_alphabets} alphabets and {n_characters} characters under {top}/, "
                f"found {n_found_alphabets} and {len(characters)}",
            )
        short = [c for c in characters if len(drawings[c]) != DRAWINGS_PER_CHARACTER]
        if short:
            raise corrupt(path, f"{short[0]} has {len(drawings[short[0]])} drawings, not 20")
        pixels = np.empty((len(characters), DRAWINGS_PER_CHARACTER, image_size, image_size), np.uint8)
        for i, character in enumerate(track(characters, f"decoding {path.name}", transient=True)):
            for j, entry in enumerate(sorted(drawings[character])):
                pixels[i, j] = _decode_png(archive, entry, path, image_size)
    return characters, torch.from_numpy(pixels)


def _decode_png(archive: zipfile.ZipFile, entry: str, path: Path, image_size: int) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(archive.read(entry)))  # read() verifies the CRC-32
        image.load()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnidentifiedImageError) as error:
        raise corrupt(path, f"{entry}: {error}") from None
    if image.size != (_ORIGINAL_SIZE, _ORIGINAL_SIZE):
        raise corrupt(path, f"{entry} is {image.size[0]}x{image.size[1]}, expected 105x105")
    resized = image.convert("L").resize((image_size, image_size), Image.LANCZOS)
    return 255 - np.asarray(resized, dtype=np.uint8)
