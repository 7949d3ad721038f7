"""Write synthetic images as a COCO-format dataset with the real layout.

Real COCO cannot be downloaded everywhere this project is tested, so the
demos and the end-to-end tests train real MMDetection / MMPose models on
images drawn by :mod:`.scene` and evaluate them with the real COCO metrics.

Output layout (identical to real COCO, so a config written for COCO only
needs a different ``data_root``)::

    <out>/annotations/instances_{train,val}2017.json
    <out>/annotations/person_keypoints_{train,val}2017.json
    <out>/train2017/000000000001.png ...
    <out>/val2017/000000000001.png ...

Everything is a pure function of the arguments: image ``k`` of a split is
rendered from ``numpy.random.default_rng([seed, split, k])``, so two runs
with the same arguments write byte-identical JSON and PNG files, train and
val never share an image, and growing ``num_train`` does not change the
images already generated.
"""
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import cv2
import numpy as np

from .metainfo import (COCO_KEYPOINT_NAMES, COCO_SKELETON,
                       SYNTHETIC_COCO_CLASSES)
from .scene import (SyntheticObject, check_int, check_scene_args,
                    render_synthetic_image, scene_options)

__all__ = ['generate_synthetic_coco', 'SPLIT_NAMES']

SPLIT_NAMES = ('train2017', 'val2017')

PathLike = Union[str, os.PathLike]

_LICENSES = [
    dict(id=1, name='CC0 1.0 (synthetic data)',
         url='https://creativecommons.org/publicdomain/zero/1.0/')
]


def _category_entries(names: Sequence[str]) -> List[dict]:
    entries = []
    for name in names:
        cat_id = SYNTHETIC_COCO_CLASSES.index(name) + 1
        if name == 'person':
            entries.append(
                dict(
                    supercategory='person',
                    id=cat_id,
                    name='person',
                    keypoints=list(COCO_KEYPOINT_NAMES),
                    skeleton=[list(pair) for pair in COCO_SKELETON]))
        else:
            entries.append(dict(supercategory='shape', id=cat_id, name=name))
    return entries


def _annotation(obj: SyntheticObject, ann_id: int, image_id: int) -> dict:
    """A COCO annotation dict: polygons, or RLE for a crowd (as COCO)."""
    if obj.iscrowd:
        segmentation = dict(obj.rle)
    else:
        segmentation = [[float(v) for v in p.reshape(-1)]
                        for p in obj.polygons]
    ann = dict(
        id=ann_id,
        image_id=image_id,
        category_id=SYNTHETIC_COCO_CLASSES.index(obj.category) + 1,
        segmentation=segmentation,
        area=round(obj.area, 2),
        bbox=[round(v, 4) for v in obj.bbox],
        iscrowd=int(obj.iscrowd))
    if obj.keypoints is not None:
        flat = []
        for x, y, v in obj.keypoints:
            flat += [float(x), float(y), int(v)]
        ann['keypoints'] = flat
        ann['num_keypoints'] = int(np.count_nonzero(obj.keypoints[:, 2]))
    return ann


def _info(split: str, params: Dict[str, object]) -> dict:
    # No timestamps: the files must be byte-identical across runs.
    return dict(
        description=f'dynconv_mm synthetic COCO-format dataset ({split})',
        url='',
        version='1.0',
        year=2017,
        contributor='dynconv_mm.datasets',
        date_created='',
        generator_args=params)


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, separators=(',', ':'), ensure_ascii=True)
    path.write_text(text + '\n', encoding='utf-8')


