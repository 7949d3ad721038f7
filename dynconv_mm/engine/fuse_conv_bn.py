"""Conv-BN fusion for inference, dynamic layers included: mmcv's
``fuse_conv_bn`` skips them (they are not ``nn.Conv2d``). mmcv's fold of a
static conv (mmcv 2.1's ``_fuse_conv_bn``) does the static ones."""
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmcv.cnn.utils.fuse_conv_bn import _fuse_conv_bn as fold_static_conv_bn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import DynamicConv2dBase


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a conv into that conv, for
    inference: a dynamic conv by :meth:`DynamicConv2dBase.fold_batch_norm`,
    an ``nn.Conv2d`` by mmcv's fold. Each folded norm becomes an
    ``nn.Identity``; the model computes the same function in eval mode
    (from the norms' running statistics) and must not be trained
    afterwards. A log line says how many were folded and names those kept.

    A norm "follows" a conv when it is the conv's next sibling (mmdet's
    ResNet blocks and mmcv's ``ConvModule`` register them in the order they
    run); unlike mmcv's ``fuse_conv_bn``, which also folds a norm into a
    conv some siblings before it, so a norm after a DyNet layer would land
    in an earlier static conv. A ``ConvModule`` whose order puts the norm
    first is left alone. Kept: a norm after a DyNet layer (its sigmoid
    coefficients cannot carry the shift, see
    :meth:`DynamicConv2dBase.bias_weights_sum_to_one`), and one without
    affine parameters after a static conv (mmcv's fold needs them).
    """
    folded, kept = fold_conv_bn(module)
    print_log(
        f'fuse_conv_bn: {folded} BatchNorm(s) folded into the convs before '
        'them' + (f'; {len(kept)} kept (after a DyNet layer, or without '
                  f'affine parameters), e.g. {kept[0]}' if kept else ''),
        logger='current')
    return module


def fold_conv_bn(module: nn.Module) -> Tuple[int, List[str]]:
    """What :func:`fuse_conv_bn` does, returning how many norms it folded
    and the names of those it kept after a conv."""
    kept: List[str] = []
    return _fold(module, '', kept), kept


def _fold(module: nn.Module, prefix: str, kept: List[str]) -> int:
    if isinstance(module, ConvModule) and 'norm' in module.order and \
            module.order.index('norm') < module.order.index('conv'):
        return 0
    count = 0
    last = None  # (name, module) of the previous sibling if a conv
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and last is not None:
            conv_name, conv = last
            last = None
            if isinstance(conv, DynamicConv2dBase):
                if not conv.bias_weights_sum_to_one():
                    kept.append(prefix + name)
                    continue
                conv.fold_batch_norm(child)
            elif child.affine and child.track_running_stats:
                module._modules[conv_name] = fold_static_conv_bn(conv, child)
            else:
                kept.append(prefix + name)
                continue
            module._modules[name] = nn.Identity()
            count += 1
        elif isinstance(child, (DynamicConv2dBase, nn.Conv2d)):
            last = name, child
        else:
            last = None
            count += _fold(child, f'{prefix}{name}.', kept)
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
