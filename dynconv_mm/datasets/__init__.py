"""Datasets for dynconv_mm: a deterministic synthetic COCO-format generator.

Kept free of torch/OpenMMLab imports so data can be generated cheaply.
"""
from .synthetic_coco import (COCO_KEYPOINT_NAMES, COCO_SKELETON,
                             MAX_IMAGE_SIZE, MIN_IMAGE_SIZE,
                             SYNTHETIC_COCO_CLASSES, SYNTHETIC_COCO_METAINFO,
                             SYNTHETIC_COCO_PALETTE, SyntheticObject,
                             generate_synthetic_coco, render_synthetic_image,
                             synthetic_coco_metainfo)

__all__ = [
    'SYNTHETIC_COCO_CLASSES', 'SYNTHETIC_COCO_PALETTE',
    'SYNTHETIC_COCO_METAINFO', 'COCO_KEYPOINT_NAMES', 'COCO_SKELETON',
    'MIN_IMAGE_SIZE', 'MAX_IMAGE_SIZE', 'SyntheticObject',
    'synthetic_coco_metainfo', 'render_synthetic_image',
    'generate_synthetic_coco'
]
