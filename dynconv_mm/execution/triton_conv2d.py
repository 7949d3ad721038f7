"""The ``triton`` formulation: a fused implicit-GEMM convolution whose
weight tile is formed on the fly from the ``K`` static kernels and the
sample's attentions (forward only).

Per program: one sample ``b``, one group, a tile of ``BLOCK_M`` output
pixels and ``BLOCK_N`` output channels. The reduction runs over the
group's ``(input channel, kh, kw)`` in chunks of ``BLOCK_K``:

* prologue: the input tile is gathered from ``x`` (implicit im2col, zero
  padding by masks) and scaled by the channel attention ``c[b, i]`` and the
  spatial attention ``s[b, p, q]`` of its rows;
* the weight tile is ``sum_k a[b, k] * W_k[tile]`` (or ``a[b, o, k]`` per
  output channel, DyNet), formed in registers: no per-sample kernel is ever
  written to memory;
* epilogue: the filter attention ``f[b, o]`` and the mixed bias.

Backward is not fused: it recomputes the layer with the ``batch_folded``
formulation under autograd (one extra forward's work), so gradients are
exact and training works, but only the forward is faster.

The kernel runs on CUDA tensors, or on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1`` set before this module is imported),
which is how the tests check it against the oracle without a GPU.
"""
import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .attentions import (ConvAttentions, IntPair, Padding,
                         accepts_empty_batch, explicit_padding, mix_bias,
                         output_size, pair)
from .per_sample_kernels import batch_folded_conv2d

INTERPRETED = os.environ.get('TRITON_INTERPRET', '0') == '1'


@triton.jit
def _dynamic_conv2d_fwd(
        x_ptr, w_ptr, a_ptr, s_ptr, c_ptr, f_ptr, bias_ptr, y_ptr,
        C, H, W, O, HO, WO, GROUPS, GROUP_IN, GROUP_OUT,
        STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
        KH: tl.constexpr, KW: tl.constexpr, NUM_KERNELS: tl.constexpr,
        KERNEL_MODE: tl.constexpr,  # 0: none, 1: [B, K], 2: [B, O, K]
        HAS_SPATIAL: tl.constexpr, HAS_INPUT: tl.constexpr,
        HAS_OUTPUT: tl.constexpr, HAS_BIAS: tl.constexpr,
        ACC: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
        DOT_IN_INPUT_DTYPE: tl.constexpr,  # fp16/bf16 operands for the dot
        PRECISION: tl.constexpr,  # 'ieee' or 'tf32' for float32 operands
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_bg = tl.program_id(2)
    b = pid_bg // GROUPS
    g = pid_bg % GROUPS
    pixels = HO * WO
    red = GROUP_IN * KH * KW  # reduction length of one group

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # channels in the group
    m_ok = rm < pixels
    n_ok = rn < GROUP_OUT
    oh = rm // WO
    ow = rm % WO
    o = g * GROUP_OUT + rn  # output channels

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, red, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < red
        i = rk // (KH * KW)
        pq = rk % (KH * KW)
        p = pq // KW
        q = pq % KW
        ci = g * GROUP_IN + i  # input channels
        # prologue: implicit im2col gather, scaled by c and s
        ih = oh[:, None] * STRIDE_H - PAD_H + p[None, :] * DIL_H
        iw = ow[:, None] * STRIDE_W - PAD_W + q[None, :] * DIL_W
        x_ok = (m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) &
                (iw >= 0) & (iw < W))
        x_off = ((b * C + ci[None, :]) * H + ih) * W + iw
        xt = tl.load(x_ptr + x_off, mask=x_ok, other=0.0).to(ACC)
        if HAS_INPUT:
            xt = xt * tl.load(c_ptr + b * C + ci, mask=k_ok,
                              other=0.0).to(ACC)[None, :]
        if HAS_SPATIAL:
            xt = xt * tl.load(s_ptr + b * KH * KW + pq, mask=k_ok,
                              other=0.0).to(ACC)[None, :]
        # the weight tile, mixed from the K kernels in registers
        w_ok = k_ok[:, None] & n_ok[None, :]
        w_off = o[None, :] * red + rk[:, None]
        wt = tl.zeros((BLOCK_K, BLOCK_N), dtype=ACC)
        for kk in tl.static_range(NUM_KERNELS):
            wk = tl.load(w_ptr + kk * O * red + w_off, mask=w_ok,
                         other=0.0).to(ACC)
            if KERNEL_MODE == 1:
                wk = wk * tl.load(a_ptr + b * NUM_KERNELS + kk).to(ACC)
            if KERNEL_MODE == 2:
                wk = wk * tl.load(
                    a_ptr + (b * O + o) * NUM_KERNELS + kk, mask=n_ok,
                    other=0.0).to(ACC)[None, :]
            wt += wk
        if DOT_IN_INPUT_DTYPE:
            acc += tl.dot(xt.to(x_ptr.dtype.element_ty),
                          wt.to(x_ptr.dtype.element_ty), out_dtype=ACC)
        else:
            acc += tl.dot(xt, wt, input_precision=PRECISION, out_dtype=ACC)
    # epilogue: filter attention, mixed bias
    if HAS_OUTPUT:
        acc = acc * tl.load(f_ptr + b * O + o, mask=n_ok,
                            other=0.0).to(ACC)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + b * O + o, mask=n_ok,
                       other=0.0).to(ACC)[None, :]
    y_off = (b * O + o[None, :]) * pixels + rm[:, None]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def runnable(x: Tensor) -> bool:
    """Whether the kernel can run on ``x``'s device."""
    return x.is_cuda or (INTERPRETED and x.device.type == 'cpu')


