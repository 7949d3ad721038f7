"""Tests of the synthetic COCO generator: files, determinism, and that the
annotations describe the pixels (checked through pycocotools/xtcocotools
and the written pictures, not through the generator's own helpers).

Two datasets are checked: the default ``detection`` preset (what the
detection demo trains on) and the ``keypoints`` preset (several overlapping
persons, large and border-cut persons, crowds, hidden joints)."""
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dynconv_mm.datasets import (COCO_KEYPOINT_NAMES, COCO_SKELETON,
                                 SCENE_PRESETS, SYNTHETIC_COCO_CLASSES,
                                 SYNTHETIC_COCO_METAINFO,
                                 generate_synthetic_coco,
                                 render_synthetic_image,
                                 synthetic_coco_metainfo)

REPO = Path(__file__).resolve().parents[2]
TOOL_FILE = REPO / 'tools' / 'generate_synthetic_coco.py'
ARGS = dict(num_train=16, num_val=6, width=256, height=192, seed=7)
KEYPOINT_ARGS = dict(num_train=20, num_val=8, width=256, height=192, seed=1,
                     preset='keypoints')
SPLITS = ('train2017', 'val2017')
KINDS = ('instances', 'person_keypoints')
# pycocotools' own numpy-2 deprecation, not ours.
pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')
LEFT_LIMB_JOINTS = (7, 9, 13, 15)  # left elbow, wrist, knee, ankle (0-based)
# Joints painted in a person's light tint (left eye and left limbs) and in
# its dark shade (the right ones); nose and ears are in the body colour.
LIGHT_JOINTS = (1, 5, 7, 9, 11, 13, 15)
DARK_JOINTS = (2, 6, 8, 10, 12, 14, 16)
# The real COCO skeleton, typed in independently of the package constant.
REAL_COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13],
                      [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
                      [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                      [4, 6], [5, 7]]
# sha256 of the first four default-preset training images (seed 0) as
# arrays. They are the images the detection demo's README AP was measured
# on: if a change to the generator alters them, re-measure that AP (an
# OpenCV or numpy upgrade that changes drawing or random streams would
# show up here too).
DETECTION_IMAGE_SHA256 = ('2ba9ec6b25178e8b', '3821129ee02839e1',
                          '8f6d89a0cafd5252', '09cc069cff91cb5b')


def all_files(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob('*')) if p.is_file()
    }


@pytest.fixture(scope='module')
def detection_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_coco')
    return root, generate_synthetic_coco(root, **ARGS)


@pytest.fixture(scope='module')
def keypoint_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_coco_keypoints')
    return root, generate_synthetic_coco(root, **KEYPOINT_ARGS)


@pytest.fixture(scope='module', params=['detection', 'keypoint'])
def dataset(request):
    """Each of the two datasets in turn."""
    return request.getfixturevalue(f'{request.param}_data')


def load(root: Path, kind: str, split: str) -> dict:
    with open(root / 'annotations' / f'{kind}_{split}.json') as f:
        return json.load(f)


def coco_api(root: Path, kind: str, split: str):
    from pycocotools.coco import COCO
    return COCO(str(root / 'annotations' / f'{kind}_{split}.json'))


def read_image(root: Path, split: str, img: dict) -> np.ndarray:
    image = cv2.imread(str(root / split / img['file_name']), cv2.IMREAD_COLOR)
    assert image is not None, img['file_name']
    return image


def box_iou(a, b) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def keypoints_of(ann: dict) -> np.ndarray:
    return np.asarray(ann['keypoints'], dtype=float).reshape(17, 3)


def persons(root: Path):
    """(split, image dict, annotation) of every non-crowd person."""
    for split in SPLITS:
        data = load(root, 'person_keypoints', split)
        images = {i['id']: i for i in data['images']}
        for ann in data['annotations']:
            if not ann['iscrowd']:
                yield split, images[ann['image_id']], ann


