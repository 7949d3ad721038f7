"""Where a backbone puts its dynamic convolutions: validation of the
placement options the backbones share, and turning one static conv of a
built block into a dynamic one of the same geometry."""
from typing import Any, Optional, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule, build_conv_layer


def check_dynamic_conv_cfg(owner: str, cfg: Any) -> Optional[dict]:
    """A conv config with a ``type`` (e.g. ``dict(type='ODConv',
    num_kernels=4)``), or ``None`` for the static network; returns a copy."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(
            f'{owner}: option dynamic_conv_cfg={cfg!r} is invalid: it must '
            "be a conv config with a type, e.g. dict(type='ODConv', "
            'num_kernels=4), or None for the static network')
    return dict(cfg)


def conv_type_name(cfg: Optional[dict]) -> Optional[str]:
    """The registry name of a conv config's type (a class gives its
    ``layer_type`` or its class name)."""
    if cfg is None:
        return None
    conv_type = cfg['type']
    if isinstance(conv_type, str):
        return conv_type
    return getattr(conv_type, 'layer_type', conv_type.__name__)


def check_stage_flags(owner: str, name: str, flags: Any,
                      num_stages: int) -> Tuple[bool, ...]:
    """One ``True``/``False`` per stage."""
    if not isinstance(flags, Sequence) or isinstance(flags, str) \
            or len(flags) != num_stages \
            or not all(isinstance(flag, bool) for flag in flags):
        raise ValueError(
            f'{owner}: option {name}={flags!r} is invalid: it must be a '
            f'sequence of {num_stages} booleans, one per stage')
    return tuple(flags)


def make_conv_dynamic(module: ConvModule, conv_cfg: dict) -> None:
    """Replace ``module.conv`` by a conv built from ``conv_cfg`` with the
    same geometry (channels, kernel, stride, padding, dilation, groups,
    bias), keeping the ``ConvModule``'s norm and activation.

    The backbones build mmdet's own blocks and then swap the convs a paper
    makes dynamic, so that the blocks' code and parameter names stay
    mmdet's.
    """
    conv = module.conv
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f'{type(module).__name__}: only a static nn.Conv2d can be made '
            f'dynamic, got {type(conv).__name__}')
    module.conv = build_conv_layer(
        conv_cfg,
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None)
