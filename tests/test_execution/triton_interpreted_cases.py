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
