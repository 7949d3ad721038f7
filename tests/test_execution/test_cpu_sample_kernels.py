"""The compiled CPU ops that form a batch's kernels and their gradients in
one pass each (``sample_kernels`` and ``sample_kernels_backward`` in
``dynconv_mm/execution/csrc/sample_kernel_cpu.cpp``): against the slow
oracle's kernels and autograd through them in float64, in AVX-512's loops
and AVX2's; through ``dynamic_conv2d`` in training; where they must not
run; and their refusals of bad arguments."""
import importlib
import itertools

import pytest
import torch
from torch.testing import assert_close

import dynconv_mm.execution.cpu_ops as cpu_ops
from dynconv_mm.execution import ConvAttentions, dynamic_conv2d
from cpu_ops_spy import count_cpu_op_calls, skip_without_avx2_fma
from oracle import per_sample_kernel, reference_dynamic_conv2d

per_sample_kernels = importlib.import_module(
    'dynconv_mm.execution.per_sample_kernels')

# (c_in, c_out, kernel, groups): rows of the kernel (C_in/groups*kh*kw)
# shorter than a register and not a whole number of them (9, 18, 3), a
# longer one (20 -> 16 + 4)
GEOMETRIES = {
    '3x3': (6, 10, (3, 3), 1),
    'groups2': (8, 6, (3, 3), 2),
    'depthwise': (5, 5, (3, 3), 5),
    '1x1': (20, 7, (1, 1), 1),
    'nonsquare': (4, 6, (3, 1), 1),
}
# the kernel attention: none (one kernel), one per kernel, DyNet's per
# output channel, and more kernels than AVX-512's loops hold at once (8)
MIXINGS = {'single': (1, False), 'per_kernel': (3, False),
           'per_channel': (4, True), 'many': (11, False)}


def case(geometry, mixing, spatial, channel, filter_, batch=3, seed=0):
    """The bank, the attentions (in (0.2, 1.2): far from uniform) and the
    groups, in float64."""
    c_in, c_out, kernel_size, groups = GEOMETRIES[geometry]
    num_kernels, per_row = MIXINGS[mixing]
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_kernels, c_out, c_in // groups, *kernel_size,
                         generator=g, dtype=torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64) + 0.2

    kernel = None
    if num_kernels > 1:
        kernel = (rand(batch, c_out, num_kernels) if per_row else
                  rand(batch, num_kernels))
    return weight, ConvAttentions(
        kernel=kernel, spatial=rand(batch, *kernel_size) if spatial else None,
        input=rand(batch, c_in) if channel else None,
        output=rand(batch, c_out) if filter_ else None), groups


def oracle_kernels(weight, attentions, groups):
    batch = next(a for a in attentions if a is not None).shape[0]
    return torch.stack([per_sample_kernel(weight, groups, b,
                                          **attentions._asdict())
                        for b in range(batch)])


def float32(tensor):
    return None if tensor is None else tensor.detach().float().contiguous()


def wide_tiles(wide):
    if wide and not cpu_ops._AVX512:
        pytest.skip('this CPU has no AVX-512')
    skip_without_avx2_fma('sample-kernel')
    if not cpu_ops.cpu_ops_available():
        pytest.skip(f'the compiled CPU ops are not available: '
                    f'{cpu_ops.CPU_OPS_ERROR}')
    return wide


CASES = [(geometry, mixing, *flags)
         for geometry, mixing in itertools.product(GEOMETRIES, MIXINGS)
         for flags in itertools.product([False, True], repeat=3)
         if mixing != 'single' or any(flags)]


@pytest.mark.parametrize('wide', [True, False], ids=['avx512', 'avx2'])
@pytest.mark.parametrize('geometry, mixing, spatial, channel, filter_', CASES)
def test_kernels_and_gradients_match_oracle(wide, geometry, mixing, spatial,
                                            channel, filter_):
    wide_tiles(wide)
    weight, attentions, groups = case(geometry, mixing, spatial, channel,
                                      filter_)
    inputs = (weight, attentions.kernel, attentions.input,
              attentions.spatial, attentions.output)
    for t in inputs:
        if t is not None:
            t.requires_grad_()
    want = oracle_kernels(weight, attentions, groups)
    grad = torch.randn_like(want)
    present = [t for t in inputs if t is not None]
    want_grads = iter(torch.autograd.grad(want, present, grad))
    args = [float32(t) for t in inputs]
    got = cpu_ops._CPU_OPS.sample_kernels(*args, groups, want.shape[0], wide)
    assert_close(got, want.detach().float())
    got_grads = cpu_ops._CPU_OPS.sample_kernels_backward(
        float32(grad), *args, groups, True, wide)
    for t, got_grad in zip(inputs, got_grads):
        if t is None:
            assert got_grad is None
        else:
            assert_close(got_grad, next(want_grads).float())


