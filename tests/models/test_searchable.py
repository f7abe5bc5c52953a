"""The architecture search space: every point builds an N-way model, Conv4 is the point
CONV4_BLOCKS, FLOPs match hand counts, the DARTS relaxation equals the chosen block when its
weights are one-hot and the formula otherwise, derive() agrees with brute force, bad blocks are
refused with the allowed values, and the models go through MAML's functional inner loop."""

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F
import yaml

from metalearn.learners.inner_loop import FunctionalModel
from metalearn.models import (CONV4_BLOCKS, OPERATIONS, REDUCTIONS, Conv4, DartsSupernet,
                              SearchableConvNet, architecture_flops, build_model, count_flops,
                              reinitialise)
from metalearn.models.searchable import MixedBlock

ONE_HOT = 1e4  # a logit this far above the others gives a softmax weight of exactly 1 (and 0s)


def copy_by_position(source: list[torch.Tensor], target: torch.nn.Module) -> None:
    target_parameters = list(target.parameters())
    assert [p.shape for p in source] == [p.shape for p in target_parameters]
    with torch.no_grad():
        for s, t in zip(source, target_parameters):
            t.copy_(s)


def set_one_hot(block: MixedBlock, op: str, reduce: str) -> None:
    with torch.no_grad():
        block.op_logits.zero_()[block.operations.index(op)] = ONE_HOT
        block.reduce_logits.zero_()[block.reductions.index(reduce)] = ONE_HOT


def chosen_operation(block: MixedBlock, op: str, reduce: str) -> torch.nn.Module:
    return (block.strided if reduce == "stride" else block.unstrided)[op]


def test_every_point_of_the_space_gives_n_way_outputs_and_its_last_width_of_features():
    draw = random.Random(0)
    x = torch.rand(2, 1, 28, 28)
    for index in range(200):
        blocks = [{"op": draw.choice(OPERATIONS), "width": draw.choice((8, 16, 32, 64, 96)),
                   "reduce": draw.choice(REDUCTIONS)} for _ in range(draw.randint(1, 6))]
        n_way = (5, 20)[index % 2]
        model = SearchableConvNet(n_way, blocks=blocks)
        with torch.no_grad():
            assert model(x).shape == (2, n_way), blocks
            assert model.features(x).shape == (2, blocks[-1]["width"]), blocks


def test_six_reductions_reach_1x1_and_the_last_one_keeps_it():
    model = SearchableConvNet(5, blocks=[{"op": "conv3x3", "width": 4, "reduce": r}
                                         for r in ("stride", "max", "avg", "stride", "max", "avg")])
    x = torch.rand(2, 1, 28, 28)
    sizes = []
    for block in model.features[:6]:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [14, 7, 4, 2, 1, 1]


def test_conv4_is_the_point_conv4_blocks():
    torch.manual_seed(0)
    conv4, searchable = Conv4(5), SearchableConvNet(5, blocks=CONV4_BLOCKS)
    with torch.no_grad():
        for p in conv4.parameters():
            p.normal_()  # BatchNorm's weights and biases too, so that a mix-up would show
    copy_by_position(list(conv4.parameters()), searchable)
    x = torch.rand(6, 1, 28, 28)
    torch.testing.assert_close(searchable(x), conv4(x), rtol=0, atol=0)
    flops = count_flops(conv4, (1, 28, 28))
    # 3x3 convolutions 28 -> 14 -> 7 -> 4 -> 2, then a 64 -> 5 head; 2 FLOPs per multiply-add
    assert flops == 2 * 9 * (14 * 14 * 1 * 64 + (7 * 7 + 4 * 4 + 2 * 2) * 64 * 64) + 2 * 64 * 5
    assert count_flops(searchable, (1, 28, 28)) == flops
    assert architecture_flops(CONV4_BLOCKS, (1, 28, 28), 5) == flops


@pytest.mark.parametrize("block, expected", [
    ({"op": "conv3x3", "width": 4, "reduce": "stride"}, 2 * 14 * 14 * 9 * 3 * 4),
    ({"op": "conv5x5", "width": 4, "reduce": "avg"}, 2 * 28 * 28 * 25 * 3 * 4),
    # depthwise (one 3x3 filter per input channel), then pointwise (1x1, 3 -> 4)
    ({"op": "sep3x3", "width": 4, "reduce": "stride"}, 2 * 14 * 14 * (9 * 3 + 3 * 4)),
    ({"op": "sep5x5", "width": 4, "reduce": "max"}, 2 * 28 * 28 * (25 * 3 + 3 * 4)),
    ({"op": "skip", "width": 4, "reduce": "stride"}, 2 * 14 * 14 * 3 * 4),  # 1x1 projection
    ({"op": "skip", "width": 3, "reduce": "none"}, 0),  # the identity
])
def test_count_flops_matches_a_hand_count(block, expected):
    n_way = 5
    model = SearchableConvNet(n_way, in_channels=3, blocks=[block])
    head = 2 * block["width"] * n_way
    assert count_flops(model, (3, 28, 28)) == expected + head
    assert model.training  # the mode is restored
    assert architecture_flops([block], (3, 28, 28), n_way) == expected + head


