"""dynamic_conv2d against the slow per-sample oracle, every formulation.

The grid is generated, not crossed: each case is a distinct (geometry,
attentions, formulation, bias) combination that the formulation can run,
so nothing is skipped and nothing is repeated. All in float64, with the
gradients of the input, the bank, every attention and the bias.
"""
import importlib
import itertools

import pytest
import torch

from dynconv_mm.execution import (FORMULATIONS, METHODS, ConvAttentions,
                                  dynamic_conv2d, select_method)
from dynconv_mm.execution.attentions import output_size
from dynconv_mm.execution import attentions, cpu_ops, per_sample_kernels
from dynconv_mm.execution.per_sample_kernels import aggregation_plan
from dynconv_mm.execution.selection import gpu_preference
from oracle import reference_dynamic_conv2d

# (batch, c_in, c_out, kernel, stride, padding, dilation, groups, hw)
GEOMETRIES = {
    'plain3x3': (3, 4, 6, (3, 3), 1, 1, 1, 1, (7, 7)),
    'stride2': (2, 4, 6, (3, 3), 2, 1, 1, 1, (9, 8)),
    'dilation2': (2, 4, 4, (3, 3), 1, 2, 2, 1, (8, 9)),
    'groups2': (3, 4, 6, (3, 3), 1, 1, 1, 2, (6, 5)),
    'depthwise': (2, 4, 4, (3, 3), 1, 1, 1, 4, (6, 6)),
    '1x1': (3, 5, 3, (1, 1), 1, 0, 1, 1, (5, 7)),
    '1x1_stride2': (2, 5, 3, (1, 1), 2, 0, 1, 1, (5, 7)),
    'nonsquare_kernel': (2, 3, 4, (1, 3), 1, (0, 1), 1, 1, (5, 6)),
    'same_even_kernel': (2, 3, 4, (2, 4), 1, 'same', 1, 1, (5, 6)),
    'valid': (2, 3, 4, (3, 3), (1, 2), 'valid', 1, 1, (6, 7)),
    'batch1': (1, 4, 6, (3, 3), 2, 1, 1, 1, (7, 10)),
    # kernel larger than the activations: 'aggregated' keeps the channel
    # and filter attentions on the activations here
    'small_map': (2, 6, 8, (3, 3), 1, 1, 1, 1, (3, 2)),
}
# which attentions are present (the layer they stand for) and K
ATTENTIONS = {
    'dynamic_conv': (dict(kernel='bk'), 3),
    'dynet': (dict(kernel='bok'), 3),
    'odconv_4x': (dict(kernel='bk', spatial=True, input=True, output=True),
                  3),
    'odconv_1x': (dict(spatial=True, input=True, output=True), 1),
    'channels_only': (dict(input=True, output=True), 1),
    'single_kernel_attention': (dict(kernel='bk'), 1),
}


# the fused Triton kernel runs on CUDA only; test_triton_conv2d.py checks it
# on the CPU in Triton's interpreter
CPU_FORMULATIONS = tuple(m for m in FORMULATIONS if m != 'triton')


def runs(method, attention):
    return method != 'triton' and not (
        method == 'kernel_branches'
        and ATTENTIONS[attention][0].get('spatial'))


CASES = [
    pytest.param(g, a, m, b, id=f'{g}-{a}-{m}-{"bias" if b else "nobias"}')
    for g, a, m, b in itertools.product(GEOMETRIES, ATTENTIONS,
                                        CPU_FORMULATIONS, (False, True))
    if runs(m, a)
]


def make_case(geometry, attention, with_bias, seed=0, batch=None):
    b, c_in, c_out, ks, stride, padding, dilation, groups, hw = \
        GEOMETRIES[geometry]
    batch = b if batch is None else batch
    kinds, num_kernels = ATTENTIONS[attention]
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
    kind = kinds.get('kernel')
    if kind == 'bk':
        att['kernel'] = prob(batch, num_kernels)
    elif kind == 'bok':
        att['kernel'] = prob(batch, c_out, num_kernels)
    if kinds.get('spatial'):
        att['spatial'] = prob(batch, *ks)
    if kinds.get('input'):
        att['input'] = prob(batch, c_in)
    if kinds.get('output'):
        att['output'] = prob(batch, c_out)
    conv = dict(stride=stride, padding=padding, dilation=dilation,
                groups=groups)
    return x, weight, bias, att, conv


def inputs_of(x, weight, bias, att):
    return [x, weight] + ([bias] if bias is not None else []) + list(
        att.values())


def grads(out, tensors, seed=1):
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                      dtype=out.dtype)
    return torch.autograd.grad(out, tensors, cot)


def test_grid_is_distinct_and_complete():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    spatial = [a for a, (k, _) in ATTENTIONS.items() if k.get('spatial')]
    expected = len(GEOMETRIES) * 2 * (
        len(ATTENTIONS) * len(CPU_FORMULATIONS) - len(spatial))
    assert len(CASES) == expected