# --------------------------------------------------------------- files
def test_layout_and_counts(dataset):
    root, paths = dataset
    for key in ('instances_train', 'instances_val', 'person_keypoints_train',
                'person_keypoints_val', 'train_img_dir', 'val_img_dir'):
        assert Path(paths[key]).exists(), key
    nums = (load(root, 'instances', 'train2017'), load(
        root, 'instances', 'val2017'))
    for split, data in zip(SPLITS, nums):
        pngs = sorted(p.name for p in (root / split).glob('*.png'))
        assert len(pngs) == len(data['images']) > 0
        for kind in KINDS:
            other = load(root, kind, split)
            assert set(other) >= {'info', 'licenses', 'images',
                                  'annotations', 'categories'}
            assert sorted(i['file_name'] for i in other['images']) == pngs
            # Same images (ids, names) in both files of a split.
            assert other['images'] == data['images']
        for img in data['images']:
            image = read_image(root, split, img)
            assert image.shape == (img['height'], img['width'], 3)
            assert (img['width'], img['height']) == (256, 192)


@pytest.mark.parametrize('args', [ARGS, KEYPOINT_ARGS],
                         ids=['detection', 'keypoints'])
def test_same_seed_same_bytes_other_seed_differs(args, tmp_path):
    generate_synthetic_coco(tmp_path / 'first', **args)
    generate_synthetic_coco(tmp_path / 'again', **args)
    first = all_files(tmp_path / 'first')
    again = all_files(tmp_path / 'again')
    assert first.keys() == again.keys()
    for name in first:
        assert first[name] == again[name], name

    generate_synthetic_coco(tmp_path / 'other', **{**args, 'seed': 4})
    other = all_files(tmp_path / 'other')
    assert other.keys() == first.keys()
    for name in first:
        if name.endswith('.png'):
            assert other[name] != first[name], name
        else:  # compare content: `info` records the seed in any case
            assert (json.loads(other[name])['annotations'] !=
                    json.loads(first[name])['annotations']), name


def test_default_images_are_unchanged():
    for k, want in enumerate(DETECTION_IMAGE_SHA256):
        image, _ = render_synthetic_image(
            np.random.default_rng([0, 0, k]), 256, 192)
        got = hashlib.sha256(image.tobytes()).hexdigest()[:16]
        assert got == want, f'default image {k} changed'


def test_train_and_val_images_differ(detection_data):
    root, _ = detection_data
    train = cv2.imread(str(root / 'train2017' / '000000000001.png'))
    val = cv2.imread(str(root / 'val2017' / '000000000001.png'))
    assert not np.array_equal(train, val)


def test_render_is_a_function_of_the_rng():
    options = SCENE_PRESETS['keypoints']
    a = render_synthetic_image(np.random.default_rng(11), 128, 96, **options)
    b = render_synthetic_image(np.random.default_rng(11), 128, 96, **options)
    c = render_synthetic_image(np.random.default_rng(12), 128, 96, **options)
    assert np.array_equal(a[0], b[0])
    assert [o.bbox for o in a[1]] == [o.bbox for o in b[1]]
    assert not np.array_equal(a[0], c[0])


# --------------------------------------------------------------- COCO APIs
@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('split', SPLITS)
def test_loads_with_pycocotools_and_xtcocotools(dataset, kind, split):
    root, _ = dataset
    from pycocotools.coco import COCO
    path = str(root / 'annotations' / f'{kind}_{split}.json')
    apis = [COCO(path)]
    xtcoco = pytest.importorskip('xtcocotools.coco')
    apis.append(xtcoco.COCO(path))
    for api in apis:
        assert len(api.getImgIds()) == len(load(root, kind, split)['images'])
        assert len(api.getAnnIds()) > 0
        names = [c['name'] for c in api.loadCats(api.getCatIds())]
        want = ['person'] if kind == 'person_keypoints' else list(
            SYNTHETIC_COCO_CLASSES)
        assert names == want
    assert apis[0].loadCats(1)[0]['name'] == 'person'


