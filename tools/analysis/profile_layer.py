"""Where one dynamic layer spends its time against a static conv of the
same shape: ``torch.profiler`` over a few forward (+ backward) steps of
each, the ops grouped by name, heaviest first.

On a GPU the table counts device (kernel) time and kernel launches, so it
shows what a layer adds besides its convolution (pooling, the attention
MLP, the passes that scale activations, the mixing) and whether it is
bound by launches or by those passes; on the CPU, the ops' own CPU time.

    python tools/analysis/profile_layer.py --layer "ODConv 1x" \\
        --shape 256,64,1,56 --batch 64 --device cuda --amp bf16 \\
        [--execution auto] [--mode train|infer] [--steps 5] [--top 25]
"""
import argparse
import os
import sys
from contextlib import nullcontext
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import LAYER_TYPES, build_layer  # noqa: E402

from dynconv_mm.execution import FORMULATIONS  # noqa: E402

# (name, calls, microseconds) per op
Costs = List[Tuple[str, int, float]]


def profile_steps(module: nn.Module, x: torch.Tensor, train: bool,
                  steps: int, autocast) -> Tuple[Costs, float]:
    """Each op's calls and self time over ``steps`` steps (device time on
    a GPU, CPU time on the CPU), heaviest first, and the total per step in
    microseconds."""
    gpu = x.is_cuda

    def step():
        with torch.set_grad_enabled(train), autocast():
            out = module(x)
        if train:
            module.zero_grad(set_to_none=True)
            out.float().sum().backward()

    for _ in range(2):  # warm up: caches, cuDNN's choice, Triton's JIT
        step()
    if gpu:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if gpu:
            torch.cuda.synchronize()
    attribute = 'self_device_time_total' if gpu else 'self_cpu_time_total'
    costs: Dict[str, List[float]] = {}
    for event in prof.key_averages():
        spent = getattr(event, attribute, 0.0)
        if spent > 0:
            costs[event.key] = [event.count / steps, spent / steps]
    ranked = sorted(((name, round(calls), us)
                     for name, (calls, us) in costs.items()),
                    key=lambda row: -row[2])
    return ranked, sum(us for _, _, us in ranked)


def print_table(title: str, ranked: Costs, total: float, top: int,
                unit: str) -> None:
    print(f'\n{title}: {total / 1e3:.3f} ms of {unit} per step, '
          f'{sum(c for _, c, _ in ranked)} op calls with any')
    print(f'{"op":<60}{"calls":>7}{"us":>10}{"share":>8}')
    for name, calls, us in ranked[:top]:
        print(f'{name[:59]:<60}{calls:>7}{us:>10.1f}'
              f'{us / max(total, 1e-9):>8.1%}')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--layer', default='ODConv 1x',
                        choices=list(LAYER_TYPES))
    parser.add_argument('--shape', default='256,64,1,56',
                        help='C_in,C_out,kernel,H (square input, stride 1)')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', choices=['bf16', 'fp16'])
    parser.add_argument('--execution', default='auto',
                        help="the layer's execution option: auto or one of "
                        + ', '.join(FORMULATIONS))
    parser.add_argument('--mode', choices=['train', 'infer'],
                        default='train')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--top', type=int, default=25)
    args = parser.parse_args()
    try:
        c_in, c_out, kernel, size = (int(v) for v in args.shape.split(','))
    except ValueError:
        parser.error(f'--shape: expected C_in,C_out,kernel,H as four '
                     f'integers, got {args.shape!r}')
    if args.execution != 'auto' and args.execution not in FORMULATIONS:
        parser.error(f'--execution: unknown formulation {args.execution!r}; '
                     f'choose auto or one of {", ".join(FORMULATIONS)}')
    device = torch.device(args.device)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)

    def autocast():
        return (torch.autocast(device.type, dtype=dtype) if dtype else
                nullcontext())

    train = args.mode == 'train'
    shape = (c_in, c_out, kernel, 1)
    x = torch.randn(args.batch, c_in, size, size, device=device,
                    requires_grad=train)
    static = build_layer(None, shape).to(device)
    layer = build_layer(dict(LAYER_TYPES[args.layer],
                             execution=args.execution), shape).to(device)
    unit = 'device time' if device.type == 'cuda' else 'CPU time'
    print(f'{args.layer} {c_in}->{c_out} k{kernel} {size}x{size}, batch '
          f'{args.batch}, {args.mode}, amp={args.amp}, execution='
          f'{args.execution}, device={device}, torch {torch.__version__}')
    modules = (('static conv', static), (args.layer, layer))
    # a first pass of each, discarded: the profiler's own start-up and the
    # backends' first calls would land on whichever ran first
    for _, module in modules:
        profile_steps(module, x, train, 1, autocast)
    results = {}
    for title, module in modules:
        ranked, total = profile_steps(module, x, train, args.steps,
                                      autocast)
        print_table(title, ranked, total, args.top, unit)
        results[title] = total
    print(f'\n{args.layer}: {results[args.layer] / results["static conv"]:.2f}'
          f'x the static conv\'s {unit}')


if __name__ == '__main__':
    main()
