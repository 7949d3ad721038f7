"""The compiled CPU op that runs a batch-1 sample's convolution with its
kernel mixed inside the GEMM's tiles, never formed
(``dynconv_mm/execution/csrc/sample_conv_cpu.cpp``, AVX-512): against the
slow oracle, directly and through ``dynamic_conv2d`` at batch-1
inference, where it must not run, and the shapes it is chosen for."""
import importlib
import itertools

import pytest
import torch
import torch.nn.functional as F

import dynconv_mm.execution.cpu_ops as cpu_ops
from dynconv_mm.execution import ConvAttentions, dynamic_conv2d
from dynconv_mm.execution.selection import select_method
from cpu_ops_spy import count_cpu_op_calls
from float32_layer_check import check_float32_layer_against_oracle
from oracle import reference_dynamic_conv2d

# (c_in, c_out, kernel, input size, stride, padding, dilation): rows of the
# kernel (c_in*kh*kw) shorter than 16 and past the op's block of 512
# columns (a batch's 192); output channels past a register tile (6 or 8),
# a unit and a chunk (24; over a batch, chunks past each other in one
# thread's rows); pixels in one register (<16), past one tile (64) and past
# several; a row's last 1-4 pixels by dot products (49, 20 and 1 pixels),
# past one block too
GEOMETRIES = {
    '3x3': (6, 10, (3, 3), (7, 7), 1, (1, 1), 1),
    '1x1': (12, 7, (1, 1), (6, 5), 1, (0, 0), 1),
    'long rows': (70, 30, (3, 3), (5, 6), 1, (1, 1), 1),
    'long rows, 7x7': (70, 8, (3, 3), (7, 7), 1, (1, 1), 1),
    'many rows, 7x7': (24, 100, (3, 3), (7, 7), 1, (1, 1), 1),
    'many pixels': (9, 13, (1, 1), (11, 13), 1, (0, 0), 1),
    'many pixels and rows': (6, 40, (3, 3), (9, 10), 1, (1, 1), 1),
    'stride 2': (8, 25, (3, 3), (9, 8), 2, (1, 1), 1),
    'dilated, unpadded': (5, 6, (3, 3), (9, 9), 1, (0, 0), 2),
    'nonsquare': (4, 6, (3, 1), (5, 4), 1, (1, 0), 1),
    'one pixel': (16, 4, (1, 1), (1, 1), 1, (0, 0), 1),
}
# the module (the package's name of the same is its function)
tiled_gemm_conv2d = importlib.import_module(
    'dynconv_mm.execution.tiled_gemm_conv2d')

MIXINGS = {'single': 1, 'per_kernel': 3, 'per_channel': 4}


@pytest.fixture
def offered_op(monkeypatch):
    """Counts the compiled ops' calls, where the CPU runs this one."""
    spy = count_cpu_op_calls(monkeypatch)
    if not cpu_ops._AVX512:
        pytest.skip('this CPU has no AVX-512: the op is not offered')
    return spy


def case(geometry, mixing, spatial=True, channel=True, filter_=True,
         seed=0):
    c_in, c_out, kernel_size, size, *_ = GEOMETRIES[geometry]
    num_kernels = MIXINGS[mixing]
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_kernels, c_out, c_in, *kernel_size, generator=g)

    def rand(*shape):  # attentions in (0.2, 1.2): far from uniform
        return torch.rand(*shape, generator=g) + 0.2

    attentions = ConvAttentions(
        kernel={'single': None, 'per_kernel': rand(1, num_kernels),
                'per_channel': rand(1, c_out, num_kernels)}[mixing],
        spatial=rand(1, *kernel_size) if spatial else None,
        input=rand(1, c_in) if channel else None,
        output=rand(1, c_out) if filter_ else None)
    x = torch.randn(1, c_in, *size, generator=g)
    return x, weight, attentions


def conv_arguments(geometry):
    return GEOMETRIES[geometry][4:]


def assert_close(got, want):
    """Float32 sums of a few hundred products in another order than the
    oracle's: a tolerance on the output's scale."""
    torch.testing.assert_close(got, want, rtol=1e-5,
                               atol=1e-5 * want.abs().max().item())


CASES = [(geometry, mixing, *flags)
         for geometry, mixing in itertools.product(GEOMETRIES, MIXINGS)
         for flags in itertools.product([False, True], repeat=3)
         if mixing != 'single' or any(flags)]