def generate_synthetic_coco(
    out_dir: PathLike,
    *,
    num_train: int = 64,
    num_val: int = 16,
    width: int = 256,
    height: int = 192,
    seed: int = 0,
    preset: str = 'detection',
    min_objects: Optional[int] = None,
    max_objects: Optional[int] = None,
    person_prob: Optional[float] = None,
    max_persons: Optional[int] = None,
    large_person_prob: Optional[float] = None,
    crowd_prob: Optional[float] = None,
    truncation_prob: Optional[float] = None,
    hidden_drop_prob: Optional[float] = None,
) -> Dict[str, str]:
    """Write a synthetic COCO-format dataset with the real COCO layout.

    Args:
        out_dir: Dataset root (created if missing). Existing files of the
            same names are overwritten; other files are left alone.
        num_train: Number of training images (>= 1).
        num_val: Number of validation images (>= 1).
        width: Image width in px, in ``[MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]``.
        height: Image height in px, same range.
        seed: Non-negative integer; same arguments give identical files.
        preset: Scene options to start from, a key of
            :data:`~dynconv_mm.datasets.SCENE_PRESETS`: ``'detection'``
            (default) or ``'keypoints'`` (several overlapping persons,
            large and cut persons, crowds).
        min_objects, max_objects, person_prob, max_persons,
            large_person_prob, crowd_prob, truncation_prob,
            hidden_drop_prob: Override the preset's entry (``None`` keeps
            it); see :func:`~dynconv_mm.datasets.render_synthetic_image`.

    Returns:
        Written paths as strings: ``data_root``, ``instances_train``,
        ``instances_val``, ``person_keypoints_train``,
        ``person_keypoints_val``, ``train_img_dir``, ``val_img_dir``.

    Raises:
        ValueError: An argument is out of range; the message names it.
            Nothing is written then.

    Both ``instances_*`` (all categories; person annotations keep their
    keypoints) and ``person_keypoints_*`` (category ``person`` only, crowds
    included) list every image of the split with the same image ids, as
    real COCO does; an image without a person simply has no keypoint
    annotation. Annotation ids are ``1..N`` within each file.
    """
    num_train = check_int('num_train', num_train, 1)
    num_val = check_int('num_val', num_val, 1)
    seed = check_int('seed', seed, 0)
    options = scene_options(
        preset, min_objects=min_objects, max_objects=max_objects,
        person_prob=person_prob, max_persons=max_persons,
        large_person_prob=large_person_prob, crowd_prob=crowd_prob,
        truncation_prob=truncation_prob, hidden_drop_prob=hidden_drop_prob)
    check_scene_args(width, height, **options)
    params = dict(seed=seed, width=int(width), height=int(height),
                  preset=preset, **options)

    root = Path(out_dir)
    ann_dir = root / 'annotations'
    ann_dir.mkdir(parents=True, exist_ok=True)
    paths = {'data_root': str(root)}
    for split_index, (short_name, num_images) in enumerate(
            (('train', num_train), ('val', num_val))):
        split = SPLIT_NAMES[split_index]
        img_dir = root / split
        img_dir.mkdir(parents=True, exist_ok=True)
        images, instances, keypoints = [], [], []
        for index in range(num_images):
            # Independent stream per (seed, split, image): train and val
            # differ, and image k does not depend on how many come after.
            rng = np.random.default_rng([seed, split_index, index])
            image, objects = render_synthetic_image(rng, int(width),
                                                    int(height), **options)
            image_id = index + 1
            file_name = f'{image_id:012d}.png'
            if not cv2.imwrite(str(img_dir / file_name), image):
                raise OSError(f'could not write {img_dir / file_name}')
            images.append(
                dict(id=image_id, file_name=file_name, width=int(width),
                     height=int(height), license=1))
            for obj in objects:
                instances.append(
                    _annotation(obj, len(instances) + 1, image_id))
                if obj.category == 'person':
                    keypoints.append(
                        _annotation(obj, len(keypoints) + 1, image_id))

        for kind, anns, names in (('instances', instances,
                                   SYNTHETIC_COCO_CLASSES),
                                  ('person_keypoints', keypoints,
                                   ('person', ))):
            path = ann_dir / f'{kind}_{split}.json'
            _write_json(
                path,
                dict(
                    info=_info(split, params),
                    licenses=_LICENSES,
                    images=images,
                    annotations=anns,
                    categories=_category_entries(names)))
            paths[f'{kind}_{short_name}'] = str(path)
        paths[f'{short_name}_img_dir'] = str(img_dir)
    return paths