@pytest.mark.parametrize('module', ['pycocotools', 'xtcocotools'])
def test_ground_truth_scores_keypoint_ap_one(keypoint_data, module):
    """The evaluators accept the annotations as COCO's: the ground truth
    submitted as results scores AP 1, crowds and hidden joints included;
    a perturbed submission scores less (so the check can fail)."""
    coco = pytest.importorskip(f'{module}.coco')
    cocoeval = pytest.importorskip(f'{module}.cocoeval')
    root, _ = keypoint_data
    path = str(root / 'annotations' / 'person_keypoints_val2017.json')
    gt = coco.COCO(path)
    results, shifted = [], []
    for ann in gt.loadAnns(gt.getAnnIds()):
        if ann['iscrowd']:
            continue
        kp = keypoints_of(ann)
        res = dict(image_id=ann['image_id'], category_id=1, score=1.0)
        results.append(dict(res, keypoints=kp.reshape(-1).tolist()))
        kp[:, :2] += 0.15 * np.sqrt(ann['area'])
        shifted.append(dict(res, keypoints=kp.reshape(-1).tolist()))
    stats = []
    for submission in (results, shifted):
        kwargs = dict(iouType='keypoints')
        if module == 'xtcocotools':
            kwargs['sigmas'] = np.array(
                [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07,
                 1.07, .87, .87, .89, .89]) / 10.0
        evaluator = cocoeval.COCOeval(gt, gt.loadRes(submission), **kwargs)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        stats.append(evaluator.stats[0])
    assert stats[0] == pytest.approx(1.0)
    assert stats[1] < 0.5


@pytest.mark.parametrize('split', SPLITS)
def test_annotation_fields_and_geometry(dataset, split):
    root, _ = dataset
    data = load(root, 'instances', split)
    images = {i['id']: i for i in data['images']}
    cat_ids = {c['id'] for c in data['categories']}
    assert sorted(cat_ids) == list(range(1, len(SYNTHETIC_COCO_CLASSES) + 1))
    assert [a['id'] for a in data['annotations']] == list(
        range(1, len(data['annotations']) + 1))
    per_image = {i: 0 for i in images}
    for ann in data['annotations']:
        img = images[ann['image_id']]
        assert ann['category_id'] in cat_ids
        assert ann['iscrowd'] in (0, 1)
        x, y, w, h = ann['bbox']
        assert all(isinstance(v, float) for v in ann['bbox'])
        assert w > 0 and h > 0 and ann['area'] > 0
        assert x >= 0 and y >= 0
        assert x + w <= img['width'] and y + h <= img['height']
        if ann['iscrowd']:
            assert ann['category_id'] == 1
            continue  # RLE: see test_crowd_regions
        per_image[ann['image_id']] += 1
        assert isinstance(ann['segmentation'], list) and ann['segmentation']
        pts = []
        for poly in ann['segmentation']:
            assert len(poly) >= 6 and len(poly) % 2 == 0
            pts.append(np.asarray(poly, dtype=float).reshape(-1, 2))
        pts = np.concatenate(pts)
        # Polygon vertices are pixel corners: the image spans [0, W] x
        # [0, H] and a person cut by the border reaches W or H.
        assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= img['width']
        assert pts[:, 1].min() >= 0 and pts[:, 1].max() <= img['height']
        poly_box = [*pts.min(0), *(pts.max(0) - pts.min(0))]
        np.testing.assert_allclose(ann['bbox'], poly_box, atol=1.0)
        # Shapes are 15-60 % of the shorter side.
        short = min(img['width'], img['height'])
        if ann['category_id'] != 1:
            assert 0.15 * short - 1 <= max(w, h) <= 0.6 * short + 1
    assert all(1 <= n <= 4 for n in per_image.values()), per_image


def test_persons_cut_by_the_border(dataset):
    """Both datasets hold persons cut by the image border (so the polygon
    bounds above are exercised there): their outline runs along the border
    and the joints outside the image are unlabelled (0, 0, 0)."""
    root, _ = dataset
    cut = 0
    for _, img, ann in persons(root):
        kp = keypoints_of(ann)
        pts = np.concatenate(
            [np.asarray(p, float).reshape(-1, 2) for p in ann['segmentation']])
        size = np.array([img['width'], img['height']])
        on_border = np.any(pts == 0) or np.any(pts == size)
        if not on_border:
            continue
        cut += 1
        x, y, w, h = ann['bbox']
        assert x == 0 or y == 0 or x + w == size[0] or y + h == size[1]
        labelled = kp[:, 2] > 0
        assert np.all(kp[~labelled, :2] == 0)
        assert np.all(kp[labelled, :2] >= 0)
        assert np.all(kp[labelled, :2] <= size)
    assert cut >= 1


