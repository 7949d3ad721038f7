"""The layers' ``execution`` option: every formulation forced through each
layer matches the oracle (outputs and parameter gradients), an empty batch
runs forward and backward, and bad values are refused by name."""
import itertools

import pytest
import torch
from mmcv.cnn import build_conv_layer

import dynconv_mm  # noqa: F401  (registers the conv types)
from dynconv_mm.execution import FORMULATIONS

CPU_FORMULATIONS = tuple(m for m in FORMULATIONS if m != 'triton')
from oracle import assert_layer_matches_oracle, reference_layer_forward

LAYERS = {
    'DynamicConv': dict(type='DynamicConv', num_kernels=3),
    'ODConv_1x': dict(type='ODConv', num_kernels=1),
    'ODConv_4x': dict(type='ODConv', num_kernels=3),
    'DyNetConv': dict(type='DyNetConv', num_kernels=3),
}


def build(name, **options):
    torch.manual_seed(0)
    cfg = dict(LAYERS[name], **options)
    return build_conv_layer(cfg, 4, 6, 3, stride=2, padding=1,
                            bias=True).double()


def has_spatial(name):
    return name.startswith('ODConv')


@pytest.mark.parametrize('name,method', [
    (n, m) for n, m in itertools.product(LAYERS, CPU_FORMULATIONS)
    if not (m == 'kernel_branches' and has_spatial(n))
])
@pytest.mark.parametrize('train', [True, False])
def test_forced_formulation_matches_oracle(name, method, train):
    layer = build(name, execution=method).train(train)
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    assert_layer_matches_oracle(layer, x)


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('execution', ['auto'] + list(CPU_FORMULATIONS))
def test_empty_batch_through_layer(name, execution):
    if execution == 'kernel_branches' and has_spatial(name):
        execution = ['kernel_branches', 'im2col']  # auto among those
    layer = build(name, execution=execution).train()
    x = torch.randn(0, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert out.shape == (0, 6, 5, 4)
    out.sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert not p.grad.any(), pname


@pytest.mark.parametrize('bad', ['fast', 'Auto', ['im2col', 'slow'], [], 1])
def test_bad_execution_named(bad):
    with pytest.raises(ValueError,
                       match=r"ODConv: option execution=.* is invalid"):
        build('ODConv_4x', execution=bad)


def test_execution_list_restricts_auto():
    layer = build('ODConv_4x', execution=('im2col', 'kernel_branches'))
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_layer_forward(layer, x))
    # kernel_branches alone cannot apply ODConv's spatial attention
    layer.execution = ('kernel_branches', )
    with pytest.raises(ValueError, match='spatial'):
        layer(x)
