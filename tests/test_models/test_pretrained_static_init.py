"""The static -> dynamic initialiser: a dynamic layer / backbone started
from a static one computes the static function (checked against the static
model itself: nn.Conv2d, torchvision's ResNet-18 and MobileNetV2, a static
mmdet-layout ResNet), and its kernels are not stuck together."""
import copy

import pytest
import torch
import torch.nn as nn
import torchvision
from mmengine.registry import MODELS

import dynconv_mm  # noqa: F401  (registers the types)
from dynconv_mm.layers import DynamicConv2d, DyNetConv2d, ODConv2d
from dynconv_mm.models.pretrained import (init_dynamic_conv_from_static,
                                          load_pretrained_state_dict)

TOL = dict(rtol=1e-10, atol=1e-10)

# layer type -> (class, options)
LAYERS = {
    'ODConv': (ODConv2d, dict(num_kernels=4)),
    'ODConv1x': (ODConv2d, dict(num_kernels=1)),
    'ODConvBN_tau30': (ODConv2d,
                       dict(num_kernels=4,
                            temperature=30.,
                            attention_norm_cfg=dict(type='BN'))),
    'DynamicConv': (DynamicConv2d, dict(num_kernels=4)),
    'DynamicConv_tau30': (DynamicConv2d, dict(num_kernels=4, temperature=30.)),
    'DyNetConv': (DyNetConv2d, dict(num_kernels=3)),
}
# geometry: (in, out, kernel, stride, padding, groups)
GEOMETRIES = {
    '3x3': (6, 8, 3, 1, 1, 1),
    '1x1': (6, 8, 1, 1, 0, 1),
    'depthwise_s2': (8, 8, 3, 2, 1, 8),
    'grouped_5x5': (6, 4, 5, 1, 2, 2),
}


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """BN statistics and affine parameters far from their init, so that a
    BN that is not copied would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def make_layer(name, geometry, bias=True):
    cls, options = LAYERS[name]
    cin, cout, k, s, p, groups = GEOMETRIES[geometry]
    torch.manual_seed(1)
    static = nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=bias).double()
    nn.init.normal_(static.weight)
    if bias:
        nn.init.normal_(static.bias)
    layer = cls(cin, cout, k, s, p, groups=groups, bias=bias,
                **options).double()
    return static, layer


@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
@pytest.mark.parametrize('name', sorted(LAYERS))
def test_layer_starts_at_the_static_function(name, geometry):
    static, layer = make_layer(name, geometry)
    init_dynamic_conv_from_static(layer, static)
    x = torch.randn(3, static.in_channels, 9, 9, dtype=torch.float64)
    for mode in (False, True):  # eval and train (attention BN in batch)
        layer.train(mode)
        torch.testing.assert_close(layer(x), static(x), **TOL)
    if layer.num_kernels > 1:  # the bank is not K copies
        assert not torch.equal(layer.weight[0], layer.weight[1])


@pytest.mark.parametrize('name', ['ODConv', 'DynamicConv', 'DyNetConv'])
def test_without_static_bias_the_layer_bias_starts_at_zero(name):
    static, layer = make_layer(name, '3x3', bias=False)
    cls, options = LAYERS[name]
    with_bias = cls(6, 8, 3, 1, 1, bias=True, **options).double()
    init_dynamic_conv_from_static(with_bias, static)
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(with_bias.eval()(x), static(x), **TOL)


def test_static_bias_into_a_layer_without_bias_is_refused():
    static, _ = make_layer('ODConv', '3x3', bias=True)
    layer = ODConv2d(6, 8, 3, padding=1, bias=False).double()
    with pytest.raises(ValueError, match='bias=False'):
        init_dynamic_conv_from_static(layer, static)


def test_other_geometry_is_refused():
    static = nn.Conv2d(6, 8, 3, padding=1)
    layer = ODConv2d(6, 8, 3, padding=1, stride=2)
    with pytest.raises(ValueError, match='stride'):
        init_dynamic_conv_from_static(layer, static)
    with pytest.raises(ValueError, match=r'static kernel has shape'):
        init_dynamic_conv_from_static(layer, torch.zeros(8, 6, 5, 5))


def train_steps(layer, static, steps, lr=1e-3):
    """SGD steps on a random linear loss; returns the bank after each step
    and the kernel head's weight at the end."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4,
                    static.in_channels,
                    7,
                    7,
                    generator=g,
                    dtype=torch.float64)
    target = torch.randn(static(x).shape, generator=g, dtype=torch.float64)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
    banks = [layer.weight.detach().clone()]
    layer.train()
    for _ in range(steps):
        optimizer.zero_grad()
        (layer(x) * target).sum().backward()
        optimizer.step()
        banks.append(layer.weight.detach().clone())
    return banks


