"""Every CPU formulation on random shapes, in float32, against the oracle.

The generated grids of ``test_dynamic_conv2d.py`` cross each geometry with
each set of attentions on small float64 tensors, which the compiled CPU
ops never take; the float32 checks run them on chosen shapes. Here the
combinations the grids leave out are drawn from a fixed seed: channels
wide enough for the compiled GEMMs' rows, odd maps (tails of register
tiles), strides, dilations, ``'same'`` padding, groups and depthwise
layers, one to six kernels, each paper's attentions, batches of 1 to 5,
with and without autograd. Forward and every gradient are compared with
the per-sample ``F.conv2d`` oracle in float64.
"""
import random
from typing import Dict, List, NamedTuple, Optional, Tuple

import pytest
import torch

from dynconv_mm.execution import ConvAttentions, dynamic_conv2d
from oracle import reference_dynamic_conv2d
from test_dynamic_conv2d import CPU_FORMULATIONS

ATTENTION_NAMES = ('kernel', 'spatial', 'input', 'output')
CASES = 60
# Relative to the oracle's largest magnitude: float32 rows of up to a few
# thousand products. A dropped bias or a uniform kernel attention is off by
# a tenth or more.
TOLERANCE = 1e-4


class Case(NamedTuple):
    layer: str  # 'DynamicConv', 'ODConv' or 'DyNet'
    batch: int
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, int]
    stride: int
    padding: object  # int or 'same'
    dilation: int
    groups: int
    num_kernels: int
    size: Tuple[int, int]
    bias: bool
    attentions: Tuple[str, ...]
    grad: bool


