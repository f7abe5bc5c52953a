"""The search space of architecture search: few-shot backbones built from a list of blocks, and
the continuous relaxation of that space (DARTS, Liu et al. 2019), meta-trained as MetaNAS
(Elsken et al. 2020) does.

A block is ``{"op": ..., "width": ..., "reduce": ...}``: an operation from ``OPERATIONS`` giving
``width`` channels, and a reduction from ``REDUCTIONS`` that halves the feature map (to
ceil(H/2): 28 -> 14 -> 7 -> 4 -> 2 -> 1; a reduction at 1x1 leaves it 1x1) or keeps it. Conv4 is
the point ``CONV4_BLOCKS``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

OPERATIONS = ("conv3x3", "conv5x5", "sep3x3", "sep5x5", "skip")
REDUCTIONS = ("stride", "max", "avg", "none")
CONV4_BLOCKS = tuple({"op": "conv3x3", "width": 64, "reduce": "stride"} for _ in range(4))

Block = tuple[str, int, str]  # (op, width, reduce): the hashable form of a block


def validated_blocks(blocks: Sequence[Mapping[str, Any]]) -> tuple[Block, ...]:
    """``blocks`` (any sequence of mappings, e.g. from YAML) as (op, width, reduce) tuples, or
    an error naming the block, the bad value and the allowed ones."""
    if isinstance(blocks, (str, Mapping)) or not isinstance(blocks, Sequence) or not blocks:
        raise ValueError(f"blocks must be a non-empty list of blocks such as {CONV4_BLOCKS[0]}, "
                         f"got {blocks!r}")
    checked = []
    for index, block in enumerate(blocks):
        if not isinstance(block, Mapping) or set(block) != {"op", "width", "reduce"}:
            raise ValueError(f"block {index} must be a mapping with exactly the keys op, width and "
                             f"reduce (e.g. {CONV4_BLOCKS[0]}), got {block!r}")
        op, width, reduce = block["op"], block["width"], block["reduce"]
        if op not in OPERATIONS:
            raise ValueError(f"block {index}: unknown op {op!r}; choose one of {OPERATIONS}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"block {index}: width must be a positive integer, got {width!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"block {index}: unknown reduce {reduce!r}; choose one of {REDUCTIONS}")
        checked.append((op, width, reduce))
    return tuple(checked)


def operation(op: str, in_channels: int, width: int, stride: int,
              track_running_stats: bool) -> nn.Sequential:
    """One operation of the space: ``convKxK`` is convolution, BatchNorm and ReLU (Conv4's
    block); ``sepKxK`` is a depthwise then a pointwise convolution, BatchNorm and ReLU (the
    separable convolution of DARTS); ``skip`` is the identity, or where the shape changes
    ResNet's projection shortcut (1x1 convolution and BatchNorm). Every convolution keeps its
    bias, as in Conv4."""
    if op == "skip":
        if in_channels == width and stride == 1:
            return nn.Sequential(nn.Identity())
        return nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride),
                             nn.BatchNorm2d(width, track_running_stats=track_running_stats))
    kernel = int(op[-1])
    if op.startswith("conv"):
        convolution = [nn.Conv2d(in_channels, width, kernel, stride=stride, padding=kernel // 2)]
    else:
        convolution = [nn.Conv2d(in_channels, in_channels, kernel, stride=stride,
                                 padding=kernel // 2, groups=in_channels),
                       nn.Conv2d(in_channels, width, 1)]
    return nn.Sequential(*convolution, nn.BatchNorm2d(width, track_running_stats=track_running_stats),
                         nn.ReLU())


def pooling(reduce: str) -> nn.Module:
    """The pooling after a stride-1 operation: 2x2 max or average pooling (ceil mode, so an odd
    size rounds up), or nothing for ``none``."""
    if reduce == "max":
        return nn.MaxPool2d(2, ceil_mode=True)
    if reduce == "avg":
        return nn.AvgPool2d(2, ceil_mode=True)
    return nn.Identity()


def discrete_block(op: str, in_channels: int, width: int, reduce: str,
                   track_running_stats: bool) -> nn.Sequential:
    """A block of the space: the operation (at stride 2 for ``stride``), then its pooling."""
    layers = list(operation(op, in_channels, width, 2 if reduce == "stride" else 1,
                            track_running_stats))
    if reduce in ("max", "avg"):
        layers.append(pooling(reduce))
    return nn.Sequential(*layers)


class SearchableConvNet(nn.Module):
    """A few-shot backbone built from ``blocks`` (see the module docstring), then global
    average pooling and a linear head; ``CONV4_BLOCKS`` gives Conv4 exactly (the same
    parameters in the same order, the same function). ``input_shape`` records the
    (C, H, W) its FLOPs are counted at: ``count_flops(model, model.input_shape)``."""

    def __init__(self, n_outputs: int, in_channels: int = 1, image_size: int = 28,
                 blocks: Sequence[Mapping[str, Any]] = CONV4_BLOCKS,
                 track_running_stats: bool = False) -> None:
        super().__init__()
        checked = validated_blocks(blocks)
        self.blocks = [{"op": op, "width": width, "reduce": reduce} for op, width, reduce in checked]
        self.input_shape = (in_channels, image_size, image_size)
        layers, previous = [], in_channels
        for op, width, reduce in checked:
            layers.append(discrete_block(op, previous, width, reduce, track_running_stats))
            previous = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(previous, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MixedBlock(nn.Module):
    """A layer of the DARTS relaxation (Liu et al. 2019): with a = softmax(op_logits) and
    b = softmax(reduce_logits), the output is sum_j b_j R_j(sum_i a_i O_i(x)), where for
    ``stride`` the operations run at stride 2 and R is the identity, and for the other
    reductions they run at stride 1 and R pools. There is one set of operation weights at
    stride 2 and one at stride 1 (shared by max, avg and none, as a discrete block's stride-1
    operation is the same whatever pools it), so one-hot a and b give exactly the discrete
    block (``discrete_block``) holding the chosen operation's weights. The logits are
    parameters of the block, zero at the start (the uniform mixture, as in DARTS), so whoever
    trains the features trains the architecture too (MetaNAS, Elsken et al. 2020)."""

    def __init__(self, in_channels: int, width: int, operations: Sequence[str],
                 reductions: Sequence[str], track_running_stats: bool = False) -> None:
        super().__init__()
        self.operations, self.reductions = tuple(operations), tuple(reductions)
        self.op_logits = nn.Parameter(torch.zeros(len(self.operations)))
        self.reduce_logits = nn.Parameter(torch.zeros(len(self.reductions)))

        def operations_at(stride: int) -> nn.ModuleDict:
            return nn.ModuleDict({op: operation(op, in_channels, width, stride, track_running_stats)
                                  for op in self.operations})

        self.strided = operations_at(2) if "stride" in self.reductions else nn.ModuleDict()
        self.unstrided = operations_at(1) if self.reductions != ("stride",) else nn.ModuleDict()
        self.pools = nn.ModuleDict({reduce: pooling(reduce) for reduce in self.reductions
                                    if reduce != "stride"})

    def reset_parameters(self) -> None:
        """Back to the uniform mixture (``models.reinitialise`` calls this)."""
        nn.init.zeros_(self.op_logits)
        nn.init.zeros_(self.reduce_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op_weights = self.op_logits.softmax(0)

        def mixture(operations: nn.ModuleDict) -> torch.Tensor:
            return sum(w * op(x) for w, op in zip(op_weights, operations.values()))

        unstrided = mixture(self.unstrided) if self.unstrided else None
        reduced = [mixture(self.strided) if reduce == "stride" else self.pools[reduce](unstrided)
                   for reduce in self.reductions]
        return sum(w * out for w, out in zip(self.reduce_logits.softmax(0), reduced))


class DartsSupernet(nn.Module):
    """``depth`` mixed blocks of ``width`` channels over ``operations`` x ``reductions``
    (DARTS's continuous relaxation, Liu et al. 2019), global average pooling and a linear
    head. Meta-training it with an episodic learner trains the architecture logits with the
    weights, as MetaNAS (Elsken et al. 2020) does with Reptile; ``derive`` then reads off the
    discrete architecture. The reductions must all halve the feature map (any of stride, max,
    avg) or all keep it (none alone), so that every layer's output has one shape."""

    def __init__(self, n_outputs: int, in_channels: int = 1, image_size: int = 28, depth: int = 4,
                 width: int = 64, operations: Sequence[str] = OPERATIONS,
                 reductions: Sequence[str] = ("stride", "max", "avg"),
                 track_running_stats: bool = False) -> None:
        super().__init__()
        operations, reductions = tuple(operations), tuple(reductions)
        for name, given, allowed in (("operations", operations, OPERATIONS),
                                     ("reductions", reductions, REDUCTIONS)):
            unknown = [value for value in given if value not in allowed]
            if not given or unknown or len(set(given)) < len(given):
                raise ValueError(f"{name} must be distinct entries of {allowed}, got {list(given)}")
        if "none" in reductions and len(reductions) > 1:
            raise ValueError(f"reductions {list(reductions)} mix 'none' (keeps the size) with "
                             "reductions that halve it, so the layer's outputs differ in shape: "
                             "use only shape-halving ones (stride, max, avg) or ['none'] alone")
        for name, value in (("depth", depth), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.operations, self.reductions, self.width = operations, reductions, width
        self.input_shape = (in_channels, image_size, image_size)
        self.features = nn.Sequential(
            *(MixedBlock(in_channels if i == 0 else width, width, operations, reductions,
                         track_running_stats) for i in range(depth)),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def mixed_blocks(self) -> list[MixedBlock]:
        return [module for module in self.features if isinstance(module, MixedBlock)]

    def architecture_weights(self) -> list[dict[str, dict[str, float]]]:
        """Per layer, the softmax weight of each operation and each reduction, by name."""
        return [{"op": dict(zip(block.operations, block.op_logits.softmax(0).tolist())),
                 "reduce": dict(zip(block.reductions, block.reduce_logits.softmax(0).tolist()))}
                for block in self.mixed_blocks()]

    def derive(self, flops_limit: int | None = None, image_size: int | None = None,
               in_channels: int | None = None) -> list[dict[str, Any]]:
        """The discrete architecture of highest log-probability (the sum over layers of the
        chosen op's and reduction's log-softmax) with at most ``flops_limit`` FLOPs
        (``architecture_flops`` at ``in_channels`` x ``image_size``, by default the
        supernet's); without a limit, the argmax of each layer. Every reduction gives the same
        shape, so a layer's FLOPs do not depend on the choices before it and an architecture's
        are the sum of its layers' plus the head's: a best-first (A*) search over layers finds
        the best one that fits."""
        channels = self.input_shape[0] if in_channels is None else in_channels
        size = self.input_shape[1] if image_size is None else image_size
        choices = list(itertools.product(self.operations, self.reductions))
        scores, costs = [], []
        for block in self.mixed_blocks():
            op_logp = dict(zip(self.operations, block.op_logits.detach().double().log_softmax(0)))
            reduce_logp = dict(zip(self.reductions,
                                   block.reduce_logits.detach().double().log_softmax(0)))
            scores.append([float(op_logp[op] + reduce_logp[reduce]) for op, reduce in choices])
            costs.append([_block_flops(op, channels, self.width, reduce, size)
                          for op, reduce in choices])
            channels = self.width
            size = size if self.reductions == ("none",) else math.ceil(size / 2)
        head = count_flops(nn.Linear(self.width, self.head.out_features, device="meta"),
                           (self.width,))
        limit = math.inf if flops_limit is None else flops_limit
        best_rest = _suffix_sums([max(layer) for layer in scores], last=0.0)
        cheapest_rest = _suffix_sums([min(layer) for layer in costs], last=head)
        if cheapest_rest[0] > limit:
            raise ValueError(f"no architecture of this supernet fits flops_limit={flops_limit}: "
                             f"the cheapest of its architectures needs {cheapest_rest[0]}; raise "
                             "the limit or use a narrower or shallower supernet")
        # A*: the bound adds the best scores of the layers left; a prefix is kept only if the
        # cheapest choices of the layers left still fit, so the search always ends complete.
        frontier = [(-best_rest[0], (), 0.0, 0)]  # (-score bound, choices so far, score, FLOPs)
        while True:
            _, prefix, score, cost = heapq.heappop(frontier)
            layer = len(prefix)
            if layer == len(scores):
                return [{"op": choices[k][0], "width": self.width, "reduce": choices[k][1]}
                        for k in prefix]
            for k in range(len(choices)):
                if cost + costs[layer][k] + cheapest_rest[layer + 1] <= limit:
                    new_score = score + scores[layer][k]
                    heapq.heappush(frontier, (-(new_score + best_rest[layer + 1]), (*prefix, k),
                                              new_score, cost + costs[layer][k]))


def _suffix_sums(values: list[float], last: float) -> list[float]:
    """[sum(values[i:]) + last for i in 0..len(values)]."""
    return list(itertools.accumulate(reversed(values), initial=last))[::-1]


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of one example of ``input_shape``, counted by PyTorch's
    ``FlopCounterMode`` in eval mode (the mode is restored after). It counts convolutions and
    matrix products at 2 FLOPs per multiply-add; pooling, BatchNorm and ReLU are not counted.
    The input is a zero batch of two, halved: BatchNorm without running statistics refuses a
    batch of one at 1x1, and the counted operations are linear in the batch size."""
    like = next(model.parameters(), torch.empty(0))  # a model's device and dtype
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(2, *input_shape, device=like.device, dtype=like.dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def architecture_flops(blocks: Sequence[Mapping[str, Any]], input_shape: tuple[int, int, int],
                       n_outputs: int) -> int:
    """``count_flops`` of the ``SearchableConvNet`` of ``blocks`` (built on the meta device: no
    memory, no draws from the random state; cached by architecture)."""
    return _architecture_flops(validated_blocks(blocks), tuple(input_shape), n_outputs)


@functools.lru_cache(maxsize=4096)
def _architecture_flops(blocks: tuple[Block, ...], input_shape: tuple[int, int, int],
                        n_outputs: int) -> int:
    with torch.device("meta"):
        model = SearchableConvNet(n_outputs, input_shape[0], input_shape[-1],
                                  [{"op": op, "width": width, "reduce": reduce}
                                   for op, width, reduce in blocks])
    return count_flops(model, input_shape)


@functools.lru_cache(maxsize=4096)
def _block_flops(op: str, in_channels: int, width: int, reduce: str, size: int) -> int:
    with torch.device("meta"):
        block = discrete_block(op, in_channels, width, reduce, track_running_stats=False)
    return count_flops(block, (in_channels, size, size))
