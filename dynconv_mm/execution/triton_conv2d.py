"""The ``triton`` formulation: fused implicit-GEMM kernels, forward and
backward, whose weight tiles are formed on the fly from the ``K`` static
kernels and the sample's attentions.

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

Backward is two kernels, neither of which writes a per-sample kernel or
its gradient to memory either:

* the input gradient: per program a tile of input pixels and channels of
  one sample; the output gradient, scaled by the filter attention as it is
  loaded, is reduced over output channels and kernel positions against
  weight tiles mixed in registers and scaled by the spatial attention; the
  channel attention scales the result;
* the bank's and the attentions' gradients: per program a tile of (output
  channel, reduction row); it walks the batch, forms each sample's raw
  weight gradient ``dy^T @ im2col(x)`` for the tile in registers and turns
  it into the bank's gradient (accumulated in place) and per-tile partial
  sums for the kernel, spatial, channel and filter attentions, which the
  caller adds up. No atomics, so the result does not depend on scheduling.

The mixed bias enters the kernel mixed; autograd carries its gradient to
the bias bank and the kernel attention.

The kernel runs on CUDA tensors, or on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1`` set before this module is imported),
which is how the tests check it against the oracle without a GPU.
"""
import os
from typing import NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from .attentions import (ConvAttentions, IntPair, Padding,
                         accepts_empty_batch, autocast_enabled,
                         explicit_padding, mix_bias, output_size, pair)

INTERPRETED = os.environ.get('TRITON_INTERPRET', '0') == '1'


@triton.jit
def _mixed_weight_tile(w_ptr, w_off, w_ok, a_ptr, b, o, o_ok, O, red,
                       NUM_KERNELS: tl.constexpr, KERNEL_MODE: tl.constexpr,
                       O_AXIS: tl.constexpr, ACC: tl.constexpr):
    """Sample ``b``'s kernel over a tile of the bank (offsets ``w_off``
    into one kernel, output channels ``o`` along axis ``O_AXIS``): the
    ``K`` kernels' tiles mixed by the kernel attention, in registers."""
    wt = tl.zeros(w_off.shape, dtype=ACC)
    for kk in tl.static_range(NUM_KERNELS):
        wk = tl.load(w_ptr + kk * O * red + w_off, mask=w_ok,
                     other=0.0).to(ACC)
        if KERNEL_MODE == 1:  # [B, K]
            wk = wk * tl.load(a_ptr + b * NUM_KERNELS + kk).to(ACC)
        if KERNEL_MODE == 2:  # DyNet's [B, O, K]: per output channel
            ak = tl.load(a_ptr + (b * O + o) * NUM_KERNELS + kk, mask=o_ok,
                         other=0.0).to(ACC)
            if O_AXIS == 0:
                wk = wk * ak[:, None]
            else:
                wk = wk * ak[None, :]
        wt += wk
    return wt


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
        wt = _mixed_weight_tile(w_ptr, o[None, :] * red + rk[:, None],
                                k_ok[:, None] & n_ok[None, :], a_ptr, b, o,
                                n_ok, O, red, NUM_KERNELS, KERNEL_MODE, 1,
                                ACC)
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


