"""Datasets for dynconv_mm: a deterministic synthetic COCO-format generator.

One concern per module: :mod:`.metainfo` (categories, COCO keypoints),
:mod:`.geometry` (pixel geometry, RLE), :mod:`.person` (the stick-figure
person model and which of its joints are seen), :mod:`.scene` (one image:
background, shapes, persons, crowds) and :mod:`.coco_format` (the dataset
on disk). These modules import only numpy, OpenCV and the standard library;
importing them through the package still runs ``dynconv_mm/__init__.py``,
which loads torch and the OpenMMLab registries.
"""
from .coco_format import SPLIT_NAMES, generate_synthetic_coco
from .metainfo import (COCO_KEYPOINT_NAMES, COCO_SKELETON,
                       SYNTHETIC_COCO_CLASSES, SYNTHETIC_COCO_METAINFO,
                       SYNTHETIC_COCO_PALETTE, synthetic_coco_metainfo)
from .scene import (MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, SCENE_PRESETS,
                    SyntheticObject, render_synthetic_image, scene_options)

__all__ = [
    'SYNTHETIC_COCO_CLASSES', 'SYNTHETIC_COCO_PALETTE',
    'SYNTHETIC_COCO_METAINFO', 'COCO_KEYPOINT_NAMES', 'COCO_SKELETON',
    'MIN_IMAGE_SIZE', 'MAX_IMAGE_SIZE', 'SCENE_PRESETS', 'SPLIT_NAMES',
    'SyntheticObject', 'synthetic_coco_metainfo', 'scene_options',
    'render_synthetic_image', 'generate_synthetic_coco'
]
