"""The CPU probes behind "what limits the rest" in docs/benchmarks.md:
memory bandwidth, how fast a kernel is mixed from the bank at batch 1,
MKL's matrix product against oneDNN's convolution for the same GEMM, the
per-sample forward at 7x7 with kernels already formed, a batch-1 1x1
convolution against one matrix product, what the attentions cost in a
batch-1 OD-ResNet-50 (and the static network with its 1x1 convolutions as
products), and ``tiled_gemm``'s GEMM part by tile size. Medians of
repeated calls in one process, milliseconds; a probe, not a benchmark with a baseline run
alongside (see benchmark.py for those).

    python tools/analysis/probe_cpu_limits.py [--threads 2] [--probes ...]
"""
import argparse
import functools
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import build_network  # noqa: E402

import dynconv_mm  # noqa: E402,F401  (keeps freed CPU memory)
from dynconv_mm.execution.attentions import \
    shared_kernel_conv2d  # noqa: E402
from dynconv_mm.execution.per_sample_kernels import \
    _mix_one_sample  # noqa: E402
from dynconv_mm.layers.dynamic_conv_base import DynamicConv2dBase  # noqa


def median_ms(fn, calls: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[calls // 2] * 1e3


def bandwidth() -> None:
    data = torch.randn(90_000_000)  # 360 MB
    ms = median_ms(data.sum, 5)
    print(f'read 360 MB: {ms:.1f} ms, {0.36 / ms * 1e3:.1f} GB/s')


def batch1_mixing() -> None:
    for out_c, in_c, k in [(512, 512, 3), (512, 2048, 1)]:
        bank = torch.randn(4, out_c, in_c, k, k)
        coeff = torch.softmax(torch.randn(1, 4), 1)
        factor = torch.rand(1, 1, in_c, k, k)
        shape5 = (1, out_c, in_c, k, k)
        flat = bank.reshape(4, -1)
        print(f'mix 4 kernels {out_c}x{in_c}x{k}x{k}: [1,K]x[K,N] product '
              f'{median_ms(lambda: coeff @ flat):.2f} ms, in place with the '
              'factor '
              f'{median_ms(lambda: _mix_one_sample(bank, coeff, factor, shape5)):.2f}'  # noqa: E501
              f' ms, reading the bank {median_ms(bank.sum):.2f} ms')


# (in, out, size) of every 1x1 convolution shape in a ResNet-50 body
RESNET50_POINTWISE = ((64, 64, 56), (64, 256, 56), (256, 64, 56),
                      (256, 128, 56), (128, 512, 28), (512, 128, 28),
                      (512, 256, 28), (256, 1024, 14), (1024, 256, 14),
                      (1024, 512, 14), (512, 2048, 7), (2048, 512, 7))


def pointwise_products() -> None:
    """A batch-1 1x1 convolution as oneDNN's convolution and as one MKL
    matrix product on the NCHW input (what ``shared_kernel_conv2d`` runs
    on Intel CPUs, and on AVX2 AMD CPUs up to a size of input), at every
    ResNet-50 1x1 shape."""
    for in_c, out_c, size in RESNET50_POINTWISE:
        x = torch.randn(1, in_c, size, size)
        weight = torch.randn(out_c, in_c, 1, 1) * 0.01
        matrix, columns = weight.view(out_c, in_c), x.view(in_c, -1)
        print(f'1x1 conv {in_c}->{out_c} at {size}x{size}, batch 1: '
              f'F.conv2d {median_ms(lambda: F.conv2d(x, weight), 50):.3f} '
              f'ms, torch.mm {median_ms(lambda: matrix @ columns, 50):.3f} '
              'ms')


def per_sample_forward_7x7() -> None:
    batch, channels, size = 8, 512, 7
    x = torch.randn(batch, channels, size, size)
    weight = torch.randn(channels, channels, 3, 3) * 0.01
    kernels = torch.randn(batch * channels, channels, 3, 3) * 0.01
    cols = F.unfold(x, 3, padding=1)  # [B, C*9, 49]
    gemm_cols = cols.permute(1, 0, 2).reshape(channels * 9, -1).contiguous()
    folded = x.reshape(1, batch * channels, size, size)
    bank = torch.randn(4, channels, channels * 9) * 0.01
    coeff = torch.softmax(torch.randn(batch, 4), 1)

    def mixed_then_grouped():
        mixed = coeff @ bank.reshape(4, -1)
        return F.conv2d(folded, mixed.view(-1, channels, 3, 3), padding=1,
                        groups=batch)

    def mixed_in_blocks(block: int = 128):
        # each block of output channels mixed and used while in cache
        out = torch.empty(batch, channels, size, size)
        for start in range(0, channels, block):
            part = bank[:, start:start + block].reshape(4, -1)
            for i in range(batch):
                out[i:i + 1, start:start + block] = F.conv2d(
                    x[i:i + 1], (coeff[i] @ part).view(block, channels, 3,
                                                      3), padding=1)
        return out

    rows = {
        'static 3x3 conv, batch 8':
        lambda: F.conv2d(x, weight, padding=1),
        'same GEMM as a 1x1 oneDNN conv over the columns':
        lambda: F.conv2d(cols.view(batch, -1, size, size),
                         weight.view(channels, -1, 1, 1)),
        'same GEMM as one MKL matrix product':
        lambda: weight.view(channels, -1) @ gemm_cols,
        'per-sample kernels kept, 8 batch-1 convs':
        lambda: [F.conv2d(x[i:i + 1], kernels[i * channels:(i + 1) *
                                             channels], padding=1)
                 for i in range(batch)],
        'per-sample kernels kept, one grouped conv':
        lambda: F.conv2d(folded, kernels, padding=1, groups=batch),
        'four kernels mixed per sample, then one grouped conv':
        mixed_then_grouped,
        'the same mixed per block of 128 output channels':
        mixed_in_blocks,
    }
    for name, fn in rows.items():
        print(f'512 ch 3x3 at 7x7, forward: {name}: {median_ms(fn):.2f} ms')


def attention_cost() -> None:
    """OD-ResNet-50 1x at batch 1: the network as it runs, with each
    layer's attentions computed once and reused, and with the attentions
    computed but a static conv run instead."""
    torch.manual_seed(0)
    static = build_network('resnet50', None).eval()
    model = build_network('resnet50',
                          dict(type='ODConv', num_kernels=1)).eval()
    x = torch.randn(1, 3, 224, 224)
    forward = DynamicConv2dBase.forward
    cache = {}

    def cached(self, inputs, attentions=None):
        if id(self) not in cache:
            cache[id(self)] = self.attention(inputs)
        return forward(self, inputs, cache[id(self)])

    def static_conv(self, inputs, attentions=None):
        return F.conv2d(inputs, self.weight[0], None, self.stride,
                        self.padding, self.dilation, self.groups)

    def attention_only(self, inputs, attentions=None):
        self.attention(inputs)
        return static_conv(self, inputs)

    variants = dict(as_run=forward, attentions_cached=cached,
                    attentions_then_static_conv=attention_only,
                    static_conv_only=static_conv)
    # the static network with its 1x1 convolutions as our layers run them
    static_products = build_network('resnet50', None).eval()
    for conv in static_products.modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1):
            conv.forward = functools.partial(_pointwise_forward, conv)
    with torch.no_grad():
        print(f'OD-ResNet-50 1x batch 1: static network '
              f'{median_ms(lambda: static(x)):.1f} ms, with its 1x1 convs '
              'through shared_kernel_conv2d '
              f'{median_ms(lambda: static_products(x)):.1f} ms')
        try:
            for name, variant in variants.items():
                DynamicConv2dBase.forward = variant
                print(f'OD-ResNet-50 1x batch 1: {name} '
                      f'{median_ms(lambda: model(x)):.1f} ms')
        finally:
            DynamicConv2dBase.forward = forward


def _pointwise_forward(conv: torch.nn.Conv2d,
                       x: torch.Tensor) -> torch.Tensor:
    return shared_kernel_conv2d(x, conv.weight, conv.bias, conv.stride,
                                conv.padding, conv.dilation, conv.groups)


def tiled_gemm_tiles() -> None:
    """tiled_gemm's GEMM part (``_SampleGEMM``: kernels mixed and used tile
    by tile, and the tiled backward) at 512 channels 3x3 on 7x7, batch 8,
    four kernels, by tile budget, against a static conv's forward +
    backward on the same input."""
    import importlib
    tiled = importlib.import_module('dynconv_mm.execution.tiled_gemm_conv2d')
    batch, channels, size, kernels = 8, 512, 7, 4
    row = channels * 9
    with torch.enable_grad():
        x = torch.randn(batch, channels, size, size, requires_grad=True)
        weight = torch.randn(channels, channels, 3, 3, requires_grad=True)
        cols = torch.randn(batch, 1, row, size * size, requires_grad=True)
        bank = torch.randn(kernels, 1, channels, row, requires_grad=True)
        mixing = torch.softmax(torch.randn(batch, kernels), 1)
        mixing.requires_grad_()
        grad_y = torch.randn(batch, 1, channels, size * size)

        def static():
            y = F.conv2d(x, weight, padding=1)
            torch.autograd.grad(y, (x, weight), torch.ones_like(y))

        def forward():
            with torch.no_grad():
                tiled._SampleGEMM.apply(cols, bank, mixing)

        def forward_backward():
            y = tiled._SampleGEMM.apply(cols, bank, mixing)
            torch.autograd.grad(y, (cols, bank, mixing), grad_y)

        budget = tiled.TILE_BYTES
        try:
            for mib in (2, 4, 8, 16, 1 << 20):
                tiled.TILE_BYTES = mib << 20
                count = len(tiled.tiles(batch, channels, row, 4))
                print(f'tiled_gemm GEMM part, tiles: {count}; static conv '
                      f'fwd+bwd {median_ms(static, 11):.1f} ms, forward '
                      f'{median_ms(forward, 11):.1f} ms, fwd+bwd '
                      f'{median_ms(forward_backward, 11):.1f} ms')
        finally:
            tiled.TILE_BYTES = budget


PROBES = dict(bandwidth=bandwidth, mixing=batch1_mixing,
              pointwise=pointwise_products,
              per_sample_7x7=per_sample_forward_7x7,
              attention=attention_cost, tiles=tiled_gemm_tiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--probes', default=','.join(PROBES),
                        help='comma list of: ' + ', '.join(PROBES))
    args = parser.parse_args()
    names = args.probes.split(',')
    unknown = [name for name in names if name not in PROBES]
    if unknown:
        parser.error(f'--probes: unknown {unknown}; use {list(PROBES)}')
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    for name in names:
        PROBES[name]()


if __name__ == '__main__':
    main()
