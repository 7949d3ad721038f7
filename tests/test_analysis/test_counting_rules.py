"""The counter against hand-computed multiply-accumulates of small layers.

Every expected number below is arithmetic written out from the layer's
geometry (the convention in ``dynconv_mm/analysis/complexity.py``), never
taken from the counter.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dynconv_mm  # noqa: F401
from dynconv_mm.analysis import count_complexity, dynamic_conv_macs
from dynconv_mm.execution import ConvAttentions, per_sample_kernels
from dynconv_mm.layers import DynamicConv2d, DyNetConv2d, ODConv2d

# Attention width max(int(8 / 2), 4) = 4 for every layer below.
ATTENTION = dict(reduction=2, min_hidden_channels=4)
POOL = 8 * 5 * 5  # global average pooling of the [1, 8, 5, 5] input
TRUNK = 8 * 4  # FC 8 -> 4


def test_static_layers():
    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),  # -> 6x5x4
        nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(6, 3))
    report = count_complexity(model, (4, 9, 7))
    conv = 6 * 5 * 4 * (4 // 2 * 3 * 3)
    pool = 6 * 5 * 4
    fc = 6 * 3
    assert report.macs == conv + pool + fc == 2298
    assert report.module_macs == {'0': conv, '3': pool, '5': fc}
    assert report.params == (6 * 2 * 9 + 6) + 2 * 6 + (6 * 3 + 3)
    # BN and ReLU are free by the convention, and said so.
    assert report.zero_cost['aten.native_batch_norm'] == 1
    assert report.zero_cost['aten.relu'] == 1


def test_functional_products_and_transposed_conv():

    class Functional(nn.Module):

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(5, 3))
            self.up = nn.ConvTranspose2d(2, 4, 3, stride=2)

        def forward(self, x):  # x: [1, 2, 3, 3]
            y = self.up(x)  # each of 2*3*3 inputs x 4*3*3 weights
            z = y.flatten(2) @ torch.ones(y.shape[-1] * y.shape[-2], 3)
            return F.linear(z, self.weight)  # [1, 4, 3] x [3, 5]

    report = count_complexity(Functional(), (2, 3, 3))
    transposed = 2 * 3 * 3 * (4 * 3 * 3)
    matmul = 4 * (7 * 7) * 3
    linear = 4 * 3 * 5
    assert report.macs == transposed + matmul + linear


def _dynamic_conv(**options):
    return DynamicConv2d(8, 6, 3, padding=1, bias=True, num_kernels=3,
                         **ATTENTION, **options)


def _odconv(**options):
    geometry = dict(kernel_size=3, padding=1, bias=False, num_kernels=2)
    geometry.update(options)
    channels = geometry.pop('channels', (8, 6))
    return ODConv2d(*channels, **geometry, **ATTENTION)


@pytest.fixture(params=['in place', 'matrix product'])
def batch1_mixing(request, monkeypatch):
    """Both ways batch-1 inference mixes a sample's kernel (which one runs
    depends on the CPU: ``mixes_in_place``), so that the executed counts
    below do not depend on the machine."""
    in_place = request.param == 'in place'
    monkeypatch.setattr(per_sample_kernels, 'mixes_in_place',
                        lambda device: in_place)
    return in_place


@pytest.mark.parametrize('convention', ['paper', 'executed'])
def test_dynamic_conv(convention, batch1_mixing):
    # At batch-1 inference the layer runs the mixed kernel and one
    # convolution, which is also the paper's count. Executed in place, the
    # kernel is the first bank kernel scaled by its coefficient (a
    # product), the two others added by multiply-adds; as a matrix
    # product, three multiply-adds per kernel element. The biases are
    # mixed by a product.
    report = count_complexity(_dynamic_conv(), (8, 5, 5),
                              convention=convention)
    conv = 6 * 5 * 5 * (8 * 9)
    kernel = 6 * 8 * 9
    mixing = 3 * kernel + 3 * 6  # three kernels and three biases
    heads = 4 * 3
    assert report.macs == conv + mixing + POOL + TRUNK + heads == 12358
    if convention == 'paper':
        assert report.dynamic_macs['aggregation'] == mixing
    elif batch1_mixing:
        assert report.dynamic_macs == {'conv': conv,
                                       'aggregation': 2 * kernel + 3 * 6,
                                       'scaling': kernel}
    else:
        assert report.dynamic_macs == {'conv': conv, 'aggregation': mixing}
    assert report.params == (3 * kernel + 3 * 6) + (TRUNK + 4) + (heads + 3)


def test_dynamic_conv_executed_as_kernel_branches():
    layer = _dynamic_conv(execution='kernel_branches')
    report = count_complexity(layer, (8, 5, 5), convention='executed')
    assert report.dynamic_macs == {
        'conv': 3 * 6 * 5 * 5 * (8 * 9),  # the three kernels' outputs
        # the biases mixed, and the three outputs mixed by a matrix
        # product over the kernels (one MAC per output element and kernel)
        'aggregation': 3 * 6 + 3 * 6 * 5 * 5,
    }


def test_odconv_paper_convention():
    report = count_complexity(_odconv(), (8, 5, 5))
    conv = 6 * 5 * 5 * (8 * 9)
    kernel = 6 * 8 * 9
    build = 6 * 8 + kernel  # filter x channel, then x spatial
    apply = 2 * kernel  # the attention tensor onto both kernels
    mixing = 2 * kernel
    heads = 4 * (8 + 6 + 9 + 2)  # input, output, spatial, kernel
    assert report.dynamic_macs == {'conv': conv,
                                   'aggregation': build + apply + mixing}
    assert report.macs == conv + build + apply + mixing + POOL + TRUNK \
        + heads == 13340


@pytest.mark.parametrize('execution', ['batch_folded', 'aggregated'])
def test_odconv_executed_convention(execution, batch1_mixing):
    report = count_complexity(_odconv(execution=execution), (8, 5, 5),
                              convention='executed')
    kernel = 6 * 8 * 9
    # One sample's kernel, in place: the first bank kernel times its
    # coefficient (a product, with the factor riding on the coefficient),
    # the second added by a multiply-add. As a matrix product: two
    # multiply-adds per kernel element, then the factor in one pass.
    if execution == 'batch_folded':
        # the spatial factor; channel and filter attentions on the input
        # and the output
        factor = 2 * 9 if batch1_mixing else 0
        scaling = factor + kernel + 8 * 5 * 5 + 6 * 5 * 5
    else:
        # channel x spatial (a [C_in, 3, 3] factor); the filter attention
        # on the output, which is smaller than the kernel (6*5*5 < 432)
        factor = 2 * 8 * 9 if batch1_mixing else 0
        scaling = 8 * 9 + factor + kernel + 6 * 5 * 5
    assert report.dynamic_macs == {
        'conv': 6 * 5 * 5 * (8 * 9),
        'aggregation': kernel if batch1_mixing else 2 * kernel,
        'scaling': scaling}
    heads = 4 * (8 + 6 + 9 + 2)
    assert report.macs == sum(report.dynamic_macs.values()) + POOL + TRUNK \
        + heads


def test_odconv_depthwise_single_kernel():
    # Depthwise, K = 1: no filter and no kernel attention. The paper's
    # Eq.: channel x spatial, then onto the kernel.
    layer = _odconv(channels=(8, 8), groups=8, num_kernels=1)
    report = count_complexity(layer, (8, 5, 5))
    kernel = 8 * 9
    heads = 4 * (8 + 9)
    assert report.dynamic_macs == {'conv': 8 * 5 * 5 * 9,
                                   'aggregation': kernel + kernel}
    assert report.macs == 8 * 5 * 5 * 9 + 2 * kernel + POOL + TRUNK + heads


def test_odconv_pointwise_single_kernel():
    # 1x1, K = 1: the paper's Eq. builds filter x channel and applies it.
    layer = _odconv(kernel_size=1, padding=0, num_kernels=1)
    report = count_complexity(layer, (8, 5, 5))
    kernel = 6 * 8
    assert report.dynamic_macs == {'conv': 6 * 5 * 5 * 8,
                                   'aggregation': kernel + kernel}


def test_dynet_conv_counts_fused_kernels_not_the_training_branches():
    layer = DyNetConv2d(8, 6, 3, padding=1, bias=False, num_kernels=3,
                        **ATTENTION).train()
    report = count_complexity(layer, (8, 5, 5))
    conv = 6 * 5 * 5 * (8 * 9)  # one fused kernel, not three branches
    mixing = 3 * 6 * 8 * 9  # g kernels per output channel
    heads = 4 * (6 * 3)  # one coefficient per output channel and kernel
    assert report.macs == conv + mixing + POOL + TRUNK + heads
    assert layer.training  # the mode is restored


def test_batch_of_two_costs_twice_including_per_sample_kernels():
    layer = _odconv()
    one = count_complexity(layer, torch.rand(1, 8, 5, 5))
    two = count_complexity(layer, torch.rand(2, 8, 5, 5))
    assert two.macs == 2 * one.macs
    assert two.dynamic_macs['aggregation'] == \
        2 * one.dynamic_macs['aggregation']


def test_shared_attention_is_counted_once():

    class Block(nn.Module):
        """One coefficient module feeding two DyNet convs (as Dy-ResNet)."""

        def __init__(self):
            super().__init__()
            self.conv1 = DyNetConv2d(8, 6, 3, padding=1, bias=False,
                                     num_kernels=3, **ATTENTION)
            self.conv2 = DyNetConv2d(8, 6, 1, bias=False, num_kernels=3,
                                     **ATTENTION)

        def forward(self, x):
            coefficients = self.conv1.attention(x)
            return self.conv1(x, coefficients) + self.conv2(
                x, attentions=coefficients)

    report = count_complexity(Block(), (8, 5, 5))
    convs = 6 * 5 * 5 * (8 * 9) + 6 * 5 * 5 * 8
    mixing = 3 * 6 * 8 * 9 + 3 * 6 * 8
    attention = POOL + TRUNK + 4 * (6 * 3)  # once; conv2's own never ran
    assert report.macs == convs + mixing + attention
    assert report.macs_of('conv2') == 6 * 5 * 5 * 8 + 3 * 6 * 8


def test_formula_function_matches_hand_count():
    x = torch.zeros(1, 8, 5, 5)
    y = torch.zeros(1, 6, 3, 3)  # stride 2, no padding
    attentions = ConvAttentions(kernel=torch.zeros(1, 4),
                                input=torch.zeros(1, 8))
    parts = dynamic_conv_macs((4, 6, 4, 3, 3), False, x, y, attentions)
    kernel = 6 * 4 * 9  # groups 2: 4 input channels per filter
    assert parts == dict(conv=6 * 3 * 3 * 4 * 9,
                         aggregation=4 * kernel + 4 * kernel)
    with pytest.raises(ValueError, match='convention'):
        count_complexity(nn.Conv2d(1, 1, 1), (1, 2, 2), convention='MACs')
