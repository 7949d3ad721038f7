"""The compiled unfold and fold of ``im2col`` and ``tiled_gemm``
(``dynconv_mm/execution/csrc/unfold_cpu.cpp``): the same bits as
``F.unfold`` and ``F.fold`` over geometries with padding, stride,
dilation and non-square kernels, the fold from columns of any strides,
in AVX-512 registers and in portable loops (the same bits from both);
with row scales (ODConv's channel x spatial attention), equal to
scaling in PyTorch and the scales' gradient against float64 products;
the layers that unfold, through them, against the slow oracle; where
they must not run; and their refusals of bad arguments."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import dynconv_mm.execution.cpu_ops as cpu_ops
from dynconv_mm.execution.im2col_conv2d import unfold
from cpu_ops_spy import count_cpu_op_calls
from float32_layer_check import check_float32_layer_against_oracle


@pytest.fixture
def counting_ops(monkeypatch):
    return count_cpu_op_calls(monkeypatch)


# (B, C, H, W, kernel_size, dilation, padding, stride)
GEOMETRIES = {
    '3x3': (2, 5, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1)),
    'no_padding': (1, 3, 6, 5, (3, 3), (1, 1), (0, 0), (1, 1)),
    'stride2': (3, 4, 9, 8, (3, 3), (1, 1), (1, 1), (2, 2)),
    'mixed': (2, 5, 9, 11, (3, 2), (2, 1), (2, 0), (2, 3)),
    'large_padding': (1, 2, 4, 4, (3, 3), (1, 1), (3, 2), (1, 1)),
    '1x1_strided': (3, 4, 6, 6, (1, 1), (1, 1), (2, 2), (2, 2)),
    'kernel_of_the_map': (2, 3, 5, 5, (5, 5), (1, 1), (0, 0), (1, 1)),
    'stride_past_padding': (2, 3, 5, 7, (2, 3), (1, 2), (1, 1), (3, 2)),
    # rows of more than one register of 16 (AVX-512), a row stride of 2
    'wide_rows': (2, 3, 5, 37, (3, 3), (1, 1), (1, 1), (1, 1)),
    'row_stride2': (2, 3, 9, 20, (3, 3), (1, 2), (1, 2), (2, 1)),
    # the fold of pixel-contiguous columns takes 16 channels and 16 taps at
    # a time: three blocks of channels, the last of 5; 25 and 35 taps
    'channel_blocks': (2, 37, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
    'taps_past_16': (2, 18, 7, 6, (5, 5), (1, 1), (2, 2), (1, 1)),
    'taps_strided': (1, 17, 9, 8, (5, 7), (1, 1), (2, 3), (2, 1)),
}


def geometry_case(name):
    batch, channels, height, width, *geometry = GEOMETRIES[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=g)
    cols = F.unfold(x, *geometry)
    grad = torch.randn(cols.shape, generator=g)
    return x, geometry, grad


@pytest.fixture(params=['avx512', 'portable'])
def unfold_rows_in(request, monkeypatch):
    """The unfold's rows, and the fold's pixel-contiguous columns, in
    AVX-512 registers (where this CPU has it) or in their portable loops."""
    if request.param == 'avx512' and not cpu_ops._AVX512:
        pytest.skip('this CPU has no AVX-512')
    if request.param == 'portable':
        monkeypatch.setattr(cpu_ops, '_AVX512', False)
    return request.param


@pytest.mark.parametrize('name', GEOMETRIES)
def test_unfold_equals_pytorch(counting_ops, unfold_rows_in, name):
    x, geometry, _ = geometry_case(name)
    assert torch.equal(cpu_ops.cpu_unfold_columns(x, *geometry),
                       F.unfold(x, *geometry))


@pytest.mark.parametrize('layout', ['contiguous', 'transposed', 'strided',
                                    'pixel_rows_strided'])
@pytest.mark.parametrize('name', GEOMETRIES)
def test_fold_equals_pytorch_from_any_strides(counting_ops, unfold_rows_in,
                                              name, layout):
    """Summed in col2im's order: the same bits, whatever the columns'
    layout (the sample GEMMs' input gradient is a transposed view)."""
    x, geometry, grad = geometry_case(name)
    if layout == 'transposed':
        grad = grad.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == 'strided':  # every other sample of a larger tensor
        grad = torch.stack([grad, torch.full_like(grad, float('nan'))],
                           1).flatten(0, 1)[::2]
    elif layout == 'pixel_rows_strided':  # transposed, rows apart, NaN past
        padded = torch.full((grad.shape[0], grad.shape[2],
                             grad.shape[1] + 7), float('nan'))
        padded[..., :grad.shape[1]] = grad.transpose(1, 2)
        grad = padded[..., :grad.shape[1]].transpose(1, 2)
    (got, ) = cpu_ops.cpu_fold_columns(grad, x.shape[2:], *geometry)
    assert torch.equal(got, F.fold(grad.contiguous(), x.shape[2:],
                                   *geometry))


def row_scales(x, geometry, seed=3):
    area = geometry[0][0] * geometry[0][1]
    return torch.rand(x.shape[0], x.shape[1], area,
                      generator=torch.Generator().manual_seed(seed)) + 0.5


def scaled(cols, rows):
    return (cols.unflatten(1, rows.shape[1:]) * rows[..., None]).flatten(1, 2)


@pytest.mark.parametrize('name', GEOMETRIES)
def test_unfold_scales_rows_as_pytorch_does(counting_ops, unfold_rows_in,
                                            name):
    x, geometry, _ = geometry_case(name)
    rows = row_scales(x, geometry)
    assert torch.equal(cpu_ops.cpu_unfold_columns(x, *geometry, rows),
                       scaled(F.unfold(x, *geometry), rows))


@pytest.mark.parametrize('layout', ['contiguous', 'transposed'])
@pytest.mark.parametrize('name', GEOMETRIES)
def test_fold_of_scaled_rows_and_their_gradient(counting_ops, unfold_rows_in,
                                                name, layout):
    """The input's gradient in PyTorch's bits (the scaled gradient folded);
    the scales' against float64 products of the gradient and the unfolded
    input."""
    x, geometry, grad = geometry_case(name)
    rows = row_scales(x, geometry)
    if layout == 'transposed':
        grad = grad.transpose(1, 2).contiguous().transpose(1, 2)
    grad_x, grad_rows = cpu_ops.cpu_fold_columns(grad, x.shape[2:],
                                                 *geometry, rows, x)
    assert torch.equal(grad_x, F.fold(scaled(grad, rows).contiguous(),
                                      x.shape[2:], *geometry))
    expected = (grad.double() * F.unfold(x.double(), *geometry)).unflatten(
        1, rows.shape[1:]).sum(-1)
    torch.testing.assert_close(grad_rows.double(), expected, rtol=1e-5,
                               atol=1e-5)
    # without the input, no scales' gradient
    assert len(cpu_ops.cpu_fold_columns(grad, x.shape[2:], *geometry,
                                        rows)) == 1


@pytest.mark.parametrize('layout', ['contiguous', 'transposed'])
@pytest.mark.parametrize('name', GEOMETRIES)
def test_fold_in_registers_sums_as_the_portable_loop(counting_ops, name,
                                                     layout, monkeypatch):
    """The AVX-512 fold adds the scales' gradient in the portable loop's
    order: the same bits from both, not only close ones."""
    if not cpu_ops._AVX512:
        pytest.skip('this CPU has no AVX-512')
    x, geometry, grad = geometry_case(name)
    if layout == 'transposed':
        grad = grad.transpose(1, 2).contiguous().transpose(1, 2)
    rows = row_scales(x, geometry)
    in_registers = cpu_ops.cpu_fold_columns(grad, x.shape[2:], *geometry,
                                            rows, x)
    monkeypatch.setattr(cpu_ops, '_AVX512', False)
    portable = cpu_ops.cpu_fold_columns(grad, x.shape[2:], *geometry, rows,
                                        x)
    assert all(torch.equal(a, b) for a, b in zip(in_registers, portable))


def test_scaled_unfold_gradients_by_the_fold_op(counting_ops):
    """Through autograd: one unfold, one fold, the scales' gradient summed
    over the channels they were expanded to (a spatial attention alone)."""
    x, geometry, grad = geometry_case('mixed')
    x.requires_grad_()
    spatial = torch.rand(x.shape[0], 1, geometry[0][0] * geometry[0][1],
                         requires_grad=True)
    rows = spatial.expand(-1, x.shape[1], -1)
    got = torch.autograd.grad(unfold(x, *geometry, rows), [x, spatial], grad)
    assert counting_ops.calls['unfold_columns'] == 1
    assert counting_ops.calls['fold_columns'] == 1
    x64, s64 = (t.detach().double().requires_grad_() for t in (x, spatial))
    expected = torch.autograd.grad(
        scaled(F.unfold(x64, *geometry), s64.expand(-1, x.shape[1], -1)),
        [x64, s64], grad.double())
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


def test_unfold_splits_over_threads_alike(counting_ops):
    x, geometry, grad = geometry_case('mixed')
    x = x.repeat(4, 8, 1, 1)  # enough channels for both threads
    grad = F.unfold(x, *geometry).normal_(generator=torch.Generator()
                                          .manual_seed(2))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            rows = row_scales(x, geometry)
            results.append((cpu_ops.cpu_unfold_columns(x, *geometry, rows),
                            *cpu_ops.cpu_fold_columns(grad, x.shape[2:],
                                                      *geometry, rows, x)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_unfold_gradient_by_the_fold_op(counting_ops):
    x, geometry, grad = geometry_case('stride_past_padding')
    x.requires_grad_()
    (got, ) = torch.autograd.grad(unfold(x, *geometry), [x], grad)
    assert counting_ops.calls['unfold_columns'] == 1
    assert counting_ops.calls['fold_columns'] == 1
    assert torch.equal(got, F.fold(grad, x.shape[2:], *geometry))


@pytest.mark.parametrize('scales', [False, True])
def test_unfold_second_derivative(counting_ops, scales):
    """create_graph: the fold runs as ``F.fold``, differentiable, and so
    does the scales' gradient."""
    x, geometry, grad = geometry_case('3x3')
    x.requires_grad_()
    rows = row_scales(x, geometry).requires_grad_() if scales else None
    leaves = [x] + ([rows] if scales else [])

    def second_derivatives(columns_of):
        firsts = torch.autograd.grad((columns_of(x, rows)**2 * grad).sum(),
                                     leaves, create_graph=True)
        calls = counting_ops.calls['fold_columns']
        # (not create_graph: this pass may run the op)
        return calls, firsts, torch.autograd.grad(
            sum(g.sum() for g in firsts), leaves)

    first_pass_folds, *got = second_derivatives(
        lambda x, r: unfold(x, *geometry, r))
    assert first_pass_folds == 0
    _, *expected = second_derivatives(
        lambda x, r: F.unfold(x, *geometry) if r is None else scaled(
            F.unfold(x, *geometry), r))
    for a, b in zip(sum(got, ()), sum(expected, ())):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('method', ['im2col', 'tiled_gemm'])
@pytest.mark.parametrize('geometry', ['plain3x3', 'stride2', 'groups2',
                                      'batch1'])
@pytest.mark.parametrize('attention', ['odconv_4x', 'odconv_1x'])
def test_layers_that_unfold_match_oracle(counting_ops, method, geometry,
                                         attention):
    """Forward and every gradient through the ops, against the per-sample
    ``F.conv2d`` oracle in float64."""

    def unfolded_and_folded_by_the_ops():
        # (the columns may be unfolded again in backward, not kept)
        assert counting_ops.calls['unfold_columns'] >= 1
        assert counting_ops.calls['fold_columns'] == 1

    check_float32_layer_against_oracle(geometry, attention, method,
                                       unfolded_and_folded_by_the_ops)


@pytest.mark.parametrize('case', ['float64', 'bf16', 'not_contiguous',
                                  'flop_counter', 'turned_off'])
def test_where_the_ops_must_not_run(counting_ops, case, monkeypatch):
    x, geometry, _ = geometry_case('3x3')
    if case == 'float64':
        x = x.double()
    elif case == 'bf16':
        x = x.bfloat16()
    elif case == 'not_contiguous':
        x = x.transpose(2, 3)
    elif case == 'turned_off':  # DYNCONV_MM_CPU_OPS=0 at import
        monkeypatch.setattr(cpu_ops, '_CPU_OPS', None)
    x.requires_grad_()
    if case == 'flop_counter':
        with FlopCounterMode(display=False):
            cols = unfold(x, *geometry)
    else:
        cols = unfold(x, *geometry)
    cols.sum().backward()
    assert not counting_ops.calls
    assert torch.equal(cols, F.unfold(x, *geometry))


@pytest.mark.parametrize('op, args, message', [
    ('unfold_columns', lambda x, c: (x[0], (3, 3), (1, 1), (1, 1), (1, 1)),
     'x must be a contiguous float32 CPU tensor'),
    ('unfold_columns', lambda x, c: (x.double(), (3, 3), (1, 1), (1, 1),
                                     (1, 1)), 'x must be'),
    ('unfold_columns', lambda x, c: (x, (3, ), (1, 1), (1, 1), (1, 1)),
     'kernel_size must have 2 values'),
    ('unfold_columns', lambda x, c: (x, (3, 3), (1, 1), (1, -1), (1, 1)),
     'padding must be >= 0'),
    ('unfold_columns', lambda x, c: (x, (3, 3), (1, 1), (1, 1), (0, 1)),
     'stride must be >= 1'),
    ('unfold_columns', lambda x, c: (x, (9, 9), (1, 1), (0, 0), (1, 1)),
     'gives no output'),
    ('fold_columns', lambda x, c: (c.double(), 5, 5, (3, 3), (1, 1), (1, 1),
                                   (1, 1)), 'cols must be a float32'),
    ('fold_columns', lambda x, c: (c, 5, 5, (2, 2), (1, 1), (1, 1), (1, 1)),
     'does not divide'),
    ('fold_columns', lambda x, c: (c, 5, 5, (0, 3), (1, 1), (1, 1), (1, 1)),
     'kernel_size must be >= 1'),
    ('fold_columns', lambda x, c: (c, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
     '25 columns, but a 6x5 input'),
    ('unfold_columns', lambda x, c: (x, (3, 3), (1, 1), (1, 1), (1, 1),
                                     torch.ones(2, 3, 4)),
     r'rows must be a contiguous float32 CPU tensor of shape \[2, 3, 9\]'),
    ('fold_columns', lambda x, c: (c, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1),
                                   torch.ones(2, 3, 9).double()),
     'rows must be a contiguous float32'),
    ('fold_columns', lambda x, c: (c, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1),
                                   torch.ones(2, 3, 9), x[:, :2]),
     r'x must be a contiguous float32 CPU tensor of shape \[2, 3, 5, 5\]'),
])
def test_bad_arguments_are_refused_by_name(counting_ops, op, args, message):
    x = torch.randn(2, 3, 5, 5)
    cols = F.unfold(x, 3, padding=1)
    with pytest.raises(RuntimeError, match=f'dynconv_mm {op}: .*{message}'):
        getattr(cpu_ops._CPU_OPS, op)(*args(x, cols))