def test_architecture_flops_leaves_the_random_state_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    architecture_flops([{"op": "sep5x5", "width": 17, "reduce": "max"}], (1, 28, 28), 5)
    assert torch.equal(torch.get_rng_state(), before)


MIXED_CASES = [(op, reduce, reductions, in_channels)
               for reductions in (("stride", "max", "avg"), ("none",))
               for reduce in reductions
               for op in OPERATIONS
               for in_channels in (3, 4)]


@pytest.mark.parametrize("op, reduce, reductions, in_channels", MIXED_CASES)
def test_one_hot_mixed_block_is_the_discrete_block_with_its_weights(op, reduce, reductions,
                                                                     in_channels):
    torch.manual_seed(0)
    mixed = MixedBlock(in_channels, 4, OPERATIONS, reductions)
    with torch.no_grad():
        for p in mixed.parameters():
            p.normal_()
    set_one_hot(mixed, op, reduce)
    discrete = SearchableConvNet(5, in_channels=in_channels,
                                 blocks=[{"op": op, "width": 4, "reduce": reduce}]).features[0]
    copy_by_position(list(chosen_operation(mixed, op, reduce).parameters()), discrete)
    x = torch.rand(3, in_channels, 7, 7)
    torch.testing.assert_close(mixed(x), discrete(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("reductions", [("stride", "max", "avg"), ("none",), ("avg", "max")])
def test_mixed_block_is_the_weighted_sum_of_its_formula(reductions):
    torch.manual_seed(1)
    mixed = MixedBlock(3, 4, OPERATIONS, reductions)
    with torch.no_grad():
        mixed.op_logits.normal_()
        mixed.reduce_logits.normal_()
    x = torch.rand(3, 3, 7, 7)
    a, b = mixed.op_logits.softmax(0), mixed.reduce_logits.softmax(0)
    pool = {"max": lambda t: F.max_pool2d(t, 2, ceil_mode=True),
            "avg": lambda t: F.avg_pool2d(t, 2, ceil_mode=True), "none": lambda t: t}
    expected = 0
    for j, reduce in enumerate(reductions):
        if reduce == "stride":
            mixture = sum(a[i] * mixed.strided[op](x) for i, op in enumerate(OPERATIONS))
        else:
            mixture = pool[reduce](sum(a[i] * mixed.unstrided[op](x) for i, op in enumerate(OPERATIONS)))
        expected = expected + b[j] * mixture
    torch.testing.assert_close(mixed(x), expected)


def test_a_one_hot_supernet_is_its_derived_network_with_its_weights():
    torch.manual_seed(2)
    draw = random.Random(2)
    supernet = DartsSupernet(5, depth=4, width=8)
    chosen = [(draw.choice(OPERATIONS), draw.choice(supernet.reductions)) for _ in range(4)]
    for block, (op, reduce) in zip(supernet.mixed_blocks(), chosen):
        set_one_hot(block, op, reduce)
    blocks = supernet.derive()
    assert blocks == [{"op": op, "width": 8, "reduce": reduce} for op, reduce in chosen]
    derived = SearchableConvNet(5, blocks=blocks)
    copy_by_position([p for block, (op, reduce) in zip(supernet.mixed_blocks(), chosen)
                      for p in chosen_operation(block, op, reduce).parameters()]
                     + list(supernet.head.parameters()), derived)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(supernet(x), derived(x), rtol=0, atol=1e-5)


def log_probability(supernet: DartsSupernet, blocks: list[dict]) -> float:
    with torch.no_grad():
        return sum(float(b.op_logits.log_softmax(0)[b.operations.index(block["op"])]
                         + b.reduce_logits.log_softmax(0)[b.reductions.index(block["reduce"])])
                   for b, block in zip(supernet.mixed_blocks(), blocks))


@pytest.mark.parametrize("reductions", [("stride", "max"), ("none",)])
def test_derive_is_the_argmax_or_the_most_probable_within_the_flops_limit(reductions):
    torch.manual_seed(3)
    supernet = DartsSupernet(5, depth=3, width=8, operations=("conv3x3", "sep5x5", "skip"),
                             reductions=reductions)
    with torch.no_grad():
        for block in supernet.mixed_blocks():
            block.op_logits.normal_()
            block.reduce_logits.normal_()
    argmax = [{"op": b.operations[int(b.op_logits.argmax())], "width": 8,
               "reduce": b.reductions[int(b.reduce_logits.argmax())]} for b in supernet.mixed_blocks()]
    assert supernet.derive() == argmax
    everything = [[{"op": op, "width": 8, "reduce": reduce} for op, reduce in layers]
                  for layers in itertools.product(itertools.product(supernet.operations, reductions),
                                                  repeat=3)]
    flops = {id(blocks): architecture_flops(blocks, (1, 28, 28), 5) for blocks in everything}
    argmax_flops = architecture_flops(argmax, (1, 28, 28), 5)
    cheaper = sorted(f for f in flops.values() if f < argmax_flops)
    for limit in (argmax_flops - 1, cheaper[len(cheaper) // 2]):
        fitting = [blocks for blocks in everything if flops[id(blocks)] <= limit]
        best = max(fitting, key=lambda blocks: log_probability(supernet, blocks))
        derived = supernet.derive(flops_limit=limit)
        assert derived == best and derived != argmax
    with pytest.raises(ValueError, match="no architecture of this supernet fits flops_limit"):
        supernet.derive(flops_limit=min(flops.values()) - 1)


def test_architecture_weights_are_the_softmaxes_by_name_and_logits_are_feature_parameters():
    supernet = DartsSupernet(5, depth=2, width=8, reductions=("max", "avg"))
    with torch.no_grad():
        supernet.mixed_blocks()[1].reduce_logits.copy_(torch.tensor([0.0, math.log(3)]))
    weights = supernet.architecture_weights()
    assert weights[0]["op"] == pytest.approx({op: 0.2 for op in OPERATIONS})
    assert weights[1]["reduce"] == pytest.approx({"max": 0.25, "avg": 0.75})
    features = {id(p) for p in supernet.features.parameters()}
    assert all(id(b.op_logits) in features and id(b.reduce_logits) in features
               for b in supernet.mixed_blocks())
    reinitialise(supernet, 0)  # back to the uniform mixture
    assert supernet.architecture_weights()[1]["reduce"] == pytest.approx({"max": 0.5, "avg": 0.5})


@pytest.mark.parametrize("blocks, message", [
    ([], "non-empty list"),
    ([{"op": "conv7x7", "width": 8, "reduce": "max"}], r"block 0: unknown op 'conv7x7'; choose one of \('conv3x3'"),
    ([CONV4_BLOCKS[0], {"op": "skip", "width": 0, "reduce": "max"}], "block 1: width must be a positive integer, got 0"),
    ([{"op": "skip", "width": 8, "reduce": "min"}], r"block 0: unknown reduce 'min'; choose one of \('stride'"),
    ([{"op": "skip", "width": 8}], "block 0 must be a mapping with exactly the keys op, width and reduce"),
    ([["skip", 8, "max"]], "block 0 must be a mapping"),
])
def test_bad_blocks_are_refused_with_the_allowed_values(blocks, message):
    with pytest.raises(ValueError, match=message):
        SearchableConvNet(5, blocks=blocks)
    with pytest.raises(ValueError, match=message):
        architecture_flops(blocks, (1, 28, 28), 5)


@pytest.mark.parametrize("options, message", [
    ({"reductions": ("none", "max")}, "mix 'none'"),
    ({"reductions": ()}, "reductions must be distinct entries of"),
    ({"operations": ("conv3x3", "pool")}, r"operations must be distinct entries of \('conv3x3'"),
    ({"operations": ("skip", "skip")}, "operations must be distinct"),
    ({"depth": 0}, "depth must be a positive integer"),
])
def test_bad_supernets_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        DartsSupernet(5, **options)


def test_build_model_makes_both_from_yaml_options_and_refuses_an_image_size():
    options = yaml.safe_load("blocks: [{op: sep3x3, width: 96, reduce: max}, "
                             "{op: conv3x3, width: 64, reduce: stride}]")
    searchable = build_model("searchable", (1, 28, 28), 5, **options)
    assert searchable.blocks == options["blocks"] and searchable.head.in_features == 64
    darts = build_model("darts", (3, 32, 32), 20, depth=2, width=8, reductions=["none"])
    assert darts.input_shape == (3, 32, 32) and darts(torch.rand(2, 3, 32, 32)).shape == (2, 20)
    for name in ("searchable", "darts"):
        with pytest.raises(ValueError, match="image_size is the benchmark's"):
            build_model(name, (1, 28, 28), 5, image_size=84)


@pytest.mark.parametrize("build", [
    lambda: SearchableConvNet(3, blocks=[{"op": "sep3x3", "width": 8, "reduce": "max"},
                                         {"op": "skip", "width": 8, "reduce": "stride"}]),
    lambda: DartsSupernet(3, depth=2, width=4)])
def test_maml_functional_inner_loop_takes_them_and_vmap_agrees_with_the_loop(build):
    torch.manual_seed(4)
    model = build()
    support_x, support_y = torch.rand(2, 6, 1, 28, 28), torch.arange(3).repeat(2, 2)
    meta_gradients = []
    for batching in ("loop", "vmap"):
        functional = FunctionalModel(model, batching)
        params = functional.parameters()

        def adapt(x, y):
            return functional.sgd(params, x, y, steps=1, lrs={name: 0.1 for name in params})

        logits = functional.adapted_query_logits(adapt, support_x, support_x, (support_x, support_y),
                                                 transductive=True)
        loss = F.cross_entropy(logits.flatten(0, 1), support_y.flatten())
        meta_gradients.append(torch.autograd.grad(loss, list(params.values())))
    for loop, vmapped in zip(*meta_gradients):
        torch.testing.assert_close(vmapped, loop, rtol=1e-4, atol=1e-5)
    if isinstance(model, DartsSupernet):  # the architecture gets a (second-order) meta-gradient
        names = list(functional.parameters())
        assert meta_gradients[0][names.index("features.0.op_logits")].abs().sum() > 0
