"""The papers' backbones, counted: parameters against the papers' ImageNet
tables (classifier added analytically), against an independent count
from torchvision's network geometry, and DyNet's multiply-add reduction.

The independent count takes torchvision's model (classifier included),
removes each conv the paper makes dynamic and adds, by hand, what the
dynamic layer holds instead (kernel bank + attention), following the
papers' layers; the models are built on the meta device (no memory, no
init)."""
import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm
from mmengine.registry import MODELS

import dynconv_mm  # noqa: F401
from dynconv_mm.layers import DynamicConv2dBase
from dynconv_mm.models.backbones import PAPER_BACKBONES, paper_backbone

M = 1e6

# The 1000-class ImageNet classifiers the papers count (a backbone has
# none): torchvision's ResNet fc and MobileNetV2 classifier (1280 also for
# width < 1). MobileNetV3-Small: the DynamicConv paper's 2.9M / 4.8M fit a
# 576 -> 1280 -> 1000 classifier (2.95M / 4.78M); torchvision's
# 576 -> 1024 -> 1000 gives 2.54M / 4.38M (test below).
CLASSIFIER = {
    'resnet18': 512 * 1000 + 1000,
    'resnet50': 2048 * 1000 + 1000,
    'mobilenetv2': 1280 * 1000 + 1000,
    'mobilenetv3_small': 576 * 1280 + 1280 + 1280 * 1000 + 1000,
}

# Papers' parameter counts (classifier included).
PAPER_PARAMS = {
    # ODConv, Li et al. ICLR 2022 (authors' repository table).
    'resnet18': 11.69 * M,
    'od_resnet18_1x': 11.94 * M,
    'od_resnet18_4x': 44.90 * M,
    'resnet50': 25.56 * M,
    'od_resnet50_1x': 28.64 * M,
    'od_resnet50_4x': 90.67 * M,
    'mobilenetv2_100': 3.50 * M,
    'od_mobilenetv2_100_1x': 4.94 * M,
    'od_mobilenetv2_100_4x': 11.51 * M,
    'mobilenetv2_075': 2.64 * M,
    'od_mobilenetv2_075_1x': 3.51 * M,
    'od_mobilenetv2_075_4x': 7.50 * M,
    'mobilenetv2_050': 1.97 * M,
    'od_mobilenetv2_050_1x': 2.43 * M,
    'od_mobilenetv2_050_4x': 4.44 * M,
}

# Dynamic Convolution, Chen et al. CVPR 2020 (one decimal in millions).
DY_PAPER_PARAMS = {
    'dy_mobilenetv2_100': 11.1 * M,
    'mobilenetv3_small': 2.9 * M,
    'dy_mobilenetv3_small': 4.8 * M,
}


def classifier_of(name):
    for base, params in CLASSIFIER.items():
        if base in name:
            return params
    raise KeyError(name)


def build(name, **options):
    with torch.device('meta'):
        return MODELS.build(paper_backbone(name, **options))


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def with_classifier(name, **options):
    return num_params(build(name, **options)) + classifier_of(name)


# ---- the independent count -----------------------------------------------


def odconv_params(conv, num_kernels, attention_bn):
    """ODConv2d (authors' layer, with BN, or ours, FC bias instead)."""
    i, o, g = conv.in_channels, conv.out_channels, conv.groups
    k = conv.kernel_size[0] * conv.kernel_size[1]
    h = max(int(i / 16), 16)
    total = num_kernels * o * i // g * k + i * h + (2 * h if attention_bn
                                                     else h)
    total += h * i + i  # channel attention
    if not i == g == o:
        total += h * o + o  # filter attention
    if k > 1:
        total += h * k + k  # spatial attention
    if num_kernels > 1:
        total += h * num_kernels + num_kernels  # kernel attention
    return total


def dynamic_conv_params(conv, num_kernels):
    """DynamicConv2d: K kernels, attention C -> C/4 (at least 4) -> K."""
    i, o, g = conv.in_channels, conv.out_channels, conv.groups
    h = max(int(i / 4), 4)
    return (num_kernels * o * i // g * conv.kernel_size[0] *
            conv.kernel_size[1] + i * h + h + h * num_kernels + num_kernels)


