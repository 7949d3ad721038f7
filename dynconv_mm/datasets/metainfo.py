"""Category and keypoint definitions of the synthetic COCO-format datasets.

The keypoint names and skeleton are COCO's own, so MMPose's ``CocoDataset``
metainfo (``mmpose::_base_/datasets/coco.py``: flip pairs, OKS sigmas)
applies to the synthetic persons unchanged.
"""
from typing import Dict, Tuple

__all__ = [
    'SYNTHETIC_COCO_CLASSES', 'SYNTHETIC_COCO_PALETTE',
    'SYNTHETIC_COCO_METAINFO', 'COCO_KEYPOINT_NAMES', 'COCO_SKELETON',
    'SHAPE_CLASSES', 'synthetic_coco_metainfo'
]

#: Category names in category-id order (``person`` is id 1 as in COCO).
SYNTHETIC_COCO_CLASSES: Tuple[str, ...] = ('person', 'rectangle', 'ellipse',
                                           'triangle')
#: The classes that are plain shapes (everything but ``person``).
SHAPE_CLASSES: Tuple[str, ...] = SYNTHETIC_COCO_CLASSES[1:]
#: One RGB visualisation colour per class (for mmdet's ``metainfo``).
SYNTHETIC_COCO_PALETTE: Tuple[Tuple[int, int, int], ...] = ((220, 20, 60),
                                                            (0, 130, 230),
                                                            (30, 170, 60),
                                                            (250, 170, 30))
#: The 17 COCO keypoints, in the standard COCO order.
COCO_KEYPOINT_NAMES: Tuple[str, ...] = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
    'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
    'right_knee', 'left_ankle', 'right_ankle')
#: The standard COCO person skeleton (1-based keypoint indices).
COCO_SKELETON: Tuple[Tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13),
    (6, 7), (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3),
    (2, 4), (3, 5), (4, 6), (5, 7))

#: The mmdet ``metainfo`` for these datasets (a plain dict; prefer
#: :func:`synthetic_coco_metainfo` where the caller may mutate it).
SYNTHETIC_COCO_METAINFO: Dict[str, object] = dict(
    classes=SYNTHETIC_COCO_CLASSES,
    palette=[tuple(c) for c in SYNTHETIC_COCO_PALETTE])


def synthetic_coco_metainfo() -> Dict[str, object]:
    """Return a fresh mmdet ``metainfo`` dict for the synthetic classes.

    Returns:
        ``dict(classes=SYNTHETIC_COCO_CLASSES, palette=[(r, g, b), ...])``;
        the class order is the category-id order of the annotation files.
    """
    return dict(
        classes=SYNTHETIC_COCO_CLASSES,
        palette=[tuple(c) for c in SYNTHETIC_COCO_PALETTE])
