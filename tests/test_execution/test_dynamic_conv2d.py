"""dynamic_conv2d against the slow per-sample oracle, every method."""
import pytest
import torch

from dynconv_mm.execution import (ConvAttentions, dynamic_conv2d,
                                  select_method)
from oracle import reference_dynamic_conv2d

# (batch, c_in, c_out, kernel, stride, padding, dilation, groups, hw)
GEOMETRIES = {
    'plain3x3': (3, 4, 6, (3, 3), 1, 1, 1, 1, (7, 7)),
    'stride2': (2, 4, 6, (3, 3), 2, 1, 1, 1, (9, 8)),
    'dilation2': (2, 4, 4, (3, 3), 1, 2, 2, 1, (8, 9)),
    'groups2': (3, 4, 6, (3, 3), 1, 1, 1, 2, (6, 5)),
    'depthwise': (2, 4, 4, (3, 3), 1, 1, 1, 4, (6, 6)),
    '1x1': (3, 5, 3, (1, 1), 1, 0, 1, 1, (5, 7)),
    'nonsquare_kernel': (2, 3, 4, (1, 3), 1, (0, 1), 1, 1, (5, 6)),
    'batch1': (1, 4, 6, (3, 3), 2, 1, 1, 1, (7, 10)),
}
# which attentions are present, and the kernel attention layout
ATTENTIONS = {
    'kernel_bk': dict(kernel='bk'),
    'kernel_bok': dict(kernel='bok'),
    'omni': dict(kernel='bk', spatial=True, input=True, output=True),
    'channels_only': dict(input=True, output=True),
}


def make_case(geometry, attention_kinds, num_kernels, with_bias, seed=0):
    batch, c_in, c_out, ks, stride, padding, dilation, groups, hw = \
        GEOMETRIES[geometry]
    if 'kernel' not in attention_kinds:
        num_kernels = 1
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g,
                           dtype=torch.float64).requires_grad_()

    def prob(*shape):
        return torch.rand(*shape, generator=g,
                          dtype=torch.float64).requires_grad_()

    x = rand(batch, c_in, *hw)
    weight = rand(num_kernels, c_out, c_in // groups, *ks)
    bias = rand(num_kernels, c_out) if with_bias else None
    att = {}
    kind = attention_kinds.get('kernel')
    if kind == 'bk':
        att['kernel'] = prob(batch, num_kernels)
    elif kind == 'bok':
        att['kernel'] = prob(batch, c_out, num_kernels)
    if attention_kinds.get('spatial'):
        att['spatial'] = prob(batch, *ks)
    if attention_kinds.get('input'):
        att['input'] = prob(batch, c_in)
    if attention_kinds.get('output'):
        att['output'] = prob(batch, c_out)
    conv = dict(stride=stride, padding=padding, dilation=dilation,
                groups=groups)
    return x, weight, bias, att, conv


def grads(out, tensors, seed=1):
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                      dtype=out.dtype)
    return torch.autograd.grad(out, tensors, cot)


@pytest.mark.parametrize('geometry', GEOMETRIES)
@pytest.mark.parametrize('attention', ATTENTIONS)
@pytest.mark.parametrize('num_kernels', [1, 3])
@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('method', ['batch_folded', 'kernel_branches'])
def test_matches_oracle(geometry, attention, num_kernels, with_bias, method):
    kinds = ATTENTIONS[attention]
    if method == 'kernel_branches' and kinds.get('spatial'):
        pytest.skip('kernel_branches cannot apply a spatial attention')
    x, weight, bias, att, conv = make_case(geometry, kinds, num_kernels,
                                           with_bias)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method=method, **conv)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    tensors = [x, weight] + ([bias] if bias is not None else []) + list(
        att.values())
    for got, want in zip(grads(out, tensors), grads(ref, tensors)):
        torch.testing.assert_close(got, want)


def test_kernel_branches_refuses_spatial_attention():
    x, weight, bias, att, conv = make_case('plain3x3', ATTENTIONS['omni'], 2,
                                           False)
    with pytest.raises(ValueError, match='spatial'):
        dynamic_conv2d(x, weight, ConvAttentions(**att),
                       method='kernel_branches', **conv)


def test_unknown_method_named():
    x, weight, bias, att, conv = make_case('1x1', ATTENTIONS['kernel_bk'], 2,
                                           False)
    with pytest.raises(ValueError, match="'im2col'"):
        dynamic_conv2d(x, weight, ConvAttentions(**att), method='im2col',
                       **conv)


@pytest.mark.parametrize('bad', ['kernel', 'spatial', 'input', 'output'])
def test_attention_shape_mismatch_named(bad):
    x, weight, bias, att, conv = make_case('plain3x3', ATTENTIONS['omni'], 2,
                                           False)
    att[bad] = att[bad][:, :-1]
    with pytest.raises(ValueError, match=f'{bad} attention'):
        dynamic_conv2d(x, weight, ConvAttentions(**att), **conv)


def test_bank_without_kernel_attention_refused():
    x, weight, _, _, conv = make_case('plain3x3', ATTENTIONS['kernel_bk'], 2,
                                      False)
    with pytest.raises(ValueError, match='kernel attention'):
        dynamic_conv2d(x, weight, ConvAttentions(), **conv)


def test_select_method():
    x, weight, _, att, _ = make_case('plain3x3', ATTENTIONS['omni'], 3, False)
    assert select_method(x, weight, ConvAttentions(**att)) == 'batch_folded'
    x, weight, _, att, _ = make_case('plain3x3', ATTENTIONS['channels_only'],
                                     3, False)
    assert weight.shape[0] == 1
    assert select_method(x, weight,
                         ConvAttentions(**att)) == 'kernel_branches'


def test_samples_are_independent():
    """A sample's output must not depend on the rest of its batch."""
    x, weight, bias, att, conv = make_case('groups2', ATTENTIONS['omni'], 3,
                                           True)
    full = dynamic_conv2d(x, weight, ConvAttentions(**att), bias, **conv)
    one = dynamic_conv2d(x[1:2], weight,
                         ConvAttentions(**{k: v[1:2]
                                           for k, v in att.items()}), bias,
                         **conv)
    torch.testing.assert_close(full[1:2], one)