@pytest.mark.filterwarnings('ignore:Using padding=.same. with even kernel')
@pytest.mark.parametrize('geometry,attention,method,with_bias', CASES)
def test_matches_oracle(geometry, attention, method, with_bias):
    x, weight, bias, att, conv = make_case(geometry, attention, with_bias)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method=method, **conv)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    tensors = inputs_of(x, weight, bias, att)
    for got, want in zip(grads(out, tensors), grads(ref, tensors)):
        torch.testing.assert_close(got, want)


@pytest.mark.filterwarnings('ignore:Using padding=.same. with even kernel')
@pytest.mark.parametrize('geometry', list(GEOMETRIES))
@pytest.mark.parametrize('attention,in_place', [
    (a, p) for a in ATTENTIONS for p in (True, False)
    # the mixing rule only matters where there is a kernel attention
    if p or 'kernel' in ATTENTIONS[a][0]
])
@pytest.mark.parametrize('method', ['aggregated', 'batch_folded'])
def test_one_sample_inference_matches_oracle(geometry, attention, method,
                                             in_place, monkeypatch):
    # Batch-1 inference forms its one kernel with as few ops as it can:
    # mixed in place, kernel by kernel, with the spatial and channel
    # factors riding along, or (on Intel CPUs and GPUs) by a matrix product
    # scaled in place; a single kernel as a scaled copy of the bank's
    # (never the bank itself scaled). Training does none of this.
    monkeypatch.setattr(per_sample_kernels, 'mixes_in_place',
                        lambda device: in_place)
    x, weight, bias, att, conv = make_case(geometry, attention, True,
                                           batch=1)
    bank = weight.detach().clone()
    with torch.no_grad():
        out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                             method=method, **conv)
        ref = reference_dynamic_conv2d(x, bank, bias=bias, **att, **conv)
    torch.testing.assert_close(out, ref)
    assert torch.equal(weight, bank)


@pytest.mark.parametrize('attention', list(ATTENTIONS))
def test_one_sample_inference_with_a_strided_bank(attention):
    """The batch-1 path forms its kernel from a bank that is not
    contiguous (a transposed view) as from any other."""
    x, weight, bias, att, conv = make_case('groups2', attention, True,
                                           batch=1)
    strided = weight.detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous() or strided.shape[0] == 1
    with torch.no_grad():
        out = dynamic_conv2d(x, strided, ConvAttentions(**att), bias,
                             method='aggregated', **conv)
        ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    torch.testing.assert_close(out, ref)


class ConvSpy:
    """Replaces ``torch.nn.functional.conv2d`` (which every module calls
    as ``F.conv2d``) and counts its calls."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.conv2d = torch.nn.functional.conv2d
        monkeypatch.setattr(torch.nn.functional, 'conv2d', self)

    def __call__(self, *args):
        self.calls += 1
        return self.conv2d(*args)


# changes of the call after which a 1x1 convolution is no product
GEOMETRY_CHANGES = {
    'stride 2': dict(stride=2),
    'padding 1': dict(padding=1),
    'two groups': dict(groups=2),
    '3x3 kernel': dict(kernel=3, padding=1),
    'float64': dict(dtype=torch.float64),
    'channels_last': dict(channels_last=True),
}
POINTWISE_CHANGES = {
    'none': {},
    'batch 2': dict(batch=2),
    'autograd': dict(grad=True),
    **GEOMETRY_CHANGES,
    'AMD CPU': dict(vendor='AuthenticAMD'),
    # the input below holds 6 * 5 * 7 = 210 elements
    'AMD CPU, input over its limit': dict(vendor='AuthenticAMD',
                                          amd_limit=209),
    'AMD CPU with AVX-512': dict(vendor='AuthenticAMD',
                                 capability='AVX512'),
    'another CPU': dict(vendor='CentaurHauls'),
    'unknown CPU': dict(vendor=''),
    'autocast': dict(autocast=True),
}
# changes after which the call is still one matrix product
POINTWISE_PRODUCTS = ('none', 'AMD CPU')


@pytest.mark.parametrize('change', list(POINTWISE_CHANGES))
@pytest.mark.parametrize('with_bias', [False, True])
def test_pointwise_matrix_product_rule(change, with_bias, monkeypatch):
    """A batch-1 float32 1x1 convolution without autograd on an Intel CPU,
    or on an AVX2 AMD CPU up to a size of input, is one matrix product; any
    other call is ``F.conv2d``. Either way the result is the
    convolution's."""
    options = dict(batch=1, grad=False, stride=1, padding=0, groups=1,
                   kernel=1, dtype=torch.float32, channels_last=False,
                   vendor='GenuineIntel', autocast=False, amd_limit=210,
                   capability='AVX2')
    options.update(POINTWISE_CHANGES[change])
    monkeypatch.setattr(attentions, 'CPU_VENDOR', options['vendor'])
    monkeypatch.setattr(attentions, 'CPU_CAPABILITY', options['capability'])
    monkeypatch.setattr(attentions, 'AMD_POINTWISE_PRODUCT_MAX_INPUT',
                        options['amd_limit'])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(options['batch'], 6, 5, 7, generator=g,
                    dtype=options['dtype'])
    if options['channels_last']:
        x = x.to(memory_format=torch.channels_last)
    kernel = torch.randn(4, 6 // options['groups'], options['kernel'],
                         options['kernel'], generator=g,
                         dtype=options['dtype'])
    bias = (torch.randn(4, generator=g, dtype=options['dtype'])
            if with_bias else None)
    conv = (options['stride'], options['padding'], 1, options['groups'])
    with torch.set_grad_enabled(options['grad']):
        x.requires_grad_(options['grad'])
        with torch.autocast('cpu', enabled=options['autocast']):
            ref = torch.nn.functional.conv2d(x, kernel, bias, *conv)
            spy = ConvSpy(monkeypatch)
            out = attentions.shared_kernel_conv2d(x, kernel, bias, *conv)
    assert spy.calls == (0 if change in POINTWISE_PRODUCTS else 1)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize('geometry,method,attention', [
    (g, m, a) for g, methods in (
        ('1x1', ('aggregated', 'batch_folded', 'kernel_branches', 'im2col')),
        ('plain3x3', ('im2col', )), ('stride2', ('im2col', )))
    for m in methods for a in ATTENTIONS if runs(m, a)
])
def test_pointwise_batch1_inference_matches_oracle(geometry, method,
                                                   attention, monkeypatch):
    """On an Intel CPU a batch-1 float32 1x1 convolution at inference is
    one matrix product, in every formulation that convolves one sample
    with one kernel: a 1x1 layer, or ``im2col``'s bank over the columns of
    any kernel. Against the oracle, with a bias mixed in or added after
    the filter attention."""
    monkeypatch.setattr(attentions, 'CPU_VENDOR', 'GenuineIntel')
    x, weight, bias, att, conv = make_case(geometry, attention, True,
                                           batch=1)
    x, weight, bias = (t.detach().float() for t in (x, weight, bias))
    att = {k: v.detach().float() for k, v in att.items()}
    with torch.no_grad():
        ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
        spy = ConvSpy(monkeypatch)
        out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                             method=method, **conv)
    assert spy.calls == 0
    torch.testing.assert_close(out, ref)


