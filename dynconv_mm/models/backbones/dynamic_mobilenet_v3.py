"""MobileNetV3 (Small and Large) with dynamic convolutions in its inverted
residual blocks and its last 1x1 conv."""
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.models.layers import InvertedResidual
from mmdet.models.utils import make_divisible
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..pretrained.loading import PretrainedInitMixin
from .placement import (check_dynamic_conv_cfg, check_stage_flags,
                        make_conv_dynamic)


@MODELS.register_module()
class DynamicMobileNetV3(PretrainedInitMixin, BaseModule):
    """MobileNetV3 (Howard et al., ICCV 2019), Small or Large, with dynamic
    convolutions as in DY-MobileNetV3 (Chen et al., CVPR 2020): every conv
    but the stem is built from ``dynamic_conv_cfg`` -- expansion 1x1,
    depthwise, projection 1x1 and the last 1x1 (96 -> 576 / 160 -> 960);
    the squeeze-excitation FCs stay static.

    The layout is the paper's and torchvision's (``mobilenet_v3_small`` /
    ``_large`` ``features``): a 3x3 stem of 16 channels with h-swish; the
    inverted residual blocks of the paper's tables (no expansion conv when
    the expansion equals the input width; SE squeeze to
    ``make_divisible(expansion / 4, 8)`` with ReLU and hard sigmoid); the
    last 1x1 conv with BN and h-swish. Parameter counts equal
    torchvision's features (tested). MMPose's ``MobileNetV3`` differs: it
    has an expansion conv in the first block, other SE widths, no last
    1x1, and its 'big' table differs in the last three blocks.

    Why every conv but the stem: DY-MobileNetV3-Small has 4.8M parameters
    against a static 2.9M (classifier included). With a classifier
    576 -> 1280 -> 1000 (2.95M static) this placement gives 4.78M; static
    depthwise convs would give 4.37M. torchvision's classifier
    (576 -> 1024 -> 1000) gives 2.54M static, 4.38M dynamic: the paper's
    numbers fit a 1280-wide classifier, which is not part of a backbone.

    Stages: ``layer1``..``layerN`` (one block each, N = 11 Small, 15 Large)
    and ``conv2`` (the last 1x1), indices ``0..N`` for ``out_indices``
    (negative indices count from the end) and ``dynamic_stages``.
    ``frozen_stages=k`` freezes ``conv1`` and ``layer1``..``layerk`` (their
    parameters and BN statistics). ``norm_eval=True`` puts every BN in eval
    mode, attention BNs included.

    Args:
        arch: 'small' or 'large'.
        dynamic_conv_cfg: conv config of the dynamic convs, e.g.
            ``dict(type='DynamicConv', num_kernels=4)``; ``None`` builds the
            static network.
        dynamic_stages: one bool per stage (N blocks + ``conv2``).
        out_indices: stages whose outputs are returned (default: the last,
            ``conv2``).
        frozen_stages: -1 (none) .. N.
        conv_cfg: conv config of the static convs (default ``nn.Conv2d``).
        norm_cfg: norm config of every ConvModule.
        norm_eval: BNs in eval mode during training.
        with_cp: gradient checkpointing of each block.
        init_cfg: default Kaiming convs, constant-1 BNs.

    Shapes: input ``[B, 3, H, W]``; output a tuple of ``[B, C_i, H / s_i,
    W / s_i]`` for the ``out_indices`` (Small: ``C`` 16, 24, 24, 40, 40,
    40, 48, 48, 96, 96, 96, 576 and ``s`` 4, 8, 8, 16, 16, 16, 16, 16, 32,
    32, 32, 32).
    """

    # kernel size, expansion width, output width, SE, activation, stride
    arch_settings = {
        'small': [[3, 16, 16, True, 'ReLU', 2],
                  [3, 72, 24, False, 'ReLU', 2],
                  [3, 88, 24, False, 'ReLU', 1],
                  [5, 96, 40, True, 'HSwish', 2],
                  [5, 240, 40, True, 'HSwish', 1],
                  [5, 240, 40, True, 'HSwish', 1],
                  [5, 120, 48, True, 'HSwish', 1],
                  [5, 144, 48, True, 'HSwish', 1],
                  [5, 288, 96, True, 'HSwish', 2],
                  [5, 576, 96, True, 'HSwish', 1],
                  [5, 576, 96, True, 'HSwish', 1]],
        'large': [[3, 16, 16, False, 'ReLU', 1],
                  [3, 64, 24, False, 'ReLU', 2],
                  [3, 72, 24, False, 'ReLU', 1],
                  [5, 72, 40, True, 'ReLU', 2],
                  [5, 120, 40, True, 'ReLU', 1],
                  [5, 120, 40, True, 'ReLU', 1],
                  [3, 240, 80, False, 'HSwish', 2],
                  [3, 200, 80, False, 'HSwish', 1],
                  [3, 184, 80, False, 'HSwish', 1],
                  [3, 184, 80, False, 'HSwish', 1],
                  [3, 480, 112, True, 'HSwish', 1],
                  [3, 672, 112, True, 'HSwish', 1],
                  [5, 672, 160, True, 'HSwish', 2],
                  [5, 960, 160, True, 'HSwish', 1],
                  [5, 960, 160, True, 'HSwish', 1]],
    }  # yapf: disable
    stem_channels = 16
    last_channels = {'small': 576, 'large': 960}

    def __init__(self,
                 arch: str = 'small',
                 dynamic_conv_cfg: Optional[dict] = None,
                 dynamic_stages: Optional[Sequence[bool]] = None,
                 out_indices: Sequence[int] = (-1, ),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', eps=0.001, momentum=0.01),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        owner = type(self).__name__
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg=init_cfg)
        if arch not in self.arch_settings:
            raise ValueError(f'{owner}: option arch={arch!r} is invalid: use '
                             f'one of {sorted(self.arch_settings)}')
        num_stages = len(self.arch_settings[arch]) + 1
        if dynamic_stages is None:
            dynamic_stages = (True, ) * num_stages
        self.dynamic_stages = check_stage_flags(owner, 'dynamic_stages',
                                                dynamic_stages, num_stages)
        self.dynamic_conv_cfg = check_dynamic_conv_cfg(owner,
                                                       dynamic_conv_cfg)
        for index in out_indices:
            if isinstance(index, bool) or not isinstance(index, int) \
                    or not -num_stages <= index < num_stages:
                raise ValueError(
                    f'{owner}: option out_indices={tuple(out_indices)!r} is '
                    f'invalid: each index must be an integer in '
                    f'[-{num_stages}, {num_stages - 1}]')
        if frozen_stages not in range(-1, num_stages):
            raise ValueError(f'{owner}: option frozen_stages={frozen_stages!r}'
                             f' is invalid: it must be in [-1, '
                             f'{num_stages - 1}]')
        self.arch = arch
        self.out_indices = tuple(i % num_stages for i in out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.conv1 = ConvModule(
            3,
            self.stem_channels,
            3,
            stride=2,
            padding=1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='HSwish'))
        self.layers: List[str] = []
        in_channels = self.stem_channels
        for i, (kernel_size, mid_channels, out_channels, with_se, act,
                stride) in enumerate(self.arch_settings[arch]):
            block = InvertedResidual(
                in_channels,
                out_channels,
                mid_channels,
                kernel_size=kernel_size,
                stride=stride,
                se_cfg=self._se_cfg(mid_channels) if with_se else None,
                with_expand_conv=mid_channels != in_channels,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=dict(type=act),
                with_cp=with_cp)
            if self._is_dynamic(i):
                for name in ('expand_conv', 'depthwise_conv', 'linear_conv'):
                    if hasattr(block, name):
                        make_conv_dynamic(getattr(block, name),
                                          self.dynamic_conv_cfg)
            self.add_module(f'layer{i + 1}', block)
            self.layers.append(f'layer{i + 1}')
            in_channels = out_channels
        self.conv2 = ConvModule(
            in_channels,
            self.last_channels[arch],
            1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='HSwish'))
        if self._is_dynamic(num_stages - 1):
            make_conv_dynamic(self.conv2, self.dynamic_conv_cfg)
        self.layers.append('conv2')

    @staticmethod
    def _se_cfg(channels: int) -> dict:
        """Squeeze to ``make_divisible(channels / 4, 8)`` (the paper's and
        torchvision's), ReLU, expand, hard sigmoid. mmdet's ``SELayer``
        squeezes to ``int(channels / ratio)``: an exact fraction keeps
        float rounding out of it."""
        squeeze = make_divisible(channels // 4, 8)
        return dict(
            channels=channels,
            ratio=Fraction(channels, squeeze),
            act_cfg=(dict(type='ReLU'), dict(type=nn.Hardsigmoid)))

    def _is_dynamic(self, stage: int) -> bool:
        return self.dynamic_conv_cfg is not None \
            and self.dynamic_stages[stage]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in [self.conv1] + [
                getattr(self, f'layer{i}')
                for i in range(1, self.frozen_stages + 1)
        ]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'DynamicMobileNetV3':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
