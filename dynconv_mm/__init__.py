"""dynconv_mm: dynamic convolution (DynamicConv, ODConv, DyNet) for
MMDetection and MMPose.

Importing the package (directly, or through a config's ``custom_imports``)
registers the conv types ``DynamicConv``, ``ODConv`` and ``DyNetConv`` in
MMCV's conv registry (see :mod:`dynconv_mm.registry` for mmdet's own
``DynamicConv``), the ``TemperatureAnnealingHook``, and allow-lists the
objects mmengine checkpoints hold so they load with ``weights_only=True``.
On glibc it also keeps freed CPU memory in the process, so that per-sample
kernels do not page-fault on every call
(:mod:`dynconv_mm.execution.cpu_memory`; ``DYNCONV_MM_KEEP_FREED_MEMORY=0``
leaves malloc alone).
"""
from . import engine, execution, layers, models, registry  # noqa: F401
from .engine import TemperatureAnnealingHook
from .layers import DynamicConv2d, DyNetConv2d, ODConv2d
from .version import __version__

engine.allow_mmengine_checkpoint_globals()
registry.register_in_mmdet_scope()
execution.keep_freed_cpu_memory()

__all__ = [
    '__version__', 'DynamicConv2d', 'ODConv2d', 'DyNetConv2d',
    'TemperatureAnnealingHook'
]