def test_persons_cut_by_the_border_hide_outside_keypoints():
    found = 0
    for seed in range(20):
        image, objects = render_synthetic_image(
            np.random.default_rng(seed), 128, 96, max_objects=1,
            person_prob=1.0, truncation_prob=1.0)
        for obj in objects:
            if np.all(obj.keypoints[:, 2] > 0):
                continue
            x, y, w, h = obj.bbox
            if not (x == 0 or y == 0 or x + w == 128 or y + h == 96):
                continue  # only hidden joints, no cut
            found += 1
            kp = obj.keypoints
            assert np.all(kp[kp[:, 2] == 0, :2] == 0)
            vis = kp[kp[:, 2] > 0, :2]
            assert np.all(vis >= 0) and np.all(vis <= (128, 96))
            pts = np.concatenate(obj.polygons)
            assert pts.min() >= 0
            assert pts[:, 0].max() <= 128 and pts[:, 1].max() <= 96
            # The outline follows the cut: it runs along the border.
            assert (pts.min() == 0 or pts[:, 0].max() == 128
                    or pts[:, 1].max() == 96)
    assert found >= 5


@pytest.mark.parametrize('split', SPLITS)
def test_masks_match_area_box_and_pixels(dataset, split):
    root, _ = dataset
    api = coco_api(root, 'instances', split)
    ious = []
    for img in api.loadImgs(api.getImgIds()):
        image = read_image(root, split, img).astype(np.float64)
        anns = api.loadAnns(api.getAnnIds(imgIds=img['id']))
        masks = [api.annToMask(a).astype(bool) for a in anns]
        union = np.any(masks, axis=0)
        for ann, mask in zip(anns, masks):
            count = mask.sum()
            assert count > 0
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            # Gap between the box and the mask's pixels, per side, in the
            # COCO convention (pixel i covers [i, i + 1]).
            gap = np.array([xs.min() - x, ys.min() - y, x + w - xs.max() - 1,
                            y + h - ys.max() - 1])
            if ann['category_id'] == 1:
                # Person polygons follow the pixel edges, crowds are RLE:
                # exact.
                assert count == ann['area']
                np.testing.assert_array_equal(gap, 0)
            else:
                # Geometric outlines: boundary pixels count when their
                # centre is inside, so a sharp triangle tip may end up to
                # ~2 px short of the box; the area is within a few %.
                assert abs(count - ann['area']) <= 0.05 * ann['area'] + 5, (
                    count, ann['area'])
                assert np.all(gap >= -0.5) and np.all(gap <= 2.5), gap
            if ann['iscrowd']:
                continue  # many figures with gaps: no single "object colour"
            # The picture shows the object: its pixels stand out from the
            # background ring around it (other objects excluded).
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7),
                                                             np.uint8)) > 0
            ring &= ~union
            assert ring.sum() > 10
            inside = image[mask].mean(0)
            outside = image[ring].mean(0)
            assert np.abs(inside - outside).max() > 40, (inside, outside)
            # Segment the picture near the object by "far from the local
            # background colour": it must be the annotated mask.
            window = cv2.dilate(mask.astype(np.uint8), np.ones(
                (5, 5), np.uint8)) > 0
            window &= ~(union & ~mask)
            drawn = window & (np.abs(image - outside).max(-1) > 30)
            ious.append((drawn & mask).sum() / (drawn | mask).sum())
        # Objects never share pixels (a covered person keeps only what is
        # seen of it).
        assert sum(m.sum() for m in masks) == union.sum()
        for i, a in enumerate(anns):
            for b in anns[i + 1:]:
                both_persons = a['category_id'] == b['category_id'] == 1
                assert box_iou(a['bbox'], b['bbox']) <= (0.5 if both_persons
                                                         else 0.3)
    assert min(ious) > 0.9 and np.mean(ious) > 0.97, (min(ious),
                                                       np.mean(ious))


def test_shapes_are_not_told_apart_by_colour(detection_data):
    root, _ = detection_data
    api = coco_api(root, 'instances', 'train2017')
    colours = {}
    for img in api.loadImgs(api.getImgIds()):
        image = read_image(root, 'train2017', img)
        for ann in api.loadAnns(api.getAnnIds(imgIds=img['id'])):
            if ann['category_id'] == 1:
                continue
            mean = image[api.annToMask(ann) > 0].mean(0)
            seen = colours.setdefault(ann['category_id'], [])
            if all(np.abs(mean - c).max() > 30 for c in seen):
                seen.append(mean)  # a colour not seen for this class yet
    assert len(colours) == 3
    assert all(len(c) >= 3 for c in colours.values()), colours


