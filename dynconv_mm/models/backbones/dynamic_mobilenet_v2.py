"""MobileNetV2 with dynamic convolutions in its inverted residual blocks
and its last 1x1 conv."""
from typing import Any, Optional, Sequence

import torch.nn as nn
from mmdet.models.backbones import MobileNetV2
from mmengine.registry import MODELS

from ..pretrained.loading import PretrainedInitMixin
from .placement import (check_dynamic_conv_cfg, check_stage_flags,
                        conv_type_name, make_conv_dynamic)

#: Whether a paper makes MobileNetV2's depthwise 3x3 convs dynamic, by conv
#: type; a type not listed makes them dynamic.
PAPER_DYNAMIC_DEPTHWISE = {
    # ODConv (Li et al. 2022): expansion, depthwise, projection and the
    # last 1x1 (authors' code; 4.94M / 11.51M parameters at width 1.0).
    'ODConv': True,
    # Dynamic Convolution (Chen et al. 2020): DY-MobileNetV2 x1.0 has
    # 11.1M parameters; static depthwise convs give 11.07M, dynamic ones
    # 12.40M (both with the classifier).
    'DynamicConv': False,
}


@MODELS.register_module()
class DynamicMobileNetV2(PretrainedInitMixin, MobileNetV2):
    """MobileNetV2 (mmdet's, all its options) with dynamic convolutions in
    the inverted residual blocks (expansion 1x1, depthwise 3x3, projection
    1x1) and the last 1x1 conv (320 -> 1280); the stem stays static, as in
    ODConv (Li et al. 2022) and Dynamic Convolution (Chen et al. 2020).

    The papers differ on the depthwise convs: ODConv makes them dynamic,
    DynamicConv keeps them static (the placement whose parameter count
    matches DY-MobileNetV2's 11.1M); ``dynamic_depthwise=None`` follows
    :data:`PAPER_DYNAMIC_DEPTHWISE` for the conv type, a bool forces it.

    Stages are mmdet's: ``layer1`` ... ``layer7`` (the seven inverted
    residual settings) and ``conv2`` (the last 1x1), indices 0-7 for
    ``out_indices`` and ``dynamic_stages``. The FPN outputs of the ODConv
    paper, torchvision feature indices 3, 6, 13, 18 (channels 24, 32, 96,
    1280 at width 1.0), are ``out_indices=(1, 2, 4, 7)``, the default;
    :meth:`torchvision_names` maps the modules to torchvision's
    ``features.N`` names. ``frozen_stages=k`` freezes ``conv1`` and
    ``layer1``..``layerk`` (the ODConv authors' ``frozen_stages=1`` freezes
    torchvision features 0-3, i.e. ``frozen_stages=2`` here); unlike
    mmdet's, a frozen stem's BN is also put in eval mode. ``norm_eval``
    also puts attention BatchNorms in eval mode. For width < 1 the last
    conv keeps 1280 channels (as torchvision and the ODConv authors).

    Args:
        widen_factor: width multiplier (the papers: 0.5, 0.75, 1.0).
        dynamic_conv_cfg: conv config of the dynamic convs, e.g.
            ``dict(type='ODConv', num_kernels=4)``; ``None`` builds the
            static network.
        dynamic_depthwise: make the depthwise convs dynamic; ``None``: the
            paper's choice for the conv type.
        dynamic_stages: 8 bools, for ``layer1``..``layer7`` and ``conv2``.
        **kwargs: mmdet ``MobileNetV2``'s options (``out_indices``,
            ``frozen_stages``, ``conv_cfg`` for the static convs,
            ``norm_cfg``, ``act_cfg``, ``norm_eval``, ``with_cp``,
            ``init_cfg``).

    Shapes: input ``[B, 3, H, W]``; output a tuple of ``[B, C_i, H / s_i,
    W / s_i]`` for the ``out_indices``, strides ``s`` 2, 4, 8, 16, 16, 32,
    32, 32 and channels 16, 24, 32, 64, 96, 160, 320, 1280 at width 1.0.
    """

    def __init__(self,
                 widen_factor: float = 1.,
                 dynamic_conv_cfg: Optional[dict] = None,
                 dynamic_depthwise: Optional[bool] = None,
                 dynamic_stages: Sequence[bool] = (True, ) * 8,
                 **kwargs: Any) -> None:
        owner = type(self).__name__
        # make_layer, called from MobileNetV2.__init__, reads these.
        self.dynamic_conv_cfg = check_dynamic_conv_cfg(owner,
                                                       dynamic_conv_cfg)
        self.dynamic_stages = check_stage_flags(
            owner, 'dynamic_stages', dynamic_stages,
            len(self.arch_settings) + 1)
        if dynamic_depthwise is None:
            dynamic_depthwise = PAPER_DYNAMIC_DEPTHWISE.get(
                conv_type_name(self.dynamic_conv_cfg), True)
        elif not isinstance(dynamic_depthwise, bool):
            raise ValueError(f'{owner}: option dynamic_depthwise='
                             f'{dynamic_depthwise!r} is invalid: it must be '
                             'True, False or None')
        self.dynamic_depthwise = dynamic_depthwise
        super().__init__(widen_factor=widen_factor, **kwargs)
        if self._is_dynamic(len(self.layers) - 1):
            make_conv_dynamic(self.conv2, self.dynamic_conv_cfg)

    def _is_dynamic(self, stage: int) -> bool:
        return self.dynamic_conv_cfg is not None \
            and self.dynamic_stages[stage]

    def make_layer(self, out_channels: int, num_blocks: int, stride: int,
                   expand_ratio: int) -> nn.Sequential:
        """mmdet's stage of inverted residual blocks, with the chosen convs
        made dynamic (stages are built in order)."""
        layer = super().make_layer(out_channels, num_blocks, stride,
                                   expand_ratio)
        if self._is_dynamic(len(self.layers)):
            for block in layer:
                if block.with_expand_conv:
                    make_conv_dynamic(block.expand_conv,
                                      self.dynamic_conv_cfg)
                if self.dynamic_depthwise:
                    make_conv_dynamic(block.depthwise_conv,
                                      self.dynamic_conv_cfg)
                make_conv_dynamic(block.linear_conv, self.dynamic_conv_cfg)
        return layer

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 0:
            # mmdet freezes the stem's parameters but lets its BN update
            # its running statistics.
            self.conv1.eval()

    def train(self, mode: bool = True) -> 'DynamicMobileNetV2':
        """mmdet's ``train`` (frozen stages, ``norm_eval``), returning the
        module as ``nn.Module.train`` does (mmdet's returns ``None``)."""
        super().train(mode)
        return self

    def torchvision_names(self) -> dict:
        """Module name here -> torchvision ``mobilenet_v2`` name, for every
        stage: ``conv1`` -> ``features.0``, ``layer1.0`` -> ``features.1``,
        ``layer2.0`` -> ``features.2``, ..., ``conv2`` -> ``features.18``
        (inside a block, torchvision's ``conv`` sequence holds expansion,
        depthwise, projection in that order)."""
        names = {'conv1': 'features.0'}
        index = 1
        for layer_name in self.layers[:-1]:
            for block in range(len(getattr(self, layer_name))):
                names[f'{layer_name}.{block}'] = f'features.{index}'
                index += 1
        names[self.layers[-1]] = f'features.{index}'
        return names