@triton.jit
def _dynamic_conv2d_bwd_input(
        gy_ptr, w_ptr, a_ptr, s_ptr, c_ptr, f_ptr, gx_ptr,
        C, H, W, O, HO, WO, GROUPS, GROUP_IN, GROUP_OUT,
        STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
        KH: tl.constexpr, KW: tl.constexpr, NUM_KERNELS: tl.constexpr,
        KERNEL_MODE: tl.constexpr, HAS_SPATIAL: tl.constexpr,
        HAS_INPUT: tl.constexpr, HAS_OUTPUT: tl.constexpr,
        ACC: tl.constexpr, DOT_IN_INPUT_DTYPE: tl.constexpr,
        PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_O: tl.constexpr):
    """Input gradient: a tile of input pixels x input channels of one
    sample and group, reduced over the kernel window and the output
    channels. The filter attention scales the output gradient as it is
    loaded, the weight tile is mixed in registers and scaled by the spatial
    attention, the channel attention scales the result."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_bg = tl.program_id(2)
    b = pid_bg // GROUPS
    g = pid_bg % GROUPS
    red = GROUP_IN * KH * KW

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixels
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # channels in the group
    m_ok = rm < H * W
    n_ok = rn < GROUP_IN
    ih = rm // W
    iw = rm % W
    ci = g * GROUP_IN + rn  # input channels

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for pq in range(0, KH * KW):
        p = pq // KW
        q = pq % KW
        # the output pixel whose window puts (p, q) on (ih, iw), if any
        th = ih + PAD_H - p * DIL_H
        tw = iw + PAD_W - q * DIL_W
        oh = th // STRIDE_H
        ow = tw // STRIDE_W
        hit = (m_ok & (th >= 0) & (tw >= 0) & (th % STRIDE_H == 0) &
               (tw % STRIDE_W == 0) & (oh < HO) & (ow < WO))
        for o0 in range(0, GROUP_OUT, BLOCK_O):
            ro = o0 + tl.arange(0, BLOCK_O)
            o_ok = ro < GROUP_OUT
            o = g * GROUP_OUT + ro
            gt = tl.load(gy_ptr + ((b * O + o[None, :]) * HO + oh[:, None]) *
                         WO + ow[:, None],
                         mask=hit[:, None] & o_ok[None, :],
                         other=0.0).to(ACC)
            if HAS_OUTPUT:
                gt = gt * tl.load(f_ptr + b * O + o, mask=o_ok,
                                  other=0.0).to(ACC)[None, :]
            wt = _mixed_weight_tile(
                w_ptr, o[:, None] * red + rn[None, :] * (KH * KW) + pq,
                o_ok[:, None] & n_ok[None, :], a_ptr, b, o, o_ok, O, red,
                NUM_KERNELS, KERNEL_MODE, 0, ACC)
            if HAS_SPATIAL:
                wt = wt * tl.load(s_ptr + b * KH * KW + pq).to(ACC)
            if DOT_IN_INPUT_DTYPE:
                acc += tl.dot(gt.to(gx_ptr.dtype.element_ty),
                              wt.to(gx_ptr.dtype.element_ty), out_dtype=ACC)
            else:
                acc += tl.dot(gt, wt, input_precision=PRECISION,
                              out_dtype=ACC)
    if HAS_INPUT:
        acc = acc * tl.load(c_ptr + b * C + ci, mask=n_ok,
                            other=0.0).to(ACC)[None, :]
    tl.store(gx_ptr + (b * C + ci[None, :]) * H * W + rm[:, None],
             acc.to(gx_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _dynamic_conv2d_bwd_weight(
        x_ptr, gy_ptr, w_ptr, a_ptr, s_ptr, c_ptr, f_ptr,
        gw_ptr, ga_ptr, gq_ptr, gf_ptr,
        B, SAMPLES_PER_PROGRAM,
        C, H, W, O, HO, WO, GROUPS, GROUP_IN, GROUP_OUT,
        STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
        KH: tl.constexpr, KW: tl.constexpr, NUM_KERNELS: tl.constexpr,
        KERNEL_MODE: tl.constexpr, HAS_SPATIAL: tl.constexpr,
        HAS_INPUT: tl.constexpr, HAS_OUTPUT: tl.constexpr,
        ACC: tl.constexpr, DOT_IN_INPUT_DTYPE: tl.constexpr,
        PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Gradients of the bank and of every attention. One program owns a
    tile of (output channel, reduction row) of one group and walks a chunk
    of ``SAMPLES_PER_PROGRAM`` samples: per sample, the raw weight gradient ``R = dy^T @ im2col(x)`` of
    the tile is formed in registers and turned into the bank's gradient
    (accumulated in place in the chunk's own copy, the tile being this
    program's alone) and into
    partial sums for the attentions, written per tile and summed by the
    caller: no per-sample kernel or kernel gradient reaches memory, and
    no atomics (the result does not depend on scheduling)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    g = tl.program_id(2) % GROUPS
    chunk = tl.program_id(2) // GROUPS
    pixels = HO * WO
    red = GROUP_IN * KH * KW
    n_tiles_k = tl.num_programs(1)

    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # channels in the group
    rk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # reduction rows
    n_ok = rn < GROUP_OUT
    k_ok = rk < red
    o = g * GROUP_OUT + rn
    i = rk // (KH * KW)
    pq = rk % (KH * KW)
    p = pq // KW
    q = pq % KW
    ci = g * GROUP_IN + i
    tile_ok = n_ok[:, None] & k_ok[None, :]
    w_off = o[:, None] * red + rk[None, :]

    gw_ptr += chunk * NUM_KERNELS * O * GROUP_IN * KH * KW
    b_start = chunk * SAMPLES_PER_PROGRAM
    for b in range(b_start, tl.minimum(b_start + SAMPLES_PER_PROGRAM, B)):
        r = tl.zeros((BLOCK_N, BLOCK_K), dtype=ACC)
        for m0 in range(0, pixels, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            m_ok = rm < pixels
            oh = rm // WO
            ow = rm % WO
            gt = tl.load(gy_ptr + (b * O + o[:, None]) * pixels + rm[None, :],
                         mask=n_ok[:, None] & m_ok[None, :], other=0.0)
            ih = oh[:, None] * STRIDE_H - PAD_H + p[None, :] * DIL_H
            iw = ow[:, None] * STRIDE_W - PAD_W + q[None, :] * DIL_W
            x_ok = (m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) &
                    (iw >= 0) & (iw < W))
            xt = tl.load(x_ptr + ((b * C + ci[None, :]) * H + ih) * W + iw,
                         mask=x_ok, other=0.0)
            if DOT_IN_INPUT_DTYPE:
                r += tl.dot(gt, xt, out_dtype=ACC)
            else:
                r += tl.dot(gt.to(ACC), xt.to(ACC), input_precision=PRECISION,
                            out_dtype=ACC)
        # u: what scales the rows (channel x spatial), f: the outputs
        u = tl.full((BLOCK_K, ), 1.0, ACC)
        if HAS_INPUT:
            u = u * tl.load(c_ptr + b * C + ci, mask=k_ok, other=0.0).to(ACC)
        if HAS_SPATIAL:
            u = u * tl.load(s_ptr + b * KH * KW + pq, mask=k_ok,
                            other=0.0).to(ACC)
        fo = tl.full((BLOCK_N, ), 1.0, ACC)
        if HAS_OUTPUT:
            fo = tl.load(f_ptr + b * O + o, mask=n_ok, other=0.0).to(ACC)
        grad_kernel = r * fo[:, None] * u[None, :]  # of the sample's kernel
        mixed = tl.zeros((BLOCK_N, BLOCK_K), dtype=ACC)
        for kk in tl.static_range(NUM_KERNELS):
            wk = tl.load(w_ptr + kk * O * red + w_off, mask=tile_ok,
                         other=0.0).to(ACC)
            if KERNEL_MODE == 0:
                mixed += wk
                scale = grad_kernel
            if KERNEL_MODE == 1:
                ak = tl.load(a_ptr + b * NUM_KERNELS + kk).to(ACC)
                mixed += ak * wk
                scale = ak * grad_kernel
                part = tl.sum(tl.sum(wk * grad_kernel, axis=1), axis=0)
                tl.store(ga_ptr + ((pid_n * n_tiles_k + pid_k) * GROUPS + g)
                         * B * NUM_KERNELS + b * NUM_KERNELS + kk, part)
            if KERNEL_MODE == 2:
                ak = tl.load(a_ptr + (b * O + o) * NUM_KERNELS + kk,
                             mask=n_ok, other=0.0).to(ACC)
                mixed += ak[:, None] * wk
                scale = ak[:, None] * grad_kernel
                part = tl.sum(wk * grad_kernel, axis=1)
                tl.store(ga_ptr + ((pid_k * B + b) * O + o) * NUM_KERNELS +
                         kk, part, mask=n_ok)
            gw_at = gw_ptr + kk * O * red + w_off
            tl.store(gw_at, tl.load(gw_at, mask=tile_ok, other=0.0) + scale,
                     mask=tile_ok)
        if HAS_OUTPUT or HAS_INPUT or HAS_SPATIAL:
            # d(out)/d(attention) terms: R * mixed kernel, reduced per tile
            prod = r * mixed
            if HAS_OUTPUT:
                tl.store(gf_ptr + (pid_k * B + b) * O + o,
                         tl.sum(prod * u[None, :], axis=1), mask=n_ok)
            if HAS_INPUT or HAS_SPATIAL:
                tl.store(gq_ptr + (pid_n * B + b) * C * KH * KW +
                         g * red + rk,
                         tl.sum(prod * fo[:, None], axis=0), mask=k_ok)


# Programs the bank-gradient kernel aims for (a few per SM of a large GPU),
# by splitting the batch when the bank alone gives fewer tiles.
WEIGHT_GRAD_PROGRAMS = 1024


def runnable(x: Tensor) -> bool:
    """Whether the kernel can run on ``x``'s device."""
    return x.is_cuda or (INTERPRETED and x.device.type == 'cpu')