# --------------------------------------------------------------- keypoints
@pytest.mark.parametrize('split', SPLITS)
def test_keypoint_file(dataset, split):
    root, _ = dataset
    kpt = load(root, 'person_keypoints', split)
    inst = load(root, 'instances', split)
    assert len(kpt['categories']) == 1
    cat = kpt['categories'][0]
    assert (cat['id'], cat['name']) == (1, 'person')
    assert cat['keypoints'] == list(COCO_KEYPOINT_NAMES)
    assert cat['skeleton'] == REAL_COCO_SKELETON
    assert COCO_KEYPOINT_NAMES[:3] == ('nose', 'left_eye', 'right_eye')
    assert COCO_KEYPOINT_NAMES[-1] == 'right_ankle'
    in_instances = [a for a in inst['annotations'] if a['category_id'] == 1]
    assert [a['id'] for a in kpt['annotations']] == list(
        range(1, len(in_instances) + 1))
    for a, b in zip(in_instances, kpt['annotations']):
        assert b['category_id'] == 1
        for key in ('image_id', 'bbox', 'area', 'segmentation', 'keypoints',
                    'num_keypoints', 'iscrowd'):
            assert a[key] == b[key], key
    # Most images show a person (person_prob >= 0.8).
    with_person = {a['image_id'] for a in kpt['annotations']}
    assert len(with_person) >= 0.6 * len(kpt['images'])


def test_keypoints_lie_on_the_drawn_person(dataset):
    """COCO visibility: v=2 joints lie on the person's own visible pixels,
    v=1 joints inside the image, v=0 joints are (0, 0)."""
    root, _ = dataset
    counts = np.zeros(3, int)
    for split in SPLITS:
        api = coco_api(root, 'person_keypoints', split)
        for ann in api.loadAnns(api.getAnnIds()):
            img = api.loadImgs(ann['image_id'])[0]
            kp = keypoints_of(ann)
            v = kp[:, 2].astype(int)
            if ann['iscrowd']:
                assert ann['num_keypoints'] == 0 and np.all(kp == 0)
                continue
            assert set(v.tolist()) <= {0, 1, 2}
            counts += np.bincount(v, minlength=3)
            assert ann['num_keypoints'] == np.count_nonzero(v) > 0
            assert np.all(kp[v == 0, :2] == 0)
            labelled = v > 0
            assert np.all(kp[labelled, 0] <= img['width'])
            assert np.all(kp[labelled, 1] <= img['height'])
            mask = api.annToMask(ann)
            seen = v == 2
            cols = np.floor(kp[seen, 0]).astype(int)  # pixel i: [i, i+1]
            rows = np.floor(kp[seen, 1]).astype(int)
            assert mask[rows, cols].all()
    assert counts[2] > 100
    if root.name.startswith('synthetic_coco_keypoints'):
        assert counts[1] >= 5  # hidden joints occur and are labelled


def test_hidden_joints_are_not_painted_as_seen(keypoint_data):
    """Every joint labelled seen (v=2) shows its own side's shade: left
    limbs and eye in the light tint, right ones in the dark shade (they
    differ by 0.45 * 255 per channel). A joint under the other side's limb
    or another person must therefore be v=1 or v=0."""
    root, _ = keypoint_data
    checked = 0
    for split, img, ann in persons(root):
        image = read_image(root, split, img).astype(float)
        kp = keypoints_of(ann)
        pix = np.floor(kp[:, :2]).astype(int)
        light = [image[pix[j, 1], pix[j, 0]].sum() for j in LIGHT_JOINTS
                 if kp[j, 2] == 2]
        dark = [image[pix[j, 1], pix[j, 0]].sum() for j in DARK_JOINTS
                if kp[j, 2] == 2]
        if light and dark:
            checked += 1
            assert min(light) > max(dark) + 150, (img['file_name'], light,
                                                  dark)
    assert checked >= 20


