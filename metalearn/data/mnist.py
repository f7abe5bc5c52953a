"""MNIST and Fashion-MNIST from the IDX archives, in torchvision's folder layout.

Files are looked up as ``<root>/MNIST/raw/*-ubyte.gz`` (``FashionMNIST`` for Fashion-MNIST).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metalearn.data.archives import Resource, corrupt, load_cached, locate
from metalearn.data.roots import data_roots

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# Canonical MD5s of the official gzip files (the ones torchvision pins), used for downloads.
_VARIANTS: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    "mnist": (
        "MNIST",
        _MNIST_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": (
        "FashionMNIST",
        _FASHION_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}
_SPLIT_SIZES = {"train": 60000, "t10k": 10000}


@dataclass(frozen=True)
class MNISTData:
    """Both splits as CPU tensors: images uint8 [n, 28, 28] (ink high), labels int64 [n]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_mnist(
    variant: str = "mnist", data_root: str | Path | None = None, download: bool = True
) -> MNISTData:
    """Load MNIST or Fashion-MNIST, decoding the archives once and caching the tensors."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown MNIST variant {variant!r}; choose one of {sorted(_VARIANTS)}")
    folder, mirrors, md5s = _VARIANTS[variant]
    roots = data_roots(data_root)
    paths = {
        name: locate(
            Resource(f"{folder}/raw/{name}", tuple(m + name for m in mirrors), md5), roots, download
        )
        for name, md5 in md5s.items()
    }

    def decode() -> dict[str, torch.Tensor]:
        tensors = {}
        for split, key in (("train", "train"), ("t10k", "test")):
            images = _read_idx(paths[f"{split}-images-idx3-ubyte.gz"], 3, _SPLIT_SIZES[split])
            labels = _read_idx(paths[f"{split}-labels-idx1-ubyte.gz"], 1, _SPLIT_SIZES[split])
            if images.shape[1:] != (28, 28):
                raise corrupt(paths[f"{split}-images-idx3-ubyte.gz"], f"images {images.shape}")
            if labels.max() > 9:
                raise corrupt(paths[f"{split}-labels-idx1-ubyte.gz"], "a label above 9")
            tensors[f"{key}_images"] = torch.from_numpy(images.copy())
            tensors[f"{key}_labels"] = torch.from_numpy(labels.astype(np.int64))
        return tensors

    return MNISTData(**load_cached(variant, list(paths.values()), decode))


def _read_idx(path: Path, n_dims: int, expected_count: int) -> np.ndarray:
    """Decode one gzipped IDX file of unsigned bytes, checking gzip's CRC and the header."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise corrupt(path, f"gzip: {error}") from None
    header = 4 + 4 * n_dims
    if len(raw) < header:
        raise corrupt(path, "file shorter than its IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + n_dims:
        raise corrupt(path, f"IDX magic {magic:#x}, expected {0x0800 + n_dims:#x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    if shape[0] != expected_count or len(raw) != header + int(np.prod(shape)):
        raise corrupt(path, f"IDX header says shape {shape}, file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
