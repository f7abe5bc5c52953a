"""Dataset archives: locating, verifying, decoding and caching them as tensors."""

from metalearn.data.archives import CorruptDataError, DataError, MissingDataError
from metalearn.data.mnist import MNISTData, load_mnist
from metalearn.data.omniglot import OmniglotData, load_omniglot
from metalearn.data.roots import cache_dir, data_roots

__all__ = [
    "CorruptDataError",
    "DataError",
    "MissingDataError",
    "MNISTData",
    "OmniglotData",
    "cache_dir",
    "data_roots",
    "load_mnist",
    "load_omniglot",
]
