"""Conv-BN fusion for inference, dynamic layers included: mmcv's
``fuse_conv_bn`` skips them (they are not ``nn.Conv2d``)."""
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmcv.cnn import fuse_conv_bn as fuse_static_conv_bn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import DynamicConv2dBase


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a conv into that conv, for
    inference: dynamic layers by :meth:`DynamicConv2dBase.fold_batch_norm`,
    then ``nn.Conv2d`` ones by mmcv's ``fuse_conv_bn``. Each folded norm
    becomes an ``nn.Identity``; the model computes the same function in
    eval mode (from the norms' running statistics) and must not be
    trained afterwards.

    As mmcv's, a norm "follows" a conv when it is the next child module of
    the same parent (mmdet's ResNet blocks and mmcv's ``ConvModule``
    register them in the order they run); a ``ConvModule`` whose order
    puts the norm first is left alone. A norm after a DyNet layer stays:
    DyNet's sigmoid coefficients cannot carry its shift (see
    :meth:`DynamicConv2dBase.bias_weights_sum_to_one`); a log line names
    how many.
    """
    count, kept = fold_dynamic_conv_bn(module)
    fuse_static_conv_bn(module)
    print_log(
        f'fuse_conv_bn: {count} BatchNorm(s) folded into dynamic convs'
        + (f'; {len(kept)} left after convs whose bias mixing weights do '
           f'not sum to one (DyNet), e.g. {kept[0]}' if kept else ''),
        logger='current')
    return module


def fold_dynamic_conv_bn(module: nn.Module) -> Tuple[int, List[str]]:
    """The dynamic half of :func:`fuse_conv_bn`: how many norms were folded
    into dynamic convs, and the names of those left after a conv that
    cannot take them (DyNet's)."""
    kept: List[str] = []
    return _fold_dynamic(module, '', kept), kept


def _fold_dynamic(module: nn.Module, prefix: str, kept: List[str]) -> int:
    if isinstance(module, ConvModule) and 'norm' in module.order and \
            module.order.index('norm') < module.order.index('conv'):
        return 0
    count = 0
    last = None  # the previous child, if a dynamic conv
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and last is not None:
            if last.bias_weights_sum_to_one():
                last.fold_batch_norm(child)
                module._modules[name] = nn.Identity()
                count += 1
            else:
                kept.append(prefix + name)
            last = None
        elif isinstance(child, DynamicConv2dBase):
            last = child
        else:
            last = None
            count += _fold_dynamic(child, f'{prefix}{name}.', kept)
    return count


@HOOKS.register_module()
class FuseConvBNHook(Hook):
    """Before testing, fuse the (unwrapped) model's convs and BatchNorms
    (:func:`fuse_conv_bn`), after the checkpoint has been loaded:
    ``tools/test.py --fuse-conv-bn`` adds it. Only the test loop: a
    validation during training would leave the model without norms."""

    priority = 'LOW'

    def before_test(self, runner) -> None:
        model = runner.model
        fuse_conv_bn(model.module if is_model_wrapper(model) else model)
