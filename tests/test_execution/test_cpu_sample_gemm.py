"""The compiled per-sample GEMMs of ``tiled_gemm``
(``dynconv_mm/execution/csrc/sample_gemm_cpu.cpp``): each op against the
same products in float64 written out here, through ``dynamic_conv2d``
against the slow oracle (forward and every gradient), where they must
not run, their refusals of bad arguments, and the gradient ops' request
for the bank in 2 MiB pages."""
import ctypes
import importlib
import mmap
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dynconv_mm.execution.cpu_ops as cpu_ops
from dynconv_mm.execution import ConvAttentions, dynamic_conv2d
from dynconv_mm.layers import ODConv2d
from cpu_ops_spy import count_cpu_op_calls, skip_without_avx2_fma
from float32_layer_check import (check_float32_layer_against_oracle,
                                 float32_case)
from oracle import reference_attentions, reference_dynamic_conv2d

tiled = importlib.import_module('dynconv_mm.execution.tiled_gemm_conv2d')

OPS = ('sample_gemm_forward', 'sample_gemm_input_grad',
       'sample_gemm_backward')
# what a layer's forward and backward call when every gradient is asked
# for: the backward op computes the input's gradient with the bank's
LAYER_CALLS = {'sample_gemm_forward': 1, 'sample_gemm_input_grad': 0,
               'sample_gemm_backward': 1}
# whether this CPU has the gradients' wide (AVX-512) tiles, read before any
# test turns the Python side's flag off
AVX512 = cpu_ops._AVX512
TILES = pytest.mark.parametrize('wide', [False, True],
                                ids=['avx2_tiles', 'avx512_tiles'])


def skip_without_wide_tiles(wide):
    if wide and not AVX512:
        pytest.skip('this CPU has no AVX-512: no wide tiles')


@pytest.fixture
def counting_ops(monkeypatch):
    """The ops' calls counted, where the CPU runs them (AVX2 and FMA); the
    forward by its AVX2 GEMM, not the AVX-512 op that takes it over on
    Intel CPUs (test_cpu_sample_conv.py), the gradients in AVX2 tiles."""
    spy = count_cpu_op_calls(monkeypatch)
    skip_without_avx2_fma('sample-GEMM')
    monkeypatch.setattr(cpu_ops, '_AVX512', False)
    return spy


def float64_products(cols, bank, mixing, grad_y):
    """y, the transposed input gradient, the bank's and the mixing's
    gradients, in float64, by einsum (W_b mixed whole)."""
    cols, bank, mixing, grad_y = (t.double()
                                  for t in (cols, bank, mixing, grad_y))
    if mixing.dim() == 2:
        kernels = torch.einsum('bk,kgoj->bgoj', mixing, bank)
    else:
        kernels = torch.einsum('bgok,kgoj->bgoj', mixing, bank)
    y = kernels @ cols
    grad_cols_t = grad_y.transpose(2, 3) @ kernels
    grad_kernels = grad_y @ cols.transpose(2, 3)
    if mixing.dim() == 2:
        grad_bank = torch.einsum('bk,bgoj->kgoj', mixing, grad_kernels)
        grad_mixing = torch.einsum('bgoj,kgoj->bk', grad_kernels, bank)
    else:
        grad_bank = torch.einsum('bgok,bgoj->kgoj', mixing, grad_kernels)
        grad_mixing = torch.einsum('bgoj,kgoj->bgok', grad_kernels, bank)
    return y, grad_cols_t, grad_bank, grad_mixing


def run_ops(cols, bank, mixing, grad_y, wide):
    """y, the input gradient (transposed) by the backward op, the bank's
    and the mixing's by it, and the input gradient by the op that computes
    it alone; the backward's weight gradients without the input's are
    checked to be the same bits."""
    ops = cpu_ops._CPU_OPS
    y = ops.sample_gemm_forward(cols, bank, mixing)
    grad_bank, grad_mixing, grad_cols_t = ops.sample_gemm_backward(
        grad_y, cols, bank, mixing, True, wide, False)
    weights_only = ops.sample_gemm_backward(grad_y, cols, bank, mixing, False,
                                            wide, False)
    assert len(weights_only) == 2
    assert torch.equal(weights_only[0], grad_bank)
    assert torch.equal(weights_only[1], grad_mixing)
    alone = ops.sample_gemm_input_grad(grad_y, bank, mixing, wide, False)
    return y, grad_cols_t, grad_bank, grad_mixing, alone


