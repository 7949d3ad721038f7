"""Execution floor: how a convolution with per-sample kernels runs.

Plain functions on tensors; no ``nn.Module``, registry or OpenMMLab import.
"""
from .dynamic_conv2d import (METHODS, ConvAttentions, batch_folded_conv2d,
                             dynamic_conv2d, kernel_branches_conv2d,
                             mix_bias, mix_kernels, select_method)

__all__ = [
    'METHODS', 'ConvAttentions', 'batch_folded_conv2d', 'dynamic_conv2d',
    'kernel_branches_conv2d', 'mix_bias', 'mix_kernels', 'select_method'
]