BATCH_PRODUCT_CHANGES = {
    'none': {},
    **GEOMETRY_CHANGES,
    'AMD CPU': dict(vendor='AuthenticAMD'),
    'autocast': dict(autocast=True),
    'compiling': dict(compiling=True),
}


@pytest.mark.parametrize('change', list(BATCH_PRODUCT_CHANGES))
def test_pointwise_batch_product_rule(change, monkeypatch):
    """Per-sample 1x1 kernels over a batch (stride 1, no padding, one
    group), float32 contiguous, on an Intel CPU, eager, without autocast:
    one batched matrix product; any other call the grouped
    convolution."""
    options = dict(stride=1, padding=0, groups=1, kernel=1,
                   dtype=torch.float32, channels_last=False,
                   vendor='GenuineIntel', autocast=False, compiling=False)
    options.update(BATCH_PRODUCT_CHANGES[change])
    monkeypatch.setattr(attentions, 'CPU_VENDOR', options['vendor'])
    monkeypatch.setattr(torch.compiler, 'is_compiling',
                        lambda: options['compiling'])
    x = torch.randn(3, 6, 5, 7, dtype=options['dtype'])
    if options['channels_last']:
        x = x.to(memory_format=torch.channels_last)
    k = options['kernel']
    kernels = torch.randn(3, 4, 6 // options['groups'], k, k,
                          dtype=options['dtype'])
    with torch.autocast('cpu', enabled=options['autocast']):
        wins = attentions.pointwise_batch_product_wins(
            x, kernels, options['stride'], options['padding'],
            options['groups'])
    assert wins is (change == 'none')


@pytest.mark.parametrize('attention', list(ATTENTIONS))
@pytest.mark.parametrize('method', ['aggregated', 'batch_folded'])
def test_pointwise_batch_product_matches_oracle(method, attention,
                                                monkeypatch):
    """Per-sample 1x1 kernels over a batch run as one batched matrix
    product on an Intel CPU (no convolution at all): against the oracle,
    with a bias, gradients included (float32; the oracle in float64)."""
    monkeypatch.setattr(attentions, 'CPU_VENDOR', 'GenuineIntel')
    x, weight, bias, att, conv = make_case('1x1', attention, True)
    tensors = inputs_of(x, weight, bias, att)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    want = grads(ref, tensors)
    x32, weight32, bias32 = (t.detach().float().requires_grad_()
                             for t in (x, weight, bias))
    att32 = {k: v.detach().float().requires_grad_() for k, v in att.items()}
    spy = ConvSpy(monkeypatch)
    out = dynamic_conv2d(x32, weight32, ConvAttentions(**att32), bias32,
                         method=method, **conv)
    # the oracle's cotangent, in float32
    cot = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1),
                      dtype=ref.dtype).float()
    got = torch.autograd.grad(out, inputs_of(x32, weight32, bias32, att32),
                              cot)
    assert spy.calls == 0
    torch.testing.assert_close(out, ref.float())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.float())