# (B, groups, O/g, J, P, K): tails everywhere the register tiles have
# them: rows (O/g not a multiple of 6), columns (J not of 8, 16 or 64),
# pixels (P below 16: all by dot products; 20, 33, 49: some), samples (9:
# more than 8 at a time), columns past one unit (J = 300 and 4104), one
# kernel and more than the eight bank rows mixed at a time. With either
# set of tiles the backward computes the input gradient in the weight
# gradients' pass where a unit's working set fits: 'tall' over three
# slices of 60 rows (the last one short, past the columns' end), 'batch40'
# not (forty samples' panels and packed input of 33 pixels too large: the
# input gradient's own pass).
SHAPES = {
    'tiny': (2, 1, 1, 3, 1, 2),
    'tails': (3, 2, 7, 19, 5, 3),
    'pixels20': (2, 1, 13, 37, 20, 2),
    'groups3': (1, 3, 5, 40, 33, 3),
    'batch9': (9, 1, 17, 300, 49, 4),
    'one_kernel': (4, 1, 6, 64, 16, 1),
    'long_rows': (3, 1, 8, 4104, 25, 3),
    'many_kernels': (3, 1, 7, 70, 11, 11),
    'tall': (2, 1, 130, 70, 9, 3),
    'batch40': (40, 1, 7, 70, 33, 2),
    # rows of 16-float multiples, so the tiles write the bank's gradient
    # past the caches: two full units per group (192 columns in the wide
    # tiles, 256 in AVX2's), then a short one (through the padded copies
    # in the wide tiles)
    'aligned_rows': (3, 2, 13, 528, 9, 3),
}


@TILES
@pytest.mark.parametrize('per_row', [False, True], ids=['shared', 'per_row'])
@pytest.mark.parametrize('shape', SHAPES)
def test_ops_match_float64_products(counting_ops, shape, per_row, wide):
    skip_without_wide_tiles(wide)
    batch, groups, rows, row, pixels, kernels = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    cols = torch.randn(batch, groups, row, pixels, generator=g)
    bank = torch.randn(kernels, groups, rows, row, generator=g)
    grad_y = torch.randn(batch, groups, rows, pixels, generator=g)
    # coefficients far from uniform, different per sample (and row)
    mixing = torch.rand(*((batch, groups, rows, kernels) if per_row else
                          (batch, kernels)), generator=g) + 0.2
    got = run_ops(cols, bank, mixing, grad_y, wide)
    want = float64_products(cols, bank, mixing, grad_y)
    want += want[1:2]  # the input gradient alone
    for name, a, b in zip(('y', 'grad_cols_t', 'grad_bank', 'grad_mixing',
                           'grad_cols_t alone'), got, want):
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double(), b, rtol=1e-5,
                                   atol=1e-5 * scale, msg=name)