def test_several_overlapping_persons_and_large_ones(keypoint_data):
    root, _ = keypoint_data
    per_image, overlapping, large, covered_joints = {}, 0, 0, 0
    for split in SPLITS:
        api = coco_api(root, 'person_keypoints', split)
        for img_id in api.getImgIds():
            img = api.loadImgs(img_id)[0]
            anns = [a for a in api.loadAnns(api.getAnnIds(imgIds=img_id))
                    if not a['iscrowd']]
            per_image[(split, img_id)] = len(anns)
            masks = [api.annToMask(a) > 0 for a in anns]
            near = [cv2.dilate(m.astype(np.uint8), np.ones((3, 3))) > 0
                    for m in masks]
            for i, a in enumerate(anns):
                large += a['bbox'][3] >= 0.6 * img['height']
                for j in range(len(anns)):
                    if j > i and np.any(near[i] & masks[j]):
                        overlapping += 1  # the two persons' pixels touch
                # A hidden joint that lies on another person's pixels.
                kp = keypoints_of(a)
                for x, y, v in kp:
                    if v == 1 and any(m[int(y), int(x)] for k, m in
                                      enumerate(masks) if k != i):
                        covered_joints += 1
    assert max(per_image.values()) >= 3
    assert sum(n >= 2 for n in per_image.values()) >= 5
    assert overlapping >= 3
    assert large >= 3
    assert covered_joints >= 1


def test_crowd_regions(keypoint_data):
    """Crowds are COCO's: category person, iscrowd=1, an uncompressed RLE
    (column-major runs) that pycocotools decodes to the drawn figures, no
    keypoints."""
    from pycocotools import mask as mask_utils
    root, _ = keypoint_data
    crowds = 0
    for split in SPLITS:
        data = load(root, 'instances', split)
        images = {i['id']: i for i in data['images']}
        for ann in data['annotations']:
            if not ann['iscrowd']:
                continue
            crowds += 1
            img = images[ann['image_id']]
            seg = ann['segmentation']
            assert seg['size'] == [img['height'], img['width']]
            assert sum(seg['counts']) == img['height'] * img['width']
            # Decode the runs by hand (column-major, zeros first).
            flat = np.zeros(sum(seg['counts']), bool)
            pos = 0
            for k, run in enumerate(seg['counts']):
                flat[pos:pos + run] = k % 2 == 1
                pos += run
            by_hand = flat.reshape(img['width'], img['height']).T
            rle = mask_utils.frPyObjects(seg, img['height'], img['width'])
            assert np.array_equal(mask_utils.decode(rle) > 0, by_hand)
            assert by_hand.sum() == ann['area']
            assert ann['num_keypoints'] == 0
            assert not any(ann['keypoints'])
            # Several figures: the crowd is wider than one person is tall
            # and its pixels are far from the background colour.
            x, y, w, h = ann['bbox']
            assert w > h
            image = read_image(root, split, img).astype(float)
            ring = cv2.dilate(by_hand.astype(np.uint8), np.ones(
                (7, 7))) > 0
            ring &= ~by_hand
            far = np.abs(image[by_hand] - image[ring].mean(0)).max(-1) > 30
            assert far.mean() > 0.9
    assert crowds >= 2


def test_left_and_right_are_distinguishable(detection_data):
    root, _ = detection_data
    kpt = load(root, 'person_keypoints', 'train2017')
    images = {i['id']: i for i in kpt['images']}
    brighter, facing_viewer, checked = 0, 0, 0
    for ann in kpt['annotations']:
        kp = keypoints_of(ann)
        if not np.all(kp[5:7, 2] > 0):
            continue
        checked += 1
        # Faces the viewer: the person's left shoulder is on the image right.
        facing_viewer += kp[5, 0] > kp[6, 0]
        image = read_image(root, 'train2017',
                           images[ann['image_id']]).astype(float)
        left = [j for j in LEFT_LIMB_JOINTS if kp[j, 2] > 0]
        right = [j + 1 for j in LEFT_LIMB_JOINTS if kp[j + 1, 2] > 0]
        lum = [
            np.mean([
                image[int(kp[j, 1]), int(kp[j, 0])].sum()
                for j in joints
            ]) for joints in (left, right)
        ]
        brighter += lum[0] > lum[1] + 60
    assert checked >= 5
    assert facing_viewer == checked
    # Left limbs are painted in a light tint, right ones in a dark shade;
    # a right joint may be hidden under a crossing left limb, hence < all.
    assert brighter >= 0.8 * checked, (brighter, checked)