def test_batch1_mixing_rule(monkeypatch):
    """In place on CPUs other than Intel's (MKL's slow paths there), one
    matrix product on Intel CPUs and on GPUs, in place under compile."""
    for vendor, in_place in (('AuthenticAMD', True), ('GenuineIntel', False),
                             ('', True)):
        monkeypatch.setattr(attentions, 'CPU_VENDOR', vendor)
        assert per_sample_kernels.mixes_in_place(
            torch.device('cpu')) is in_place
        assert not per_sample_kernels.mixes_in_place(torch.device('cuda'))
    # compiled: in place everywhere (the compiler fuses it into one pass)
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    for device in ('cpu', 'cuda'):
        assert per_sample_kernels.mixes_in_place(torch.device(device))


@pytest.mark.parametrize('method,attention', [
    (m, a) for m, a in itertools.product(
        METHODS, ['odconv_4x', 'dynet', 'odconv_1x']) if runs(m, a)
])
def test_empty_batch(method, attention):
    """Zero samples (a mask head with no RoIs): right shape, and backward
    gives every input a zero gradient of its own shape."""
    x, weight, bias, att, conv = make_case('stride2', attention, True,
                                           batch=0)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method=method, **conv)
    assert out.shape == (0, 6, 5, 4)
    tensors = inputs_of(x, weight, bias, att)
    out.sum().backward()
    for tensor in tensors:
        assert tensor.grad is not None and tensor.grad.shape == tensor.shape
        assert not tensor.grad.any()


@pytest.mark.parametrize('method', CPU_FORMULATIONS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast(method, dtype):
    """Under CPU autocast every formulation runs and stays close to the
    float64 oracle (at half precision's tolerance)."""
    attention = 'dynet' if method == 'kernel_branches' else 'odconv_4x'
    x, weight, bias, att, conv = make_case('groups2', attention, True)
    x, weight, bias = (t.detach().float() for t in (x, weight, bias))
    att = {k: v.detach().float() for k, v in att.items()}
    with torch.autocast('cpu', dtype=dtype):
        out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                             method=method, **conv)
    ref = reference_dynamic_conv2d(x.double(), weight.double(),
                                   bias=bias.double(), **conv, **{
                                       k: v.double()
                                       for k, v in att.items()
                                   })
    torch.testing.assert_close(out.double(), ref, atol=0.1, rtol=0.05)


def test_aggregation_plans_covered():
    """The grid runs 'aggregated' with each attention both folded into
    the kernel and left on the activations."""
    seen = set()
    for geometry in GEOMETRIES:
        for attention in ('odconv_1x', 'odconv_4x', 'channels_only'):
            x, weight, _, att, conv = make_case(geometry, attention, False)
            out = output_size(x, weight.shape[3:], conv['stride'],
                              conv['padding'], conv['dilation'])
            plan = aggregation_plan(x, weight, ConvAttentions(**att), out)
            seen.add((attention, plan.input, plan.output))
    for attention in ('odconv_1x', 'odconv_4x'):  # input folds with spatial
        assert {(attention, True, True), (attention, True, False)} <= seen
    assert {('channels_only', i, o)
            for i in (True, False) for o in (True, False)} <= seen


def test_kernel_branches_refuses_spatial_attention():
    x, weight, bias, att, conv = make_case('plain3x3', 'odconv_4x', False)
    with pytest.raises(ValueError, match='spatial'):
        dynamic_conv2d(x, weight, ConvAttentions(**att),
                       method='kernel_branches', **conv)


@pytest.mark.parametrize('bad', ['winograd', '', ['im2col', 'fft'], [],
                                 ('auto', ), 3])
def test_bad_method_named(bad):
    x, weight, bias, att, conv = make_case('1x1', 'dynamic_conv', False)
    with pytest.raises(ValueError, match=r'option method=.*is invalid'):
        dynamic_conv2d(x, weight, ConvAttentions(**att), method=bad, **conv)


@pytest.mark.parametrize('bad', ['kernel', 'spatial', 'input', 'output'])
def test_attention_shape_mismatch_named(bad):
    x, weight, bias, att, conv = make_case('plain3x3', 'odconv_4x', False)
    att[bad] = att[bad][:, :-1]
    with pytest.raises(ValueError, match=f'{bad} attention'):
        dynamic_conv2d(x, weight, ConvAttentions(**att), **conv)


def test_bank_without_kernel_attention_refused():
    x, weight, _, _, conv = make_case('plain3x3', 'dynamic_conv', False)
    with pytest.raises(ValueError, match='kernel attention'):
        dynamic_conv2d(x, weight, ConvAttentions(), **conv)


@pytest.mark.parametrize('attention', list(ATTENTIONS))
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('grad', [False, True])
def test_select_method_picks_a_valid_formulation(attention, batch, grad):
    x, weight, _, att, _ = make_case('plain3x3', attention, False,
                                     batch=batch)
    with torch.set_grad_enabled(grad):
        method = select_method(x, weight, ConvAttentions(**att))
    assert method in CPU_FORMULATIONS and runs(method, attention)


