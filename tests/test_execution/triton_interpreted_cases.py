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


def test_triton_empty_batch():
    x, weight, bias, att, conv = make_case('stride2', 'odconv_4x', True,
                                           batch=0)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='triton', **conv)
    assert out.shape == (0, 6, 5, 4)
    out.sum().backward()
    assert not weight.grad.any()
