"""Network architectures used by the benchmarks."""

from metalearn.models.conv4 import Conv4

__all__ = ["Conv4"]