@pytest.mark.parametrize('name', ['ODConv', 'DynamicConv', 'DyNetConv'])
def test_deltas_break_the_symmetry_of_the_kernels(name):
    """With the deltas the kernel attention learns at the first step and
    the kernels' updates differ from the second; with perturbation=0 the K
    kernels get identical updates forever and the kernel attention weighs
    them alike (the bank stays one kernel K times)."""
    for perturbation in (1e-2, 0.0):
        static, layer = make_layer(name, '3x3')
        init_dynamic_conv_from_static(layer, static, perturbation=perturbation)
        banks = train_steps(layer, static, steps=3)
        updates = [after - before for before, after in zip(banks, banks[1:])]
        kernel_head = layer.attention.head_parameters('kernel')[0]
        spreads = [(u - u.mean(0, keepdim=True)).abs().max() / u.abs().max()
                   for u in updates]
        # first step: the attention is uniform, every kernel gets the same
        # gradient (with or without deltas)
        assert spreads[0] < 1e-12
        if perturbation:
            assert kernel_head.abs().max() > 0
            assert spreads[1] > 1e-7 and spreads[2] > 1e-7
        else:
            # exact equality: nothing distinguishes the kernels, and the
            # kernel attention weighs them all alike for any input
            for bank in banks:
                assert torch.equal(bank, bank[:1].expand_as(bank))
            weights = layer.attention(
                torch.randn(3, static.in_channels, 5, 5,
                            dtype=torch.float64)).kernel
            assert torch.equal(weights, weights[..., :1].expand_as(weights))


def test_zero_heads_get_gradients_at_the_first_step():
    static, layer = make_layer('ODConv', '3x3')
    init_dynamic_conv_from_static(layer, static)
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    grad = layer.attention.heads.weight.grad
    for name, rows in layer.attention.head_slices.items():
        assert grad[rows].abs().max() > 0, name
    # the trunk's only consumers are the zero heads: it trains from step 2
    assert torch.equal(layer.attention.trunk.fc.weight.grad,
                       torch.zeros_like(layer.attention.trunk.fc.weight))


def test_deltas_are_seeded_and_sum_to_zero():
    static, a = make_layer('DynamicConv', '3x3')
    _, b = make_layer('DynamicConv', '3x3')
    torch.manual_seed(123)  # the global RNG plays no part
    init_dynamic_conv_from_static(a, static)
    init_dynamic_conv_from_static(b, static)
    assert torch.equal(a.weight, b.weight)
    torch.testing.assert_close(a.weight.mean(0), static.weight, **TOL)
    relative = (a.weight - static.weight).std() / static.weight.std()
    assert 0.5e-2 < relative < 2e-2


# --- backbones ------------------------------------------------------------


def static_resnet_features(tv, x):
    y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    outs = []
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        y = layer(y)
        outs.append(y)
    return outs


def assert_same_features(ours, reference):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, **TOL)


def test_dynamic_resnet18_from_torchvision_resnet18_odconv_1x():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    randomise_bn(tv)
    model = MODELS.build(
        dict(type='DynamicResNet',
             depth=18,
             out_indices=(0, 1, 2, 3),
             dynamic_conv_cfg=dict(type='ODConv', num_kernels=1))).double()
    report = load_pretrained_state_dict(model, tv.state_dict())
    assert len(report.from_static) == 16
    assert report.ignored == ['fc.bias', 'fc.weight']
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_same_features(model.eval()(x),
                             static_resnet_features(tv.double().eval(), x))
    # the static layers are copied exactly
    assert torch.equal(model.conv1.weight, tv.conv1.weight)
    assert torch.equal(model.layer2[0].downsample[0].weight,
                       tv.layer2[0].downsample[0].weight)


