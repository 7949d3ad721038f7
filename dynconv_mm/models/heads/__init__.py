"""Heads whose convolutions take a ``conv_cfg`` (MMPose keypoint heads),
registered in MMPose's ``MODELS`` registry when MMPose is installed.

:class:`SubPixelConvTranspose2d` (the size-doubling transposed conv as four
convs built from a ``conv_cfg``) needs only MMCV and is always available.
"""
import importlib.util

from .sub_pixel_conv_transpose import SubPixelConvTranspose2d

__all__ = ['SubPixelConvTranspose2d']

if importlib.util.find_spec('mmpose') is not None:
    from .deconv_heatmap_head import DeconvHeatmapHead
    from .inverted_residual_heatmap_head import InvertedResidualHeatmapHead
    __all__ += ['DeconvHeatmapHead', 'InvertedResidualHeatmapHead']
