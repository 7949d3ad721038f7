"""DynamicResNet: which convs are dynamic, DyNet's one coefficient module
per block against a hand-written per-sample oracle, equivalence with
torchvision's ResNet when static, and option errors."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from oracle import per_sample_kernel

import dynconv_mm  # noqa: F401
from dynconv_mm.layers import (DynamicAttention, DynamicConv2dBase,
                               DynamicConv2d, DyNetConv2d, ODConv2d)
from dynconv_mm.models.backbones import (BlockFedDyNetConv2d,
                                         DynamicResNet)


def block_conv_names(model):
    names = []
    for layer_name in model.res_layers:
        for i, block in enumerate(getattr(model, layer_name)):
            for conv in type(block).conv_names:
                names.append(f'{layer_name}.{i}.{conv}')
    return names


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
@pytest.mark.parametrize('conv_cfg,layer', [
    (dict(type='ODConv', num_kernels=1), ODConv2d),
    (dict(type='DynamicConv'), DynamicConv2d),
    (dict(type='DyNetConv'), DyNetConv2d),
])
def test_every_block_conv_dynamic_stem_and_downsample_static(
        depth, conv_cfg, layer):
    with torch.device('meta'):
        model = DynamicResNet(depth, dynamic_conv_cfg=conv_cfg)
    modules = dict(model.named_modules())
    dynamic = {n for n, m in modules.items()
               if isinstance(m, DynamicConv2dBase)}
    assert dynamic == set(block_conv_names(model))
    assert all(type(modules[n]) is layer for n in dynamic)
    assert type(model.conv1) is nn.Conv2d
    downsamples = [n for n in modules if n.endswith('downsample.0')]
    assert len(downsamples) == 4 if depth >= 50 else 3
    assert all(type(modules[n]) is nn.Conv2d for n in downsamples)


def test_dynamic_stages_choose_stages():
    with torch.device('meta'):
        model = DynamicResNet(
            50, dynamic_conv_cfg=dict(type='ODConv'),
            dynamic_stages=(False, True, False, True))
    for name in block_conv_names(model):
        module = model.get_submodule(name)
        dynamic = name.startswith(('layer2', 'layer4'))
        assert isinstance(module, ODConv2d) == dynamic, name
        assert isinstance(module, nn.Conv2d) != dynamic, name


def test_static_resnet_is_torchvision_resnet():
    """Static, the backbone has torchvision's module names and computes
    torchvision's features: a torchvision state dict (minus fc) loads
    strictly."""
    torch.manual_seed(0)
    reference = tvm.resnet18().eval()
    for bn in reference.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
    model = DynamicResNet(18, out_indices=(3, )).eval()
    state = {k: v for k, v in reference.state_dict().items()
             if not k.startswith('fc.')}
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
    torch.testing.assert_close(model(x)[0], expected)


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                        bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize('depth', [18, 50])
def test_dynet_block_coefficients_from_block_input(depth):
    """Dy-ResNet block, by hand: ONE MLP on the pooled block input predicts
    sigmoid coefficients for every conv of the block; each sample's kernel
    of conv j is sum_i eta_j[b, o, i] W_j[i, o]."""
    torch.manual_seed(0)
    model = DynamicResNet(depth, stem_channels=8, base_channels=4,
                          dynamic_conv_cfg=dict(type='DyNetConv',
                                                num_kernels=3,
                                                temperature=2.0),
                          dynet_shared_coefficients=True)
    block = model.layer2[0]  # stride 2, with a downsample projection
    for bn in block.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
    block.eval()
    convs = [getattr(block, n) for n in type(block).conv_names]
    assert all(isinstance(c, BlockFedDyNetConv2d) and c.attention is None
               for c in convs)
    in_channels = convs[0].in_channels
    x = torch.randn(2, in_channels, 8, 8)

    coefficients = block.coefficients
    hidden = F.relu(x.mean((2, 3)) @ coefficients.trunk.fc.weight.t()
                    + coefficients.trunk.fc.bias)
    weight, bias = coefficients.head_parameters('kernel')
    eta = torch.sigmoid((hidden @ weight.t() + bias) / 2.0)
    assert hidden.shape[1] == max(in_channels // 4, 4)
    etas, start = [], 0
    for conv in convs:
        size = conv.out_channels * conv.num_kernels
        etas.append(eta[:, start:start + size].reshape(
            2, conv.out_channels, conv.num_kernels))
        start += size
    assert start == eta.shape[1]

    outs = []
    for b in range(2):
        out = x[b:b + 1]
        for j, conv in enumerate(convs):
            kernel = per_sample_kernel(conv.weight, conv.groups, b,
                                       kernel=etas[j])
            out = F.conv2d(out, kernel, None, conv.stride, conv.padding)
            out = _bn(out, getattr(block, f'norm{j + 1}'))
            if j < len(convs) - 1:
                out = F.relu(out)
        shortcut = _bn(F.conv2d(x[b:b + 1], block.downsample[0].weight,
                                stride=block.downsample[0].stride),
                       block.downsample[1])
        outs.append(F.relu(out + shortcut))
    torch.testing.assert_close(block(x), torch.cat(outs))

    # The conv alone refuses to run without its block's coefficients.
    with pytest.raises(ValueError, match='coefficient'):
        convs[0](x)


def test_dynet_shared_coefficients_one_attention_per_block():
    with torch.device('meta'):
        model = DynamicResNet(
            18, dynamic_conv_cfg=dict(type='DyNetConv'),
            dynet_shared_coefficients=True,
            dynamic_stages=(True, True, True, False))
    attentions = [n for n, m in model.named_modules()
                  if isinstance(m, DynamicAttention)]
    assert attentions == [f'layer{s}.{b}.coefficients' for s in (1, 2, 3)
                          for b in (0, 1)]
    assert type(model.layer4[0].conv1) is nn.Conv2d


@pytest.mark.parametrize('options,match', [
    (dict(dynamic_conv_cfg='ODConv'), 'dynamic_conv_cfg'),
    (dict(dynamic_conv_cfg=dict(num_kernels=4)), 'dynamic_conv_cfg'),
    (dict(dynamic_conv_cfg=dict(type='ODConv'),
          dynamic_stages=(True, True)), 'dynamic_stages'),
    (dict(dynamic_conv_cfg=dict(type='ODConv'),
          dynamic_stages=(1, 1, 1, 1)), 'dynamic_stages'),
    (dict(dynet_shared_coefficients=True), 'dynet_shared_coefficients'),
    (dict(dynamic_conv_cfg=dict(type='ODConv'),
          dynet_shared_coefficients=True), 'dynet_shared_coefficients'),
    (dict(dynamic_conv_cfg=dict(type='DyNetConv'),
          dynet_shared_coefficients=1), 'dynet_shared_coefficients'),
    (dict(dynamic_conv_cfg=dict(type='ODConv'),
          dcn=dict(type='DCN', deform_groups=1),
          stage_with_dcn=(False, True, False, False)), 'dcn'),
])
def test_bad_options_raise_naming_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        DynamicResNet(50, base_channels=4, **options)


def test_dcn_in_a_static_stage_is_allowed():
    model = DynamicResNet(50, base_channels=4,
                          dynamic_conv_cfg=dict(type='ODConv'),
                          dynamic_stages=(True, False, True, True),
                          dcn=dict(type='DCN', deform_groups=1),
                          stage_with_dcn=(False, True, False, False))
    assert type(model.layer2[0].conv2).__name__ == 'DeformConv2dPack'
    assert isinstance(model.layer3[0].conv2, ODConv2d)
