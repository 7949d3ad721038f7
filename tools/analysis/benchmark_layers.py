"""Time every execution formulation of each dynamic layer against a static
``nn.Conv2d`` of the same shape: the measurements that set ``'auto'``.

For each ResNet-50 shape (224x224 input) and layer type, prints the static
conv's time and, as ratios to it, each formulation forced through the
layer's ``execution`` option, what ``'auto'`` runs, and the materialised
``[B, K, ...]`` form of public implementations. Calls alternate between
candidates round by round; the figure is each candidate's fastest round
(the least disturbed on a shared machine), each timed call right after an
untimed one of the same candidate. ``--clock cpu`` counts the
process's CPU time instead of wall time: on a machine shared with other
jobs it is far steadier, and with ``OMP_WAIT_POLICY=PASSIVE`` idle
threads do not burn it.

    python tools/analysis/benchmark_layers.py [--mode train|infer]
        [--batch 8] [--rounds 5] [--device cpu|cuda] [--amp bf16|fp16]
        [--clock wall|cpu] [--layers ODConv1x,...] [--shapes grouped]
"""
import argparse
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import (LAYER_TYPES, build_layer,  # noqa: E402
                       use_materialised_form)

from dynconv_mm.execution import FORMULATIONS  # noqa: E402
from dynconv_mm.execution.selection import valid_methods  # noqa: E402

# (C_in, C_out, kernel, stride, H, W): ResNet-50's block convs at 224x224
SHAPES = [
    (64, 64, 3, 1, 56, 56),
    (256, 64, 1, 1, 56, 56),
    (64, 256, 1, 1, 56, 56),
    (128, 128, 3, 1, 28, 28),
    (512, 128, 1, 1, 28, 28),
    (128, 512, 1, 1, 28, 28),
    (256, 256, 3, 1, 14, 14),
    (1024, 256, 1, 1, 14, 14),
    (256, 1024, 1, 1, 14, 14),
    (512, 512, 3, 1, 7, 7),
    (2048, 512, 1, 1, 7, 7),
    (512, 2048, 1, 1, 7, 7),
]
# (C_in, C_out, kernel, stride, H, W, groups): depthwise layers of
# MobileNetV2 (width 1.0) at 224x224 and 32-group 3x3 layers (ResNeXt's)
GROUPED_SHAPES = [
    (96, 96, 3, 1, 56, 56, 96),
    (576, 576, 3, 1, 14, 14, 576),
    (960, 960, 3, 1, 7, 7, 960),
    (256, 256, 3, 1, 14, 14, 32),
    (1024, 1024, 3, 1, 7, 7, 32),
]
SHAPE_SETS = {
    'resnet50': [(*shape, 1) for shape in SHAPES],
    'grouped': GROUPED_SHAPES,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--mode', choices=['train', 'infer'], default='train',
                        help='forward+backward, or forward without grad')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--amp', choices=['bf16', 'fp16'])
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall')
    parser.add_argument('--layers', help='comma list of ' +
                        ', '.join(LAYER_TYPES) + ' (default all)')
    parser.add_argument('--shapes', choices=list(SHAPE_SETS),
                        default='resnet50',
                        help="ResNet-50's block convs (default), or grouped "
                        'and depthwise ones')
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    clock = time.process_time if args.clock == 'cpu' else time.perf_counter
    train = args.mode == 'train'
    layer_types = LAYER_TYPES if not args.layers else {
        name: LAYER_TYPES[name]
        for name in args.layers.split(',')
    }

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype else \
            nullcontext()

    def step(module, x, execution=None):
        def run():
            if execution is not None:
                module.execution = execution
            with torch.set_grad_enabled(train), autocast():
                out = module(x)
            if train:
                # as a training step's zero_grad(set_to_none=True):
                # gradients are written, not added to the last ones
                module.zero_grad(set_to_none=True)
                x.grad = None
                out.float().sum().backward()
        return run

    print(f'device={device} mode={args.mode} batch={args.batch} '
          f'amp={args.amp} clock={args.clock} torch={torch.__version__} '
          f'threads={torch.get_num_threads()}')
    columns = list(FORMULATIONS) + ['auto', 'materialised']
    print(f'{"shape":<24}{"layer":<17}{"static ms":>10}' +
          ''.join(f'{c[:13]:>14}' for c in columns) + '  auto ran')
    for c_in, c_out, k, stride, h, w, groups in SHAPE_SETS[args.shapes]:
        shape = (c_in, c_out, k, stride)
        x = torch.randn(args.batch, c_in, h, w, device=device,
                        requires_grad=train)
        static = build_layer(None, shape, groups).to(device).train(train)
        for name, cfg in layer_types.items():
            layer = build_layer(cfg, shape, groups).to(device).train(train)
            reference = use_materialised_form(
                build_layer(cfg, shape, groups).to(device).train(train))
            runnable = valid_methods(x, layer.attention(x[:1]))
            fns = {'static': step(static, x)}
            for method in columns[:-1]:
                if method in runnable or method == 'auto':
                    fns[method] = step(layer, x, method)
            fns['materialised'] = step(reference, x)
            best = {n: float('inf') for n in fns}
            for i in range(args.rounds + 1):
                for n, fn in fns.items():
                    fn()  # untimed: do not time the caches another left
                    if device.type == 'cuda':
                        torch.cuda.synchronize()
                    start = clock()
                    fn()
                    if device.type == 'cuda':
                        torch.cuda.synchronize()
                    if i:  # the first round warms up
                        best[n] = min(best[n], clock() - start)
            layer.execution = 'auto'
            with torch.set_grad_enabled(train):
                ran = _auto_choice(layer, x)
            cells = ''.join(
                f'{best[c] / best["static"]:>14.2f}' if c in best else
                f'{"-":>14}' for c in columns)
            label = f'{c_in}->{c_out} k{k} {h}x{w}' + (
                f' g{groups}' if groups > 1 else '')
            print(f'{label:<24}{name:<17}'
                  f'{best["static"] * 1e3:>10.2f}{cells}  {ran}', flush=True)


def _auto_choice(layer: nn.Module, x: torch.Tensor) -> str:
    """The formulation ``'auto'`` picks for this layer and input."""
    from dynconv_mm.execution import select_method
    attentions = layer.attention(x)
    return select_method(x, layer.weight, attentions, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation)


if __name__ == '__main__':
    main()