def rule_case(attention, batch, hw, grad, kernel_size=3, num_kernels=4,
              channels=8):
    kinds, _ = ATTENTIONS[attention]
    num_kernels = num_kernels if 'kernel' in kinds else 1
    x = torch.randn(batch, channels, hw, hw, requires_grad=grad)
    weight = torch.randn(num_kernels, channels, channels, kernel_size,
                         kernel_size)
    shapes = dict(kernel=(num_kernels, ) if kinds.get('kernel') == 'bk' else
                  (channels, num_kernels),
                  spatial=(kernel_size, kernel_size),
                  input=(channels, ), output=(channels, ))
    att = ConvAttentions(**{k: torch.rand(batch, *shapes[k])
                            for k in kinds if kernel_size > 1
                            or k != 'spatial'})
    return x, weight, att


@pytest.mark.parametrize('attention,batch,hw,grad,expected,num_kernels', [
    ('odconv_1x', 1, 14, False, 'aggregated', 4),  # batch-1 inference
    ('odconv_4x', 1, 7, False, 'aggregated', 4),
    ('odconv_1x', 1, 7, False, 'im2col', 1),  # ... but a large static kernel
    ('odconv_1x', 1, 7, True, 'im2col', 1),  # batch-1 training: small map
    ('odconv_1x', 8, 56, True, 'aggregated', 4),  # large maps: per-sample
    ('dynet', 8, 14, True, 'aggregated', 4),
    ('odconv_1x', 8, 7, True, 'im2col', 1),  # one kernel, small map: static
    ('channels_only', 8, 7, True, 'kernel_branches', 4),
    # K > 1 kernels on a small map: formed a tile at a time
    ('odconv_4x', 8, 7, False, 'tiled_gemm', 4),
    ('odconv_4x', 8, 7, True, 'tiled_gemm', 4),
    ('dynamic_conv', 8, 7, True, 'tiled_gemm', 4),
    ('dynet', 8, 7, True, 'tiled_gemm', 6),
    ('dynamic_conv', 8, 7, True, 'tiled_gemm', 8),
    ('odconv_4x', 8, 14, True, 'aggregated', 8),  # 3x3 on 14x14: whole
    ('dynet', 8, 14, True, 'aggregated', 6),
])
def test_cpu_rule(attention, batch, hw, grad, expected, num_kernels,
                  monkeypatch):
    """The measured CPU rule of selection.py (docs/benchmarks.md), with
    freed memory kept (what importing dynconv_mm sets up on glibc), on a
    CPU where no kernel is mixed in a GEMM's tiles at batch 1 (that
    exception: test_cpu_sample_conv.py)."""
    monkeypatch.setattr(cpu_ops, '_AVX512', False)
    x, weight, att = rule_case(attention, batch, hw, grad,
                               num_kernels=num_kernels)
    with torch.set_grad_enabled(grad):
        assert select_method(x, weight, att, stride=1,
                             padding=1) == expected


@pytest.mark.parametrize('channels,hw,expected', [
    (256, 14, 'im2col'), (256, 16, 'im2col'), (256, 18, 'aggregated'),
    (512, 14, 'im2col'), (128, 10, 'im2col'), (128, 14, 'aggregated'),
    (64, 14, 'aggregated'), (16, 7, 'im2col')])
@pytest.mark.parametrize('batch', [2, 8])
def test_cpu_rule_single_kernel_by_channels(channels, hw, expected, batch):
    """A single 3x3 kernel runs from the static bank on maps of at most as
    many pixels as it has output channels (7x7 maps whatever the
    channels), per-sample kernels on larger ones."""
    x, weight, att = rule_case('odconv_1x', batch, hw, True,
                               channels=channels)
    assert select_method(x, weight, att, stride=1,
                         padding=1) == expected


@pytest.mark.parametrize('product,hw,expected', [
    (False, 7, 'kernel_branches'), (False, 28, 'kernel_branches'),
    (False, 56, 'aggregated'),
    (True, 7, 'kernel_branches'), (True, 14, 'aggregated'),
    (True, 28, 'aggregated'), (True, 56, 'aggregated')])
def test_cpu_rule_single_1x1_kernel(product, hw, expected, monkeypatch):
    """A single 1x1 kernel stays static up to 28x28 outputs; where
    per-sample 1x1 kernels run as one batched product (an Intel CPU), only
    on small maps (and, as a 3x3 one, on maps of at most its output
    channels in pixels: 8 channels here)."""
    monkeypatch.setattr(attentions, 'CPU_VENDOR',
                        'GenuineIntel' if product else 'AuthenticAMD')
    x, weight, att = rule_case('odconv_1x', 8, hw, True, kernel_size=1)
    assert select_method(x, weight, att) == expected


