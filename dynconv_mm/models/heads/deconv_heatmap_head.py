"""SimpleBaseline's deconvolution heatmap head with a ``conv_cfg``."""
import copy
from typing import Optional, Sequence, Union

import torch.nn as nn
from mmcv.cnn import build_conv_layer
from mmpose.models.heads import HeatmapHead
from mmpose.registry import MODELS
from mmpose.utils.typing import ConfigType, OptConfigType

from .sub_pixel_conv_transpose import SubPixelConvTranspose2d


@MODELS.register_module()
class DeconvHeatmapHead(HeatmapHead):
    """MMPose's ``HeatmapHead`` (SimpleBaseline, Xiao et al., ECCV 2018:
    stride-2 deconvs + BN + ReLU, optional convs, a 1x1 heatmap conv) whose
    convolutions, the upsampling ones included, are built from
    ``conv_cfg``, so that the head can be dynamic (Dynamic Convolution,
    Chen et al., CVPR 2020; ODConv; DyNet).

    Each deconv is a :class:`SubPixelConvTranspose2d`: the transposed conv
    computed as four phase convs, each built from ``conv_cfg``. With
    ``conv_cfg=None`` the head is mmpose's ``HeatmapHead``: same
    parameters, same multiply-adds, same outputs, and mmpose's checkpoints
    load into it (tested). The intermediate convs (``conv_out_channels``)
    take ``conv_cfg`` too; the final 1x1 conv is mmpose's ``final_layer``
    (static by default: like a classifier it stays static in the papers; a
    dynamic one is ``final_layer=dict(type='DynamicConv', kernel_size=1)``).
    Loss, decoding, flip test and the init are mmpose's.

    Args:
        conv_cfg: Conv config of the deconvs' phase convs and of the
            intermediate convs, e.g. ``dict(type='DynamicConv',
            num_kernels=4)``; ``None``: static.
        Others: as mmpose's ``HeatmapHead`` (deconv kernel sizes: any
            ``k >= 2``; mmpose accepts 2, 3, 4 and pads them the same way).

    Shapes: features ``[B, C_in, H, W]`` (the last of the backbone's
    outputs) -> heatmaps ``[B, out_channels, H * 2^n, W * 2^n]`` for ``n``
    deconvs.
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 out_channels: int,
                 deconv_out_channels: Optional[Sequence[int]] = (256, 256,
                                                                 256),
                 deconv_kernel_sizes: Optional[Sequence[int]] = (4, 4, 4),
                 conv_out_channels: Optional[Sequence[int]] = None,
                 conv_kernel_sizes: Optional[Sequence[int]] = None,
                 final_layer: Optional[dict] = dict(kernel_size=1),
                 conv_cfg: OptConfigType = None,
                 loss: ConfigType = dict(
                     type='KeypointMSELoss', use_target_weight=True),
                 decoder: OptConfigType = None,
                 init_cfg: OptConfigType = None) -> None:
        if conv_cfg is not None and not (isinstance(conv_cfg, dict)
                                         and 'type' in conv_cfg):
            raise ValueError(f'{type(self).__name__}: option conv_cfg='
                             f'{conv_cfg!r} is invalid: it must be a conv '
                             'config with a type, or None')
        # HeatmapHead.__init__ calls the _make_*_layers below.
        self.conv_cfg = copy.deepcopy(conv_cfg)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            deconv_out_channels=deconv_out_channels,
            deconv_kernel_sizes=deconv_kernel_sizes,
            conv_out_channels=conv_out_channels,
            conv_kernel_sizes=conv_kernel_sizes,
            final_layer=final_layer,
            loss=loss,
            decoder=decoder,
            init_cfg=init_cfg)

    def _make_deconv_layers(self, in_channels: int,
                            layer_out_channels: Sequence[int],
                            layer_kernel_sizes: Sequence[int]) -> nn.Module:
        layers = []
        for out_channels, kernel_size in zip(layer_out_channels,
                                             layer_kernel_sizes):
            layers += [
                SubPixelConvTranspose2d(
                    in_channels,
                    out_channels,
                    kernel_size,
                    bias=False,
                    conv_cfg=self.conv_cfg),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True)
            ]
            in_channels = out_channels
        return nn.Sequential(*layers)

    def _make_conv_layers(self, in_channels: int,
                          layer_out_channels: Sequence[int],
                          layer_kernel_sizes: Sequence[int]) -> nn.Module:
        layers = []
        for out_channels, kernel_size in zip(layer_out_channels,
                                             layer_kernel_sizes):
            layers += [
                build_conv_layer(
                    self.conv_cfg,
                    in_channels,
                    out_channels,
                    kernel_size,
                    stride=1,
                    padding=(kernel_size - 1) // 2),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True)
            ]
            in_channels = out_channels
        return nn.Sequential(*layers)
