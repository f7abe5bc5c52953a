"""ConvNet: the OML and ANML networks have their papers' feature sizes, weights are
Kaiming-normal with zero biases, and impossible shapes are refused with the fix."""

import pytest
import torch
from torch import nn

from metalearn.models import ConvNet, build_model


def test_the_papers_networks_have_2304_features():
    oml = build_model("convnet", (1, 84, 84), 1000, channels=[256] * 6, strides=[2, 1, 2, 1, 2, 2])
    anml = build_model("convnet", (1, 28, 28), 1000, channels=[256] * 3, pools=[True, True, False],
                       norm="instance")
    for model, size in ((oml, 84), (anml, 28)):
        assert model.head.in_features == 2304
        assert model(torch.rand(2, 1, size, size)).shape == (2, 1000)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in anml.modules()) == 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in oml.modules())


def test_weights_are_kaiming_normal_and_biases_zero():
    torch.manual_seed(0)
    model = ConvNet(10, image_size=28, channels=(64, 64), hidden=(400,))
    linear = model.features[-2]
    assert isinstance(linear, nn.Linear) and linear.bias.abs().sum() == 0
    expected = (2 / linear.in_features) ** 0.5
    assert abs(linear.weight.std().item() - expected) / expected < 0.05


def test_impossible_shapes_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="one entry per convolution"):
        ConvNet(5, channels=(8, 8), strides=(2,))
    with pytest.raises(ValueError, match="shrink to nothing.*use fewer convolutions"):
        ConvNet(5, image_size=12, channels=(8, 8, 8), strides=(2, 2, 2))
    with pytest.raises(ValueError, match="image_size is the benchmark's"):
        build_model("convnet", (1, 28, 28), 5, image_size=84)
