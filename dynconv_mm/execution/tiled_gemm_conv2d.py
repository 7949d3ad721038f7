"""The ``tiled_gemm`` formulation: one GEMM per sample over its unfolded
input, each sample's kernel formed a tile of output channels at a time.

The channel and spatial attentions scale the rows of the unfolded input
(as in :mod:`.im2col_conv2d`), the filter attention the output, so a
sample's kernel is only the bank mixed by its kernel attention. Forming
all of them would write ``B`` kernel-sized tensors and read them back;
the ``K``-wide static bank (``im2col``) does ``K`` times the multiply-adds.
Here each sample's kernel is formed for a few output channels (a tile
sized to stay in cache), used at once by a batched GEMM and dropped:
the bank streams through once, and the multiply-adds are the static
convolution's plus the mixing (``K`` per kernel element and sample).

Backward does the same per tile: the tile's kernels are formed again, the
input-column gradient accumulated, and the tile's per-sample weight
gradient ``gy_b x cols_b^T``, computed in cache, reduced at once into the
bank's gradient (weighted by the kernel attention) and the kernel
attention's gradient (its inner product with each kernel). No per-sample
kernel or kernel gradient of the whole layer ever exists, and nothing
kernel-sized is kept between forward and backward.

With autograd recording the backward itself (``create_graph=True``) the
same products run on the whole layer as differentiable ops, so higher
derivatives stay exact.

Shapes: input ``[B, C_in, H, W]``, bank ``[K, C_out, C_in/g, kh, kw]``,
kernel attention ``[B, K]`` or DyNet's ``[B, C_out, K]``; output
``[B, C_out, H_out, W_out]``.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding, accepts_empty_batch,
                         compute_dtype, finish, output_size)
from .cpu_ops import (cpu_sample_conv_batch, cpu_sample_conv_batch_fits,
                      cpu_sample_gemm_backward, cpu_sample_gemm_forward,
                      cpu_sample_gemm_input_grad, cpu_sample_gemm_usable)
from .im2col_conv2d import columns_size, im2col_conv2d, unfold_scaled
from .recompute import scaled_input_conv2d

# Per-sample kernels of one tile, in bytes: at most this much is formed at
# once. Measured on a 512-channel 3x3 layer at 7x7, batch 8, four kernels
# (2-core Intel Xeon VM, the GEMM part's forward + backward,
# tools/analysis/probe_cpu_limits.py): 2 MiB tiles 51 ms, 4 MiB 43 ms,
# 8 MiB (~52 channels) 37 ms, 16 MiB 44 ms; the whole layer at once 50 ms.
TILE_BYTES = 8 << 20

# The compiled GEMMs (dynconv_mm.execution.cpu_ops) run a layer on maps
# below 10x10 output pixels, in AVX2 tiles (or with groups) where its
# kernel rows (C_in/groups x kh x kw) are at least this long. Measured on
# a 2-core AMD EPYC VM at batch 8,
# forward + backward, ratio to a static conv (DynamicConv K=4 / ODConv 4x
# / DyNet g=6), in PyTorch -> by the ops: a 512-channel 3x3 layer at 7x7
# (rows of 4608) 2.20 / 2.28 / 2.45x -> 1.47 / 1.65 / 1.77x (with the
# compiled unfold); 2048->512 1x1 at 7x7 (rows of 2048) 2.21-2.29 / 2.29 /
# 2.61-2.64x -> 1.95-2.03 / 2.03 / 2.40-2.44x. With rows of 512
# (512->2048 at 7x7) they tie or lose, and on 14x14 maps (1x1, rows of
# 256-1024) MKL's larger products win: 1024->256 1.55 / 1.73 / 1.66x ->
# 1.69 / 1.96 / 2.01x (docs/benchmarks.md). Where the forward runs over
# the batch in AVX-512 tiles (cpu_sample_conv_batch_fits: an Intel CPU,
# one group), and the gradients in wide tiles, rows from
# COMPILED_GEMM_MIN_ROW_AVX512: on the slower Xeon VM at batch 8,
# 512->2048 1x1 at 7x7 (rows of 512) 2.67 / 2.92 / 4.00x -> 1.93 / 2.04 /
# 2.40x, 256->1024 1x1 (256) 2.03 / 2.28 / 2.77x -> 1.75 / 2.00 / 2.10x,
# 128-channel 3x3 (1152) 2.61 / 2.80 / 2.95x -> 2.02 / 2.09 / 2.07x (one
# process switching call by call, so both slower than alone); rows of 128
# tie, rows of 16-96 lose 0.1-0.5 ms at batch 32 (MobileNetV2's 1x1
# layers); on 14x14 maps MKL still wins there.
COMPILED_GEMM_MIN_ROW = 2048
COMPILED_GEMM_MIN_ROW_AVX512 = 256
COMPILED_GEMM_MAX_PIXELS = 99


def tiles(samples: int, group_out: int, row_size: int,
          element_size: int) -> List[Tuple[int, int]]:
    """``(start, stop)`` output channels (per group) of each tile: as few
    tiles as keep the ``samples`` kernels of one within
    :data:`TILE_BYTES`, of equal size give or take one row."""
    row_bytes = max(samples * row_size * element_size, 1)
    count = -(-group_out // max(1, TILE_BYTES // row_bytes))
    bounds = [group_out * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _mix(mixing: Tensor, bank: Tensor) -> Tensor:
    """Sample kernels ``[B, g, T, J]`` of a bank tile ``[K, g, T, J]``:
    ``[B, K]`` mixing as one matrix product, DyNet's per-row ``[B, g, T, K]``
    as one small product per row."""
    num_kernels, groups, rows, row_size = bank.shape
    if mixing.dim() == 2:
        return (mixing @ bank.reshape(num_kernels, -1)).view(
            -1, groups, rows, row_size)
    return torch.einsum('bgtk,kgtj->bgtj', mixing, bank)


def _rows(mixing: Tensor, start: int, stop: int) -> Tensor:
    """The mixing of output rows ``start:stop`` (all of it if shared)."""
    return mixing if mixing.dim() == 2 else mixing[:, :, start:stop]


def _weight_gradient_reductions(
        grad_kernels: Tensor, mixing: Tensor, bank: Tensor,
        grad_bank: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """From the per-sample kernel gradient of a tile ``[B, g, T, J]``: the
    bank's gradient ``[K, g, T, J]`` (written into ``grad_bank`` if given)
    and the mixing's (``[B, K]``, or ``[B, g, T, K]`` per row)."""
    batch, groups, rows, row_size = grad_kernels.shape
    num_kernels = bank.shape[0]
    # <grad kernel of (b, row), bank row k>: one [B, J] x [J, K] per row
    per_row = torch.bmm(
        grad_kernels.reshape(batch, groups * rows, row_size).transpose(0, 1),
        bank.reshape(num_kernels, groups * rows, row_size).permute(1, 2, 0))
    if mixing.dim() == 2:
        flat = grad_kernels.reshape(batch, -1)
        if grad_bank is None:
            grad_bank = (mixing.t() @ flat).view(bank.shape)
        elif groups == 1:  # a strided view of the whole gradient
            torch.mm(mixing.t(), flat, out=grad_bank.view(num_kernels, -1))
        else:
            grad_bank.copy_((mixing.t() @ flat).view(bank.shape))
        return grad_bank, per_row.sum(0)
    tile_grad_bank = torch.einsum('bgtk,bgtj->kgtj', mixing, grad_kernels)
    if grad_bank is None:
        grad_bank = tile_grad_bank
    else:
        grad_bank.copy_(tile_grad_bank)
    return grad_bank, per_row.permute(1, 0, 2).reshape(
        batch, groups, rows, num_kernels)


