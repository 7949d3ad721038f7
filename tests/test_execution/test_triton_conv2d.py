"""The ``triton`` formulation (fused kernels, forward and backward): on
the CPU in Triton's interpreter against the
oracle (in a subprocess, since the interpreter is chosen when the kernel
module is imported); on a GPU, where there is one, against batch_folded."""
import os
import subprocess
import sys

import pytest
import torch

from dynconv_mm.execution import ConvAttentions, dynamic_conv2d

HERE = os.path.dirname(os.path.abspath(__file__))
triton = pytest.importorskip('triton')


# A loop over a runtime bound, the construct every kernel here uses. Triton
# 3.6's interpreter turns the bound into a 1-element array and calls int()
# on it, which numpy >= 2.4 refuses (Triton 3.8 squeezes it first); the GPU
# image lent to this project's sessions has that pair (see
# tools/analysis/gpu_figures.sh).
INTERPRETER_PROBE = """
import torch, triton, triton.language as tl
@triton.jit
def _probe(x_ptr, n, BLOCK: tl.constexpr):
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        total += tl.load(x_ptr + start + tl.arange(0, BLOCK))
    tl.store(x_ptr + tl.arange(0, BLOCK), total)
x = torch.ones(8)
_probe[(1,)](x, 8, BLOCK=4)
assert x[:4].tolist() == [2.0] * 4, x
"""
NUMPY_REFUSES_INT = 'only 0-dimensional arrays can be converted'


def test_interpreted_kernel_matches_oracle():
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1')
    probe = subprocess.run([sys.executable, '-c', INTERPRETER_PROBE],
                           env=env, capture_output=True, text=True,
                           timeout=300)
    if probe.returncode and NUMPY_REFUSES_INT in probe.stderr:
        import numpy
        pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run "
                    f'a loop under numpy {numpy.__version__} (it converts a '
                    '1-element array with int()); the GPU tests below '
                    'check the compiled kernels instead')
    assert probe.returncode == 0, probe.stderr[-4000:]
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         os.path.join(HERE, 'triton_interpreted_cases.py')],
        cwd=os.path.dirname(os.path.dirname(HERE)), env=env,
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert ' passed' in result.stdout and 'failed' not in result.stdout


def test_refused_on_cpu_without_interpreter():
    if os.environ.get('TRITON_INTERPRET') == '1':
        pytest.skip('the interpreter runs it on the CPU')
    x = torch.randn(2, 4, 5, 5)
    weight = torch.randn(1, 4, 4, 3, 3)
    with pytest.raises(ValueError, match="'triton' runs on CUDA"):
        dynamic_conv2d(x, weight, ConvAttentions(), method='triton',
                       padding=1)


@pytest.mark.parametrize('x_shape,w_shape,pixels,fits', [
    ((64, 256, 56, 56), (4, 64, 256, 1, 1), 56 * 56, True),
    ((70000, 4, 2, 2), (4, 4, 4, 1, 1), 4, False),  # samples on one axis
    ((128, 1024, 8, 8), (1, 1024, 1, 3, 3), 64, False),  # x groups
    ((64, 128, 600, 600), (1, 64, 128, 3, 3), 600 * 600, False),  # > 2^31
    ((8, 64, 300, 300), (1, 4096, 64, 1, 1), 300 * 300, False),  # output
])
def test_size_limits(x_shape, w_shape, pixels, fits, monkeypatch):
    """Sizes past CUDA's grid or 32-bit offsets: auto passes triton over,
    and forcing it names the limit."""
    from dynconv_mm.execution import selection, triton_conv2d
    x = torch.empty(x_shape, device='meta')
    weight = torch.empty(w_shape, device='meta')
    error = triton_conv2d.size_limit_error(x, weight, pixels)
    assert (error is None) == fits
    if not fits:
        assert 'grid' in error or '32-bit' in error
    # as on a GPU: the device is fine, only the sizes decide
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.setattr(triton_conv2d, 'runnable', lambda x: True)
    assert selection.triton_runnable(x)
    assert selection.triton_runnable(x, weight, pixels) == fits


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
@pytest.mark.parametrize('amp', [None, torch.bfloat16])
@pytest.mark.parametrize('groups,kernel', [(1, 'bk'), (2, 'bok')])
def test_cuda_matches_batch_folded(amp, groups, kernel):
    torch.manual_seed(0)
    dev = 'cuda'
    b, c, o, k = 3, 32, 48, 4
    x = torch.randn(b, c, 17, 15, device=dev, requires_grad=True)
    weight = torch.randn(k, o, c // groups, 3, 3, device=dev,
                         requires_grad=True)
    att = dict(
        kernel=torch.rand(b, k, device=dev) if kernel == 'bk' else
        torch.rand(b, o, k, device=dev),
        spatial=torch.rand(b, 3, 3, device=dev),
        input=torch.rand(b, c, device=dev),
        output=torch.rand(b, o, device=dev))
    att = {n: t.requires_grad_() for n, t in att.items()}
    bias = torch.randn(k, o, device=dev, requires_grad=True)
    tensors = [x, weight, bias, *att.values()]
    names = ['y', 'x', 'weight', 'bias', *att]

    def run(method, dtype):
        with torch.autocast('cuda', dtype=dtype, enabled=dtype is not None):
            y = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                               stride=2, padding=1, groups=groups,
                               method=method)
        grads = torch.autograd.grad(y.float().sum(), tensors)
        return [t.float() for t in (y, *grads)]

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        reference = run('batch_folded', None)  # float32 throughout
        got = run('triton', amp)
        peer = run('batch_folded', amp) if amp else None
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if amp is None:
        for name, g, want in zip(names, got, reference):
            torch.testing.assert_close(g, want, atol=1e-4, rtol=1e-4,
                                       msg=name)
        return
    # bf16 rounds inputs to 8 bits, so elements where a sum of hundreds of
    # products nearly cancels differ by whole bf16 steps of the sum's
    # scale between any two bf16 paths: each is held to the float32
    # result, as close as the plain per-sample form gets (or 1% of the
    # tensor's scale)
    for name, g, p, want in zip(names, got, peer, reference):
        scale = want.abs().max().item()
        err = (g - want).abs().max().item()
        err_peer = (p - want).abs().max().item()
        assert err <= max(2 * err_peer, 1e-2 * scale), (
            f'{name}: triton bf16 off the float32 result by {err:.3g}, '
            f'batch_folded bf16 by {err_peer:.3g}, scale {scale:.3g}')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
@pytest.mark.parametrize('cfg', [
    dict(type='ODConv', num_kernels=4),
    dict(type='DyNetConv', num_kernels=6),
    dict(type='DynamicConv', num_kernels=4),
])
def test_cuda_triton_layer_matches_batch_folded(cfg):
    # a layer forced to 'triton' (fused attention MLP and convolution)
    # against the same layer's plain per-sample form, on the GPU
    from mmcv.cnn import build_conv_layer
    layers = []
    for execution in ('triton', 'batch_folded'):
        torch.manual_seed(0)
        layers.append(
            build_conv_layer(dict(cfg, execution=execution), 96, 64, 3,
                             stride=2, padding=1, bias=True).cuda())
    x = torch.randn(20, 96, 15, 17, device='cuda', requires_grad=True)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        results = []
        for layer in layers:
            y = layer(x)
            results.append((y, torch.autograd.grad(
                y.square().sum(), [x] + list(layer.parameters()))))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y0, y1, atol=1e-4, rtol=1e-4)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