def draw_case(rng: random.Random) -> Case:
    """One random call that every CPU formulation can run (but
    ``kernel_branches`` with a spatial attention)."""
    wide = rng.random() < 0.5
    in_channels = rng.choice([64, 128, 256, 300]) if wide else \
        rng.randint(1, 24)
    out_channels = rng.choice([16, 33, 64]) if wide else rng.randint(1, 24)
    groups = rng.choice([1, 1, 1, 2, 4, 'depthwise'])
    if groups == 'depthwise':
        groups, out_channels = in_channels, in_channels
    elif in_channels % groups or out_channels % groups:
        groups = 1
    kh = rng.choice([1, 3, 3, 5])
    kw = kh if rng.random() < 0.8 else rng.choice([1, 3])
    stride, dilation = rng.choice([1, 1, 2]), rng.choice([1, 1, 2])
    padding = rng.choice([0, 1, (kh // 2) * dilation])
    if stride == 1 and rng.random() < 0.15:
        padding = 'same'
    pad = 0 if padding == 'same' else padding
    least = [max(1, (k - 1) * dilation + 1 - 2 * pad) for k in (kh, kw)]
    size = tuple(rng.randint(lo, 15 if wide else 19) for lo in least)
    layer = rng.choice(['DynamicConv', 'ODConv', 'DyNet'])
    num_kernels = rng.choice([1, 2, 4, 6])
    if layer == 'DynamicConv':
        num_kernels = max(num_kernels, 2)
    names = ['kernel'] if num_kernels > 1 else []
    if layer == 'ODConv':
        names.append('input')
        if rng.random() < 0.8:
            names.append('output')
        if (kh, kw) != (1, 1) and rng.random() < 0.8:
            names.append('spatial')
    return Case(layer, rng.choice([1, 1, 2, 3, 5]), in_channels,
                out_channels, (kh, kw), stride, padding, dilation, groups,
                num_kernels, size, rng.random() < 0.5,
                tuple(n for n in ATTENTION_NAMES if n in names),
                rng.random() < 0.6)


def case_tensors(case: Case, seed: int) -> Tuple[
        torch.Tensor, torch.Tensor, Optional[torch.Tensor],
        Dict[str, torch.Tensor]]:
    """The input, bank, bias and attentions of ``case``, float32."""
    gen = torch.Generator().manual_seed(seed)
    batch, k = case.batch, case.num_kernels
    rows = case.in_channels // case.groups * case.kernel_size[0] * \
        case.kernel_size[1]
    x = torch.randn(batch, case.in_channels, *case.size, generator=gen)
    weight = torch.randn(k, case.out_channels,
                         case.in_channels // case.groups,
                         *case.kernel_size, generator=gen) / rows ** 0.5
    bias = torch.randn(k, case.out_channels, generator=gen) \
        if case.bias else None
    shapes = {'kernel': (batch, case.out_channels, k) if case.layer == 'DyNet'
              else (batch, k),
              'spatial': (batch, *case.kernel_size),
              'input': (batch, case.in_channels),
              'output': (batch, case.out_channels)}
    attentions = {}
    for name in case.attentions:
        logits = torch.randn(shapes[name], generator=gen)
        attentions[name] = (logits.softmax(-1) if name == 'kernel'
                            and case.layer != 'DyNet' else logits.sigmoid())
    return x, weight, bias, attentions


def _leaves(tensors: List[Optional[torch.Tensor]], dtype: torch.dtype,
            grad: bool) -> List[Optional[torch.Tensor]]:
    return [None if t is None else
            t.detach().to(dtype).requires_grad_(grad) for t in tensors]


SEEDED = [(index, draw_case(random.Random(index))) for index in range(CASES)]


def test_cases_cover_the_compiled_shapes_and_the_rest():
    """The draw reaches what it is for: wide rows, depthwise and grouped
    layers, every kernel count, both grad modes, batch 1 and batches."""
    cases = [case for _, case in SEEDED]
    assert any(c.in_channels // c.groups * c.kernel_size[0]
               * c.kernel_size[1] >= 256 for c in cases)
    assert any(c.groups == c.in_channels > 1 for c in cases)
    assert any(1 < c.groups < c.in_channels for c in cases)
    assert {c.num_kernels for c in cases} == {1, 2, 4, 6}
    assert {c.grad for c in cases} == {True, False}
    assert {c.layer for c in cases} == {'DynamicConv', 'ODConv', 'DyNet'}
    assert any(c.batch == 1 and not c.grad for c in cases)
    assert any('spatial' in c.attentions for c in cases)
    assert any(c.padding == 'same' for c in cases)


@pytest.mark.parametrize('index,case', SEEDED,
                         ids=[f'case{i}' for i, _ in SEEDED])
def test_random_call_matches_oracle(index, case):
    x, weight, bias, attentions = case_tensors(case, index)
    names = list(attentions)
    conv = dict(stride=case.stride, padding=case.padding,
                dilation=case.dilation, groups=case.groups)
    ref_leaves = _leaves([x, weight, bias, *attentions.values()],
                         torch.float64, case.grad)
    ref_x, ref_w, ref_b = ref_leaves[:3]
    ref = reference_dynamic_conv2d(ref_x, ref_w, bias=ref_b,
                                   **dict(zip(names, ref_leaves[3:])),
                                   **conv)
    scale = ref.abs().max().item()
    cotangent = torch.randn(ref.shape, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(index))
    wanted = [t for t in ref_leaves if t is not None]
    ref_grads = (torch.autograd.grad(ref, wanted, cotangent)
                 if case.grad else [])
    methods = ['auto'] + [m for m in CPU_FORMULATIONS if not (
        m == 'kernel_branches' and 'spatial' in names)]
    for method in methods:
        leaves = _leaves([x, weight, bias, *attentions.values()],
                         torch.float32, case.grad)
        with torch.set_grad_enabled(case.grad):
            out = dynamic_conv2d(leaves[0], leaves[1],
                                 ConvAttentions(**dict(zip(names,
                                                           leaves[3:]))),
                                 leaves[2], method=method, **conv)
        error = (out.double() - ref.detach()).abs().max().item()
        assert error <= TOLERANCE * scale, (method, 'output', error, scale)
        if not case.grad:
            continue
        grads = torch.autograd.grad(out, [t for t in leaves if t is not None],
                                    cotangent.float())
        for position, (got, expected) in enumerate(zip(grads, ref_grads)):
            error = (got.double() - expected).abs().max().item()
            bound = TOLERANCE * expected.abs().max().item()
            assert error <= bound, (method, 'gradient', position, error)
