"""Where one dynamic layer spends its time against a static conv of the
same shape: ``torch.profiler`` over a few forward (+ backward) steps of
each, the ops grouped by name, heaviest first.

On a GPU the table counts device (kernel) time and kernel launches, so it
shows what a layer adds besides its convolution (pooling, the attention
MLP, the passes that scale activations, the mixing) and whether it is
bound by launches or by those passes; on the CPU, the ops' own CPU time.

Each module also gets its wall time per step (steps back to back, as in
training, synchronised only at the ends) and the ATen ops its step
dispatches (one Python-to-C++ dispatch each, on a GPU mostly one launch
each). Where the device is busy for much less than the wall time, the
step waits on the host (Python, dispatch, launches), not on the GPU:
fewer ops, or capturing the step (CUDA graphs), is then what helps.

    python tools/analysis/profile_layer.py --layer "ODConv 1x" \\
        --shape 256,64,1,56 --batch 64 --device cuda --amp bf16 \\
        [--execution auto] [--mode train|infer] [--steps 5] [--top 25]
"""
import argparse
import os
import sys
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import LAYER_TYPES, build_layer  # noqa: E402

from dynconv_mm.execution import FORMULATIONS  # noqa: E402

# (name, calls, microseconds) per op
Costs = List[Tuple[str, int, float]]


def layer_step(module: nn.Module, x: torch.Tensor, train: bool,
               autocast) -> Callable[[], None]:
    """One forward (+ backward) of ``module`` on ``x``."""

    def step():
        with torch.set_grad_enabled(train), autocast():
            out = module(x)
        if train:
            # as a training step: gradients written, not added to
            module.zero_grad(set_to_none=True)
            x.grad = None
            out.float().sum().backward()

    return step


class _CountOps(TorchDispatchMode):
    """Counts the ATen ops dispatched under it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def dispatched_ops(step: Callable[[], None]) -> int:
    """The ATen ops one call of ``step`` dispatches (views included: each
    is a dispatch on the host, though no launch). Triton's launches are not
    ATen ops, and on the CPU the compiled ops step aside for PyTorch's
    under a dispatch mode (:mod:`dynconv_mm.execution.cpu_ops`): there the
    count is of the PyTorch path."""
    with _CountOps() as counter:
        step()
    return counter.count


def wall_ms(step: Callable[[], None], steps: int, gpu: bool) -> float:
    """Wall milliseconds per step over ``steps`` steps run back to back
    (the host free to run ahead of the GPU, as in training)."""
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def profile_steps(step: Callable[[], None], gpu: bool,
                  steps: int) -> Tuple[Costs, float]:
    """Each op's calls and self time over ``steps`` calls of ``step``
    (device time on a GPU, CPU time on the CPU), heaviest first, and the
    total per step in microseconds."""
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
    gpu = device.type == 'cuda'
    steps = {title: layer_step(module, x, train, autocast)
             for title, module in (('static conv', static), (args.layer,
                                                             layer))}
    # a first pass of each, discarded: the profiler's own start-up and the
    # backends' first calls would land on whichever ran first
    for step in steps.values():
        profile_steps(step, gpu, 1)
    results = {}
    for title, step in steps.items():
        ranked, total = profile_steps(step, gpu, args.steps)
        print_table(title, ranked, total, args.top, unit)
        results[title] = dict(total=total, ops=dispatched_ops(step),
                              wall=wall_ms(step, args.steps, gpu))
    print()
    for title, r in results.items():
        print(f'{title}: wall {r["wall"]:.3f} ms per step, {unit} '
              f'{r["total"] / 1e3:.3f} ms ({r["total"] / 1e3 / r["wall"]:.0%}'
              f' of the wall time), {r["ops"]} ATen ops dispatched')
    ours, static_r = results[args.layer], results['static conv']
    print(f'{args.layer}: {ours["total"] / static_r["total"]:.2f}x the '
          f'static conv\'s {unit}, {ours["wall"] / static_r["wall"]:.2f}x '
          f'its wall time, {ours["ops"] / static_r["ops"]:.1f}x its '
          'dispatched ops')

if __name__ == '__main__':
    main()
