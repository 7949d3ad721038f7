"""Convolution with per-sample kernels: one entry point over every
formulation, all computing the same function (see :mod:`.attentions`)."""
from typing import Optional, Sequence, Union

from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, check_shapes,
                         empty_batch_conv2d)
from .im2col_conv2d import im2col_conv2d
from .kernel_branches import kernel_branches_conv2d
from .per_sample_kernels import aggregated_conv2d, batch_folded_conv2d
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
    check_shapes(x, weight, attentions, bias, groups)
    method = check_method(method)
    if x.shape[0] == 0:
        return empty_batch_conv2d(x, weight, attentions, bias, stride,
                                  padding, dilation, groups)
    if not isinstance(method, str) or method == 'auto':
        allowed = FORMULATIONS if method == 'auto' else method
        method = select_method(x, weight, attentions, allowed, stride,
                               padding, dilation)
    if method == 'triton':  # imported on use: it needs triton
        from .triton_conv2d import triton_conv2d
        run = triton_conv2d
    else:
        run = FUNCTIONS[method]
    return run(x, weight, attentions, bias, stride, padding, dilation,
               groups)
