"""DynamicMobileNetV2 / V3: which convs are dynamic (per paper and
option), equivalence with torchvision's networks when static (weights
mapped by name / order), stage outputs, and option errors."""
import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm

import dynconv_mm  # noqa: F401
from dynconv_mm.layers import DynamicConv2d, DynamicConv2dBase, ODConv2d
from dynconv_mm.models.backbones import (DynamicMobileNetV2,
                                         DynamicMobileNetV3)


def conv_types(model):
    """name -> type of every conv (static or dynamic), ConvModule's ``.conv``
    suffix dropped."""
    return {
        name[:-len('.conv')] if name.endswith('.conv') else name: type(m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, DynamicConv2dBase))
    }


def build_meta(cls, **options):
    with torch.device('meta'):
        return cls(**options)


@pytest.mark.parametrize('conv_cfg,depthwise,layer', [
    (dict(type='ODConv', num_kernels=1), True, ODConv2d),
    (dict(type='DynamicConv'), False, DynamicConv2d),
])
def test_mobilenet_v2_paper_placement(conv_cfg, depthwise, layer):
    """ODConv: expansion, depthwise, projection, last 1x1 dynamic;
    DynamicConv: the same but depthwise static; the stem static."""
    model = build_meta(DynamicMobileNetV2, dynamic_conv_cfg=conv_cfg)
    assert model.dynamic_depthwise is depthwise
    for name, kind in conv_types(model).items():
        is_depthwise = name.endswith('depthwise_conv')
        dynamic = name != 'conv1' and (depthwise or not is_depthwise)
        assert kind is (layer if dynamic else nn.Conv2d), name
    assert 'layer1.0.expand_conv' not in conv_types(model)  # t = 1


@pytest.mark.parametrize('conv_type,override', [('ODConv', False),
                                                ('DynamicConv', True)])
def test_mobilenet_v2_dynamic_depthwise_override(conv_type, override):
    model = build_meta(DynamicMobileNetV2,
                       dynamic_conv_cfg=dict(type=conv_type),
                       dynamic_depthwise=override)
    types = conv_types(model)
    assert all(isinstance(types[n], type) and
               issubclass(types[n], DynamicConv2dBase) == override
               for n in types if n.endswith('depthwise_conv'))
    assert issubclass(types['layer3.1.expand_conv'], DynamicConv2dBase)


def test_mobilenet_v2_dynamic_stages():
    model = build_meta(DynamicMobileNetV2,
                       dynamic_conv_cfg=dict(type='ODConv'),
                       dynamic_stages=(False, True) + (False, ) * 5 +
                       (True, ))
    for name, kind in conv_types(model).items():
        dynamic = name.startswith(('layer2.', 'conv2'))
        assert issubclass(kind, DynamicConv2dBase) == dynamic, name


def test_mobilenet_v3_placement():
    """Every conv but the stem and the squeeze-excitation FCs."""
    for arch in ('small', 'large'):
        model = build_meta(DynamicMobileNetV3, arch=arch,
                           dynamic_conv_cfg=dict(type='DynamicConv'))
        types = conv_types(model)
        for name, kind in types.items():
            dynamic = name != 'conv1' and '.se.' not in name
            assert kind is (DynamicConv2d if dynamic else nn.Conv2d), name
        reference = getattr(tvm, f'mobilenet_v3_{arch}')()
        reference_convs = [
            n for n, m in reference.features.named_modules()
            if isinstance(m, nn.Conv2d) and n != '0.0' and 'fc' not in n
        ]
        assert len(reference_convs) == sum(
            issubclass(k, DynamicConv2dBase) for k in types.values())
    model = build_meta(DynamicMobileNetV3, arch='small',
                       dynamic_conv_cfg=dict(type='ODConv'),
                       dynamic_stages=(True, ) + (False, ) * 11)
    assert {n for n, k in conv_types(model).items()
            if issubclass(k, DynamicConv2dBase)} == {
                'layer1.depthwise_conv', 'layer1.linear_conv'}


