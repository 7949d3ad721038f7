"""The compiled CPU op that forms a batch-1 sample's kernel in one pass
(``dynconv_mm/execution/csrc/sample_kernel_cpu.cpp``): against the slow
oracle's kernel, through ``dynamic_conv2d`` at batch-1 inference, where it
must not run, and its refusals of bad arguments."""
import itertools

import pytest
import torch

import dynconv_mm.execution.cpu_ops as cpu_ops
from dynconv_mm.execution import ConvAttentions, dynamic_conv2d
from cpu_ops_spy import count_cpu_op_calls, skip_without_avx2_fma
from oracle import per_sample_kernel, reference_dynamic_conv2d

# (c_in, c_out, kernel, groups)
GEOMETRIES = {
    '3x3': (6, 10, (3, 3), 1),
    '1x1': (12, 7, (1, 1), 1),
    'groups2': (8, 6, (3, 3), 2),
    'depthwise': (5, 5, (3, 3), 5),
    'nonsquare': (4, 6, (3, 1), 1),
    # rows of kernel (C_in/groups*kh*kw) the op mixes 8 at a time: shorter
    # than 8, and a multiple of 8
    'short rows': (3, 5, (1, 1), 1),
    'rows of 16': (16, 4, (1, 1), 1),
}
# the kernel attention: none (one kernel), one per kernel, or DyNet's per
# output channel
MIXINGS = {'single': 1, 'per_kernel': 3, 'per_channel': 4}


@pytest.fixture
def counting_ops(monkeypatch):
    return count_cpu_op_calls(monkeypatch)


@pytest.fixture
def offered_op(counting_ops, monkeypatch):
    """:func:`counting_ops` where the CPU runs the op (AVX2 and FMA), the
    kernel formed by it: never mixed in a GEMM's tiles instead
    (``cpu_sample_conv``, AVX-512: test_cpu_sample_conv.py)."""
    skip_without_avx2_fma('sample-kernel')
    monkeypatch.setattr(cpu_ops, '_AVX512', False)
    return counting_ops


def bank_and_attentions(geometry, mixing, spatial, channel, filter_):
    c_in, c_out, kernel_size, groups = GEOMETRIES[geometry]
    num_kernels = MIXINGS[mixing]
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(num_kernels, c_out, c_in // groups, *kernel_size,
                         generator=g)

    def rand(*shape):  # attentions in (0.2, 1.2): far from uniform
        return torch.rand(*shape, generator=g) + 0.2

    kernel = {'single': None, 'per_kernel': rand(1, num_kernels),
              'per_channel': rand(1, c_out, num_kernels)}[mixing]
    return weight, ConvAttentions(
        kernel=kernel, spatial=rand(1, *kernel_size) if spatial else None,
        input=rand(1, c_in) if channel else None,
        output=rand(1, c_out) if filter_ else None), groups


CASES = [(geometry, mixing, *flags)
         for geometry, mixing in itertools.product(GEOMETRIES, MIXINGS)
         for flags in itertools.product([False, True], repeat=3)
         if mixing != 'single' or any(flags)]


@pytest.mark.parametrize('geometry, mixing, spatial, channel, filter_', CASES)
def test_kernel_matches_oracle(offered_op, geometry, mixing, spatial,
                               channel, filter_):
    weight, attentions, groups = bank_and_attentions(geometry, mixing,
                                                     spatial, channel,
                                                     filter_)
    got = cpu_ops.cpu_sample_kernel(weight, attentions.kernel,
                                    attentions.input, attentions.spatial,
                                    attentions.output, groups)
    want = per_sample_kernel(weight, groups, 0, **attentions._asdict())
    torch.testing.assert_close(got, want)
    assert offered_op.calls['sample_kernel'] == 1