@TILES
def test_ops_agree_across_thread_counts(counting_ops, wide):
    """Every unit sums in a fixed order, and the mixing's partial sums are
    added in unit order: one thread and two give the same bits."""
    skip_without_wide_tiles(wide)
    batch, groups, rows, row, pixels, kernels = SHAPES['tall']
    g = torch.Generator().manual_seed(1)
    cols = torch.randn(batch, groups, row, pixels, generator=g)
    bank = torch.randn(kernels, groups, rows, row, generator=g)
    grad_y = torch.randn(batch, groups, rows, pixels, generator=g)
    mixing = torch.rand(batch, kernels, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_ops(cols, bank, mixing, grad_y, wide)
        torch.set_num_threads(2)
        two = run_ops(cols, bank, mixing, grad_y, wide)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


@pytest.fixture
def any_row_runs_compiled(monkeypatch):
    """The test layers' kernel rows are short: let the ops take them."""
    monkeypatch.setattr(tiled, 'COMPILED_GEMM_MIN_ROW', 1)


@pytest.mark.parametrize('geometry', ['plain3x3', 'groups2', 'stride2',
                                      '1x1', 'batch1'])
@pytest.mark.parametrize('attention', ['dynamic_conv', 'dynet',
                                       'odconv_4x'])
def test_tiled_gemm_through_the_ops_matches_oracle(counting_ops,
                                                   any_row_runs_compiled,
                                                   geometry, attention):
    """Forward and every gradient of a layer run by the ops, against the
    per-sample ``F.conv2d`` oracle in float64."""

    def the_ops_ran():
        assert {op: counting_ops.calls[op] for op in OPS} == LAYER_CALLS

    check_float32_layer_against_oracle(geometry, attention, 'tiled_gemm',
                                       the_ops_ran)


def test_frozen_layer_skips_the_weight_op(counting_ops,
                                          any_row_runs_compiled):
    x, weight, bias, att, conv = float32_case('plain3x3', 'dynamic_conv')
    for t in [weight, bias] + list(att.values()):
        t.requires_grad_(False)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='tiled_gemm', **conv)
    out.sum().backward()
    assert counting_ops.calls['sample_gemm_input_grad'] == 1
    assert counting_ops.calls['sample_gemm_backward'] == 0


def run_layer(x, weight, bias, att, conv):
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method='tiled_gemm', **conv)
    out.sum().backward()
    return out


def test_rows_below_the_threshold_stay_in_pytorch(counting_ops):
    x, weight, bias, att, conv = float32_case('plain3x3', 'dynamic_conv')
    assert weight[0, 0].numel() < tiled.COMPILED_GEMM_MIN_ROW
    run_layer(x, weight, bias, att, conv)
    assert not any(counting_ops.calls[op] for op in OPS)


def test_long_rows_on_a_small_map_run_compiled(counting_ops):
    """A layer at the threshold, as the 512-channel 3x3 layers of
    ResNet-50's last stage (rows of 4608) are."""
    g = torch.Generator().manual_seed(0)
    c_in = -(-tiled.COMPILED_GEMM_MIN_ROW // 9)
    x = torch.randn(2, c_in, 5, 5, generator=g, requires_grad=True)
    weight = torch.randn(2, 3, c_in, 3, 3, generator=g, requires_grad=True)
    kernel = torch.rand(2, 2, generator=g, requires_grad=True)
    run_layer(x, weight, None, dict(kernel=kernel), dict(padding=1))
    assert {op: counting_ops.calls[op] for op in OPS} == LAYER_CALLS
    # and not on a map of 10x10 output pixels or more
    counting_ops.calls.clear()
    x = torch.randn(2, c_in, 10, 10, generator=g, requires_grad=True)
    run_layer(x, weight, None, dict(kernel=kernel), dict(padding=1))
    assert not any(counting_ops.calls[op] for op in OPS)


def test_a_batch_at_inference_runs_compiled_with_strided_heads(
        counting_ops, any_row_runs_compiled):
    """An eval-mode ODConv 4x layer over a batch: its attentions come from
    the compiled attention op as views of one ``[B, heads]`` output, so
    the kernel attention is strided; the GEMM op still runs (it fell back
    to PyTorch's products, 1.8x the time at 512 channels on 7x7), and
    matches the oracle."""
    torch.manual_seed(0)
    layer = ODConv2d(8, 6, 3, padding=1, num_kernels=2,
                     execution='tiled_gemm').eval()
    x = torch.randn(3, 8, 5, 5)
    with torch.no_grad():
        out = layer(x)
    assert counting_ops.calls['attention_heads'] == 1
    assert counting_ops.calls['sample_gemm_forward'] == 1
    layer = layer.double()
    att = reference_attentions(layer, x.double())
    ref = reference_dynamic_conv2d(x.double(), layer.weight,
                                   bias=layer.bias, padding=1, **att)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('case', ['float64', 'bf16_autocast', 'flop_counter',
                                  'create_graph', 'turned_off'])
def test_where_the_ops_must_not_run(counting_ops, any_row_runs_compiled,
                                    case, monkeypatch):
    x, weight, bias, att, conv = float32_case('plain3x3', 'dynamic_conv')
    if case == 'float64':
        x, weight, bias = (t.detach().double().requires_grad_()
                           for t in (x, weight, bias))
        att = {k: v.detach().double().requires_grad_()
               for k, v in att.items()}
    if case == 'turned_off':  # DYNCONV_MM_CPU_OPS=0 at import
        monkeypatch.setattr(cpu_ops, '_CPU_OPS', None)
    if case == 'bf16_autocast':
        with torch.autocast('cpu', dtype=torch.bfloat16):
            run_layer(x, weight, bias, att, conv)
    elif case == 'flop_counter':
        with FlopCounterMode(display=False):
            run_layer(x, weight, bias, att, conv)
    elif case == 'create_graph':
        out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                             method='tiled_gemm', **conv)
        (gx, ) = torch.autograd.grad(out.sum(), [x], create_graph=True)
        assert gx.requires_grad
        assert counting_ops.calls['sample_gemm_forward'] == 1
        counting_ops.calls.clear()
    else:
        run_layer(x, weight, bias, att, conv)
    assert not any(counting_ops.calls[op] for op in OPS)