@pytest.mark.parametrize('wide', [True, False], ids=['avx512', 'avx2'])
@pytest.mark.parametrize('mixing', ['per_kernel', 'per_channel', 'many'])
def test_more_samples_than_one_pass_holds(wide, mixing):
    """Ten samples: past the eight whose bank-row gradients AVX-512's loops
    take at once; a frozen bank asks for no gradient of it."""
    wide_tiles(wide)
    weight, attentions, groups = case('3x3', mixing, True, True, True,
                                      batch=10)
    # in the ops' order
    folded = (attentions.kernel, attentions.input, attentions.spatial,
              attentions.output)
    for a in folded:
        a.requires_grad_()
    want = oracle_kernels(weight, attentions, groups)
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, folded, grad)
    args = [float32(t) for t in (weight, *folded)]
    got = cpu_ops._CPU_OPS.sample_kernels(*args, groups, 10, wide)
    assert_close(got, want.detach().float())
    got_grads = cpu_ops._CPU_OPS.sample_kernels_backward(
        float32(grad), *args, groups, False, wide)
    assert got_grads[0] is None
    for got_grad, want_grad in zip(got_grads[1:], want_grads):
        assert_close(got_grad, want_grad.float())


@pytest.fixture
def offered_ops(monkeypatch):
    """Counts the compiled ops' calls, where layers run these ones (an
    Intel CPU with AVX-512)."""
    spy = count_cpu_op_calls(monkeypatch)
    if not cpu_ops._wide_tiles():
        pytest.skip('the batch kernel ops run on Intel CPUs with AVX-512')
    return spy


# (attention set, method): every set folds something into the kernels
TRAINING = {
    'odconv_4x': ('per_kernel', True, True, True),
    'odconv_1x': ('single', True, True, True),
    'dynet': ('per_channel', False, False, False),
    'dynamic_conv': ('per_kernel', False, False, False),
}