TINY_RESNETS = {
    'r18_odconv4x': (18, dict(type='ODConv', num_kernels=4), {}),
    'r18_odconv4x_bn':
    (18, dict(type='ODConv', num_kernels=4,
              attention_norm_cfg=dict(type='BN')), {}),
    'r18_dyconv': (18, dict(type='DynamicConv', num_kernels=4), {}),
    'r18_dynet_shared': (18, dict(type='DyNetConv', num_kernels=3),
                         dict(dynet_shared_coefficients=True)),
    'r50_odconv4x': (50, dict(type='ODConv', num_kernels=4), {}),
}


def tiny_static_resnet(depth):
    """Our backbone without dynamic convs: mmdet's = torchvision's names."""
    torch.manual_seed(0)
    static = MODELS.build(
        dict(type='DynamicResNet',
             depth=depth,
             base_channels=8,
             out_indices=(0, 1, 2, 3)))
    randomise_bn(static)
    return static


@pytest.mark.parametrize('name', sorted(TINY_RESNETS))
def test_tiny_dynamic_resnet_from_static(name):
    depth, conv_cfg, options = TINY_RESNETS[name]
    static = tiny_static_resnet(depth)
    model = MODELS.build(
        dict(type='DynamicResNet',
             depth=depth,
             base_channels=8,
             out_indices=(0, 1, 2, 3),
             dynamic_conv_cfg=conv_cfg,
             **options)).double()
    # as an MMPretrain classifier stores it: backbone. prefix, head keys
    state_dict = {f'backbone.{k}': v for k, v in static.state_dict().items()}
    state_dict['head.fc.weight'] = torch.zeros(10, 64)
    report = load_pretrained_state_dict(model, state_dict)
    assert report.from_static and report.ignored == ['head.fc.weight']
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_same_features(model.eval()(x), static.double().eval()(x))
        # train mode: the backbone's BNs use batch statistics, as the
        # static network's do; the zero heads still hide the trunk
        assert_same_features(model.train()(x), static.train()(x))


def test_dy_resnet_with_halved_widths_is_refused():
    static = tiny_static_resnet(18)
    model = MODELS.build(
        dict(type='DynamicResNet',
             depth=18,
             base_channels=4,
             stem_channels=8,
             dynamic_conv_cfg=dict(type='DyNetConv', num_kernels=3),
             dynet_shared_coefficients=True))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match='Dy-ResNet'):
        load_pretrained_state_dict(model, static.state_dict())
    for key, value in model.state_dict().items():  # nothing written
        assert torch.equal(value, before[key]), key


MOBILENETS = {
    'odconv4x': dict(type='ODConv', num_kernels=4),
    'dyconv': dict(type='DynamicConv', num_kernels=4),
}


@pytest.mark.parametrize('name', sorted(MOBILENETS))
def test_dynamic_mobilenet_v2_from_torchvision(name):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25)
    randomise_bn(tv)
    model = MODELS.build(
        dict(type='DynamicMobileNetV2',
             widen_factor=0.25,
             out_indices=(1, 2, 4, 7),
             dynamic_conv_cfg=MOBILENETS[name])).double()
    report = load_pretrained_state_dict(model, tv.state_dict())
    assert report.layout == 'torchvision'
    assert report.ignored == ['classifier.1.bias', 'classifier.1.weight']
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    tv = tv.double().eval()
    with torch.no_grad():
        reference, y = [], x
        for index, block in enumerate(tv.features):
            y = block(y)
            if index in (3, 6, 13, 18):  # the ODConv paper's FPN inputs
                reference.append(y)
        assert_same_features(model.eval()(x), reference)


def test_dynamic_mobilenet_v3_small_from_torchvision():
    """DY-MobileNetV3-Small from torchvision's MobileNetV3-Small: every
    conv but the stem dynamic, SE and BNs copied."""
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v3_small(weights=None)
    randomise_bn(tv)
    model = MODELS.build(
        dict(type='DynamicMobileNetV3',
             arch='small',
             out_indices=(3, 11),
             dynamic_conv_cfg=dict(type='DynamicConv',
                                   num_kernels=4))).double()
    report = load_pretrained_state_dict(model, tv.state_dict())
    assert report.layout == 'torchvision' and len(report.from_static) == 33
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    tv = tv.double().eval()
    with torch.no_grad():
        y = tv.features[:5](x)  # stem + 4 blocks
        reference = [y, tv.features[5:](y)]
        assert_same_features(model.eval()(x), reference)