@pytest.mark.parametrize('op, args, message', [
    ('sample_gemm_forward', lambda c, b, m, gy: (c.double(), b, m), 'cols'),
    ('sample_gemm_forward',  # rows of 4, not the input's 5
     lambda c, b, m, gy: (c, b[..., :-1].contiguous(), m), 'cols'),
    ('sample_gemm_forward', lambda c, b, m, gy: (c, b[..., :-1], m),
     'bank'),  # not contiguous
    ('sample_gemm_forward', lambda c, b, m, gy: (c, b, m[:, :1]), 'mixing'),
    ('sample_gemm_forward', lambda c, b, m, gy: (c, b[0], m), 'bank'),
    ('sample_gemm_input_grad',  # transposed, not contiguous
     lambda c, b, m, gy: (gy.transpose(2, 3), b, m, False, False),
     'grad_y'),
    ('sample_gemm_input_grad',  # transposed
     lambda c, b, m, gy: (gy.transpose(2, 3).contiguous(), b, m, False,
                          False), 'grad_y'),
    ('sample_gemm_backward',
     lambda c, b, m, gy: (gy, c.transpose(2, 3).contiguous(), b, m, False,
                          False, False), 'cols'),
    ('sample_gemm_backward',
     lambda c, b, m, gy: (gy, c.transpose(2, 3), b, m, True, False, False),
     'cols'),
    ('sample_gemm_backward',
     lambda c, b, m, gy: (gy[:, :, :1], c, b, m, True, False, False),
     'grad_y'),
])
def test_bad_arguments_are_refused_by_name(counting_ops, op, args, message):
    cols = torch.randn(2, 1, 5, 4)
    bank = torch.randn(3, 1, 6, 5)
    mixing = torch.rand(2, 3)
    grad_y = torch.randn(2, 1, 6, 4)
    with pytest.raises(RuntimeError, match=f'dynconv_mm {op}: {message}'):
        getattr(cpu_ops._CPU_OPS, op)(*args(cols, bank, mixing, grad_y))


@pytest.mark.parametrize('intel', [True, False])
def test_gradients_take_wide_tiles_on_intel_cpus_with_avx512(
        counting_ops, any_row_runs_compiled, monkeypatch, intel):
    """The wide tiles were measured on an Intel CPU: elsewhere (and
    without AVX-512) the gradients keep the AVX2 tiles."""
    skip_without_wide_tiles(True)
    monkeypatch.setattr(cpu_ops, 'intel_cpu', lambda: intel)
    for avx512 in (True, False):
        monkeypatch.setattr(cpu_ops, '_AVX512', avx512)
        counting_ops.last_arguments.clear()
        run_layer(*float32_case('plain3x3', 'dynamic_conv'))
        # (its last two arguments: wide, huge_pages)
        assert counting_ops.last_arguments['sample_gemm_backward'][-2] is (
            avx512 and intel)