def _block(size: int, cap: int) -> int:
    """A power of two >= 16 (``tl.dot``'s minimum), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(size)))


def _launch(x: Tensor, weight: Tensor, attentions: ConvAttentions,
            mixed_bias: Optional[Tensor], stride: IntPair, padding: Padding,
            dilation: IntPair, groups: int) -> Tensor:
    batch, in_channels, height, width = x.shape
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    top, _, left, _ = explicit_padding(padding, (kh, kw), dilation)
    out_h, out_w = output_size(x, (kh, kw), stride, padding, dilation)
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    group_out = out_channels // groups
    kernel = attentions.kernel
    kernel_mode = 0 if kernel is None else (1 if kernel.dim() == 2 else 2)
    y = torch.empty(batch, out_channels, out_h, out_w, device=x.device,
                    dtype=x.dtype)

    def ptr(t: Optional[Tensor]) -> Tensor:
        return x if t is None else t.contiguous()  # x stands in for unused

    float32_tf32 = x.is_cuda and torch.backends.cudnn.allow_tf32
    block_m = _block(out_h * out_w, 64)
    block_n = _block(group_out, 64)
    block_k = _block(group_in * kh * kw, 32)
    grid = (triton.cdiv(out_h * out_w, block_m),
            triton.cdiv(group_out, block_n), batch * groups)
    _dynamic_conv2d_fwd[grid](
        x.contiguous(), weight.contiguous(), ptr(kernel),
        ptr(attentions.spatial), ptr(attentions.input),
        ptr(attentions.output), ptr(mixed_bias), y, in_channels, height,
        width, out_channels, out_h, out_w, groups, group_in, group_out, sh,
        sw, top, left, dh, dw,
        KH=kh, KW=kw, NUM_KERNELS=num_kernels, KERNEL_MODE=kernel_mode,
        HAS_SPATIAL=attentions.spatial is not None,
        HAS_INPUT=attentions.input is not None,
        HAS_OUTPUT=attentions.output is not None,
        HAS_BIAS=mixed_bias is not None,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        DOT_IN_INPUT_DTYPE=x.dtype in (torch.float16, torch.bfloat16),
        PRECISION='tf32' if float32_tf32 else 'ieee',
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return y


class _TritonDynamicConv2d(torch.autograd.Function):
    """Fused forward; backward through the ``batch_folded`` formulation."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, kernel: Optional[Tensor],
                spatial: Optional[Tensor], input: Optional[Tensor],
                output: Optional[Tensor], bias: Optional[Tensor],
                conv: Tuple) -> Tensor:
        ctx.conv = conv
        ctx.save_for_backward(x, weight, kernel, spatial, input, output,
                              bias)
        attentions = ConvAttentions(kernel, spatial, input, output)
        mixed_bias = None if bias is None else mix_bias(
            bias, kernel).expand(x.shape[0], -1)
        return _launch(x, weight, attentions, mixed_bias, *conv)

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:len(saved)]
        with torch.enable_grad():
            leaves = [
                None if t is None else t.detach().requires_grad_(n)
                for t, n in zip(saved, needs)
            ]
            y = batch_folded_conv2d(leaves[0], leaves[1],
                                    ConvAttentions(*leaves[2:6]), leaves[6],
                                    *ctx.conv)
            wanted = [t for t, n in zip(leaves, needs) if t is not None and n]
            grads = iter(torch.autograd.grad(y, wanted, grad)
                         if wanted else ())
        return tuple(
            next(grads) if t is not None and n else None
            for t, n in zip(leaves, needs)) + (None, )


@accepts_empty_batch
def triton_conv2d(x: Tensor, weight: Tensor, attentions: ConvAttentions,
                  bias: Optional[Tensor], stride: IntPair, padding: Padding,
                  dilation: IntPair, groups: int) -> Tensor:
    """The fused kernel (see the module docstring); CUDA tensors only,
    or CPU tensors under ``TRITON_INTERPRET=1``."""
    if not runnable(x):
        raise ValueError(
            "dynamic_conv2d: method 'triton' runs on CUDA tensors (or on "
            'the CPU under TRITON_INTERPRET=1), got a tensor on '
            f'{x.device}')
    conv = (stride, padding, dilation, groups)
    device = x.device.type
    if torch.is_autocast_enabled(device):
        # autocast does not reach into the kernel: cast what it would cast
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return _TritonDynamicConv2d.apply(x.to(dtype), weight.to(dtype),
                                              *attentions, bias, conv)
    return _TritonDynamicConv2d.apply(x, weight, *attentions, bias, conv)