class _SampleGEMM(torch.autograd.Function):
    """``y[b, g] = (sum_k m[b, k] * bank[k, g]) @ cols[b, g]`` over output
    tiles: cols ``[B, g, J, P]``, bank ``[K, g, O/g, J]``, mixing ``m``
    ``[B, K]`` or ``[B, g, O/g, K]``; y ``[B, g, O/g, P]``."""

    @staticmethod
    def forward(ctx, cols: Tensor, bank: Tensor, mixing: Tensor) -> Tensor:
        ctx.save_for_backward(cols, bank, mixing)
        if _compiled_gemm_applies(cols, bank, mixing):
            # AVX-512, where measured to win: the same mixing in wider tiles
            if cpu_sample_conv_batch_fits(cols, bank, mixing):
                return cpu_sample_conv_batch(cols, bank, mixing)
            return cpu_sample_gemm_forward(cols, bank, mixing)
        batch, groups, row_size, pixels = cols.shape
        group_out = bank.shape[2]
        flat_cols = cols.reshape(batch * groups, row_size, pixels)
        y = cols.new_empty(batch * groups, group_out, pixels)
        for start, stop in tiles(batch * groups, group_out, row_size,
                                 cols.element_size()):
            kernels = _mix(_rows(mixing, start, stop),
                           bank[:, :, start:stop])
            # (a copy: bmm writing into the strided slice runs slower)
            y[:, start:stop] = torch.bmm(
                kernels.reshape(batch * groups, -1, row_size), flat_cols)
        return y.view(batch, groups, group_out, pixels)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        cols, bank, mixing = ctx.saved_tensors
        # In the forward's dtype, whatever autocast is on around backward,
        # and dense: on an expanded gradient (a sum's, all strides 0) the
        # batched products below run matrix by matrix (512 channels at
        # 7x7, batch 8, four kernels: forward + backward 3.05x -> 2.10x a
        # static conv's); densifying copies one output's worth.
        grad_y = grad_y.to(cols.dtype).contiguous()
        with torch.autocast(cols.device.type, enabled=False):
            if torch.is_grad_enabled():  # create_graph: differentiable
                return _whole_layer_backward(grad_y, cols, bank, mixing)
            if _compiled_gemm_applies(cols, bank, mixing, grad_y):
                return _compiled_backward(grad_y, cols, bank, mixing,
                                          ctx.needs_input_grad[0],
                                          any(ctx.needs_input_grad[1:]))
            return _tiled_backward(grad_y, cols, bank, mixing,
                                   ctx.needs_input_grad[0],
                                   any(ctx.needs_input_grad[1:]))