def replaced_count(model, is_dynamic, dynamic_params):
    """torchvision ``model``'s parameters with the convs ``is_dynamic``
    selects replaced by ``dynamic_params(conv)`` parameters each."""
    total = num_params(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and is_dynamic(name, module):
            total += dynamic_params(module) - num_params(module)
    return total


def torchvision_model(name, **options):
    with torch.device('meta'):
        return getattr(tvm, name)(**options)


def torchvision_resnet(depth):
    with torch.device('meta'):
        return getattr(tvm, f'resnet{depth}')()


def resnet_block_conv(name, conv):
    return name.startswith('layer') and '.downsample.' not in name


def mobilenet_conv(name, conv):
    """Every conv of torchvision's MobileNetV2/V3 ``features`` but the stem
    and the squeeze-excitation FCs."""
    return name.startswith('features.') and name != 'features.0.0' \
        and '.fc' not in name


def mobilenet_conv_but_depthwise(name, conv):
    return mobilenet_conv(name, conv) and conv.groups == 1


# ---- tests ---------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_paper_table_with_authors_attention(name):
    """With the authors' attention (BN), every count rounds to the table's
    value (two decimals in millions)."""
    assert round(with_classifier(name) / M, 2) == PAPER_PARAMS[name] / M


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_paper_table_with_default_attention(name):
    """Our default attention (no BN, FC bias) is within 0.5% of the table
    (it has h fewer parameters per conv than the authors' BN; the rest is
    the table's rounding, e.g. 2,636,424 shown as 2.64M)."""
    cfg = paper_backbone(name)
    if 'dynamic_conv_cfg' in cfg:
        cfg['dynamic_conv_cfg'].pop('attention_norm_cfg', None)
    with torch.device('meta'):
        count = num_params(MODELS.build(cfg)) + classifier_of(name)
    assert abs(count / PAPER_PARAMS[name] - 1) < 0.005


@pytest.mark.parametrize('depth,num_kernels,attention_bn', [
    (18, 1, False), (18, 4, True), (34, 4, False), (50, 1, True),
    (50, 4, False), (101, 4, True)
])
def test_od_resnet_equals_independent_count(depth, num_kernels,
                                            attention_bn):
    conv_cfg = dict(type='ODConv', num_kernels=num_kernels)
    if attention_bn:
        conv_cfg['attention_norm_cfg'] = dict(type='BN')
    with torch.device('meta'):
        model = MODELS.build(dict(type='DynamicResNet', depth=depth,
                                  dynamic_conv_cfg=conv_cfg))
    fc = torchvision_resnet(depth).fc
    expected = replaced_count(
        torchvision_resnet(depth), resnet_block_conv,
        lambda conv: odconv_params(conv, num_kernels, attention_bn))
    assert num_params(model) + num_params(fc) == expected


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_static_and_dynamic_conv_resnet_equal_independent_count(depth):
    reference = torchvision_resnet(depth)
    fc = num_params(reference.fc)
    with torch.device('meta'):
        static = MODELS.build(dict(type='DynamicResNet', depth=depth))
        dynamic = MODELS.build(dict(type='DynamicResNet', depth=depth,
                                    dynamic_conv_cfg=dict(
                                        type='DynamicConv')))
    assert num_params(static) + fc == num_params(reference)
    assert num_params(dynamic) + fc == replaced_count(
        reference, resnet_block_conv, lambda c: dynamic_conv_params(c, 4))


def test_dy_resnet18_against_dynamic_convolution_paper():
    """DY-ResNet-18 (Chen et al.): 42.7M against a static ResNet-18 of
    11.1M. Ours: 44.93M against torchvision's 11.69M; the paper counts the
    static ResNet-18 5% below torchvision, and the dynamic one by the same
    factor: the dynamic/static ratio matches within 0.1% (3.844 vs
    3.847)."""
    dynamic = with_classifier('dy_resnet18')
    static = with_classifier('resnet18')
    assert dynamic == 44_933_880
    assert abs((dynamic / static) / (42.7 / 11.1) - 1) < 0.001


def conv_macs(model, size=224):
    """Multiply-adds of every conv (a dynamic conv: its one fused conv, as
    DyNet counts at inference) for one image, from the output shapes of a
    meta-device forward."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += output[0].numel() * (
            module.in_channels // module.groups) * module.kernel_size[0] * \
            module.kernel_size[1]

    hooks = [
        m.register_forward_hook(count) for m in model.modules()
        if isinstance(m, (nn.Conv2d, DynamicConv2dBase))
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size, device='meta'))
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize('depth,paper_static,paper_dynet', [
    (18, 1730, 550),
    (50, 3890, 1075),
])
def test_dynet_halved_stages_give_dynet_flop_reduction(
        depth, paper_static, paper_dynet):
    """Dy-ResNet (DyNet table): 550 / 1730 and 1075 / 3890 MFLOPs. DyNet's
    static counts are ~5% below the usual ones (1814 / 4089 M multiply-adds
    here), so the reduction is what can be compared: halving every dynamic
    conv's output (all block convs, i.e. every stage half as wide, stem
    kept) gives 0.3183 / 0.2757 against the paper's 0.3179 / 0.2763."""
    fc = {18: 512, 50: 2048}[depth] * 1000
    static = conv_macs(build(f'resnet{depth}')) + fc
    dynet = conv_macs(build(f'dynet_resnet{depth}')) + fc // 2
    assert abs((dynet / static) / (paper_dynet / paper_static) - 1) < 0.005


