"""tools/analysis/benchmark.py's network figures: what the subjects are
and what the memory figure counts (the timings are a benchmark's, not a
test's)."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dynconv_mm.layers import DynamicConv2dBase
from dynconv_mm.models.backbones.paper_presets import paper_backbone

PATH = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'analysis',
                'benchmark.py')


@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('benchmark_tool', PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_saved_bytes_counts_activations_not_parameters(benchmark):
    # a bias-free linear layer saves its input (for the weight's gradient)
    # and its weight (for the input's): only the input is an activation
    model = nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64, requires_grad=True)
    assert benchmark.saved_bytes(lambda: model(x).sum(), model) == 8 * 64 * 4
    # a saved tensor that is not the model's still counts: x * w saves both
    other = torch.randn(64, 32, requires_grad=True)
    assert benchmark.saved_bytes(lambda: (x @ other).sum(), model) == \
        8 * 64 * 4 + 64 * 32 * 4


@pytest.mark.parametrize('name', [
    'OD-ResNet-50 1x', 'OD-ResNet-50 4x', 'DY-ResNet-50 K=4',
    'OD-MobileNetV2 1x', 'OD-MobileNetV2 4x', 'DyNet-ResNet-50 g=6'
])
def test_networks_and_their_materialised_form_agree(benchmark, name):
    """Ours and the public form of each network compute one function
    (``check_same_function``, which the network figures run first), and
    the static network has the same shape without a dynamic layer."""
    backbone, cfg = benchmark.NETWORKS[name]
    torch.manual_seed(0)
    ours = benchmark.build_network(backbone, cfg)
    public = benchmark.use_materialised_form(
        benchmark.build_network(backbone, cfg))
    public.load_state_dict(ours.state_dict())
    benchmark.check_same_function(ours, public, torch.device('cpu'))
    static = benchmark.build_network(backbone, None)
    assert not any(isinstance(m, DynamicConv2dBase) for m in static.modules())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert static(images).shape == ours(images).shape == (1, 1000)
    # a broken public form fails the check: the kernel attention made
    # uniform (with a single kernel, the filter or else the channel one)
    def uniform_attention(layer, x, attentions=None):
        if attentions is None:
            attentions = layer.attention(x)
        name = next(n for n in ('kernel', 'output', 'input')
                    if getattr(attentions, n) is not None)
        flat = attentions._replace(
            **{name: torch.full_like(getattr(attentions, name), 0.5)})
        return benchmark.materialised_forward(layer, x, flat)

    for module in public.modules():
        if isinstance(module, DynamicConv2dBase):
            module.forward = uniform_attention.__get__(module)
    with pytest.raises(AssertionError, match='differ by'):
        benchmark.check_same_function(ours, public, torch.device('cpu'))


def test_dynet_network_is_the_paper_backbone(benchmark):
    """The benchmark's Dy-ResNet-50 is ``PAPER_BACKBONES``'
    ``dynet_resnet50`` (g=6, half-wide stages, one coefficient module per
    block), and its ``replaced`` network the static ResNet-50."""
    backbone, cfg = benchmark.NETWORKS['DyNet-ResNet-50 g=6']
    body, channels, dynamic_options = benchmark.BACKBONES[backbone]
    built = dict(body, **dynamic_options, dynamic_conv_cfg=cfg)
    built.pop('out_indices')
    assert built == paper_backbone('dynet_resnet50')
    assert channels == 1024
    assert benchmark.REPLACED[backbone] == 'resnet50'
    # the static network of its shape: no coefficient module either
    static = benchmark.build_network(backbone, None)
    assert not any(
        type(m).__name__ == 'BlockKernelFusionCoefficients'
        for m in static.modules())
    assert static.backbone.layer4[0].conv2.out_channels == 256


def test_summary_against_the_replaced_network_is_per_round(benchmark):
    times = dict(static=[1.0, 2.0], dynamic=[2.0, 3.0],
                 replaced=[4.0, 4.0])
    out = benchmark.summarise(times)
    assert out['dynamic']['x_static'] == pytest.approx((2.0 + 1.5) / 2)
    assert out['dynamic']['x_replaced'] == pytest.approx((0.5 + 0.75) / 2)
    assert out['replaced']['x_static'] == pytest.approx((4.0 + 2.0) / 2)
    assert 'x_replaced' not in benchmark.summarise(
        dict(static=[1.0], dynamic=[2.0]))['dynamic']


def test_dynet_saved_activations_leave_out_its_banks(benchmark):
    """A training step of the DyNet network saves its banks for backward
    (g = 6 kernels a conv); the memory figure leaves them out."""
    backbone, cfg = benchmark.NETWORKS['DyNet-ResNet-50 g=6']
    torch.manual_seed(0)
    model = benchmark.build_network(backbone, cfg).train()
    images = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([3, 7])
    saved = benchmark.saved_bytes(
        lambda: F.cross_entropy(model(images), labels), model)
    held = sum(t.numel() * t.element_size()
               for t in (*model.parameters(), *model.buffers()))
    # 64x64 images at batch 2 save a few MB; the model holds ~170 MB
    assert 0 < saved < held / 10
