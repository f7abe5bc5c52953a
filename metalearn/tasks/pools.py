"""Images grouped by class, held as one flat device tensor so sampling is an index gather."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch


@dataclass(frozen=True)
class ClassPool:
    """The classes an episode may draw from.

    Class ``c`` owns ``images[offsets[c] : offsets[c] + sizes[c]]``. ``images`` is uint8
    [total, H, W] on any device; ``sizes`` is int64 on the CPU (index sampling runs on the CPU
    with an explicit generator, so the same seed gives the same episodes on every device).
    """

    images: torch.Tensor
    sizes: torch.Tensor
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 3:
            raise ValueError(f"images must be uint8 [total, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.names) != len(self.sizes) or int(self.sizes.sum()) != len(self.images):
            raise ValueError("names, sizes and images of a ClassPool disagree in length")

    @classmethod
    def from_grouped(cls, images: torch.Tensor, names: Sequence[str]) -> ClassPool:
        """From a [classes, examples, H, W] tensor (every class the same size, e.g. Omniglot)."""
        n_classes, n_examples = images.shape[:2]
        sizes = torch.full((n_classes,), n_examples, dtype=torch.int64)
        return cls(images.reshape(-1, *images.shape[2:]), sizes, tuple(names))

    @classmethod
    def from_labelled(
        cls, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], names: Sequence[str]
    ) -> ClassPool:
        """From images with integer labels, keeping ``classes`` in the given order."""
        order = torch.cat([torch.nonzero(labels == c).flatten() for c in classes])
        sizes = torch.stack([(labels == c).sum() for c in classes]).cpu()
        return cls(images[order.to(images.device)], sizes, tuple(names))

    @property
    def offsets(self) -> torch.Tensor:
        return torch.cumsum(self.sizes, 0) - self.sizes

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.sizes)

    def subset(self, class_ids: Sequence[int]) -> ClassPool:
        """A new pool with only ``class_ids``, in that order."""
        ids = torch.as_tensor(list(class_ids), dtype=torch.int64)
        starts, sizes = self.offsets[ids], self.sizes[ids]
        index = torch.cat([torch.arange(s, s + n) for s, n in zip(starts.tolist(), sizes.tolist())])
        return ClassPool(
            self.images[index.to(self.images.device)], sizes, tuple(self.names[i] for i in ids)
        )

    def with_rotations(self, quarter_turns: Sequence[int] = (0, 1, 2, 3)) -> ClassPool:
        """Each class rotated by 90 degrees x each of ``quarter_turns``, as a new class.

        The augmentation of Santoro et al. (2016) used by MAML for meta-training on Omniglot.
        Classes are ordered rotation-major: all classes at the first rotation, then the next.
        """
        images = torch.cat([torch.rot90(self.images, k, dims=(1, 2)) for k in quarter_turns])
        names = tuple(f"{n}@{90 * k}" for k in quarter_turns for n in self.names)
        return ClassPool(images, self.sizes.repeat(len(quarter_turns)), names)

    def batches(
        self, batch_size: int, generator: torch.Generator, name: str = "the pool",
        setting: str = "batch_size",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless shuffled minibatches of every image: float x [b, 1, H, W], class ids y [b].

        For learners that pretrain an ordinary classifier on a pool's classes. A ``batch_size``
        (the config's ``setting``) below 1 or above the pool's image count raises a ValueError
        here, at the call, naming the pool (``name``).
        """
        labels = torch.repeat_interleave(torch.arange(len(self)), self.sizes).to(self.images.device)
        indices = shuffled_batches(len(labels), batch_size, generator,
                                   f"{name} ({len(self)} classes)", setting)

        def batch(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            index = index.to(self.images.device)
            return self.images[index].unsqueeze(1).float().div_(255), labels[index]

        return map(batch, indices)

    def to(self, device: torch.device | str) -> ClassPool:
        return ClassPool(self.images.to(device), self.sizes, self.names)


def check_batch_size(batch_size: int, what: str, available: int | None = None,
                     setting: str = "batch_size") -> None:
    """Raise a ValueError naming ``setting``, ``what`` and the fix if ``batch_size`` is below 1
    or above the ``available`` examples: a sampler would otherwise spin forever on epochs with
    no full batch, or fail later with a bare traceback."""
    if batch_size < 1:
        raise ValueError(f"{setting} must be at least 1, got {batch_size} (batches of {what}); "
                         f"set {setting} to a positive number")
    if available is not None and batch_size > available:
        raise ValueError(f"{setting}={batch_size} is larger than {what}, which has {available} "
                         f"examples, so no full batch can be drawn; set {setting} to at most "
                         f"{available}")


def shuffled_batches(size: int, batch_size: int, generator: torch.Generator, what: str,
                     setting: str = "batch_size") -> Iterator[torch.Tensor]:
    """Endless CPU index batches [batch_size] over ``range(size)``, a fresh permutation of
    ``generator`` each epoch, each epoch's last partial batch dropped.

    ``batch_size`` is checked here, at the call (see :func:`check_batch_size`), not at the
    first ``next``.
    """
    check_batch_size(batch_size, what, size, setting)

    def epochs() -> Iterator[torch.Tensor]:
        while True:
            order = torch.randperm(size, generator=generator)
            yield from order[: size - size % batch_size].view(-1, batch_size)

    return epochs()