def training_case(name, geometry='3x3', batch=4, size=(5, 6)):
    weight, attentions, groups = case(geometry, *TRAINING[name], batch=batch)
    c_in = GEOMETRIES[geometry][0]
    x = torch.randn(batch, c_in, *size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    return x, weight, attentions, groups


def float32_leaves(x, weight, attentions):
    """float32 leaf copies of ``x``, the bank and the attentions present:
    ``(all of them, x, weight, ConvAttentions)``."""
    leaves = [t.detach().float().requires_grad_()
              for t in (x, weight, *attentions) if t is not None]
    it = iter(leaves)
    got_x, got_weight = next(it), next(it)
    return leaves, got_x, got_weight, ConvAttentions(
        *(None if a is None else next(it) for a in attentions))


@pytest.mark.parametrize('method', ['aggregated', 'batch_folded'])
@pytest.mark.parametrize('name', TRAINING)
@pytest.mark.parametrize('geometry', ['3x3', 'groups2'])
@pytest.mark.parametrize('size', [(5, 6), (8, 9)])
def test_training_forms_the_kernels_by_the_ops(offered_ops, method, name,
                                               geometry, size):
    """Forward, the kernels formed again in backward, and every gradient
    against the oracle in float64. On the larger map ``aggregated`` folds
    the filter attention into the kernels too (its output outweighs them:
    ``aggregation_plan``)."""
    x, weight, attentions, groups = training_case(name, geometry, size=size)
    padding = tuple(k // 2 for k in weight.shape[3:])
    leaves = [t.requires_grad_() for t in (x, weight, *attentions)
              if t is not None]
    want = reference_dynamic_conv2d(x, weight, padding=padding,
                                    groups=groups, **attentions._asdict())
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, leaves, grad)
    got_leaves, got_x, got_weight, got_attentions = float32_leaves(
        x, weight, attentions)
    got = dynamic_conv2d(got_x, got_weight, got_attentions, None, 1, padding,
                         1, groups, method)
    # float32 against float64, with oneDNN's convolution gradients (whose
    # sums' order varies run to run): float32_layer_check.py's allowances
    assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    got.backward(grad.float())
    for leaf, want_grad in zip(got_leaves, want_grads):
        assert_close(leaf.grad.double(), want_grad, rtol=1e-5, atol=1e-4)
    # formed in forward and again in backward (not kept), one backward
    assert offered_ops.calls['sample_kernels'] == 2
    assert offered_ops.calls['sample_kernels_backward'] == 1


@pytest.mark.parametrize('name', TRAINING)
def test_depthwise_kernels_in_pytorch(offered_ops, name):
    """Rows of 9 floats (depthwise 3x3): PyTorch's ops form the kernels
    (SAMPLE_KERNELS_MIN_ROW), to the same values and gradients."""
    x, weight, attentions, groups = training_case(name, 'depthwise')
    leaves, got_x, got_weight, got_attentions = float32_leaves(
        x, weight, attentions)
    want = reference_dynamic_conv2d(x, weight, padding=1, groups=groups,
                                    **attentions._asdict())
    got = dynamic_conv2d(got_x, got_weight, got_attentions, None, 1, 1, 1,
                         groups, 'aggregated')
    assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert all(leaf.grad is not None for leaf in leaves)
    assert offered_ops.calls['sample_kernels'] == 0
    assert offered_ops.calls['sample_kernels_backward'] == 0


def test_a_frozen_bank_asks_for_no_bank_gradient(offered_ops):
    x, weight, attentions, groups = training_case('odconv_4x')
    attentions = ConvAttentions(*(a.float().requires_grad_()
                                  for a in attentions))
    y = dynamic_conv2d(x.float(), weight.float(), attentions, None, 1, 1, 1,
                       groups, 'aggregated')
    y.sum().backward()
    assert offered_ops.last_arguments['sample_kernels_backward'][-2] is False
    assert all(a.grad is not None for a in attentions)


def _ops_turned_off(monkeypatch):
    monkeypatch.setattr(per_sample_kernels, 'cpu_sample_kernels_apply',
                        lambda *args: False)


def test_higher_derivatives_match_pytorchs_kernels(offered_ops, monkeypatch):
    """A backward that builds a graph (``create_graph``) runs the kernels'
    gradients as PyTorch ops: the second derivative is PyTorch's."""

    def second_derivative():
        x, weight, attentions, groups = training_case('odconv_4x')
        attentions = ConvAttentions(*(a.float().requires_grad_()
                                      for a in attentions))
        weight = weight.float().requires_grad_()
        y = dynamic_conv2d(x.float(), weight, attentions, None, 1, 1, 1,
                           groups, 'aggregated')
        first = torch.autograd.grad(y.square().sum(), attentions.spatial,
                                    create_graph=True)[0]
        return torch.autograd.grad(first.square().sum(),
                                   [weight, attentions.kernel])

    got = second_derivative()
    assert offered_ops.calls['sample_kernels'] >= 1
    _ops_turned_off(monkeypatch)
    calls = offered_ops.calls['sample_kernels']
    want = second_derivative()
    assert offered_ops.calls['sample_kernels'] == calls
    for g, w in zip(got, want):
        assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item())


def test_not_under_autocast(offered_ops):
    x, weight, attentions, groups = training_case('odconv_4x')
    attentions = ConvAttentions(*(a.float().requires_grad_()
                                  for a in attentions))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = dynamic_conv2d(x.float(), weight.float(), attentions, None, 1, 1,
                           1, groups, 'aggregated')
    y.float().sum().backward()
    assert offered_ops.calls['sample_kernels'] == 0


def _op_arguments(**changes):
    args = dict(weight=torch.randn(3, 4, 2, 3, 3),
                mixing=torch.rand(2, 3), channel=torch.rand(2, 4),
                spatial=torch.rand(2, 3, 3), filter=torch.rand(2, 4),
                groups=2, batch=2)
    args.update(changes)
    return args


@pytest.mark.parametrize('change, message', [
    (dict(mixing=torch.rand(1, 3)), 'mixing must be .* of 6 values'),
    (dict(channel=torch.rand(2, 3)), 'channel must be .* of 8 values'),
    (dict(spatial=torch.rand(2, 3, 2)), 'spatial must be .* of 18 values'),
    (dict(batch=0), 'batch=0 must be at least 1'),
    (dict(groups=3), 'groups=3 does not divide C_out=4'),
])
def test_the_op_names_the_bad_argument(change, message):
    wide_tiles(False)
    args = _op_arguments(**change)
    with pytest.raises(RuntimeError, match=message):
        cpu_ops._CPU_OPS.sample_kernels(*args.values(), False)


def test_the_backward_names_a_gradient_of_the_wrong_shape():
    wide_tiles(False)
    args = _op_arguments()
    del args['batch']
    with pytest.raises(RuntimeError, match='grad must be .* of shape'):
        cpu_ops._CPU_OPS.sample_kernels_backward(
            torch.randn(2, 4, 2, 3, 2), *args.values(), True, False)