@pytest.mark.parametrize('geometry, mixing, spatial, channel, filter_', CASES)
def test_op_matches_oracle(offered_op, geometry, mixing, spatial, channel,
                           filter_):
    x, weight, attentions = case(geometry, mixing, spatial, channel, filter_)
    stride, padding, dilation = conv_arguments(geometry)
    bias = torch.randn(weight.shape[1])
    got = cpu_ops.cpu_sample_conv(x, weight, attentions, bias, stride,
                                  padding, dilation)
    want = reference_dynamic_conv2d(
        x, weight, stride=stride, padding=padding, dilation=dilation,
        **attentions._asdict()) + bias.view(1, -1, 1, 1)
    assert_close(got, want)
    assert offered_op.calls['sample_conv'] == 1


def test_op_without_a_bias(offered_op):
    x, weight, attentions = case('long rows', 'per_kernel')
    stride, padding, dilation = conv_arguments('long rows')
    got = cpu_ops.cpu_sample_conv(x, weight, attentions, None, stride,
                                  padding, dilation)
    assert_close(got, reference_dynamic_conv2d(
        x, weight, stride=stride, padding=padding, dilation=dilation,
        **attentions._asdict()))


@pytest.mark.parametrize('kernels, per_row', [(1, False), (3, False),
                                              (4, True), (11, False)])
@pytest.mark.parametrize('geometry', ['3x3', 'long rows', 'stride 2',
                                      'many rows, 7x7'])
def test_op_over_a_batch_matches_oracle(offered_op, geometry, kernels,
                                        per_row):
    """Five samples, each with its own attentions: with more than one
    kernel the first four samples' rows of the kernel are mixed together
    (past eight kernels in two passes over the bank rows), the fifth's
    alone."""
    c_in, c_out, kernel_size, size, stride, padding, dilation = GEOMETRIES[
        geometry]
    g = torch.Generator().manual_seed(2)
    batch = 5
    weight = torch.randn(kernels, c_out, c_in, *kernel_size, generator=g)

    def rand(*shape):
        return torch.rand(*shape, generator=g) + 0.2

    attentions = dict(
        kernel=rand(batch, c_out, kernels) if per_row else rand(batch,
                                                                kernels),
        spatial=rand(batch, *kernel_size), input=rand(batch, c_in),
        output=rand(batch, c_out))
    bias = torch.randn(c_out, generator=g)
    x = torch.randn(batch, c_in, *size, generator=g)
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding,
                    stride=stride)
    got = cpu_ops._CPU_OPS.sample_conv(
        cols, weight, attentions['kernel'], attentions['input'],
        attentions['spatial'], attentions['output'], bias)
    want = reference_dynamic_conv2d(
        x, weight, stride=stride, padding=padding, dilation=dilation,
        **attentions) + bias.view(1, -1, 1, 1)
    assert_close(got.view(want.shape), want)


