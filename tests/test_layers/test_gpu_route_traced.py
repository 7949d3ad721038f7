"""The layers' GPU route, traced without a GPU: parameters and inputs are
fake CUDA tensors (``FakeTensorMode``: shapes, dtypes and devices, no
data), so ``'auto'`` takes the GPU rule, and every op the forward
dispatches can be watched for one that waits for the device (``.item()``,
``nonzero``, a copy to the host). On a CPU such an op costs nothing and no
CPU test notices it; on a GPU one per layer would drain the launch queue
48 times a step of OD-ResNet-50.

The forward only (the autograd engine needs a real device for backward),
and without autocast (fake tensors do not pass through its casts, so the
dtypes a bf16 step sees are not these; the formulations' dtypes under
autocast are checked on the CPU, ``test_mixed_precision.py``). Triton is
treated as absent (a fake tensor cannot launch a kernel), so where the
rule prefers it the next formulation in its order runs.
"""
import importlib
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import LAYERS
from dynconv_mm.execution import selection

# the module (the package's name of the same spelling is its function)
dynamic_conv2d_module = importlib.import_module(
    'dynconv_mm.execution.dynamic_conv2d')

WAITS_FOR_DEVICE = {'_local_scalar_dense', 'item', 'nonzero', 'is_nonzero',
                    'equal', 'allclose'}

# (layer, options, C_in, C_out, kernel, groups, H) at ResNet-50 and
# MobileNetV2 shapes: at batch 4 the static bank (kernel_branches, im2col)
# and tiled_gemm (where Triton would run), at batch 1 per-sample kernels
CASES = {
    'ODConv 1x 1x1': ('ODConv', dict(num_kernels=1), 256, 64, 1, 1, 56),
    'ODConv 1x 3x3': ('ODConv', dict(num_kernels=1), 64, 64, 3, 1, 14),
    'ODConv 4x widening 1x1': ('ODConv', {}, 64, 256, 1, 1, 28),
    'DynamicConv 3x3': ('DynamicConv', {}, 64, 64, 3, 1, 28),
    'DyNet 1x1': ('DyNetConv', {}, 256, 64, 1, 1, 28),
    'ODConv 1x depthwise': ('ODConv', dict(num_kernels=1), 96, 96, 3, 96, 28),
}


class OpWatch(TorchDispatchMode):
    """Each op's name and the tensors it returned."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (list, tuple)) else (out, )
        self.ops.append((func.overloadpacket.__name__,
                         [t for t in results if isinstance(t, torch.Tensor)]))
        return out


def fake_cuda_works() -> bool:
    """Whether this torch makes fake CUDA tensors (a CPU-only build may
    refuse the device)."""
    try:
        with FakeTensorMode():
            torch.empty(1, device='cuda')
        return True
    except (RuntimeError, AssertionError):
        return False


def trace_forward(case, batch, train, monkeypatch):
    """The ops of one forward of the case's layer on fake CUDA tensors,
    and the formulation ``'auto'`` chose."""
    name, options, c_in, c_out, k, groups, size = CASES[case]
    monkeypatch.setattr(selection, 'triton_runnable', lambda *a, **k: False)
    chosen = []
    select = dynamic_conv2d_module.select_method
    monkeypatch.setattr(dynamic_conv2d_module, 'select_method',
                        lambda *a, **k: chosen.append(select(*a, **k))
                        or chosen[-1])
    layer = LAYERS[name](c_in, c_out, k, padding=k // 2, groups=groups,
                         **options).train(train)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake, warnings.catch_warnings():
        # the stages' storage is told apart by its address, which a fake
        # tensor warns about
        warnings.simplefilter('ignore', UserWarning)
        for module in layer.modules():
            for key, p in module._parameters.items():
                if p is not None:
                    module._parameters[key] = torch.nn.Parameter(
                        fake.from_tensor(p).to('cuda'), p.requires_grad)
            for key, b in module._buffers.items():
                if b is not None:
                    module._buffers[key] = fake.from_tensor(b).to('cuda')
        x = torch.randn(batch, c_in, size, size, device='cuda',
                        requires_grad=train)
        with torch.set_grad_enabled(train), OpWatch() as watch:
            y = layer(x)
    assert y.is_cuda and y.shape[:2] == (batch, c_out)
    return watch.ops, chosen


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('batch, train', [(4, True), (1, False)])
def test_the_gpu_route_never_waits_for_the_device(case, batch, train,
                                                  monkeypatch):
    if not fake_cuda_works():
        pytest.skip('this torch makes no fake CUDA tensors')
    ops, chosen = trace_forward(case, batch, train, monkeypatch)
    assert chosen and 'triton' not in chosen
    assert any(name == 'convolution' or name in ('bmm', 'mm')
               for name, _ in ops)  # the watch saw the layer's work
    waits = [name for name, outputs in ops if name in WAITS_FOR_DEVICE or
             any(not t.is_cuda for t in outputs if t.numel() > 1)]
    assert not waits, f'{case} ({chosen}): {waits}'
