"""Execution floor: how a convolution with per-sample kernels runs.

Plain functions on tensors; no ``nn.Module``, registry or OpenMMLab import.
Every formulation computes the same function (see :mod:`.attentions`);
:func:`dynamic_conv2d` runs the one :func:`select_method` picks, or the one
asked for. The fused Triton kernels (``triton_conv2d``, and the attention
MLP in ``triton_attention``) are imported only when used, since they need
Triton and a GPU (or Triton's interpreter). Two compiled CPU ops for
inference (``cpu_ops``: the attention MLP, and a batch-1 sample's kernel in
one pass) are built at install from ``csrc/``; without them the same
values come from PyTorch.
"""
from .attentions import (ConvAttentions, empty_batch_conv2d, mix_bias,
                         mix_kernels)
from .cpu_memory import cpu_memory_state, keep_freed_cpu_memory
from .dynamic_conv2d import METHODS, check_method, dynamic_conv2d
from .im2col_conv2d import im2col_conv2d
from .kernel_branches import kernel_branches_conv2d
from .per_sample_kernels import aggregated_conv2d, batch_folded_conv2d
from .selection import FORMULATIONS, select_method
from .tiled_gemm_conv2d import tiled_gemm_conv2d

__all__ = [
    'METHODS', 'FORMULATIONS', 'ConvAttentions', 'aggregated_conv2d',
    'batch_folded_conv2d', 'check_method', 'cpu_memory_state',
    'dynamic_conv2d', 'empty_batch_conv2d', 'im2col_conv2d',
    'keep_freed_cpu_memory', 'kernel_branches_conv2d', 'mix_bias',
    'mix_kernels', 'select_method', 'tiled_gemm_conv2d'
]