@pytest.mark.parametrize('product,hw,c_in,c_out,expected', [
    (True, 14, 96, 576, 'aggregated'), (True, 10, 16, 128, 'aggregated'),
    (True, 14, 256, 1024, 'kernel_branches'),  # a kernel > its activations
    (True, 14, 1024, 256, 'kernel_branches'),
    (True, 7, 96, 576, 'kernel_branches'), (False, 14, 96, 576,
                                            'kernel_branches')])
def test_cpu_rule_single_1x1_kernel_wider_than_its_map(
        product, hw, c_in, c_out, expected, monkeypatch):
    """A single 1x1 kernel with more output channels than its map has
    pixels: per-sample kernels where they run as a batched product (from
    10x10 maps up) and the kernel is no larger than the input and output
    it would otherwise scale, the static bank otherwise."""
    monkeypatch.setattr(attentions, 'CPU_VENDOR',
                        'GenuineIntel' if product else 'AuthenticAMD')
    x = torch.randn(2, c_in, hw, hw, requires_grad=True)
    weight = torch.randn(1, c_out, c_in, 1, 1)
    att = ConvAttentions(input=torch.rand(2, c_in),
                         output=torch.rand(2, c_out))
    assert select_method(x, weight, att) == expected


@pytest.mark.parametrize('attention', ['odconv_4x', 'dynamic_conv', 'dynet'])
@pytest.mark.parametrize('product,hw,expected', [
    (False, 7, 'tiled_gemm'), (False, 14, 'tiled_gemm'),
    (False, 28, 'aggregated'),
    (True, 7, 'tiled_gemm'), (True, 14, 'aggregated'),
    (True, 28, 'aggregated')])
def test_cpu_rule_1x1_kernels(attention, product, hw, expected,
                              monkeypatch):
    """Four 1x1 kernels are formed a tile at a time up to 14x14 outputs;
    where per-sample 1x1 kernels run as one batched product (an Intel
    CPU), only on small maps."""
    monkeypatch.setattr(attentions, 'CPU_VENDOR',
                        'GenuineIntel' if product else 'AuthenticAMD')
    x, weight, att = rule_case(attention, 8, hw, True, kernel_size=1)
    assert select_method(x, weight, att) == expected


def test_cpu_rule_compiled_does_not_tile(monkeypatch):
    """Under torch.compile the partitioner would keep tiled_gemm's kernel
    tiles for backward: per-sample kernels instead."""
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    x, weight, att = rule_case('odconv_4x', 8, 7, True)
    assert select_method(x, weight, att, stride=1,
                         padding=1) == 'aggregated'


@pytest.mark.parametrize('attention,expected', [
    ('odconv_4x', 'im2col'), ('dynamic_conv', 'kernel_branches'),
    ('odconv_1x', 'im2col'), ('dynet', 'kernel_branches')])
def test_cpu_rule_without_kept_memory(attention, expected, monkeypatch):
    """Where malloc returns freed memory (opted out, or not glibc),
    per-sample kernels page-fault on every call: small maps use the static
    bank whatever K."""
    from dynconv_mm.execution import selection
    monkeypatch.setattr(selection, 'cpu_memory_state',
                        lambda: dict(applied=False, reason='test'))
    x, weight, att = rule_case(attention, 8, 7, True, num_kernels=6)
    assert select_method(x, weight, att, stride=1, padding=1) == expected


@pytest.mark.parametrize('attention', ['odconv_1x', 'odconv_4x',
                                       'dynamic_conv', 'dynet'])
@pytest.mark.parametrize('batch,grad', [(1, False), (1, True), (8, True),
                                        (8, False)])