@pytest.mark.parametrize('mixing', MIXINGS)
@pytest.mark.parametrize('geometry', ['3x3', 'many pixels', 'stride 2'])
def test_batch1_inference_runs_it_where_it_wins(offered_op, monkeypatch,
                                                geometry, mixing):
    """Through ``dynamic_conv2d``: every attention and the mixed bias in
    the op (none on the activations), no kernel formed."""
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    x, weight, attentions = case(geometry, mixing)
    stride, padding, dilation = conv_arguments(geometry)
    bias = torch.randn(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        got = dynamic_conv2d(x, weight, attentions, bias, stride, padding,
                             dilation, 1, 'aggregated')
    assert_close(got, reference_dynamic_conv2d(
        x, weight, bias=bias, stride=stride, padding=padding,
        dilation=dilation, **attentions._asdict()))
    assert offered_op.calls['sample_conv'] == 1
    assert offered_op.calls['sample_kernel'] == 0
    _, _, mixed, channel, spatial, filter_, _ = offered_op.last_arguments[
        'sample_conv']
    assert mixed is attentions.kernel and spatial is attentions.spatial
    assert channel is attentions.input and filter_ is attentions.output


def _grad_of_input(x, weight, attentions):
    return x.requires_grad_(), weight, attentions


def _grad_of_bank(x, weight, attentions):
    return x, weight.requires_grad_(), attentions


def _grouped(x, weight, attentions):
    return x, weight, attentions  # run with groups=2 below


def _float64(x, weight, attentions):
    return x.double(), weight.double(), ConvAttentions(
        *(None if a is None else a.double() for a in attentions))


def _channels_last(x, weight, attentions):
    return x.to(memory_format=torch.channels_last), weight, attentions


@pytest.mark.parametrize('change', [_grad_of_input, _grad_of_bank, _grouped,
                                    _float64, _channels_last])
def test_where_it_must_not_run(offered_op, monkeypatch, change):
    """Autograd on the input or the bank, groups, float64 and a
    non-contiguous input keep the kernel formed (or PyTorch)."""
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    x, weight, attentions = change(*case('3x3', 'per_kernel'))
    groups = 1
    if change is _grouped:
        weight = weight[:, :, :3].contiguous()
        groups = 2
    stride, padding, dilation = conv_arguments('3x3')
    got = dynamic_conv2d(x, weight, attentions, None, stride, padding,
                         dilation, groups, 'aggregated')
    want = reference_dynamic_conv2d(
        x.detach(), weight.detach(), stride=stride, padding=padding,
        dilation=dilation, groups=groups, **attentions._asdict())
    torch.testing.assert_close(got.detach(), want)
    assert offered_op.calls['sample_conv'] == 0
    if change in (_grad_of_input, _grad_of_bank):
        got.sum().backward()  # still differentiable


def test_suspended_ops_keep_pytorch(offered_op, monkeypatch):
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    x, weight, attentions = case('3x3', 'per_kernel')
    with torch.no_grad(), cpu_ops.cpu_ops_suspended():
        dynamic_conv2d(x, weight, attentions, None, 1, 1, 1, 1, 'aggregated')
    assert offered_op.calls['sample_conv'] == 0


@pytest.mark.parametrize('c_in, c_out, kernel, size, wins', [
    (512, 512, 3, 7, True),      # every layer on a 7x7 map
    (2048, 512, 1, 7, True),
    (256, 256, 3, 14, True),     # a 3x3 kernel up to 14x14 ...
    (256, 256, 3, 17, False),    # ... not past it
    (1024, 256, 1, 14, True),    # a 1x1 layer whose block of input fits
    (64, 256, 1, 56, True),
    (256, 64, 1, 56, False),     # ... and where it does not
    (512, 128, 1, 28, False),
])
def test_the_shapes_it_is_chosen_for(monkeypatch, c_in, c_out, kernel, size,
                                     wins):
    monkeypatch.setattr(cpu_ops, '_AVX512', True)
    monkeypatch.setattr(cpu_ops, '_CPU_OPS', cpu_ops._CPU_OPS or object())
    x = torch.empty(1, c_in, size, size)
    weight = torch.empty(4, c_out, c_in, kernel, kernel)
    padding = kernel // 2
    for intel in (True, False):  # measured on Intel CPUs only
        monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: intel)
        assert cpu_ops.cpu_sample_conv_wins(
            x, weight, None, 1, padding, 1, 1) == (wins and intel)
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    assert not cpu_ops.cpu_sample_conv_wins(x, weight, None, 1, 'same', 1, 1)
    monkeypatch.setattr(cpu_ops, '_AVX512', False)
    assert not cpu_ops.cpu_sample_conv_wins(x, weight, None, 1, padding, 1,
                                            1)


@pytest.mark.parametrize('change, message', [
    (dict(cols=torch.randn(1, 5, 49)), 'cols must be'),
    (dict(mixing=torch.randn(3)), 'mixing must be'),
    (dict(mixing=None), 'needs mixing coefficients'),
    (dict(channel=torch.randn(7)), 'channel must be'),
    (dict(spatial=torch.randn(4)), 'spatial must be'),
    (dict(filter=torch.randn(3)), 'filter must be'),
    (dict(bias=torch.randn(5, dtype=torch.float64)), 'bias must be'),
    (dict(bank=torch.randn(4, 6, 8, 3)), 'bank must be'),
])
def test_op_refuses_bad_arguments(offered_op, change, message):
    args = dict(cols=torch.randn(1, 8 * 9, 49), bank=torch.randn(4, 6, 8, 3, 3),
                mixing=torch.rand(4), channel=torch.rand(8),
                spatial=torch.rand(3, 3), filter=torch.rand(6),
                bias=torch.randn(6))
    args.update(change)
    with pytest.raises(RuntimeError, match=message):
        cpu_ops._CPU_OPS.sample_conv(*args.values())


