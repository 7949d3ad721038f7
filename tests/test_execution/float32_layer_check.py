"""A float32 layer run (where the compiled CPU ops take it) against the
per-sample ``F.conv2d`` oracle in float64, forward and every gradient."""
from typing import Callable

import torch

from dynconv_mm.execution import ConvAttentions, dynamic_conv2d
from oracle import reference_dynamic_conv2d
from test_dynamic_conv2d import inputs_of, make_case


def float32_case(geometry, attention):
    """:func:`make_case`'s tensors in float32, each a leaf needing grad."""
    x, weight, bias, att, conv = make_case(geometry, attention, True)
    as32 = lambda t: t.detach().float().requires_grad_()  # noqa: E731
    return (as32(x), as32(weight), as32(bias),
            {k: as32(v) for k, v in att.items()}, conv)


def check_float32_layer_against_oracle(
        geometry: str, attention: str, method: str,
        after_backward: Callable[[], None]) -> None:
    """Run the case through ``dynamic_conv2d(method=method)`` in float32,
    call ``after_backward`` (the caller's checks of which ops ran), then
    compare the output and every gradient with the float64 oracle's."""
    x, weight, bias, att, conv = float32_case(geometry, attention)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), bias,
                         method=method, **conv)
    tensors = inputs_of(x, weight, bias, att)
    cot = torch.randn(out.shape, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad(out, tensors, cot.float())
    after_backward()
    as64 = [t.detach().double().requires_grad_() for t in tensors]
    x64, w64 = as64[:2]
    b64, att64 = as64[2], dict(zip(att, as64[3:]))
    ref = reference_dynamic_conv2d(x64, w64, bias=b64, **att64, **conv)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, torch.autograd.grad(ref, as64, cot)):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)