@pytest.mark.parametrize('hw', [4, 7, 14, 56])
@pytest.mark.parametrize('groups', [2, 8])
@pytest.mark.parametrize('memory_kept', [True, False])
def test_cpu_rule_grouped(attention, batch, grad, hw, groups, memory_kept,
                          monkeypatch):
    """Grouped and depthwise (8 groups of 1 channel here) convolutions run
    per-sample kernels on the CPU, whatever the map, batch and K (the
    dense rule's static bank or tiles cost them 4-13x a static conv)."""
    from dynconv_mm.execution import selection
    monkeypatch.setattr(cpu_ops, '_AVX512', False)
    if not memory_kept:
        monkeypatch.setattr(selection, 'cpu_memory_state',
                            lambda: dict(applied=False, reason='test'))
    x, weight, att = rule_case(attention, batch, hw, grad)
    weight = weight[:, :, :8 // groups]
    with torch.set_grad_enabled(grad):
        assert select_method(x, weight, att, stride=1,
                             padding=1) == 'aggregated'


def gpu_rule_case(attention, kernel_size, c_in, c_out):
    """A bank and attentions of one ResNet-50 layer type, for the GPU rule
    (which reads shapes only, so no GPU is needed)."""
    kinds, _ = ATTENTIONS[attention]
    num_kernels = 6 if attention == 'dynet' else (
        4 if 'kernel' in kinds else 1)
    weight = torch.empty(num_kernels, c_out, c_in, kernel_size, kernel_size)
    spatial = kinds.get('spatial') and kernel_size > 1
    return weight, ConvAttentions(
        spatial=torch.rand(2, kernel_size, kernel_size) if spatial else None)


def runnable_order(order, attentions):
    """The order as select_method walks it: kernel_branches cannot apply a
    spatial attention."""
    return [m for m in order if not (m == 'kernel_branches'
                                     and attentions.spatial is not None)]


@pytest.mark.parametrize('attention,kernel_size,c_in,c_out,hw,expected', [
    # no spatial attention: the static bank K times as wide
    ('dynamic_conv', 3, 64, 64, 56, 'kernel_branches'),
    ('dynet', 3, 256, 256, 14, 'kernel_branches'),
    ('dynamic_conv', 1, 256, 64, 56, 'kernel_branches'),  # narrowing 1x1
    ('odconv_4x', 1, 1024, 256, 14, 'kernel_branches'),
    ('odconv_1x', 1, 64, 256, 56, 'kernel_branches'),  # one kernel
    # widening 1x1 with K > 1: K times its output would be written
    ('dynamic_conv', 1, 64, 256, 56, 'triton'),
    ('odconv_4x', 1, 128, 512, 28, 'triton'),
    ('dynet', 1, 256, 1024, 14, 'triton'),
    # spatial attention: fused above 28x28, unfolded input from 28x28 down
    ('odconv_1x', 3, 64, 64, 56, 'triton'),
    ('odconv_4x', 3, 64, 64, 56, 'triton'),
    ('odconv_4x', 3, 128, 128, 28, 'im2col'),
    ('odconv_1x', 3, 128, 128, 28, 'triton'),  # one kernel: fused at 28x28
    ('odconv_1x', 3, 256, 256, 14, 'im2col'),
    ('odconv_1x', 3, 512, 512, 7, 'im2col'),
])
def test_gpu_rule(attention, kernel_size, c_in, c_out, hw, expected):
    """The GPU rule of selection.py, measured per layer on an H200 at bf16
    batch 64 (docs/benchmarks.md): every formulation ranked, the measured
    winner first, and one that can run this layer."""
    weight, att = gpu_rule_case(attention, kernel_size, c_in, c_out)
    order = gpu_preference(weight, att, c_in, hw * hw)
    assert sorted(order) == sorted(FORMULATIONS)
    assert runnable_order(order, att)[0] == expected


@pytest.mark.parametrize('attention,kernel_size,c_in,c_out,hw,expected', [
    ('dynamic_conv', 1, 64, 256, 56, 'tiled_gemm'),
    ('odconv_4x', 3, 64, 64, 56, 'im2col'),
])
def test_gpu_rule_without_triton(attention, kernel_size, c_in, c_out, hw,
                                 expected):
    """Where Triton is missing, the next measured choice runs."""
    weight, att = gpu_rule_case(attention, kernel_size, c_in, c_out)
    order = gpu_preference(weight, att, c_in, hw * hw)
    assert [m for m in runnable_order(order, att) if m != 'triton'
            ][0] == expected


@pytest.mark.parametrize('attention,expected', [
    ('dynamic_conv', 'kernel_branches'), ('odconv_4x', 'im2col')])
def test_gpu_rule_compiled_keeps_the_static_bank(attention, expected):
    """Under torch.compile neither the fused kernel nor the tiles lead."""
    weight, att = gpu_rule_case(attention, 1 if attention ==
                                'dynamic_conv' else 3, 64, 256)
    order = gpu_preference(weight, att, 64, 56 * 56, compiling=True)
    assert runnable_order(order, att)[0] == expected
    assert order.index('triton') > order.index('batch_folded')


@pytest.mark.parametrize('attention,kernel_size', [('dynamic_conv', 1),
                                                   ('odconv_1x', 3)])
def test_gpu_rule_grouped_keeps_the_static_bank(attention, kernel_size):
    """Grouped and depthwise layers (not measured on a GPU) never start
    with the fused kernel, whose tiles would idle on few channels."""
    weight, att = gpu_rule_case(attention, kernel_size, 64, 256)
    grouped = weight[:, :, :16]  # 4 groups of 16 input channels
    order = runnable_order(gpu_preference(grouped, att, 64, 56 * 56), att)
    assert order[0] in ('kernel_branches', 'im2col')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_select_method_follows_the_gpu_rule():
    weight, att = gpu_rule_case('dynamic_conv', 1, 64, 256)
    x = torch.randn(2, 64, 56, 56, device='cuda', requires_grad=True)
    method = select_method(x, weight.cuda(), att)
    assert method in ('triton', 'tiled_gemm')


def test_allowed_methods_restrict_auto():
    x, weight, bias, att, conv = make_case('plain3x3', 'odconv_4x', True)
    attentions = ConvAttentions(**att)
    for only in CPU_FORMULATIONS:
        if runs(only, 'odconv_4x'):
            assert select_method(x, weight, attentions, (only, )) == only
    with pytest.raises(ValueError, match='spatial'):
        select_method(x, weight, attentions, ('kernel_branches', ))
    with pytest.raises(ValueError, match='CUDA'):  # no GPU, no interpreter
        select_method(x, weight, attentions, ('triton', ))
    # a list given as the method lets auto choose among those only
    out = dynamic_conv2d(x, weight, attentions, bias,
                         method=['im2col', 'kernel_branches'], **conv)
    ref = reference_dynamic_conv2d(x, weight, bias=bias, **att, **conv)
    torch.testing.assert_close(out, ref)


class FormulationSpy:
    """Records which formulation each call of dynamic_conv2d runs."""

    def __init__(self, monkeypatch):
        entry = importlib.import_module('dynconv_mm.execution.dynamic_conv2d')
        self.ran = []
        for name, run in list(entry.FUNCTIONS.items()):
            monkeypatch.setitem(entry.FUNCTIONS, name,
                                self._recording(name, run))
        # fresh decisions for this test, and none of its own left behind
        monkeypatch.setattr(entry, '_INFERENCE_CALLS', {})

    def _recording(self, name, run):
        def recorded(*args, **options):
            self.ran.append(name)
            return run(*args, **options)
        return recorded


@pytest.mark.parametrize('attention', list(ATTENTIONS))
def test_batch1_inference_decided_once_per_signature(attention, monkeypatch):
    """Batch-1 inference decides its checks and formulation once per call
    signature: the same formulation as select_method, again on the second
    call, and a new decision where the signature changes (a 7x7 map runs a
    single kernel from the static bank, a 14x14 one per sample; on a CPU
    that would mix it in a GEMM's tiles, test_cpu_sample_conv.py, both per
    sample: that is turned off here)."""
    monkeypatch.setattr(cpu_ops, '_AVX512', False)
    spy = FormulationSpy(monkeypatch)
    planned = []  # aggregated_conv2d's own plans: the decided one is bound
    monkeypatch.setattr(per_sample_kernels, 'call_aggregation_plan',
                        lambda *args: planned.append(args))
    with torch.no_grad():
        for hw in (14, 7, 14, 7):
            x, weight, att = rule_case(attention, 1, hw, False,
                                       num_kernels=1)
            expected = select_method(x, weight, att, stride=1, padding=1)
            out = dynamic_conv2d(x, weight, att, stride=1, padding=1)
            assert spy.ran[-1] == expected
            ref = reference_dynamic_conv2d(x, weight, **att._asdict(),
                                           stride=1, padding=1)
            torch.testing.assert_close(out, ref)
    assert spy.ran[0] == 'aggregated'
    assert spy.ran[1] in ('kernel_branches', 'im2col')
    assert spy.ran[:2] == spy.ran[2:]
    assert not planned


def test_batch1_inference_checks_every_bad_call(monkeypatch):
    """A bad call is never remembered: it fails every time, naming what is
    wrong, also after good calls of its signature."""
    FormulationSpy(monkeypatch)
    x, weight, _, att, conv = make_case('batch1', 'odconv_4x', False)
    with torch.no_grad():
        dynamic_conv2d(x, weight, ConvAttentions(**att), **conv)
        for _ in range(2):
            with pytest.raises(ValueError, match='input attention'):
                dynamic_conv2d(x, weight, ConvAttentions(
                    **dict(att, input=att['input'][:, :-1])), **conv)
            with pytest.raises(ValueError, match=r'option method=.*invalid'):
                dynamic_conv2d(x, weight, ConvAttentions(**att),
                               method='winograd', **conv)


def test_batch1_inference_decisions_are_bounded(monkeypatch):
    """Each new input size adds a decision (a detector meets many): the
    store is emptied at its bound rather than grown. Unhashable arguments
    (a list as the stride) are decided on every call."""
    entry = importlib.import_module('dynconv_mm.execution.dynamic_conv2d')
    FormulationSpy(monkeypatch)
    monkeypatch.setattr(entry, 'MAX_INFERENCE_CALLS', 3)
    with torch.no_grad():
        for hw in range(5, 12):
            x, weight, att = rule_case('odconv_4x', 1, hw, False)
            dynamic_conv2d(x, weight, att, stride=1, padding=1)
            assert 1 <= len(entry._INFERENCE_CALLS) <= 3
        x, weight, att = rule_case('odconv_4x', 1, 9, False)
        out = dynamic_conv2d(x, weight, att, stride=[1, 1], padding=[1, 1])
    torch.testing.assert_close(out, reference_dynamic_conv2d(
        x, weight, **att._asdict(), stride=1, padding=1))


@pytest.mark.parametrize('method', CPU_FORMULATIONS)
def test_samples_are_independent(method):
    """A sample's output must not depend on the rest of its batch."""
    attention = 'dynet' if method == 'kernel_branches' else 'odconv_4x'
    x, weight, bias, att, conv = make_case('groups2', attention, True)
    full = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                          method=method, **conv)
    one = dynamic_conv2d(x[1:2], weight,
                         ConvAttentions(**{k: v[1:2]
                                           for k, v in att.items()}), bias,
                         method=method, **conv)
    torch.testing.assert_close(full[1:2], one)