@pytest.mark.parametrize('kernel, size', [(3, 7), (1, 7), (3, 9)])
def test_a_single_kernel_on_a_small_map_runs_per_sample_in_tiles(
        monkeypatch, kernel, size):
    """At batch-1 inference a single kernel on a small map runs from the
    static bank, unless the op would mix it in its tiles (on an Intel CPU
    with AVX-512: every map that small)."""
    monkeypatch.setattr(cpu_ops, '_CPU_OPS', cpu_ops._CPU_OPS or object())
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    x = torch.randn(1, 16, size, size)
    weight = torch.randn(1, 16, 16, kernel, kernel)
    attentions = ConvAttentions(
        spatial=torch.rand(1, kernel, kernel) if kernel > 1 else None,
        input=torch.rand(1, 16), output=torch.rand(1, 16))
    static = 'im2col' if kernel > 1 else 'kernel_branches'
    for avx512, expected in ((True, 'aggregated'), (False, static)):
        monkeypatch.setattr(cpu_ops, '_AVX512', avx512)
        with torch.no_grad():
            assert select_method(x, weight, attentions, stride=1,
                                 padding=kernel // 2) == expected


@pytest.mark.parametrize('geometry', ['plain3x3', 'stride2', '1x1', 'batch1'])
@pytest.mark.parametrize('attention', ['dynamic_conv', 'dynet', 'odconv_4x'])
def test_tiled_gemm_forward_runs_it_over_the_batch(offered_op, monkeypatch,
                                                   geometry, attention):
    """``tiled_gemm``'s forward by the op over the batch and its backward
    by the sample-GEMM ops in AVX-512 tiles, on an Intel CPU: output and
    every gradient against the float64 oracle."""
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    # the test layers' kernel rows are short: let the compiled ops take them
    monkeypatch.setattr(tiled_gemm_conv2d, 'COMPILED_GEMM_MIN_ROW', 1)

    def the_op_ran_forward():
        assert offered_op.calls['sample_conv'] == 1
        assert offered_op.calls['sample_gemm_forward'] == 0
        # both gradients by one op (the input's with the bank's)
        assert offered_op.calls['sample_gemm_input_grad'] == 0
        assert offered_op.calls['sample_gemm_backward'] == 1
        # (wide tiles: its last arguments are wide, huge_pages)
        assert offered_op.last_arguments['sample_gemm_backward'][-2] is True

    check_float32_layer_against_oracle(geometry, attention, 'tiled_gemm',
                                       the_op_ran_forward)


@pytest.mark.parametrize('geometry,avx512_min_row,compiled', [
    ('plain3x3', 1, True), ('1x1', 1, True),
    ('plain3x3', None, False),  # rows below the default bound
    ('groups2', 1, False)])
def test_shorter_rows_run_compiled_over_the_batch(offered_op, monkeypatch,
                                                  geometry, avx512_min_row,
                                                  compiled):
    """Where the forward runs over the batch in AVX-512 tiles (an Intel CPU,
    one group) the compiled ops take kernel rows from
    COMPILED_GEMM_MIN_ROW_AVX512 on small maps (the test layers' rows are
    shorter than its default: lowered here); with groups the rows must
    reach COMPILED_GEMM_MIN_ROW, else PyTorch runs them. Every output and
    gradient against the float64 oracle either way."""
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    if avx512_min_row is not None:
        monkeypatch.setattr(tiled_gemm_conv2d, 'COMPILED_GEMM_MIN_ROW_AVX512',
                            avx512_min_row)
    ops = ('sample_conv', 'sample_gemm_forward', 'sample_gemm_input_grad',
           'sample_gemm_backward')

    def the_expected_ops_ran():
        calls = {op: offered_op.calls[op] for op in ops}
        assert calls == ({'sample_conv': 1, 'sample_gemm_forward': 0,
                          'sample_gemm_input_grad': 0,
                          'sample_gemm_backward': 1} if compiled else
                         dict.fromkeys(ops, 0))

    check_float32_layer_against_oracle(geometry, 'dynet', 'tiled_gemm',
                                       the_expected_ops_ran)


def test_tiled_gemm_forward_keeps_the_avx2_gemm_for_groups(offered_op,
                                                           monkeypatch):
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: True)
    monkeypatch.setattr(tiled_gemm_conv2d, 'COMPILED_GEMM_MIN_ROW', 1)

    def the_avx2_gemm_ran():
        assert offered_op.calls['sample_conv'] == 0
        assert offered_op.calls['sample_gemm_forward'] == int(
            cpu_ops._avx2_fma_supported())

    check_float32_layer_against_oracle('groups2', 'dynamic_conv',
                                       'tiled_gemm', the_avx2_gemm_ran)
