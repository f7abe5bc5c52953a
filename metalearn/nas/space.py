"""The space of few-shot backbones that architecture searches explore (docs/architecture_search.md).

An architecture is a tuple of blocks, each (operation, width, reduction), as
:class:`metalearn.models.SearchableConvNet` builds them; Conv4 is the point of four blocks
(conv3x3, 64, stride). The space caps the FLOPs of one image's forward pass (by default at
Conv4's): every searcher proposes only architectures within the cap.
"""

from __future__ import annotations

import random
from typing import Any, Literal, Sequence

import pydantic

from metalearn.models import CONV4_BLOCKS, OPERATIONS, REDUCTIONS, architecture_flops

Block = tuple[str, int, str]  # (operation, width, reduction)
Architecture = tuple[Block, ...]
MAX_DRAWS = 10_000  # draws before a space is declared too tight for its FLOPs cap


def as_blocks(architecture: Architecture) -> list[dict[str, Any]]:
    """The blocks as a model config reads them (``model.options.blocks``)."""
    return [{"op": op, "width": width, "reduce": reduce} for op, width, reduce in architecture]


def from_blocks(blocks: Sequence[dict[str, Any]]) -> Architecture:
    return tuple((block["op"], int(block["width"]), block["reduce"]) for block in blocks)


CONV4 = from_blocks(CONV4_BLOCKS)


class ArchitectureSpace(pydantic.BaseModel):
    """Depths, per-block operations, widths and reductions, and the FLOPs cap ("conv4": Conv4's
    FLOPs on the same images; None: no cap)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    depths: list[int] = pydantic.Field([2, 3, 4, 5], min_length=1)
    operations: list[Literal[OPERATIONS]] = pydantic.Field(list(OPERATIONS), min_length=1)
    widths: list[int] = pydantic.Field([16, 32, 48, 64, 96], min_length=1)
    reductions: list[Literal[REDUCTIONS]] = pydantic.Field(list(REDUCTIONS), min_length=1)
    max_flops: int | Literal["conv4"] | None = "conv4"
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (channels, height, width)
    n_way: int = pydantic.Field(5, ge=2)  # the head's outputs, counted in the FLOPs

    @pydantic.field_validator("depths", "widths")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if min(values) < 1:
            raise ValueError(f"depths and widths must be positive, got {values}")
        return sorted(set(values))

    def flops(self, architecture: Architecture) -> int:
        return architecture_flops(as_blocks(architecture), self.image_shape, self.n_way)

    def flops_limit(self) -> int | None:
        return self.flops(CONV4) if self.max_flops == "conv4" else self.max_flops

    def fits(self, architecture: Architecture) -> bool:
        """Within the FLOPs cap (the space's choices are not checked: a mutation keeps to them)."""
        limit = self.flops_limit()
        return limit is None or self.flops(architecture) <= limit

    def block_choices(self) -> dict[str, list]:
        """Each block's decisions, in the order a controller makes them."""
        return {"op": list(self.operations), "width": list(self.widths), "reduce": list(self.reductions)}

    def sample(self, rng: random.Random) -> Architecture:
        """Uniform over depths, then over each block's choices, redrawn until within the cap."""
        return self.within_cap(lambda: tuple(
            (rng.choice(self.operations), rng.choice(self.widths), rng.choice(self.reductions))
            for _ in range(rng.choice(self.depths))))

    def mutate(self, parent: Architecture, rng: random.Random) -> Architecture:
        """One random change (Real et al. 2019): a block's operation, width or reduction to
        another value, or a block added or removed where the depths allow; redrawn until it
        differs from ``parent`` and is within the cap."""
        def child() -> Architecture:
            blocks = list(parent)
            kinds = ["op", "width", "reduce"]
            kinds += ["add"] * (len(blocks) + 1 in self.depths) + ["remove"] * (len(blocks) - 1 in self.depths)
            kind, at = rng.choice(kinds), rng.randrange(len(blocks))
            if kind == "add":
                blocks.insert(rng.randrange(len(blocks) + 1), (
                    rng.choice(self.operations), rng.choice(self.widths), rng.choice(self.reductions)))
            elif kind == "remove":
                del blocks[at]
            else:
                position = ("op", "width", "reduce").index(kind)
                block = list(blocks[at])
                block[position] = rng.choice(self.block_choices()[kind])
                blocks[at] = tuple(block)
            return tuple(blocks)
        return self.within_cap(child, differs_from=parent)

    def within_cap(self, draw: Any, differs_from: Architecture | None = None) -> Architecture:
        for _ in range(MAX_DRAWS):
            architecture = draw()
            if architecture != differs_from and self.fits(architecture):
                return architecture
        raise ValueError(f"no architecture within max_flops={self.max_flops} ({self.flops_limit()} "
                         f"FLOPs) in {MAX_DRAWS} draws: raise max_flops, or add smaller widths, "
                         "cheaper operations or shallower depths to the space")