@pytest.mark.parametrize('method', ['aggregated', 'batch_folded', 'auto'])
@pytest.mark.parametrize('geometry', GEOMETRIES)
@pytest.mark.parametrize('mixing', MIXINGS)
def test_batch1_inference_through_the_op_matches_oracle(
        offered_op, method, geometry, mixing):
    weight, attentions, groups = bank_and_attentions(
        geometry, mixing, spatial=GEOMETRIES[geometry][2] != (1, 1),
        channel=mixing != 'per_channel', filter_=mixing != 'per_channel')
    bias = torch.randn(weight.shape[0], weight.shape[1])
    x = torch.randn(1, GEOMETRIES[geometry][0], 6, 5)
    padding = tuple(k // 2 for k in GEOMETRIES[geometry][2])
    with torch.no_grad():
        got = dynamic_conv2d(x, weight, attentions, bias, 1, padding, 1,
                             groups, method)
    want = reference_dynamic_conv2d(x, weight, bias=bias, padding=padding,
                                    groups=groups, **attentions._asdict())
    torch.testing.assert_close(got, want)
    if method == 'aggregated':  # folds the channel attention here
        assert offered_op.calls['sample_kernel'] == 1
    elif method == 'batch_folded':  # folds the kernel and spatial ones
        assert offered_op.calls['sample_kernel'] == int(
            mixing != 'single' or attentions.spatial is not None)


@pytest.mark.parametrize('mixing', MIXINGS)
def test_at_batch1_every_attention_rides_in_the_ops_mixing(offered_op,
                                                           mixing):
    """Where the op mixes kernels, the channel and filter attentions join
    its pass even where the plan would scale the activations (a 1x1 map,
    smaller than the kernel); a single kernel keeps the plan (the op would
    be a pass over it of its own)."""
    weight, attentions, groups = bank_and_attentions(
        '3x3', mixing, spatial=False, channel=mixing != 'per_channel',
        filter_=mixing != 'per_channel')
    x = torch.randn(1, GEOMETRIES['3x3'][0], 1, 1)
    with torch.no_grad():
        got = dynamic_conv2d(x, weight, attentions, None, 1, 1, 1, groups,
                             'aggregated')
    torch.testing.assert_close(got, reference_dynamic_conv2d(
        x, weight, padding=1, groups=groups, **attentions._asdict()))
    if mixing == 'single':  # nothing to form: the bank's own kernel
        assert offered_op.calls['sample_kernel'] == 0
        return
    _, mixed, channel, _, filter_, _ = offered_op.last_arguments[
        'sample_kernel']
    assert mixed is attentions.kernel
    assert channel is attentions.input and filter_ is attentions.output


def _recorded(weight, attentions):
    weight.requires_grad_()
    return weight, attentions


def _float64(weight, attentions):
    return weight.double(), ConvAttentions(
        *(None if a is None else a.double() for a in attentions))


def _strided_attention(weight, attentions):
    wide = torch.rand(1, 2 * attentions.input.shape[1]) + 0.2
    return weight, attentions._replace(input=wide[:, ::2])


CASES_IN_PYTORCH = {
    'autograd recorded': _recorded,
    'float64': _float64,
    'a strided attention': _strided_attention,
}


@pytest.mark.parametrize('case', CASES_IN_PYTORCH)
def test_where_the_op_does_not_apply_the_kernel_is_formed_in_pytorch(
        counting_ops, case):
    weight, attentions, groups = bank_and_attentions('3x3', 'per_kernel',
                                                     True, True, True)
    weight, attentions = CASES_IN_PYTORCH[case](weight, attentions)
    x = torch.randn(1, 6, 5, 5, dtype=weight.dtype)
    y = dynamic_conv2d(x, weight, attentions, None, 1, 1, 1, groups,
                       'aggregated')
    want = reference_dynamic_conv2d(x, weight.detach(), padding=1,
                                    **attentions._asdict())
    torch.testing.assert_close(y, want)
    assert counting_ops.calls['sample_kernel'] == 0


def test_without_avx2_and_fma_the_kernel_is_formed_in_pytorch(
        counting_ops, monkeypatch):
    monkeypatch.setattr(cpu_ops, '_avx2_fma_supported', lambda: False)
    weight, attentions, groups = bank_and_attentions('3x3', 'per_kernel',
                                                     True, True, True)
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        y = dynamic_conv2d(x, weight, attentions, None, 1, 1, 1, groups,
                           'aggregated')
    want = reference_dynamic_conv2d(x, weight, padding=1,
                                    **attentions._asdict())
    torch.testing.assert_close(y, want)
    assert counting_ops.calls['sample_kernel'] == 0


def test_a_counting_dispatch_mode_sees_pytorch_operators(counting_ops):
    from torch.utils.flop_counter import FlopCounterMode
    weight, attentions, groups = bank_and_attentions('3x3', 'per_kernel',
                                                     True, True, True)
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad(), FlopCounterMode(display=False):
        dynamic_conv2d(x, weight, attentions, None, 1, 1, 1, groups,
                       'aggregated')
    assert counting_ops.calls['sample_kernel'] == 0


def _op_arguments(**changes):
    args = dict(weight=torch.randn(3, 4, 2, 3, 3),
                mixing=torch.rand(1, 3), channel=torch.rand(1, 4),
                spatial=torch.rand(1, 3, 3), filter=torch.rand(1, 4),
                groups=2)
    args.update(changes)
    return args


@pytest.mark.parametrize('change, message', [
    (dict(weight=torch.randn(3, 4, 2, 3)), 'bank must be'),
    (dict(weight=torch.randn(3, 4, 2, 3, 3, dtype=torch.float64)),
     'bank must be'),
    (dict(mixing=torch.rand(1, 2)), 'mixing must be .* of 3 values'),
    (dict(mixing=None), 'a bank of 3 kernels needs mixing'),
    (dict(channel=torch.rand(1, 3)), 'channel must be .* of 4 values'),
    (dict(spatial=torch.rand(1, 3, 2)), 'spatial must be .* of 9 values'),
    (dict(filter=torch.rand(1, 4, dtype=torch.float64)), 'filter must be'),
    (dict(groups=3), 'groups=3 does not divide C_out=4'),
])
def test_the_op_names_the_bad_argument(offered_op, change, message):
    with pytest.raises(RuntimeError, match=message):
        cpu_ops.cpu_sample_kernel(**_op_arguments(**change))
