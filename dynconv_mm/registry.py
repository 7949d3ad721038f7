"""Make ``type='DynamicConv'`` mean our layer inside the mmdet scope too.

MMDetection registers a ``DynamicConv`` of its own (the instance-interactive
module of Sparse R-CNN / QueryInst) in its ``MODELS`` registry. A lookup in
the mmdet scope finds that before ours (registered in the root registry), so
``conv_cfg=dict(type='DynamicConv')`` in an mmdet backbone would build the
wrong module. The two are never built the same way: ``build_conv_layer``
always passes the conv geometry (``in_channels, out_channels, kernel_size``
positionally), while mmdet's configs build theirs from keywords alone and
never give a ``kernel_size``. :func:`build_dynamic_conv` routes on exactly
that and replaces mmdet's entry, so both keep working.
"""
import importlib.util
from typing import Any

from .layers import DynamicConv2d


def _mmdet_dynamic_conv() -> Any:
    from mmdet.models.layers import DynamicConv
    return DynamicConv


def build_dynamic_conv(*args: Any, **kwargs: Any) -> Any:
    """``DynamicConv2d`` for a conv geometry, else mmdet's ``DynamicConv``."""
    if args or 'kernel_size' in kwargs:
        return DynamicConv2d(*args, **kwargs)
    return _mmdet_dynamic_conv()(**kwargs)


def register_in_mmdet_scope() -> None:
    """Route the mmdet scope's ``DynamicConv`` through
    :func:`build_dynamic_conv` (no-op without mmdet)."""
    if importlib.util.find_spec('mmdet') is None:
        return
    from mmdet.registry import MODELS
    # mmdet registers its modules when mmdet.models is imported; ours must
    # come after, or that import would fail on a duplicate name.
    MODELS.import_from_location()
    MODELS.register_module('DynamicConv', module=build_dynamic_conv,
                           force=True)