def _randomise_bn_statistics(model):
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)


def test_static_mobilenet_v2_is_torchvision_mobilenet_v2():
    """torchvision's weights, mapped with ``torchvision_names`` (then in
    order inside a block), give torchvision's features at every stage."""
    torch.manual_seed(0)
    reference = tvm.mobilenet_v2().eval()
    _randomise_bn_statistics(reference)
    model = DynamicMobileNetV2(out_indices=tuple(range(8))).eval()
    theirs = reference.state_dict()
    state = {}
    for ours_prefix, their_prefix in model.torchvision_names().items():
        mine = [k for k in model.state_dict()
                if k.startswith(ours_prefix + '.')]
        their = [k for k in theirs if k.startswith(their_prefix + '.')]
        assert len(mine) == len(their), ours_prefix
        for k, t in zip(mine, their):
            assert model.state_dict()[k].shape == theirs[t].shape, (k, t)
            state[k] = theirs[t]
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    expected, out = [], x
    for i, feature in enumerate(reference.features):
        out = feature(out)
        if i in (1, 3, 6, 10, 13, 16, 17, 18):
            expected.append(out)
    for ours, theirs_out in zip(model(x), expected):
        torch.testing.assert_close(ours, theirs_out)


@pytest.mark.parametrize('arch', ['small', 'large'])
def test_static_mobilenet_v3_is_torchvision_mobilenet_v3(arch):
    """Same parameters in the same order as torchvision's ``features``, and
    the same function at every stage."""
    torch.manual_seed(0)
    reference = getattr(tvm, f'mobilenet_v3_{arch}')().eval()
    _randomise_bn_statistics(reference)
    num_stages = len(DynamicMobileNetV3.arch_settings[arch]) + 1
    model = DynamicMobileNetV3(
        arch, out_indices=tuple(range(num_stages))).eval()
    mine, theirs = model.state_dict(), reference.features.state_dict()
    assert len(mine) == len(theirs)
    state = {}
    for k, t in zip(mine, theirs):
        assert mine[k].shape == theirs[t].shape, (k, t)
        state[k] = theirs[t]
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    expected, out = [], reference.features[0](x)
    for feature in reference.features[1:]:
        out = feature(out)
        expected.append(out)
    outs = model(x)
    assert len(outs) == num_stages
    for ours, theirs_out in zip(outs, expected):
        torch.testing.assert_close(ours, theirs_out)


def test_mobilenet_v3_negative_out_indices_and_frozen_stages():
    model = DynamicMobileNetV3('small', out_indices=(-1, -4),
                               frozen_stages=11)
    assert model.out_indices == (11, 8)
    model.train()
    assert all(not p.requires_grad for p in model.layer11.parameters())
    assert all(p.requires_grad for p in model.conv2.parameters())
    outs = model(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [96, 576]


@pytest.mark.parametrize('cls,options,match', [
    (DynamicMobileNetV2, dict(dynamic_stages=(True, ) * 7),
     'dynamic_stages'),
    (DynamicMobileNetV2, dict(dynamic_conv_cfg=dict(type='ODConv'),
                              dynamic_depthwise='yes'), 'dynamic_depthwise'),
    (DynamicMobileNetV2, dict(dynamic_conv_cfg='ODConv'),
     'dynamic_conv_cfg'),
    (DynamicMobileNetV3, dict(arch='big'), 'arch'),
    (DynamicMobileNetV3, dict(out_indices=(12, )), 'out_indices'),
    (DynamicMobileNetV3, dict(frozen_stages=12), 'frozen_stages'),
    (DynamicMobileNetV3, dict(dynamic_stages=(True, ) * 11),
     'dynamic_stages'),
    (DynamicMobileNetV3, dict(dynamic_conv_cfg=dict(num_kernels=4)),
     'dynamic_conv_cfg'),
])
def test_bad_options_raise_naming_the_option(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(**options)