# CUDA launches at most 65535 blocks along a grid's second and third axes
# (the kernels put samples x groups on the third), and the kernels index
# memory with 32-bit offsets.
MAX_GRID_YZ = 65535
MAX_ELEMENTS = 2**31 - 1


def size_limit_error(x: Tensor, weight: Tensor,
                     out_pixels: int) -> Optional[str]:
    """Why the kernels cannot take this call's sizes, or ``None``."""
    batch, in_channels = x.shape[:2]
    groups = in_channels // weight.shape[2]
    if batch * groups > MAX_GRID_YZ:
        return (f'batch x groups = {batch} x {groups} exceeds the '
                f'{MAX_GRID_YZ} blocks a CUDA grid axis takes')
    sizes = dict(input=x.numel(), bank=weight.numel(),
                 output=batch * weight.shape[1] * out_pixels)
    for name, numel in sizes.items():
        if numel > MAX_ELEMENTS:
            return (f'the {name} has {numel} elements, more than the '
                    '32-bit offsets of the kernels address')
    return None


def _block(size: int, cap: int) -> int:
    """A power of two >= 16 (``tl.dot``'s minimum), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(size)))


class _Geometry(NamedTuple):
    """The integer arguments every kernel takes, and its compile-time
    flags, from the call's tensors and conv arguments."""

    sizes: Tuple[int, ...]  # C, H, W, O, HO, WO, GROUPS, GROUP_IN, GROUP_OUT
    conv: Tuple[int, ...]  # stride, padding, dilation (h and w each)
    flags: dict

    @property
    def out_size(self) -> Tuple[int, int]:
        return self.sizes[4], self.sizes[5]


