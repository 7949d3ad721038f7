"""Convolution with per-sample kernels: one entry point over every
formulation, all computing the same function (see :mod:`.attentions`)."""
import functools
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, check_shapes,
                         empty_batch_conv2d)
from .im2col_conv2d import im2col_conv2d
from .kernel_branches import kernel_branches_conv2d
from .per_sample_kernels import (SampleRoute, aggregated_conv2d,
                                 batch_folded_conv2d, call_aggregation_plan,
                                 one_sample_route)
from .selection import FORMULATIONS, select_method
from .tiled_gemm_conv2d import tiled_gemm_conv2d

FUNCTIONS = {
    'batch_folded': batch_folded_conv2d,
    'aggregated': aggregated_conv2d,
    'kernel_branches': kernel_branches_conv2d,
    'im2col': im2col_conv2d,
    'tiled_gemm': tiled_gemm_conv2d,
}
METHODS = ('auto', ) + FORMULATIONS
Method = Union[str, Sequence[str]]


def check_method(method: Method, owner: str = 'dynamic_conv2d',
                 option: str = 'method') -> Method:
    """``method`` must be ``'auto'``, one formulation, or a non-empty
    sequence of formulations that ``'auto'`` may choose from; returns it
    (a sequence as a tuple)."""
    if isinstance(method, str):
        if method in METHODS:
            return method
    elif isinstance(method, (list, tuple)) and method and all(
            isinstance(m, str) and m in FORMULATIONS for m in method):
        return tuple(method)
    raise ValueError(
        f'{owner}: option {option}={method!r} is invalid: use one of '
        f'{METHODS}, or a non-empty list of {FORMULATIONS} for auto to '
        'choose from')


def dynamic_conv2d(x: Tensor,
                   weight: Tensor,
                   attentions: ConvAttentions,
                   bias: Optional[Tensor] = None,
                   stride: IntPair = 1,
                   padding: Padding = 0,
                   dilation: IntPair = 1,
                   groups: int = 1,
                   method: Method = 'auto') -> Tensor:
    """Convolve each sample with its own kernel formed from a bank.

    Args:
        x: input ``[B, C_in, H, W]``; ``B`` may be 0.
        weight: kernel bank ``[K, C_out, C_in/groups, kh, kw]``.
        attentions: per-sample attentions (see :class:`ConvAttentions`).
        bias: per-kernel biases ``[K, C_out]``, mixed by the kernel
            attention and added after the output attention, or ``None``.
        stride, padding, dilation, groups: as in :func:`F.conv2d`.
        method: ``'auto'`` (:func:`select_method` picks by shape, device
            and grad mode), one of ``FORMULATIONS`` to force it, or a list
            of formulations ``'auto'`` may choose from (to disable others).

    Returns:
        ``[B, C_out, H_out, W_out]``; every method gives the same values.
    """
    if (x.shape[0] == 1 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()):
        run = _prepared_inference_call(x, weight, attentions, bias, stride,
                                       padding, dilation, groups, method)
        return run(x, weight, attentions, bias, stride, padding, dilation,
                   groups)
    check_shapes(x, weight, attentions, bias, groups)
    method = check_method(method)
    if x.shape[0] == 0:
        return empty_batch_conv2d(x, weight, attentions, bias, stride,
                                  padding, dilation, groups)
    if not isinstance(method, str) or method == 'auto':
        allowed = FORMULATIONS if method == 'auto' else method
        method = select_method(x, weight, attentions, allowed, stride,
                               padding, dilation)
    return formulation(method)(x, weight, attentions, bias, stride, padding,
                               dilation, groups)


def formulation(method: str) -> Callable[..., Tensor]:
    """The function of formulation ``method``."""
    if method == 'triton':  # imported on use: it needs triton
        from .triton_conv2d import triton_conv2d
        return triton_conv2d
    return FUNCTIONS[method]


# Batch-1 inference without autograd, where the Python around a layer's few
# small ops is a visible share of its time (OD-ResNet-50 1x on 2 CPU cores:
# 5-8 ms of a 60-75 ms forward, docs/benchmarks.md): what the checks, the
# selection and the aggregation plan decide depends only on the call's
# signature, so each signature is decided once. Bounded, since a detector
# meets many image sizes.
_INFERENCE_CALLS: Dict[tuple, Callable[..., Tensor]] = {}
MAX_INFERENCE_CALLS = 4096


def _prepared_inference_call(x: Tensor, weight: Tensor,
                             attentions: ConvAttentions,
                             bias: Optional[Tensor], stride: IntPair,
                             padding: Padding, dilation: IntPair,
                             groups: int, method: Method) -> Callable[...,
                                                                     Tensor]:
    """The formulation (with its shape-only decisions bound) that
    :func:`dynamic_conv2d` runs for a batch-1 call without autograd: the
    checks and the selection run on the first call of a signature. At
    batch 1 without autograd the selection depends on shapes, device and
    ``method`` only (:func:`.selection.preference`)."""
    kernel, spatial, channel, output = attentions
    try:
        key = (x.shape, x.device, weight.shape, weight.device,
               None if kernel is None else kernel.shape,
               None if spatial is None else spatial.shape,
               None if channel is None else channel.shape,
               None if output is None else output.shape,
               None if bias is None else bias.shape, stride, padding,
               dilation, groups, method)
        run = _INFERENCE_CALLS.get(key)
    except TypeError:  # an unhashable argument (a list): decide every time
        key, run = None, None
    if run is not None:
        return run
    check_shapes(x, weight, attentions, bias, groups)
    checked = check_method(method)
    if not isinstance(checked, str) or checked == 'auto':
        checked = select_method(
            x, weight, attentions,
            FORMULATIONS if checked == 'auto' else checked, stride, padding,
            dilation)
    run = formulation(checked)
    if checked == 'aggregated':
        run = functools.partial(run, plan=call_aggregation_plan(
            x, weight, attentions, stride, padding, dilation))
    if key is not None:
        if len(_INFERENCE_CALLS) >= MAX_INFERENCE_CALLS:
            _INFERENCE_CALLS.clear()
        _INFERENCE_CALLS[key] = run
    return run


def one_sample_inference_route(x: Tensor, weight: Tensor,
                               attentions: ConvAttentions,
                               bias: Optional[Tensor], stride: IntPair,
                               padding: Padding, dilation: IntPair,
                               groups: int,
                               method: Method) -> Optional[SampleRoute]:
    """The route (:func:`.per_sample_kernels.one_sample_route`) that
    :func:`dynamic_conv2d` takes for a batch-1 call without autograd where
    it runs ``aggregated``; ``None`` where another formulation runs it. The
    caller holds that the call is batch-1, without autograd and not
    compiled."""
    run = _prepared_inference_call(x, weight, attentions, bias, stride,
                                   padding, dilation, groups, method)
    if not (isinstance(run, functools.partial)
            and run.func is aggregated_conv2d):
        return None
    return one_sample_route(x, weight, attentions, bias, stride, padding,
                            dilation, groups, run.keywords['plan'])
