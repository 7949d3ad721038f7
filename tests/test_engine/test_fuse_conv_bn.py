"""``dynconv_mm.engine.fuse_conv_bn`` on our backbones and on mmcv's
``ConvModule``: every BatchNorm after a conv folded, the same function in
eval mode, DyNet's norms kept and named; ``FuseConvBNHook`` before
testing."""
import copy
import types

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.registry import MODELS

import dynconv_mm  # noqa: F401  (registers the backbones and the hook)
from dynconv_mm.engine import FuseConvBNHook, fuse_conv_bn
from dynconv_mm.engine.fuse_conv_bn import fold_conv_bn
from dynconv_mm.models.backbones.paper_presets import (PAPER_BACKBONES,
                                                       paper_backbone)


def trained_like(model: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters in every
    BatchNorm2d (as after training), in float64, eval mode."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.5, 0.5)
    return model.double().eval()


def count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def outputs(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, tuple) else (out, )


@pytest.mark.parametrize(
    'name', [n for n in sorted(PAPER_BACKBONES) if not n.startswith('dynet')])
def test_backbone_fused_computes_the_same(name):
    """Every paper backbone but DyNet's (below): static, DynamicConv,
    ODConv 1x and 4x; ResNet, MobileNetV2 and V3."""
    model = trained_like(MODELS.build(paper_backbone(name)))
    norms = count(model, nn.BatchNorm2d)
    fused = fuse_conv_bn(copy.deepcopy(model))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for a, b in zip(outputs(model, x), outputs(fused, x)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    # every BatchNorm2d left is an ODConv attention's trunk norm (the
    # authors' attention), which follows a linear layer, not a conv
    trunk_norms = sum(
        isinstance(m, nn.BatchNorm2d) for n, m in model.named_modules()
        if '.attention.' in n)
    assert count(fused, nn.BatchNorm2d) == trunk_norms
    assert count(fused, nn.Identity) - count(model, nn.Identity) == \
        norms - trunk_norms


def test_dynet_norms_are_kept_and_named():
    model = trained_like(MODELS.build(paper_backbone('dynet_resnet18')))
    folded, kept = fold_conv_bn(copy.deepcopy(model))
    # the stem's and the downsamples' norms folded, DyNet's kept
    assert folded == count(model, nn.Conv2d) == 1 + 4
    assert kept[0] == 'layer1.0.bn1'
    fused = fuse_conv_bn(copy.deepcopy(model))
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    for a, b in zip(outputs(model, x), outputs(fused, x)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    dynamic_convs = sum(type(m).__name__ == 'BlockFedDyNetConv2d'
                        for m in model.modules())
    assert count(fused, nn.BatchNorm2d) == dynamic_convs == len(kept)


@pytest.mark.parametrize('order, folded', [(('conv', 'norm', 'act'), True),
                                           (('norm', 'conv', 'act'), False)])
def test_conv_module_norm_folded_only_after_the_conv(order, folded):
    channels = 12 if order[0] == 'conv' else 8
    module = ConvModule(8, 12, 3, padding=1, order=order,
                        conv_cfg=dict(type='ODConv', num_kernels=4),
                        norm_cfg=dict(type='BN'))
    assert module.norm.num_features == channels
    module = trained_like(module)
    fused = fuse_conv_bn(copy.deepcopy(module))
    assert isinstance(fused.norm, nn.Identity) == folded
    x = torch.randn(2, 8, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(outputs(fused, x)[0], outputs(module, x)[0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('between', ['relu', 'dynet'])
@pytest.mark.parametrize('first', ['static', 'dynamic'])
def test_a_norm_not_next_to_the_conv_stays(first, between):
    """Only the next sibling: a norm after something else (a ReLU, or a
    DyNet layer, whose own norm stays) is not folded into an earlier conv
    (mmcv's walk folds it into an earlier static one)."""
    conv = nn.Conv2d(4, 6, 3, padding=1) if first == 'static' else \
        MODELS.build(dict(type='ODConv', in_channels=4, out_channels=6,
                          kernel_size=3, padding=1))
    second = nn.ReLU() if between == 'relu' else MODELS.build(
        dict(type='DyNetConv', in_channels=6, out_channels=6, kernel_size=1))
    model = trained_like(nn.Sequential(conv, second, nn.BatchNorm2d(6)))
    fused = fuse_conv_bn(copy.deepcopy(model))
    assert isinstance(fused[2], nn.BatchNorm2d)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(outputs(fused, x)[0], outputs(model, x)[0])


def test_a_static_norm_without_affine_parameters_is_kept():
    model = trained_like(nn.Sequential(nn.Conv2d(4, 6, 3),
                                       nn.BatchNorm2d(6, affine=False)))
    folded, kept = fold_conv_bn(copy.deepcopy(model))
    assert folded == 0 and kept == ['1']


def test_hook_fuses_the_model_before_testing():
    model = trained_like(MODELS.build(paper_backbone('od_resnet18_4x')))
    runner = types.SimpleNamespace(model=copy.deepcopy(model))
    FuseConvBNHook().before_test(runner)
    assert count(runner.model, nn.BatchNorm2d) < count(model, nn.BatchNorm2d)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    for a, b in zip(outputs(model, x), outputs(runner.model, x)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    # only before testing: a validation during training keeps its norms
    assert FuseConvBNHook.before_val is not FuseConvBNHook.before_test