def _geometry(x: Tensor, weight: Tensor, attentions: ConvAttentions,
              stride: IntPair, padding: Padding, dilation: IntPair,
              groups: int) -> _Geometry:
    _, in_channels, height, width = x.shape
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    top, _, left, _ = explicit_padding(padding, (kh, kw), dilation)
    out_h, out_w = output_size(x, (kh, kw), stride, padding, dilation)
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    kernel = attentions.kernel
    float32_tf32 = x.is_cuda and torch.backends.cudnn.allow_tf32
    flags = dict(
        KH=kh, KW=kw, NUM_KERNELS=num_kernels,
        KERNEL_MODE=0 if kernel is None else (1 if kernel.dim() == 2 else 2),
        HAS_SPATIAL=attentions.spatial is not None,
        HAS_INPUT=attentions.input is not None,
        HAS_OUTPUT=attentions.output is not None,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        DOT_IN_INPUT_DTYPE=x.dtype in (torch.float16, torch.bfloat16),
        PRECISION='tf32' if float32_tf32 else 'ieee')
    return _Geometry(
        (in_channels, height, width, out_channels, out_h, out_w, groups,
         group_in, out_channels // groups), (sh, sw, top, left, dh, dw),
        flags)


def _attention_pointers(x: Tensor, attentions: ConvAttentions) -> list:
    """The attentions, contiguous, in the kernels' order (kernel, spatial,
    input, output); ``x`` stands in for an absent one (never read)."""
    return [x if t is None else t.contiguous() for t in attentions]


def _launch(x: Tensor, weight: Tensor, attentions: ConvAttentions,
            mixed_bias: Optional[Tensor], stride: IntPair, padding: Padding,
            dilation: IntPair, groups: int) -> Tensor:
    geo = _geometry(x, weight, attentions, stride, padding, dilation, groups)
    batch, (out_h, out_w) = x.shape[0], geo.out_size
    group_in, group_out = geo.sizes[7:9]
    kh, kw = weight.shape[3:]
    y = torch.empty(batch, geo.sizes[3], out_h, out_w, device=x.device,
                    dtype=x.dtype)
    block_m = _block(out_h * out_w, 64)
    block_n = _block(group_out, 64)
    block_k = _block(group_in * kh * kw, 32)
    grid = (triton.cdiv(out_h * out_w, block_m),
            triton.cdiv(group_out, block_n), batch * groups)
    _dynamic_conv2d_fwd[grid](
        x.contiguous(), weight.contiguous(),
        *_attention_pointers(x, attentions),
        x if mixed_bias is None else mixed_bias.contiguous(), y,
        *geo.sizes, *geo.conv, **geo.flags,
        HAS_BIAS=mixed_bias is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return y


def _launch_input_grad(grad: Tensor, x: Tensor, weight: Tensor,
                       attentions: ConvAttentions, conv: Tuple) -> Tensor:
    """``d loss / d x`` from the output gradient ``grad``."""
    geo = _geometry(x, weight, attentions, *conv)
    batch, in_channels, height, width = x.shape
    group_in, group_out = geo.sizes[7:9]
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    block_m = _block(height * width, 64)
    block_n = _block(group_in, 64)
    grid = (triton.cdiv(height * width, block_m),
            triton.cdiv(group_in, block_n), batch * geo.sizes[6])
    _dynamic_conv2d_bwd_input[grid](
        grad, weight.contiguous(), *_attention_pointers(x, attentions),
        grad_x, *geo.sizes, *geo.conv, **geo.flags,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_O=_block(group_out, 32))
    return grad_x


class WeightGradPartials(NamedTuple):
    """What the bank-gradient kernel writes, before the caller's sums."""

    banks: Tensor  # [chunks, K, O, I/g, kh, kw]: one per chunk of samples
    kernel: Tensor  # per tile: [tn, tk, g, B, K] / [tk, B, O, K] / unused
    rows: Tensor  # [tn, B, C_in*kh*kw]: sum_o f * R * mixed kernel
    output: Tensor  # [tk, B, O]: sum_r R * mixed kernel * c * s


def _launch_weight_grad_partials(grad: Tensor, x: Tensor, weight: Tensor,
                                 attentions: ConvAttentions,
                                 conv: Tuple) -> WeightGradPartials:
    geo = _geometry(x, weight, attentions, *conv)
    batch, in_channels = x.shape[:2]
    num_kernels, out_channels, group_in, kh, kw = weight.shape
    groups, group_out = geo.sizes[6], geo.sizes[8]
    red = group_in * kh * kw
    block_n = _block(group_out, 64)
    block_k = _block(red, 32)
    tiles_n, tiles_k = triton.cdiv(group_out, block_n), triton.cdiv(red,
                                                                    block_k)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32

    def buffer(*shape: int) -> Tensor:
        return torch.zeros(*shape, device=x.device, dtype=acc)

    # Enough programs to fill a GPU: the batch is split into chunks, each
    # accumulating its own copy of the bank's gradient (no atomics).
    tiles = tiles_n * tiles_k * groups
    per_program = triton.cdiv(batch, min(batch, triton.cdiv(
        WEIGHT_GRAD_PROGRAMS, tiles)))
    chunks = triton.cdiv(batch, per_program)
    grad_banks = buffer(chunks, *weight.shape)
    mode = geo.flags['KERNEL_MODE']
    part_kernel = (buffer(tiles_n, tiles_k, groups, batch, num_kernels)
                   if mode == 1 else
                   buffer(tiles_k, batch, out_channels, num_kernels)
                   if mode == 2 else buffer(1))
    part_rows = buffer(tiles_n, batch, in_channels * kh * kw)
    part_output = buffer(tiles_k, batch, out_channels)
    _dynamic_conv2d_bwd_weight[(tiles_n, tiles_k, groups * chunks)](
        x.contiguous(), grad, weight.contiguous(),
        *_attention_pointers(x, attentions), grad_banks, part_kernel,
        part_rows, part_output, batch, per_program, *geo.sizes, *geo.conv,
        **geo.flags,
        BLOCK_M=_block(geo.out_size[0] * geo.out_size[1], 32),
        BLOCK_N=block_n, BLOCK_K=block_k)
    return WeightGradPartials(grad_banks, part_kernel, part_rows,
                              part_output)


def _launch_weight_grads(grad: Tensor, x: Tensor, weight: Tensor,
                         attentions: ConvAttentions,
                         conv: Tuple) -> Tuple[Optional[Tensor], ...]:
    """Gradients of the bank and of the four attentions (``None`` for an
    absent attention), from the output gradient ``grad``."""
    parts = _launch_weight_grad_partials(grad, x, weight, attentions, conv)
    batch, in_channels = x.shape[:2]
    kh, kw = weight.shape[3:]
    acc = parts.banks.dtype
    kernel, spatial, channel, output = attentions
    grad_kernel = (None if kernel is None else parts.kernel.sum(
        (0, 1, 2)) if kernel.dim() == 2 else parts.kernel.sum(0))
    # per sample, one value per (input channel, kernel position)
    rows = parts.rows.sum(0).view(batch, in_channels, kh * kw)
    grad_spatial = None if spatial is None else (
        rows if channel is None else rows * channel[:, :, None].to(acc)
    ).sum(1).view(batch, kh, kw)
    grad_channel = None if channel is None else (
        rows if spatial is None else rows * spatial.reshape(
            batch, 1, kh * kw).to(acc)).sum(2)
    grad_output = None if output is None else parts.output.sum(0)
    return tuple(
        None if g is None else g.to(t.dtype)
        for g, t in zip((parts.banks.sum(0), grad_kernel, grad_spatial, grad_channel,
                         grad_output), (weight, *attentions)))


class _TritonDynamicConv2d(torch.autograd.Function):
    """Fused forward and backward (two kernels: the input gradient, and the
    bank's and attentions' gradients); the mixed bias comes in mixed, so
    autograd takes its gradient on to the bias bank and the kernel
    attention."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, kernel: Optional[Tensor],
                spatial: Optional[Tensor], input: Optional[Tensor],
                output: Optional[Tensor], mixed_bias: Optional[Tensor],
                conv: Tuple) -> Tensor:
        ctx.conv = conv
        ctx.bias_dtype = None if mixed_bias is None else mixed_bias.dtype
        ctx.save_for_backward(x, weight, kernel, spatial, input, output)
        return _launch(x, weight, ConvAttentions(kernel, spatial, input,
                                                 output), mixed_bias, *conv)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, *attentions = ctx.saved_tensors
        attentions = ConvAttentions(*attentions)
        needs = ctx.needs_input_grad
        grad = grad.contiguous()
        grad_x = (_launch_input_grad(grad, x, weight, attentions, ctx.conv)
                  if needs[0] else None)
        others = ((None, ) * 5 if not any(needs[1:6]) else
                  _launch_weight_grads(grad, x, weight, attentions,
                                       ctx.conv))
        grad_bias = (grad.sum((2, 3)).to(ctx.bias_dtype)
                     if ctx.bias_dtype is not None and needs[6] else None)
        return (grad_x, *(g if n else None
                          for g, n in zip(others, needs[1:6])), grad_bias,
                None)


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
    out_h, out_w = output_size(x, weight.shape[3:], stride, padding,
                               dilation)
    too_large = size_limit_error(x, weight, out_h * out_w)
    if too_large:
        raise ValueError("dynamic_conv2d: method 'triton' cannot run this "
                         f'call: {too_large}; use another execution')
    conv = (stride, padding, dilation, groups)
    # Mixed outside the kernel, so autograd carries its gradient (the sum
    # of the output gradient) on to the bias bank and the kernel attention.
    mixed_bias = None if bias is None else mix_bias(
        bias, attentions.kernel).expand(x.shape[0], -1)
    device = x.device.type
    if autocast_enabled(device):
        # autocast does not reach into the kernel: cast what it would cast
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return _TritonDynamicConv2d.apply(x.to(dtype), weight.to(dtype),
                                              *attentions, mixed_bias, conv)
    return _TritonDynamicConv2d.apply(x, weight, *attentions, mixed_bias,
                                      conv)
