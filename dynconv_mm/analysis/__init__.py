"""Complexity analysis: parameters and multiply-accumulates of models that
contain dynamic convolutions, counted as their inference cost at batch 1
(convention: :mod:`dynconv_mm.analysis.complexity`)."""
from .complexity import (ComplexityReport, UncountedOperationError,
                         count_complexity, format_count)
from .dynamic_layer_cost import CONVENTIONS, dynamic_conv_macs
from .imagenet_classifier import ImageNetClassifier

__all__ = [
    'ComplexityReport', 'UncountedOperationError', 'count_complexity',
    'format_count', 'CONVENTIONS', 'dynamic_conv_macs', 'ImageNetClassifier'
]
