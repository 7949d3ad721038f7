"""The ``im2col`` formulation: the spatial and channel attentions folded
into the unfolded input, so that the weight stays the static bank.

``conv(c * x, s * W)`` sums ``W[o, i, p, q] * s[p, q] * c[i] *
x[i, h+p, w+q]``: on the unfolded input (im2col, one row per ``(i, p, q)``)
both attentions are a scaling of rows. The convolution then is one GEMM of
the static bank with those columns, which this module runs as a 1x1
convolution over the ``C_in*kh*kw``-channel column tensor (the backend's
fast path, and a free view of the bank). With ``K > 1`` kernels the GEMM is
``K`` times as wide and the outputs are mixed (the kernel-branch form);
the filter attention scales the output. Exact for every attention; the
unfolded input is ``kh*kw`` times the input, so it pays where the spatial
size is small and the kernel large (ResNet's 14x14 and 7x7 stages), where a
per-sample kernel would cost more memory traffic than the activations.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, accepts_empty_batch,
                         compute_dtype, explicit_padding, finish, output_size,
                         pair, scale_channels, shared_kernel_conv2d)
from .cpu_ops import (cpu_fold_columns, cpu_fold_usable, cpu_unfold_columns,
                      cpu_unfold_usable)
from .kernel_branches import branch_bank, mix_branches
from .recompute import scaled_input_conv2d


def _scale_rows(cols: Tensor, rows: Tensor) -> Tensor:
    """Columns ``[B, C*kh*kw, P]`` with each row times its scale in
    ``rows`` ``[B, C, kh*kw]``."""
    return (cols.unflatten(1, rows.shape[1:]) * rows[..., None]).flatten(1, 2)


def _dense(rows: Optional[Tensor]) -> Optional[Tensor]:
    # the row scales arrive expanded over channels (a spatial attention
    # alone); the ops read them contiguous
    return None if rows is None else rows.contiguous()


class _UnfoldColumns(torch.autograd.Function):
    """``F.unfold`` by the compiled op, its rows scaled by ``rows`` ``[B, C,
    kh*kw]`` if given; backward ``F.fold`` by its own, the scaling's
    gradient in the same pass: the unfolded input's gradient from
    ``tiled_gemm``'s compiled GEMMs is a transposed view, which PyTorch's
    fold would copy first, and scaling it and its products with the
    columns would be three more passes over columns-sized tensors."""

    @staticmethod
    def forward(ctx, x: Tensor, rows: Optional[Tensor], kernel_size,
                dilation, padding, stride) -> Tensor:
        ctx.geometry = (x.shape[2:], kernel_size, dilation, padding, stride)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, rows)
        return cpu_unfold_columns(x, kernel_size, dilation, padding, stride,
                                  _dense(rows))

    @staticmethod
    def backward(ctx, grad: Tensor):
        size, *geometry = ctx.geometry
        x, rows = ctx.saved_tensors
        if not torch.is_grad_enabled() and cpu_fold_usable(grad):
            grad_x, *grad_rows = cpu_fold_columns(grad, size, *geometry,
                                                  _dense(rows), x)
            return grad_x, *(grad_rows or [None]), None, None, None, None
        # create_graph (differentiable), or not foldable here
        grad_rows = None
        if x is not None:
            grad_rows = (grad * F.unfold(x, *geometry)).unflatten(
                1, rows.shape[1:]).sum(-1)
        if rows is not None:
            grad = _scale_rows(grad, rows)
        return (F.fold(grad, size, *geometry), grad_rows, None, None, None,
                None)


def unfold(x: Tensor, kernel_size: Tuple[int, int],
           dilation: Tuple[int, int], padding: Tuple[int, int],
           stride: Tuple[int, int], rows: Optional[Tensor] = None,
           stages: Optional[List[Tensor]] = None) -> Tensor:
    """``F.unfold(x, ...)`` (symmetric ``padding``), each row ``(c, i, j)``
    of sample ``b`` times ``rows[b, c, i*kw + j]`` if given; on the CPU by
    the compiled ops where they are usable (:mod:`.cpu_ops`): a
    512-channel 3x3 layer's columns at 7x7, batch 8, in 0.9 ms instead of
    1.7, their gradient in 1.5 ms instead of 6.4 (2-core AMD EPYC VM);
    with ODConv's channel x spatial scales at batch 8 (Intel VM) ~2 ms of
    the layer's ~32 ms forward + backward less than scaling the columns in
    PyTorch. Each tensor it forms is appended to ``stages`` (see
    :func:`unfold_scaled`)."""
    stages = [] if stages is None else stages
    if cpu_unfold_usable(x) and (rows is None or rows.dtype == x.dtype):
        cols = _UnfoldColumns.apply(x, rows, kernel_size, dilation, padding,
                                    stride)
    else:
        cols = F.unfold(x, kernel_size, dilation, padding, stride)
        if rows is not None:
            stages.append(cols)
            cols = _scale_rows(cols, rows)
    stages.append(cols)
    return cols


def columns_size(x: Tensor, kernel_size, out_pixels: int) -> int:
    """Elements of :func:`unfold_scaled`'s columns (at least the input's),
    for an output of ``out_pixels`` pixels per channel."""
    return max(x.numel(), x.shape[0] * x.shape[1] * kernel_size[0] *
               kernel_size[1] * out_pixels)


def unfold_scaled(x: Tensor,
                  kernel_size,
                  attentions: ConvAttentions,
                  stride: IntPair,
                  padding: Padding,
                  dilation: IntPair,
                  stages: Optional[List[Tensor]] = None) -> Tensor:
    """The columns ``[B, C_in*kh*kw, H_out, W_out]`` of ``x`` with rows
    scaled by the channel and spatial attentions; each tensor it makes is
    appended to ``stages`` (for :func:`.recompute.recomputed_in_backward`),
    ending with the columns in the dtype a convolution would cast them to
    under autocast."""
    stages = [] if stages is None else stages
    batch, in_channels = x.shape[:2]
    kh, kw = kernel_size
    height, width = output_size(x, kernel_size, stride, padding, dilation)
    channel, spatial = attentions.input, attentions.spatial
    cols = x
    rows = None  # per-sample scales of the columns' rows [B, C, kh*kw]
    if spatial is not None:
        rows = spatial.reshape(batch, 1, kh * kw)
        if channel is not None:
            rows = channel[:, :, None] * rows
        rows = rows.expand(batch, in_channels, kh * kw).to(x.dtype)
    elif channel is not None:
        # the channel scaling is cheaper on x than on the columns
        cols = scale_channels(cols, channel)
        stages.append(cols)
    top, bottom, left, right = explicit_padding(padding, kernel_size,
                                                dilation)
    if (top, left) != (bottom, right):  # F.unfold pads symmetrically only
        cols = F.pad(cols, (left, right, top, bottom))
        stages.append(cols)
        top = left = 0
    if not ((kh, kw) == (1, 1) and pair(stride) == (1, 1) and top == left
            == 0):  # else a 1x1 kernel's columns are the input itself
        cols = unfold(cols, (kh, kw), pair(dilation), (top, left),
                      pair(stride), rows, stages)
    elif rows is not None:
        cols = _scale_rows(cols.flatten(2), rows)
        stages.append(cols)
    dtype = compute_dtype(x.device.type, cols.dtype)
    if cols.dtype != dtype and cols.dtype != torch.float64:
        cols = cols.to(dtype)  # what F.conv2d under autocast would save
        stages.append(cols)
    return cols.reshape(batch, in_channels * kh * kw, height, width)


@accepts_empty_batch
def im2col_conv2d(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                  bias: Optional[Tensor], stride: IntPair, padding: Padding,
                  dilation: IntPair, groups: int) -> Tensor:
    """Attentions on the columns, the static bank as a 1x1 conv over
    them."""
    num_kernels, _, group_in, kh, kw = weight.shape
    bank = branch_bank(weight, groups)
    bank = bank.reshape(bank.shape[0], group_in * kh * kw, 1, 1)
    height, width = output_size(x, (kh, kw), stride, padding, dilation)
    y = scaled_input_conv2d(
        x, weight, lambda stages: unfold_scaled(
            x, (kh, kw), attentions, stride, padding, dilation, stages),
        lambda cols: shared_kernel_conv2d(cols, bank, None, 1, 0, 1,
                                          groups),
        attentions, columns_size(x, (kh, kw), height * width))
    y = mix_branches(y, attentions.kernel, num_kernels, groups)
    return finish(y, attentions, bias)
