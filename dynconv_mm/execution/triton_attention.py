"""The attention MLP of the three papers as one fused Triton kernel.

``pooled [B, C] -> relu(pooled W1^T [+ b1]) = hidden [B, Hd]``, then up to
four heads ``act((hidden Wh^T + bh) / tau)``, each ``act`` a sigmoid or a
softmax over the head. Unfused, that is about a dozen GPU launches per
layer forward and twice as many backward, on tensors of a few kilobytes:
on a GPU the launches, not the arithmetic, are the cost (the ODConv
authors' glue costs their network most of its speed, ``PERF-NOTES``).

* forward: one launch; each program takes a block of samples through the
  trunk and every head, the hidden layer staying in registers;
* backward: one launch for what is per sample (the heads' logit
  gradients through their activations, the hidden layer's and the pooled
  input's gradients), then one matrix product per weight for the
  reductions over the batch.

The temperature is read from its tensor in the kernel, so a changed
temperature needs no recompilation and no host sync. The trunk's norm,
when a layer has one, is not fused: the layer then runs the MLP in
PyTorch. Runs on CUDA tensors, or on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``), as :mod:`.triton_conv2d`.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from .triton_conv2d import _block

MAX_HEADS = 4
ACTIVATIONS = ('sigmoid', 'softmax')


class Head(NamedTuple):
    """One head: ``weight [size, Hd]``, ``bias [size]``, its activation."""

    weight: Tensor
    bias: Tensor
    activation: str  # 'sigmoid' or 'softmax' (over the head's outputs)


@triton.jit
def _head_forward(hidden, rb, b_ok, inv_tau, w_ptr, bias_ptr, out_ptr,
                  HIDDEN, SIZE: tl.constexpr, SOFTMAX: tl.constexpr,
                  ACC: tl.constexpr, PRECISION: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_S: tl.constexpr):
    rh = tl.arange(0, BLOCK_H)
    h_ok = rh < HIDDEN
    for s0 in range(0, SIZE, BLOCK_S):  # one block for a softmax head
        rs = s0 + tl.arange(0, BLOCK_S)
        s_ok = rs < SIZE
        wt = tl.load(w_ptr + rs[None, :] * HIDDEN + rh[:, None],
                     mask=h_ok[:, None] & s_ok[None, :], other=0.0).to(ACC)
        z = tl.dot(hidden, wt, input_precision=PRECISION, out_dtype=ACC)
        z = (z + tl.load(bias_ptr + rs, mask=s_ok,
                         other=0.0).to(ACC)[None, :]) * inv_tau
        if SOFTMAX:
            z = tl.where(s_ok[None, :], z, float('-inf'))
            e = tl.exp(z - tl.max(z, axis=1)[:, None])
            y = e / tl.sum(e, axis=1)[:, None]
        else:
            y = tl.sigmoid(z)
        tl.store(out_ptr + rb[:, None] * SIZE + rs[None, :],
                 y.to(out_ptr.dtype.element_ty),
                 mask=b_ok[:, None] & s_ok[None, :])


@triton.jit
def _attention_mlp_fwd(
        p_ptr, w1_ptr, b1_ptr, tau_ptr, hidden_ptr,
        wh0, bh0, out0, wh1, bh1, out1, wh2, bh2, out2, wh3, bh3, out3,
        B, C, HIDDEN,
        SIZE0: tl.constexpr, SIZE1: tl.constexpr, SIZE2: tl.constexpr,
        SIZE3: tl.constexpr, SOFTMAX0: tl.constexpr, SOFTMAX1: tl.constexpr,
        SOFTMAX2: tl.constexpr, SOFTMAX3: tl.constexpr,
        HAS_B1: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_S0: tl.constexpr, BLOCK_S1: tl.constexpr,
        BLOCK_S2: tl.constexpr, BLOCK_S3: tl.constexpr):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = rb < B
    rh = tl.arange(0, BLOCK_H)
    h_ok = rh < HIDDEN
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        rc = c0 + tl.arange(0, BLOCK_C)
        c_ok = rc < C
        pt = tl.load(p_ptr + rb[:, None] * C + rc[None, :],
                     mask=b_ok[:, None] & c_ok[None, :], other=0.0).to(ACC)
        wt = tl.load(w1_ptr + rh[None, :] * C + rc[:, None],
                     mask=c_ok[:, None] & h_ok[None, :], other=0.0).to(ACC)
        acc += tl.dot(pt, wt, input_precision=PRECISION, out_dtype=ACC)
    if HAS_B1:
        acc += tl.load(b1_ptr + rh, mask=h_ok, other=0.0).to(ACC)[None, :]
    hidden = tl.maximum(acc, 0.0)
    tl.store(hidden_ptr + rb[:, None] * HIDDEN + rh[None, :],
             hidden.to(hidden_ptr.dtype.element_ty),
             mask=b_ok[:, None] & h_ok[None, :])
    inv_tau = 1.0 / tl.load(tau_ptr).to(ACC)
    if SIZE0 > 0:
        _head_forward(hidden, rb, b_ok, inv_tau, wh0, bh0, out0, HIDDEN,
                      SIZE0, SOFTMAX0, ACC, PRECISION, BLOCK_H, BLOCK_S0)
    if SIZE1 > 0:
        _head_forward(hidden, rb, b_ok, inv_tau, wh1, bh1, out1, HIDDEN,
                      SIZE1, SOFTMAX1, ACC, PRECISION, BLOCK_H, BLOCK_S1)
    if SIZE2 > 0:
        _head_forward(hidden, rb, b_ok, inv_tau, wh2, bh2, out2, HIDDEN,
                      SIZE2, SOFTMAX2, ACC, PRECISION, BLOCK_H, BLOCK_S2)
    if SIZE3 > 0:
        _head_forward(hidden, rb, b_ok, inv_tau, wh3, bh3, out3, HIDDEN,
                      SIZE3, SOFTMAX3, ACC, PRECISION, BLOCK_H, BLOCK_S3)


@triton.jit
def _head_backward(g_hidden, rb, b_ok, inv_tau, w_ptr, y_ptr, gy_ptr,
                   gz_ptr, HIDDEN, SIZE: tl.constexpr, SOFTMAX: tl.constexpr,
                   ACC: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_S: tl.constexpr):
    """Adds the head's share to the hidden layer's gradient; stores the
    gradient of its logits (before the temperature) for the caller's
    weight gradients."""
    rh = tl.arange(0, BLOCK_H)
    h_ok = rh < HIDDEN
    for s0 in range(0, SIZE, BLOCK_S):
        rs = s0 + tl.arange(0, BLOCK_S)
        s_ok = rs < SIZE
        ok = b_ok[:, None] & s_ok[None, :]
        at = rb[:, None] * SIZE + rs[None, :]
        y = tl.load(y_ptr + at, mask=ok, other=0.0).to(ACC)
        gy = tl.load(gy_ptr + at, mask=ok, other=0.0).to(ACC)
        if SOFTMAX:
            gz = y * (gy - tl.sum(gy * y, axis=1)[:, None])
        else:
            gz = gy * y * (1.0 - y)
        gz = gz * inv_tau
        tl.store(gz_ptr + at, gz.to(gz_ptr.dtype.element_ty), mask=ok)
        wt = tl.load(w_ptr + rs[:, None] * HIDDEN + rh[None, :],
                     mask=s_ok[:, None] & h_ok[None, :], other=0.0).to(ACC)
        g_hidden += tl.dot(gz, wt, input_precision=PRECISION, out_dtype=ACC)
    return g_hidden


@triton.jit
def _attention_mlp_bwd(
        w1_ptr, tau_ptr, hidden_ptr, g_pre_ptr, g_p_ptr,
        wh0, y0, gy0, gz0, wh1, y1, gy1, gz1, wh2, y2, gy2, gz2,
        wh3, y3, gy3, gz3,
        B, C, HIDDEN,
        SIZE0: tl.constexpr, SIZE1: tl.constexpr, SIZE2: tl.constexpr,
        SIZE3: tl.constexpr, SOFTMAX0: tl.constexpr, SOFTMAX1: tl.constexpr,
        SOFTMAX2: tl.constexpr, SOFTMAX3: tl.constexpr,
        ACC: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_S0: tl.constexpr, BLOCK_S1: tl.constexpr,
        BLOCK_S2: tl.constexpr, BLOCK_S3: tl.constexpr):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = rb < B
    rh = tl.arange(0, BLOCK_H)
    h_ok = rh < HIDDEN
    inv_tau = 1.0 / tl.load(tau_ptr).to(ACC)
    g_hidden = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
    if SIZE0 > 0:
        g_hidden = _head_backward(g_hidden, rb, b_ok, inv_tau, wh0, y0, gy0,
                                  gz0, HIDDEN, SIZE0, SOFTMAX0, ACC,
                                  PRECISION, BLOCK_H, BLOCK_S0)
    if SIZE1 > 0:
        g_hidden = _head_backward(g_hidden, rb, b_ok, inv_tau, wh1, y1, gy1,
                                  gz1, HIDDEN, SIZE1, SOFTMAX1, ACC,
                                  PRECISION, BLOCK_H, BLOCK_S1)
    if SIZE2 > 0:
        g_hidden = _head_backward(g_hidden, rb, b_ok, inv_tau, wh2, y2, gy2,
                                  gz2, HIDDEN, SIZE2, SOFTMAX2, ACC,
                                  PRECISION, BLOCK_H, BLOCK_S2)
    if SIZE3 > 0:
        g_hidden = _head_backward(g_hidden, rb, b_ok, inv_tau, wh3, y3, gy3,
                                  gz3, HIDDEN, SIZE3, SOFTMAX3, ACC,
                                  PRECISION, BLOCK_H, BLOCK_S3)
    hb_ok = b_ok[:, None] & h_ok[None, :]
    hidden = tl.load(hidden_ptr + rb[:, None] * HIDDEN + rh[None, :],
                     mask=hb_ok, other=0.0).to(ACC)
    g_pre = tl.where(hidden > 0, g_hidden, 0.0)  # through the ReLU
    tl.store(g_pre_ptr + rb[:, None] * HIDDEN + rh[None, :],
             g_pre.to(g_pre_ptr.dtype.element_ty), mask=hb_ok)
    for c0 in range(0, C, BLOCK_C):
        rc = c0 + tl.arange(0, BLOCK_C)
        c_ok = rc < C
        wt = tl.load(w1_ptr + rh[:, None] * C + rc[None, :],
                     mask=h_ok[:, None] & c_ok[None, :], other=0.0).to(ACC)
        gp = tl.dot(g_pre, wt, input_precision=PRECISION, out_dtype=ACC)
        tl.store(g_p_ptr + rb[:, None] * C + rc[None, :],
                 gp.to(g_p_ptr.dtype.element_ty),
                 mask=b_ok[:, None] & c_ok[None, :])


def _settings(pooled: Tensor, hidden_channels: int,
              heads: Sequence[Tuple[int, bool]]) -> dict:
    """Compile-time settings of both kernels for heads given as
    ``(size, softmax)``; absent slots have size 0."""
    slots = list(heads) + [(0, False)] * (MAX_HEADS - len(heads))
    block_h = _block(hidden_channels, 1024)
    # weight tiles of at most 8192 elements beside the hidden block
    block_w = max(16, min(64, 8192 // block_h))
    settings = dict(
        ACC=tl.float64 if pooled.dtype == torch.float64 else tl.float32,
        PRECISION='tf32' if (pooled.is_cuda
                             and torch.backends.cuda.matmul.allow_tf32)
        else 'ieee',
        BLOCK_B=16, BLOCK_C=_block(pooled.shape[1], block_w),
        BLOCK_H=block_h)
    for i, (size, softmax) in enumerate(slots):
        settings[f'SIZE{i}'] = size
        settings[f'SOFTMAX{i}'] = softmax
        # a softmax normalises over the whole head: one block holds it
        settings[f'BLOCK_S{i}'] = (max(16, triton.next_power_of_2(size))
                                   if softmax else _block(size, block_w))
    return settings


class _FusedAttentionMLP(torch.autograd.Function):

    @staticmethod
    def forward(ctx, pooled: Tensor, trunk_weight: Tensor,
                trunk_bias: Optional[Tensor], temperature: Tensor,
                softmax: Tuple[bool, ...], *head_tensors: Tensor):
        batch, channels = pooled.shape
        hidden_channels = trunk_weight.shape[0]
        weights, biases = head_tensors[0::2], head_tensors[1::2]
        settings = _settings(pooled, hidden_channels,
                             [(w.shape[0], s) for w, s in zip(weights,
                                                               softmax)])
        pooled = pooled.contiguous()
        hidden = pooled.new_empty(batch, hidden_channels)
        outputs = [pooled.new_empty(batch, w.shape[0]) for w in weights]
        slots = []
        for i in range(MAX_HEADS):
            if i < len(weights):
                slots += [weights[i].contiguous(), biases[i].contiguous(),
                          outputs[i]]
            else:
                slots += [pooled] * 3  # never read: size 0
        _attention_mlp_fwd[(triton.cdiv(batch, settings['BLOCK_B']), )](
            pooled, trunk_weight.contiguous(),
            pooled if trunk_bias is None else trunk_bias.contiguous(),
            temperature, hidden, *slots, batch, channels, hidden_channels,
            HAS_B1=trunk_bias is not None, **settings)
        ctx.softmax = softmax
        ctx.has_trunk_bias = trunk_bias is not None
        ctx.save_for_backward(pooled, trunk_weight, temperature, hidden,
                              *weights, *outputs)
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor):
        pooled, trunk_weight, temperature, hidden, *rest = ctx.saved_tensors
        count = len(ctx.softmax)
        weights, outputs = rest[:count], rest[count:]
        batch, channels = pooled.shape
        hidden_channels = trunk_weight.shape[0]
        settings = _settings(pooled, hidden_channels,
                             [(w.shape[0], s) for w, s in zip(weights,
                                                               ctx.softmax)])
        logit_grads = [torch.empty_like(y) for y in outputs]
        slots = []
        for i in range(MAX_HEADS):
            if i < count:
                slots += [weights[i].contiguous(), outputs[i],
                          grads[i].contiguous(), logit_grads[i]]
            else:
                slots += [pooled] * 4  # never read: size 0
        pre_grad = torch.empty_like(hidden)
        pooled_grad = torch.empty_like(pooled)
        _attention_mlp_bwd[(triton.cdiv(batch, settings['BLOCK_B']), )](
            trunk_weight.contiguous(), temperature, hidden, pre_grad,
            pooled_grad, *slots, batch, channels, hidden_channels,
            **settings)
        head_grads: List[Optional[Tensor]] = []
        for gz in logit_grads:  # reductions over the batch
            head_grads += [gz.t() @ hidden, gz.sum(0)]
        return (pooled_grad, pre_grad.t() @ pooled,
                pre_grad.sum(0) if ctx.has_trunk_bias else None, None, None,
                *head_grads)


def fused_attention_mlp(pooled: Tensor, trunk_weight: Tensor,
                        trunk_bias: Optional[Tensor], temperature: Tensor,
                        heads: Sequence[Head]) -> Tuple[Tensor, ...]:
    """Each head's activated output ``[B, size]``, in ``heads``' order.

    Args:
        pooled: the pooled input ``[B, C]`` (float32 or float64; the MLP
            runs in that dtype, as the layers' attentions do).
        trunk_weight: ``[Hd, C]``; trunk_bias: ``[Hd]`` or ``None``.
        temperature: the 0-dim temperature tensor ``tau`` dividing every
            head's logits.
        heads: one to four :class:`Head`; a softmax head has at most 1024
            outputs (it is normalised within one block).
    """
    if not 1 <= len(heads) <= MAX_HEADS:
        raise ValueError(f'fused_attention_mlp: 1 to {MAX_HEADS} heads, got '
                         f'{len(heads)}')
    for head in heads:
        if head.activation not in ACTIVATIONS:
            raise ValueError(f'fused_attention_mlp: activation '
                             f'{head.activation!r} is not one of '
                             f'{ACTIVATIONS}')
        if head.activation == 'softmax' and head.weight.shape[0] > 1024:
            raise ValueError('fused_attention_mlp: a softmax head has at most '
                             f'1024 outputs, got {head.weight.shape[0]}')
    if trunk_weight.shape[0] > 1024:
        raise ValueError('fused_attention_mlp: a hidden layer of at most 1024 '
                         f'channels, got {trunk_weight.shape[0]}')
    tensors = [t for head in heads for t in (head.weight, head.bias)]
    return _FusedAttentionMLP.apply(
        pooled, trunk_weight, trunk_bias, temperature.to(pooled.dtype),
        tuple(head.activation == 'softmax' for head in heads), *tensors)