def test_wide_tiles_are_refused_without_avx512(counting_ops):
    if cpu_ops._CPU_OPS.avx512_supported():  # the CPU's, not the flag's
        pytest.skip('this CPU has AVX-512')
    with pytest.raises(RuntimeError, match='wide tiles need a CPU with'):
        cpu_ops._CPU_OPS.sample_gemm_input_grad(
            torch.randn(2, 1, 4, 6), torch.randn(3, 1, 6, 5),
            torch.rand(2, 3), True, False)


# ---- the gradient ops ask Linux for the bank in 2 MiB pages ---------------
MADV_COLLAPSE = 25
HUGE = 2 << 20


def private_mapping(nbytes):
    """An anonymous private mapping of its own (a VMA that /proc/self/smaps
    reports alone), and its address."""
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    return m, ctypes.addressof(ctypes.c_char.from_buffer(m))


def huge_kb(address):
    """AnonHugePages of the mapping holding ``address``, in kB."""
    inside = False
    with open('/proc/self/smaps') as f:
        for line in f:
            fields = line.split()
            if '-' in fields[0] and len(fields) >= 5:
                lo, hi = (int(v, 16) for v in fields[0].split('-'))
                inside = lo <= address < hi
            elif inside and fields[0] == 'AnonHugePages:':
                return int(fields[1])
    raise AssertionError(f'no mapping holds {address:#x}')