def _tiled_backward(
        grad_y: Tensor, cols: Tensor, bank: Tensor, mixing: Tensor,
        input_grad: bool, weight_grads: bool
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """:meth:`_SampleGEMM.backward`, tile by tile: the columns' gradient
    if ``input_grad``, the bank's and the mixing's if ``weight_grads``
    (``None`` for what is not asked: a frozen layer skips the weight
    gradient)."""
    batch, groups, row_size, pixels = cols.shape
    group_out = bank.shape[2]
    flat_cols = cols.reshape(batch * groups, row_size, pixels)
    # [B*g, P, J]: the input-column gradient transposed, as the GEMM of
    # grad_y^T and the kernels is fastest that way round.
    grad_cols_t = (cols.new_zeros(batch * groups, pixels, row_size)
                   if input_grad else None)
    grad_bank = torch.empty_like(bank) if weight_grads else None
    grad_mixing = torch.zeros_like(mixing) if weight_grads else None
    for start, stop in tiles(batch * groups, group_out, row_size,
                             cols.element_size()):
        tile_mixing = _rows(mixing, start, stop)
        tile_bank = bank[:, :, start:stop]
        tile_grad = grad_y[:, :, start:stop].reshape(batch * groups,
                                                     stop - start, pixels)
        if input_grad:
            kernels = _mix(tile_mixing, tile_bank)
            grad_cols_t.baddbmm_(
                tile_grad.transpose(1, 2),
                kernels.reshape(batch * groups, -1, row_size))
        if weight_grads:
            grad_kernels = torch.bmm(tile_grad, flat_cols.transpose(
                1, 2)).view(batch, groups, -1, row_size)
            _, tile_grad_mixing = _weight_gradient_reductions(
                grad_kernels, tile_mixing, tile_bank,
                grad_bank[:, :, start:stop])
            if mixing.dim() == 2:
                grad_mixing += tile_grad_mixing
            else:
                grad_mixing[:, :, start:stop] = tile_grad_mixing
    grad_cols = (None if grad_cols_t is None else
                 grad_cols_t.transpose(1, 2).view(cols.shape))
    return grad_cols, grad_bank, grad_mixing


def _compiled_gemm_applies(cols: Tensor, bank: Tensor, mixing: Tensor,
                           *tensors: Tensor) -> bool:
    """Whether the compiled GEMMs run a call on ``cols`` ``[B, g, J, P]``
    (see :data:`COMPILED_GEMM_MIN_ROW`)."""
    return (cols.shape[3] <= COMPILED_GEMM_MAX_PIXELS
            and (cols.shape[2] >= COMPILED_GEMM_MIN_ROW
                 or (cols.shape[2] >= COMPILED_GEMM_MIN_ROW_AVX512
                     and cpu_sample_conv_batch_fits(cols, bank, mixing)))
            and cpu_sample_gemm_usable(cols, bank, mixing, *tensors))


def _compiled_backward(
        grad_y: Tensor, cols: Tensor, bank: Tensor, mixing: Tensor,
        input_grad: bool, weight_grads: bool
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """:func:`_tiled_backward` by the compiled ops (kernels mixed in their
    register tiles, no kernel gradient formed)."""
    if not weight_grads:
        return (cpu_sample_gemm_input_grad(grad_y, bank, mixing).transpose(
            2, 3) if input_grad else None), None, None
    grad_bank, grad_mixing, *grad_cols_t = cpu_sample_gemm_backward(
        grad_y, cols, bank, mixing, input_grad)
    grad_cols = grad_cols_t[0].transpose(2, 3) if grad_cols_t else None
    return grad_cols, grad_bank, grad_mixing


def _whole_layer_backward(grad_y: Tensor, cols: Tensor, bank: Tensor,
                          mixing: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`_tiled_backward` as differentiable ops on the whole layer
    (one tile), for higher derivatives."""
    kernels = _mix(mixing, bank)  # [B, g, O/g, J]
    grad_cols = kernels.transpose(2, 3) @ grad_y
    grad_kernels = grad_y @ cols.transpose(2, 3)
    grad_bank, grad_mixing = _weight_gradient_reductions(
        grad_kernels, mixing, bank)
    return grad_cols, grad_bank, grad_mixing


@accepts_empty_batch
def tiled_gemm_conv2d(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                      bias: Optional[Tensor], stride: IntPair,
                      padding: Padding, dilation: IntPair,
                      groups: int) -> Tensor:
    """Channel and spatial attentions on the unfolded input, one GEMM per
    sample with its kernel formed tile by tile, filter attention and bias
    on the output. Without a kernel attention (a single kernel) every
    sample's kernel is the bank itself: that is the ``im2col`` form."""
    if attentions.kernel is None:
        return im2col_conv2d(x, weight, attentions, bias, stride, padding,
                             dilation, groups)
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    batch = x.shape[0]
    height, width = output_size(x, (kh, kw), stride, padding, dilation)
    bank = weight.reshape(num_kernels, groups, out_channels // groups,
                          group_in * kh * kw)
    # Under autocast, the products run in its dtype, as F.conv2d's would;
    # the casts stay outside the Function, so their gradients flow back.
    device = x.device.type
    dtype = compute_dtype(device, weight.dtype)
    # Contiguous for the compiled GEMMs: the compiled attention op's heads
    # are views of one [B, heads] output, strided at B > 1 (ODConv's).
    mixing = attentions.kernel.to(dtype).contiguous()
    if mixing.dim() == 3:  # DyNet's [B, O, K]
        mixing = mixing.reshape(batch, groups, -1, num_kernels)

    def sample_gemm(cols: Tensor) -> Tensor:
        cols = cols.reshape(batch, groups, group_in * kh * kw,
                            height * width)
        with torch.autocast(device, enabled=False):
            return _SampleGEMM.apply(cols.to(dtype), bank.to(dtype), mixing)

    # the unfolded input is formed again in backward, not kept
    y = scaled_input_conv2d(
        x, weight, lambda stages: unfold_scaled(
            x, (kh, kw), attentions, stride, padding, dilation, stages),
        sample_gemm, attentions, columns_size(x, (kh, kw), height * width))
    y = y.reshape(batch, out_channels, height, width)
    return finish(y, attentions, bias)
