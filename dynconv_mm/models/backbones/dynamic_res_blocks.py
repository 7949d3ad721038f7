"""mmdet's ResNet blocks with dynamic convolutions inside the residual
branch, optionally fed by DyNet's one coefficient module per block."""
from typing import Optional, Tuple

import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from torch import Tensor

from .dynet_block_coefficients import (BlockFedDyNetConv2d,
                                       BlockKernelFusionCoefficients,
                                       coefficient_options, is_dynet)


class DynamicResBlockMixin:
    """Builds the residual branch's convs from ``dynamic_conv_cfg`` (the
    downsample projection is built by ``ResLayer`` from the static
    ``conv_cfg`` before the block) and, with ``dynet_shared_coefficients``,
    one coefficient module per block.

    Module names are mmdet's (``conv1``, ``norm1``, ...; the block's
    coefficient module is ``coefficients``), so a static torchvision /
    mmdet checkpoint's keys name the same convs.

    Args:
        dynamic_conv_cfg: conv config of the residual branch's convs; ``None``
            keeps them static (built from ``conv_cfg`` as in mmdet).
        dynet_shared_coefficients: DyNet (Dy-ResNet): one
            :class:`BlockKernelFusionCoefficients` predicts, from the block
            input, the coefficients of all the block's convs, which then have
            no coefficient module of their own. Needs a ``DyNetConv``
            ``dynamic_conv_cfg``.
        others: as mmdet's block.
    """

    #: The residual branch's convs, in order; each is followed by
    #: ``norm{i}`` and, except the last, by ReLU.
    conv_names: Tuple[str, ...] = ()

    def __init__(self,
                 *args,
                 dynamic_conv_cfg: Optional[dict] = None,
                 dynet_shared_coefficients: bool = False,
                 conv_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        owner = 'DynamicResNet'
        if dynamic_conv_cfg is not None:
            if kwargs.get('dcn') is not None:
                raise ValueError(
                    f'{owner}: option dcn={kwargs["dcn"]!r} would replace a '
                    'dynamic conv; use dcn only in static stages')
            conv_cfg = dynamic_conv_cfg
        if dynet_shared_coefficients:
            if dynamic_conv_cfg is None or not is_dynet(
                    dynamic_conv_cfg['type']):
                raise ValueError(
                    f'{owner}: option dynet_shared_coefficients=True needs '
                    "dynamic_conv_cfg=dict(type='DyNetConv', ...), got "
                    f'{dynamic_conv_cfg!r}')
            if kwargs.get('plugins'):
                raise ValueError(
                    f'{owner}: plugins={kwargs["plugins"]!r} cannot be '
                    'combined with dynet_shared_coefficients=True')
            conv_cfg = dict(conv_cfg, type=BlockFedDyNetConv2d)
        super().__init__(*args, conv_cfg=conv_cfg, **kwargs)
        self.coefficients = None
        if dynet_shared_coefficients:
            convs = [getattr(self, name) for name in self.conv_names]
            self.coefficients = BlockKernelFusionCoefficients(
                convs[0].in_channels, convs, **coefficient_options(conv_cfg))

    def _shared_coefficients_forward(self, x: Tensor) -> Tensor:
        """The residual branch plus shortcut (before the last ReLU), each
        conv taking its coefficients from the block's module."""
        out = x
        last = len(self.conv_names) - 1
        for i, (name, attentions) in enumerate(
                zip(self.conv_names, self.coefficients(x))):
            out = getattr(self, name)(out, attentions)
            out = getattr(self, f'norm{i + 1}')(out)
            if i < last:
                out = self.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: Tensor) -> Tensor:
        if self.coefficients is None:
            return super().forward(x)
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(
                self._shared_coefficients_forward, x, use_reentrant=False)
        else:
            out = self._shared_coefficients_forward(x)
        return self.relu(out)


class DynamicBasicBlock(DynamicResBlockMixin, BasicBlock):
    """mmdet's ``BasicBlock`` (two 3x3 convs) with dynamic convs; see
    :class:`DynamicResBlockMixin`."""

    conv_names = ('conv1', 'conv2')


class DynamicBottleneck(DynamicResBlockMixin, Bottleneck):
    """mmdet's ``Bottleneck`` (1x1, 3x3, 1x1) with dynamic convs; see
    :class:`DynamicResBlockMixin`."""

    conv_names = ('conv1', 'conv2', 'conv3')