def test_keypoints_sit_on_the_limb_centre_lines(detection_data):
    """Across each forearm and shin, at the midpoint of its two keypoints,
    the drawn limb is centred on the keypoints' line (on average, to well
    under the half pixel a pixel-convention slip would cause)."""
    root, _ = detection_data
    offsets = []
    for split in SPLITS:
        api = coco_api(root, 'person_keypoints', split)
        for ann in api.loadAnns(api.getAnnIds()):
            mask = api.annToMask(ann)
            kp = keypoints_of(ann)
            for i, j in ((7, 9), (8, 10), (13, 15), (14, 16)):
                if kp[i, 2] == 0 or kp[j, 2] == 0:
                    continue
                along = kp[j, :2] - kp[i, :2]
                if np.linalg.norm(along) < 6:
                    continue
                normal = np.array([-along[1], along[0]]) / np.linalg.norm(
                    along)
                steps = np.arange(-8, 8.001, 0.125)
                pts = (kp[i, :2] + kp[j, :2]) / 2 + steps[:, None] * normal
                cells = np.floor(pts).astype(int)
                ok = np.all((cells >= 0) & (cells < mask.shape[::-1]), 1)
                on = np.zeros(len(steps), bool)
                on[ok] = mask[cells[ok, 1], cells[ok, 0]] > 0
                c = len(steps) // 2
                assert on[c], 'limb midpoint is not on the drawn person'
                lo, hi = c, c
                while lo > 0 and on[lo - 1]:
                    lo -= 1
                while hi < len(steps) - 1 and on[hi + 1]:
                    hi += 1
                if lo > 0 and hi < len(steps) - 1:  # whole cross-section
                    offsets.append((steps[lo] + steps[hi]) / 2 * normal)
    assert len(offsets) > 50
    assert np.all(np.abs(np.mean(offsets, axis=0)) < 0.1), np.mean(
        offsets, axis=0)


# --------------------------------------------------------------- metainfo
def test_metainfo_matches_categories(detection_data):
    root, _ = detection_data
    meta = synthetic_coco_metainfo()
    cats = sorted(load(root, 'instances', 'val2017')['categories'],
                  key=lambda c: c['id'])
    assert tuple(c['name'] for c in cats) == meta['classes']
    assert meta['classes'] == SYNTHETIC_COCO_CLASSES
    assert len(meta['palette']) == len(meta['classes'])
    assert all(len(c) == 3 for c in meta['palette'])
    assert meta == SYNTHETIC_COCO_METAINFO
    meta['palette'].append((0, 0, 0))
    assert synthetic_coco_metainfo() == SYNTHETIC_COCO_METAINFO
    assert tuple(map(tuple, REAL_COCO_SKELETON)) == COCO_SKELETON


# --------------------------------------------------------------- arguments
@pytest.mark.parametrize('kwargs, needle', [
    (dict(num_train=0), 'num_train'),
    (dict(num_val=-2), 'num_val'),
    (dict(num_train=2.5), 'num_train'),
    (dict(width=32), 'width'),
    (dict(height=10), 'height'),
    (dict(seed=-1), 'seed'),
    (dict(min_objects=0), 'min_objects'),
    (dict(min_objects=3, max_objects=2), 'max_objects'),
    (dict(person_prob=1.5), 'person_prob'),
    (dict(max_persons=0), 'max_persons'),
    (dict(large_person_prob=-0.1), 'large_person_prob'),
    (dict(crowd_prob=2), 'crowd_prob'),
    (dict(truncation_prob='a'), 'truncation_prob'),
    (dict(hidden_drop_prob=True), 'hidden_drop_prob'),
    (dict(preset='pose'), 'preset'),
])
def test_invalid_arguments_raise(tmp_path, kwargs, needle):
    value = kwargs[needle]
    with pytest.raises(ValueError, match=rf'{needle}.*{value!r}'):
        generate_synthetic_coco(tmp_path / 'out', **{**ARGS, **kwargs})
    assert not (tmp_path / 'out').exists()  # checked before writing


