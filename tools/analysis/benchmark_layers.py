"""Time one dynamic conv layer against a static nn.Conv2d of the same shape.

Forward + backward per iteration, both measured in the same run; prints the
time of each and the ratio to the static conv.

    python tools/analysis/benchmark_layers.py [--device cpu|cuda]
        [--batch 8] [--iters 20] [--amp bf16|fp16]
"""
import argparse
import time
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer

import dynconv_mm  # noqa: F401

# (C_in, C_out, kernel, stride, groups, H=W): ResNet-18/50 and MobileNetV2
# layer shapes at 224x224 input
SHAPES = [
    (64, 64, 3, 1, 1, 56),
    (128, 128, 3, 1, 1, 28),
    (256, 256, 3, 1, 1, 14),
    (512, 512, 3, 1, 1, 7),
    (256, 64, 1, 1, 1, 56),
    (144, 144, 3, 1, 144, 56),
]
LAYERS = [('DynamicConv', {}), ('ODConv', dict(num_kernels=1)),
          ('ODConv', {}), ('DyNetConv', {})]


def time_step(module: nn.Module, x: torch.Tensor, iters: int,
              autocast: Callable) -> float:
    """Median seconds of one forward + backward."""
    times = []
    for i in range(iters + 3):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast():
            out = module(x)
        out.float().sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--amp', choices=['bf16', 'fp16'])
    args = parser.parse_args()
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    device_type = torch.device(args.device).type

    def autocast():
        return torch.autocast(device_type, dtype=dtype) if dtype else \
            nullcontext()

    print(f'device={args.device} batch={args.batch} amp={args.amp} '
          f'torch={torch.__version__} threads={torch.get_num_threads()}')
    print(f'{"shape":<28}{"layer":<16}{"ms":>9}{"x static":>10}')
    for c_in, c_out, k, stride, groups, hw in SHAPES:
        x = torch.randn(args.batch, c_in, hw, hw, device=args.device,
                        requires_grad=True)
        conv_args = (c_in, c_out, k)
        kwargs = dict(stride=stride, padding=k // 2, groups=groups,
                      bias=False)
        shape = f'{c_in}->{c_out} k{k} g{groups} {hw}x{hw}'
        static = nn.Conv2d(*conv_args, **kwargs).to(args.device)
        base = time_step(static, x, args.iters, autocast)
        print(f'{shape:<28}{"Conv2d":<16}{base * 1e3:9.2f}{1.0:10.2f}')
        for layer_type, options in LAYERS:
            layer = build_conv_layer(dict(type=layer_type, **options),
                                     *conv_args, **kwargs).to(args.device)
            t = time_step(layer, x, args.iters, autocast)
            name = layer_type + (f' K={options["num_kernels"]}'
                                 if options else '')
            print(f'{"":<28}{name:<16}{t * 1e3:9.2f}{t / base:10.2f}')


if __name__ == '__main__':
    main()
