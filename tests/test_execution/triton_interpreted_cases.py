"""The fused Triton kernel against the oracle, run by
``test_triton_conv2d.py`` in a subprocess with ``TRITON_INTERPRET=1``
(Triton's interpreter executes the kernel on the CPU, in float64).
Not collected by the main test run: its name does not start with test_."""
import os
import sys

import pytest
import torch

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_dynamic_conv2d  # noqa: E402
from test_dynamic_conv2d import (ATTENTIONS, GEOMETRIES, grads,  # noqa: E402
                                 inputs_of, make_case)

from dynconv_mm.execution import ConvAttentions, dynamic_conv2d  # noqa: E402
from oracle import reference_dynamic_conv2d  # noqa: E402

CASES = [(g, 'odconv_4x', True) for g in GEOMETRIES] + [
    ('groups2', a, b) for a in ATTENTIONS for b in (False, True)
    if a != 'odconv_4x' or not b
] + [('depthwise', 'dynet', True), ('small_map', 'odconv_1x', True)]


@pytest.mark.filterwarnings('ignore:Using padding=.same. with even kernel')
@pytest.mark.parametrize('geometry,attention,with_bias', CASES)
def test_triton_matches_oracle(geometry, attention, with_bias):
    x, weight, bias, att, conv = make_case(geometry, attention, with_bias)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='triton', **conv)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    tensors = inputs_of(x, weight, bias, att)
    for got, want in zip(grads(out, tensors), grads(ref, tensors)):
        torch.testing.assert_close(got, want)


# Wide enough for every kernel to run several tiles along each axis: two
# groups of 70 input channels (two input-gradient tiles), 68 outputs each
# (two bank-gradient tiles, three output chunks), 630 reduction rows.
WIDE = (2, 140, 136, (3, 3), 2, 1, 1, 2, (9, 9))


@pytest.mark.parametrize('attention', ['odconv_4x', 'dynet', 'odconv_1x'])
def test_triton_matches_oracle_over_many_tiles(monkeypatch, attention):
    monkeypatch.setitem(test_dynamic_conv2d.GEOMETRIES, 'wide', WIDE)
    test_triton_matches_oracle('wide', attention, True)


def test_triton_bank_gradient_with_whole_batch_per_program(monkeypatch):
    # Tiny layers split the batch into one sample per program; a large
    # layer's tiles fill the GPU alone and one program walks every sample.
    from dynconv_mm.execution import triton_conv2d
    monkeypatch.setattr(triton_conv2d, 'WEIGHT_GRAD_PROGRAMS', 1)
    test_triton_matches_oracle('plain3x3', 'odconv_4x', True)
    test_triton_matches_oracle('groups2', 'dynet', True)


def test_triton_bank_gradient_chunks_hold_their_own_samples():
    # Each chunk of samples accumulates its own copy of the bank's
    # gradient; a program writing into another chunk's copy would race on
    # a GPU (the interpreter runs programs one by one, so the summed
    # gradient cannot show it). Tiny layers get one sample per chunk.
    from dynconv_mm.execution import triton_conv2d
    x, weight, _, att, conv = make_case('stride2', 'odconv_4x', False)
    conv = tuple(conv[k] for k in ('stride', 'padding', 'dilation',
                                   'groups'))
    grad = torch.randn(x.shape[0], weight.shape[1], 5, 4,
                       dtype=torch.float64)
    with torch.no_grad():
        banks = triton_conv2d._launch_weight_grad_partials(
            grad, x, weight, ConvAttentions(**att), conv).banks
        assert banks.shape[0] == x.shape[0]
        for b in range(x.shape[0]):
            alone = triton_conv2d._launch_weight_grads(
                grad[b:b + 1], x[b:b + 1], weight,
                ConvAttentions(*(t[b:b + 1] for t in att.values())), conv)
            torch.testing.assert_close(banks[b], alone[0])