def test_every_preset_is_pinned():
    assert set(PAPER_BACKBONES) == set(PAPER_PARAMS) | set(
        DY_PAPER_PARAMS) | {'dy_resnet18', 'dynet_resnet18',
                            'dynet_resnet50'}


@pytest.mark.parametrize('name', sorted(DY_PAPER_PARAMS))
def test_dynamic_convolution_paper_table(name):
    """Every count rounds to the table's one decimal; the dynamic networks
    are within 0.5% (11.07M vs 11.1M, 4.78M vs 4.8M). The static
    MobileNetV3-Small, 2.95M, rounds to the paper's 2.9M but is 1.6% above
    it: no layout we tried gives 2.90M (see the classifier test below)."""
    count = with_classifier(name)
    assert round(count / M, 1) == DY_PAPER_PARAMS[name] / M
    if name.startswith('dy_'):
        assert abs(count / DY_PAPER_PARAMS[name] - 1) < 0.005


@pytest.mark.parametrize('width,num_kernels,attention_bn', [
    (1.0, 1, False), (1.0, 4, True), (0.75, 1, True), (0.75, 4, False),
    (0.5, 1, False), (0.5, 4, True)
])
def test_od_mobilenet_v2_equals_independent_count(width, num_kernels,
                                                  attention_bn):
    conv_cfg = dict(type='ODConv', num_kernels=num_kernels)
    if attention_bn:
        conv_cfg['attention_norm_cfg'] = dict(type='BN')
    with torch.device('meta'):
        model = MODELS.build(dict(type='DynamicMobileNetV2',
                                  widen_factor=width,
                                  dynamic_conv_cfg=conv_cfg))
    reference = torchvision_model('mobilenet_v2', width_mult=width)
    expected = replaced_count(
        reference, mobilenet_conv,
        lambda conv: odconv_params(conv, num_kernels, attention_bn))
    assert num_params(model) + num_params(reference.classifier) == expected


def test_dy_mobilenet_v2_placement_decided_by_parameters():
    """DY-MobileNetV2 x1.0 has 11.1M parameters: depthwise convs static
    gives 11.07M (our preset), dynamic 12.40M."""
    reference = torchvision_model('mobilenet_v2')
    classifier = num_params(reference.classifier)
    for depthwise, is_dynamic in ((False, mobilenet_conv_but_depthwise),
                                  (True, mobilenet_conv)):
        with torch.device('meta'):
            model = MODELS.build(paper_backbone(
                'dy_mobilenetv2_100', dynamic_depthwise=depthwise))
        count = num_params(model) + classifier
        assert count == replaced_count(
            reference, is_dynamic, lambda c: dynamic_conv_params(c, 4))
        assert (abs(count / (11.1 * M) - 1) < 0.005) == (not depthwise)


@pytest.mark.parametrize('arch', ['small', 'large'])
def test_mobilenet_v3_equals_independent_count(arch):
    reference = torchvision_model(f'mobilenet_v3_{arch}')
    with torch.device('meta'):
        static = MODELS.build(dict(type='DynamicMobileNetV3', arch=arch))
        dynamic = MODELS.build(dict(type='DynamicMobileNetV3', arch=arch,
                                    dynamic_conv_cfg=dict(
                                        type='DynamicConv')))
    assert num_params(static) == num_params(reference.features)
    classifier = num_params(reference.classifier)
    assert num_params(dynamic) + classifier == replaced_count(
        reference, mobilenet_conv, lambda c: dynamic_conv_params(c, 4))


def test_mobilenet_v3_small_classifier_explains_the_paper_count():
    """With torchvision's 576 -> 1024 -> 1000 classifier the counts are
    2.54M / 4.38M, far from the paper's 2.9M / 4.8M; with a 1280-wide
    hidden FC they are 2.95M / 4.78M."""
    torchvision_classifier = 576 * 1024 + 1024 + 1024 * 1000 + 1000
    static = num_params(build('mobilenetv3_small'))
    dynamic = num_params(build('dy_mobilenetv3_small'))
    assert round((static + torchvision_classifier) / M, 2) == 2.54
    assert round((dynamic + torchvision_classifier) / M, 2) == 4.38
    assert round(with_classifier('mobilenetv3_small') / M, 2) == 2.95
    assert round(with_classifier('dy_mobilenetv3_small') / M, 2) == 4.78