def whole_huge_pages(tensor):
    """Whether each 2 MiB page wholly inside ``tensor``'s memory is one huge
    page (its 512 frames present, contiguous and aligned, by
    /proc/self/pagemap); ``None`` where the frame numbers are not readable
    (they need CAP_SYS_ADMIN)."""
    start = (tensor.data_ptr() + HUGE - 1) // HUGE * HUGE
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) \
        // HUGE * HUGE
    assert end > start
    with open('/proc/self/pagemap', 'rb') as f:
        for page in range(start, end, HUGE):
            f.seek(page // 4096 * 8)
            entries = memoryview(f.read(512 * 8)).cast('Q')
            frames = [e & ((1 << 55) - 1) for e in entries]
            if not all(e >> 63 for e in entries):
                return False
            if not any(frames):
                return None
            if frames[0] % 512 or frames != list(
                    range(frames[0], frames[0] + 512)):
                return False
    return True


def kernel_collapses():
    """Whether this kernel backs a touched private mapping with huge pages
    on MADV_COLLAPSE (Linux 6.1+, THP not off): asked here through libc,
    not through the ops."""
    if not sys.platform.startswith('linux'):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    m, address = private_mapping(3 * HUGE)
    m.write(b'\1' * (3 * HUGE))
    start = (address + HUGE - 1) // HUGE * HUGE
    ok = libc.madvise(start, HUGE, MADV_COLLAPSE) == 0 and huge_kb(address)
    m.close()
    return bool(ok)


def thp_mode():
    try:
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            return f.read().split('[')[1].split(']')[0]
    except (OSError, IndexError):
        return 'unknown'


@pytest.mark.parametrize('op', ['sample_gemm_backward',
                                'sample_gemm_input_grad'])
def test_gradient_ops_ask_for_the_bank_in_huge_pages(counting_ops, op):
    """Asked to, each gradient op has the whole 2 MiB pages of the bank
    backed by huge pages (the bank in a mapping of its own here: smaps
    counts a mapping's huge pages, and this one's before and after the op
    differ by the bank's), and the backward those of the bank's gradient
    (where pagemap shows frames); not asked, the bank stays in 4 KiB pages
    (where THP is 'madvise': with 'always' the kernel may give huge pages
    at fault time anyway); the gradients are the same bits either way."""
    if not kernel_collapses():
        pytest.skip('this kernel does not collapse pages into huge ones')
    shape = (2, 1, 512, 1536)  # 6 MiB: two or more whole 2 MiB pages
    values = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    cols = torch.randn(1, 1, 1536, 4)
    mixing = torch.rand(1, 2)
    grad_y = torch.randn(1, 1, 512, 4)
    results = {}
    for huge_pages in (False, True):
        m, address = private_mapping(values.numel() * 4)
        bank = torch.frombuffer(m, dtype=torch.float32).view(shape)
        bank.copy_(values)
        before = huge_kb(address)
        if op == 'sample_gemm_backward':
            args = (grad_y, cols, bank, mixing, True, False, huge_pages)
        else:
            args = (grad_y, bank, mixing, False, huge_pages)
        results[huge_pages] = getattr(cpu_ops._CPU_OPS, op)(*args)
        gained = huge_kb(address) - before
        assert torch.equal(bank, values)  # the contents stay
        del bank
        m.close()
        if huge_pages:
            bank_huge = gained >= 2 * HUGE // 1024
            gradient_huge = (op != 'sample_gemm_backward' or  # the backward's
                             whole_huge_pages(results[True][0]) in (True,
                                                                     None))
            # with no free huge page just then, the kernel refuses a probe
            # through libc too: the machine's state, not the op's failure
            if not (bank_huge and gradient_huge) and not kernel_collapses():
                pytest.skip('no free huge pages on this machine just now')
            assert bank_huge and gradient_huge
        elif thp_mode() == 'madvise':
            assert gained == 0
    outputs = [results[False], results[True]]
    if op == 'sample_gemm_input_grad':
        outputs = [[t] for t in outputs]
    assert all(torch.equal(a, b) for a, b in zip(*outputs))


def still_mapped(address, size):
    """Whether [address, address + size) is mapped in this process
    (mincore fails with ENOMEM on an unmapped range)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t,
                             ctypes.c_char_p)
    pages = ctypes.create_string_buffer(size // mmap.PAGESIZE + 1)
    return libc.mincore(address, size, pages) == 0


@pytest.mark.parametrize('per_row', [False, True], ids=['shared', 'per_row'])
def test_freed_bank_gradients_are_kept_for_the_next_call(counting_ops,
                                                         per_row):
    """With huge pages asked for, the backward's bank gradient (here 6 MiB)
    comes from a block of its own that is kept once the gradient is freed:
    the next call of the same size takes it (same address, and each call's
    values its own, nothing left from the last), a call while it is alive
    another; without huge pages the gradients come from the heap."""
    ops = cpu_ops._CPU_OPS
    g = torch.Generator().manual_seed(3)
    bank = torch.randn(2, 1, 512, 1536, generator=g)
    cols = torch.randn(2, 1, 1536, 4, generator=g)
    mixing = torch.rand(*((2, 1, 512, 2) if per_row else (2, 2)),
                        generator=g) + 0.2

    def backward(scale, huge_pages=True):
        grad_y = torch.randn(2, 1, 512, 4, generator=g) * scale
        grad_bank, grad_mixing = ops.sample_gemm_backward(
            grad_y, cols, bank, mixing, False, False, huge_pages)
        want = float64_products(cols, bank, mixing, grad_y)[2]
        torch.testing.assert_close(grad_bank.double(), want, rtol=1e-5,
                                   atol=1e-5 * want.abs().max().item())
        return grad_bank

    first = backward(1.0)
    address, size = first.data_ptr(), first.numel() * 4
    assert address % HUGE == 0  # whole 2 MiB pages
    del first
    if sys.platform.startswith('linux'):  # kept: still mapped
        assert still_mapped(address, size)
    second = backward(-3.0)  # its values, not the first's
    assert second.data_ptr() == address
    third = backward(0.5)
    assert third.data_ptr() != address
    del second, third
    from_heap = backward(1.0, huge_pages=False)
    assert from_heap.data_ptr() != address


def test_huge_pages_follow_the_environment(monkeypatch):
    """``DYNCONV_MM_HUGE_PAGES=0`` turns the request off (read at import
    into what the ops are handed)."""
    from dynconv_mm.execution.cpu_memory import huge_pages_wanted
    monkeypatch.delenv('DYNCONV_MM_HUGE_PAGES', raising=False)
    assert huge_pages_wanted()
    monkeypatch.setenv('DYNCONV_MM_HUGE_PAGES', '0')
    assert not huge_pages_wanted()
    monkeypatch.setenv('DYNCONV_MM_HUGE_PAGES', '1')
    assert huge_pages_wanted()