def test_render_rejects_too_small_image():
    with pytest.raises(ValueError, match='width.*63'):
        render_synthetic_image(np.random.default_rng(0), 63, 100)


# --------------------------------------------------------------- packaging
_BLOCK_FRAMEWORKS = '''
import importlib.abc, sys
FRAMEWORKS = ("torch", "mmengine", "mmcv", "mmdet", "mmpose")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FRAMEWORKS:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
'''


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], cwd=str(REPO),
                          capture_output=True, text=True)


def test_public_import_path():
    """What users write, in a fresh interpreter: the package import gives
    every name in ``__all__`` and a working generator."""
    proc = run_python(
        'import tempfile\n'
        'import dynconv_mm.datasets as d\n'
        'from dynconv_mm.datasets import *\n'
        'from dynconv_mm.datasets import generate_synthetic_coco\n'
        'missing = [n for n in d.__all__ if n not in globals()]\n'
        'assert not missing, missing\n'
        'with tempfile.TemporaryDirectory() as tmp:\n'
        '    generate_synthetic_coco(tmp, num_train=1, num_val=1,\n'
        '                            width=96, height=80, preset="keypoints")\n'
        'print("ok")\n')
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr


def test_dataset_modules_do_not_import_frameworks():
    """The datasets package itself needs only numpy and OpenCV: loaded
    through its package path (``from dynconv_mm.datasets import ...``, all
    its modules and relative imports) with torch and the OpenMMLab packages
    made unimportable, it still generates data. ``dynconv_mm/__init__.py``
    (which registers the layers, and so imports torch) is replaced by a bare
    package so that only the datasets code is under test; the control run
    shows the blocker does stop the full plugin."""
    stub_parent = (
        'import types\n'
        'pkg = types.ModuleType("dynconv_mm")\n'
        'pkg.__path__ = ["dynconv_mm"]\n'
        'sys.modules["dynconv_mm"] = pkg\n')
    proc = run_python(
        _BLOCK_FRAMEWORKS + stub_parent +
        'import tempfile\n'
        'from dynconv_mm.datasets import generate_synthetic_coco\n'
        'with tempfile.TemporaryDirectory() as tmp:\n'
        '    generate_synthetic_coco(tmp, num_train=1, num_val=1,\n'
        '                            width=96, height=80, preset="keypoints")\n'
        'print(sorted(m for m in sys.modules if m.startswith("dynconv_mm")))\n')
    assert proc.returncode == 0, proc.stderr
    for module in ('coco_format', 'geometry', 'metainfo', 'person', 'scene'):
        assert f'dynconv_mm.datasets.{module}' in proc.stdout
    control = run_python(_BLOCK_FRAMEWORKS +
                         'import dynconv_mm.datasets\n')
    assert control.returncode != 0 and 'blocked' in control.stderr


def test_command_line_tool(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('gen_tool', TOOL_FILE)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'cli'
    assert tool.main([str(out), '--num-train', '2', '--num-val', '1',
                      '--width', '96', '--height', '80', '--seed', '5']) == 0
    assert len(list((out / 'train2017').glob('*.png'))) == 2
    assert len(list((out / 'val2017').glob('*.png'))) == 1
    assert 'instances_train' in capsys.readouterr().out
    # The preset and single overrides reach the generator.
    pose = tmp_path / 'pose'
    assert tool.main([str(pose), '--num-train', '3', '--num-val', '1',
                      '--preset', 'keypoints', '--crowd-prob', '1']) == 0
    info = load(pose, 'person_keypoints', 'train2017')['info']
    assert info['generator_args']['preset'] == 'keypoints'
    assert info['generator_args']['crowd_prob'] == 1.0
    assert info['generator_args']['max_persons'] == 3
    assert any(a['iscrowd'] for a in load(pose, 'person_keypoints',
                                          'train2017')['annotations'])
    assert tool.main([str(tmp_path / 'bad'), '--num-train', '0']) == 2
    assert 'num_train' in capsys.readouterr().err
    assert tool.main([str(tmp_path / 'bad'), '--max-persons', '0']) == 2
    assert 'max_persons' in capsys.readouterr().err