def test_triton_empty_batch():
    x, weight, bias, att, conv = make_case('stride2', 'odconv_4x', True,
                                           batch=0)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='triton', **conv)
    assert out.shape == (0, 6, 5, 4)
    out.sum().backward()
    assert not weight.grad.any()


# The attention MLP as one fused kernel (execution='triton'): every paper's
# heads, against the attentions computed by hand. 150 input channels (three
# blocks of the trunk's reduction), a hidden layer of 40, DyNet's head of
# 144 (three blocks), 20 samples (two programs), a temperature != 1.
FUSED_LAYERS = {
    'DynamicConv': (dict(type='DynamicConv', num_kernels=3), 3, 1),
    'ODConv_4x': (dict(type='ODConv', num_kernels=3), 3, 1),
    'ODConv_1x_1x1': (dict(type='ODConv', num_kernels=1), 1, 1),
    'ODConv_depthwise': (dict(type='ODConv', num_kernels=2), 3, 150),
    'DyNetConv': (dict(type='DyNetConv', num_kernels=6), 3, 1),
}


def build_fused(name, execution='triton'):
    from mmcv.cnn import build_conv_layer
    cfg, kernel_size, groups = FUSED_LAYERS[name]
    torch.manual_seed(0)
    out_channels = 150 if groups > 1 else 24
    layer = build_conv_layer(
        dict(cfg, execution=execution, reduction=3.75), 150, out_channels,
        kernel_size, padding=kernel_size // 2, groups=groups,
        bias=True).double()
    layer.temperature = 0.7
    return layer


@pytest.mark.parametrize('name', list(FUSED_LAYERS))
def test_fused_attention_matches_oracle(name):
    from oracle import reference_attentions
    layer = build_fused(name)
    assert layer.attention.trunk.fc.out_features == 40
    x = torch.randn(20, 150, 5, 5, dtype=torch.float64, requires_grad=True)
    got = layer.attention(x, fused=True)._asdict()
    want = reference_attentions(layer, x)
    assert {k for k, v in got.items() if v is not None} == set(want)
    params = [x] + list(layer.attention.parameters())
    loss_got = loss_want = 0
    for key, value in want.items():
        torch.testing.assert_close(got[key], value)
        cot = torch.randn_like(value)
        loss_got = loss_got + (got[key] * cot).sum()
        loss_want = loss_want + (value * cot).sum()
    for g, w in zip(torch.autograd.grad(loss_got, params),
                    torch.autograd.grad(loss_want, params)):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize('name', ['ODConv_4x', 'DyNetConv', 'DynamicConv'])
def test_triton_layer_matches_oracle(name):
    # the layer forced to 'triton': fused attention, fused conv, both ways
    from oracle import reference_layer_forward
    layer = build_fused(name)
    x = torch.randn(3, 150, 5, 5, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    ref = reference_layer_forward(layer, x)
    torch.testing.assert_close(out, ref)
    params = [x] + list(layer.parameters())
    cot = torch.randn_like(out)
    for g, w in zip(torch.autograd.grad(out, params, cot),
                    torch.autograd.grad(ref, params, cot)):
        torch.testing.assert_close(g, w)


def test_fused_attention_refuses_what_it_cannot_run():
    from dynconv_mm.execution.triton_attention import (Head,
                                                       fused_attention_mlp)
    pooled = torch.randn(2, 8, dtype=torch.float64)
    trunk = torch.randn(4, 8, dtype=torch.float64)
    tau = torch.tensor(1.0)
    head = Head(torch.randn(3, 4, dtype=torch.float64),
                torch.zeros(3, dtype=torch.float64), 'tanh')
    with pytest.raises(ValueError, match="activation 'tanh'"):
        fused_attention_mlp(pooled, trunk, None, tau, [head])
    with pytest.raises(ValueError, match='1 to 4 heads, got 0'):
        fused_attention_mlp(pooled, trunk, None, tau, [])
