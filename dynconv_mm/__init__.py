"""dynconv_mm: dynamic convolution (DynamicConv, ODConv, DyNet) for
MMDetection and MMPose.

Importing the package (directly, or through a config's ``custom_imports``)
registers the conv types ``DynamicConv``, ``ODConv`` and ``DyNetConv`` in
MMCV's conv registry (see :mod:`dynconv_mm.registry` for mmdet's own
``DynamicConv``), the ``TemperatureAnnealingHook``, and allow-lists the
objects mmengine checkpoints hold so they load with ``weights_only=True``.
"""
from . import engine, execution, layers, models, registry  # noqa: F401
from .engine import TemperatureAnnealingHook
from .layers import DynamicConv2d, DyNetConv2d, ODConv2d
from .version import __version__

engine.allow_mmengine_checkpoint_globals()
registry.register_in_mmdet_scope()

__all__ = [
    '__version__', 'DynamicConv2d', 'ODConv2d', 'DyNetConv2d',
    'TemperatureAnnealingHook'
]
