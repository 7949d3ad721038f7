"""The light keypoint head for mobile backbones: upsampling plus
MobileNetV2 inverted residual blocks ("type B" of Dynamic Convolution)."""
import copy
from typing import Optional, Sequence, Union

import torch.nn as nn
from mmcv.cnn import ConvModule, build_conv_layer
from mmpose.models.backbones.mobilenet_v2 import InvertedResidual
from mmpose.models.heads import HeatmapHead
from mmpose.registry import MODELS
from mmpose.utils.typing import ConfigType, OptConfigType

from ..backbones.dynamic_mobilenet_v2 import PAPER_DYNAMIC_DEPTHWISE
from ..backbones.placement import conv_type_name, make_conv_dynamic


@MODELS.register_module()
class InvertedResidualHeatmapHead(HeatmapHead):
    """A light top-down heatmap head: a 1x1 conv to ``stage_channels[0]``,
    then per stage a x2 upsampling and MobileNetV2 inverted residual blocks
    (expansion 1x1, depthwise 3x3, linear projection 1x1, Sandler et al.,
    CVPR 2018), then mmpose's 1x1 heatmap conv.

    This is the head Dynamic Convolution (Chen et al., CVPR 2020) uses with
    its mobile backbones for COCO keypoints ("type B": upsampling plus
    inverted residual bottleneck blocks, dynamic in backbone and head); the
    paper gives neither widths nor depths, see the defaults below. Loss,
    decoding, flip test and the init are mmpose's ``HeatmapHead``'s.

    Dynamic convolutions: with ``conv_cfg`` (e.g. ``dict(type=
    'DynamicConv', num_kernels=4)``) the first 1x1 conv and every block's
    expansion and projection convs are built from it; the depthwise convs
    follow ``dynamic_depthwise`` (``None``: the paper's rule of the conv
    type, as in :class:`~dynconv_mm.models.DynamicMobileNetV2`: static for
    ``DynamicConv``, dynamic for ``ODConv``). Upsampling is parameter-free,
    so nothing else needs a conv. The final 1x1 conv is static by default
    (mmpose's ``final_layer``; pass ``dict(type=..., kernel_size=1)`` for a
    dynamic one).

    Args:
        in_channels: Channels of the backbone's last output.
        out_channels: Number of heatmaps (17 for COCO).
        stage_channels: Output width of each upsampling stage; one x2
            upsampling per entry. Default ``(64, 32, 16)``: three stages
            from stride 32 to the stride-4 heatmaps of a 256x192 crop;
            halving the width as the resolution doubles keeps each stage's
            multiply-adds about equal (MobileNetV2's stages read
            backwards), and the last stage is about as wide as the 17
            heatmaps it feeds. About 77M multiply-adds at 256x192, less
            than the MobileNetV2 x0.5 backbone (1/16 of SimpleBaseline's
            three 256-channel deconvs on MobileNetV2: 1.26G).
        blocks_per_stage: Inverted residual blocks per stage (the first
            changes the width, the others are residual). Default 1: the
            cheapest head that still refines every resolution.
        expand_ratio: MobileNetV2's expansion factor. Default 6 (as there).
        upsample_mode: ``'bilinear'`` (default) or ``'nearest'``.
        conv_cfg: Conv config of the dynamic convs, ``None``: static.
        dynamic_depthwise: Whether the depthwise convs use ``conv_cfg``.
        norm_cfg: Norm after every conv (mmcv config). Default BN.
        act_cfg: Activation after the 1x1 reduction, the expansion and the
            depthwise convs (the projection is linear). Default ReLU6, as
            MobileNetV2.
        final_layer, loss, decoder, init_cfg: as mmpose's ``HeatmapHead``.

    Shapes: features ``[B, in_channels, H, W]`` (the last of the backbone's
    outputs) -> heatmaps ``[B, out_channels, H * 2^n, W * 2^n]`` for ``n =
    len(stage_channels)``.
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 out_channels: int,
                 stage_channels: Sequence[int] = (64, 32, 16),
                 blocks_per_stage: int = 1,
                 expand_ratio: int = 6,
                 upsample_mode: str = 'bilinear',
                 conv_cfg: OptConfigType = None,
                 dynamic_depthwise: Optional[bool] = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU6'),
                 final_layer: Optional[dict] = dict(kernel_size=1),
                 loss: ConfigType = dict(
                     type='KeypointMSELoss', use_target_weight=True),
                 decoder: OptConfigType = None,
                 init_cfg: OptConfigType = None) -> None:
        owner = type(self).__name__
        if isinstance(in_channels, Sequence):
            raise ValueError(f'{owner}: option in_channels={in_channels!r} '
                             'is invalid: the head reads one feature map')
        if (not isinstance(stage_channels, Sequence) or not stage_channels
                or not all(
                    isinstance(c, int) and not isinstance(c, bool) and c > 0
                    for c in stage_channels)):
            raise ValueError(f'{owner}: option stage_channels='
                             f'{stage_channels!r} is invalid: it must be a '
                             'non-empty sequence of positive integers')
        for key, value in (('blocks_per_stage', blocks_per_stage),
                           ('expand_ratio', expand_ratio)):
            if not isinstance(value, int) or isinstance(value,
                                                        bool) or value < 1:
                raise ValueError(f'{owner}: option {key}={value!r} is '
                                 'invalid: it must be an integer >= 1')
        if upsample_mode not in ('bilinear', 'nearest'):
            raise ValueError(f'{owner}: option upsample_mode='
                             f'{upsample_mode!r} is invalid: it must be '
                             "'bilinear' or 'nearest'")
        if conv_cfg is not None and not (isinstance(conv_cfg, dict)
                                         and 'type' in conv_cfg):
            raise ValueError(f'{owner}: option conv_cfg={conv_cfg!r} is '
                             'invalid: it must be a conv config with a '
                             'type, or None')
        if dynamic_depthwise is None:
            dynamic_depthwise = PAPER_DYNAMIC_DEPTHWISE.get(
                conv_type_name(conv_cfg), True)
        elif not isinstance(dynamic_depthwise, bool):
            raise ValueError(f'{owner}: option dynamic_depthwise='
                             f'{dynamic_depthwise!r} is invalid: it must be '
                             'True, False or None')
        # No deconvs, convs or final layer from HeatmapHead: built here.
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            deconv_out_channels=None,
            conv_out_channels=None,
            final_layer=None,
            loss=loss,
            decoder=decoder,
            init_cfg=init_cfg)
        self.conv_cfg = copy.deepcopy(conv_cfg)
        self.dynamic_depthwise = dynamic_depthwise and conv_cfg is not None
        self.stage_channels = tuple(stage_channels)

        layers = [
            ConvModule(
                in_channels,
                stage_channels[0],
                1,
                conv_cfg=self.conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg)
        ]
        width = stage_channels[0]
        for channels in stage_channels:
            layers.append(
                nn.Upsample(
                    scale_factor=2,
                    mode=upsample_mode,
                    align_corners=False
                    if upsample_mode == 'bilinear' else None))
            for _ in range(blocks_per_stage):
                layers.append(
                    self._block(width, channels, expand_ratio, norm_cfg,
                                act_cfg))
                width = channels
        self.deconv_layers = nn.Sequential(*layers)
        if final_layer is not None:
            cfg = dict(
                type='Conv2d',
                in_channels=width,
                out_channels=out_channels,
                kernel_size=1)
            cfg.update(final_layer)
            self.final_layer = build_conv_layer(cfg)

    def _block(self, in_channels: int, out_channels: int, expand_ratio: int,
               norm_cfg: ConfigType, act_cfg: ConfigType) -> nn.Module:
        """mmpose's MobileNetV2 block, its convs made dynamic where the
        placement says (the block's code and parameter names stay
        mmpose's)."""
        block = InvertedResidual(
            in_channels,
            out_channels,
            stride=1,
            expand_ratio=expand_ratio,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        if self.conv_cfg is not None:
            for module in block.conv:
                depthwise = module.conv.groups > 1
                if not depthwise or self.dynamic_depthwise:
                    make_conv_dynamic(module, self.conv_cfg)
        return block
