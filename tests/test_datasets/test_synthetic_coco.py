"""Tests of the synthetic COCO generator: files, determinism, and that the
annotations describe the pixels (checked through pycocotools/xtcocotools,
not through the generator's own helpers)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dynconv_mm.datasets import (COCO_KEYPOINT_NAMES, COCO_SKELETON,
                                 SYNTHETIC_COCO_CLASSES,
                                 SYNTHETIC_COCO_METAINFO,
                                 generate_synthetic_coco,
                                 render_synthetic_image,
                                 synthetic_coco_metainfo)

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / 'dynconv_mm' / 'datasets' / 'synthetic_coco.py'
TOOL_FILE = REPO / 'tools' / 'generate_synthetic_coco.py'
ARGS = dict(num_train=16, num_val=6, width=256, height=192, seed=3)
SPLITS = ('train2017', 'val2017')
KINDS = ('instances', 'person_keypoints')
# pycocotools' own numpy-2 deprecation, not ours.
pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')
LEFT_LIMB_JOINTS = (7, 9, 13, 15)  # left elbow, wrist, knee, ankle (0-based)
# The real COCO skeleton, typed in independently of the package constant.
REAL_COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13],
                      [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
                      [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                      [4, 6], [5, 7]]


def all_files(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob('*')) if p.is_file()
    }


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_coco')
    paths = generate_synthetic_coco(root, **ARGS)
    return root, paths


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


# --------------------------------------------------------------- files
def test_layout_and_counts(dataset):
    root, paths = dataset
    for key in ('instances_train', 'instances_val', 'person_keypoints_train',
                'person_keypoints_val', 'train_img_dir', 'val_img_dir'):
        assert Path(paths[key]).exists(), key
    for split, num in zip(SPLITS, (ARGS['num_train'], ARGS['num_val'])):
        pngs = sorted(p.name for p in (root / split).glob('*.png'))
        assert len(pngs) == num
        for kind in KINDS:
            data = load(root, kind, split)
            assert set(data) >= {'info', 'licenses', 'images', 'annotations',
                                 'categories'}
            assert sorted(i['file_name'] for i in data['images']) == pngs
            ids = [i['id'] for i in data['images']]
            assert len(set(ids)) == num
        # Same images (ids, names) in both files of a split.
        assert (load(root, 'instances', split)['images'] == load(
            root, 'person_keypoints', split)['images'])
        for img in load(root, 'instances', split)['images']:
            image = read_image(root, split, img)
            assert image.shape == (img['height'], img['width'], 3)
            assert (img['width'], img['height']) == (ARGS['width'],
                                                     ARGS['height'])


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    generate_synthetic_coco(tmp_path / 'again', **ARGS)
    first, again = all_files(root), all_files(tmp_path / 'again')
    assert first.keys() == again.keys()
    for name in first:
        assert first[name] == again[name], name

    generate_synthetic_coco(tmp_path / 'other', **{**ARGS, 'seed': 4})
    other = all_files(tmp_path / 'other')
    assert other.keys() == first.keys()
    for name in first:
        if name.endswith('.png'):
            assert other[name] != first[name], name
        else:  # compare content: `info` records the seed in any case
            assert (json.loads(other[name])['annotations'] !=
                    json.loads(first[name])['annotations']), name


def test_train_and_val_images_differ(dataset):
    root, _ = dataset
    train = cv2.imread(str(root / 'train2017' / '000000000001.png'))
    val = cv2.imread(str(root / 'val2017' / '000000000001.png'))
    assert not np.array_equal(train, val)


def test_render_is_a_function_of_the_rng():
    a = render_synthetic_image(np.random.default_rng(11), 128, 96)
    b = render_synthetic_image(np.random.default_rng(11), 128, 96)
    c = render_synthetic_image(np.random.default_rng(12), 128, 96)
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
        per_image[ann['image_id']] += 1
        assert ann['category_id'] in cat_ids
        assert ann['iscrowd'] == 0
        x, y, w, h = ann['bbox']
        assert all(isinstance(v, float) for v in ann['bbox'])
        assert w > 0 and h > 0 and ann['area'] > 0
        assert x >= 0 and y >= 0
        assert x + w <= img['width'] and y + h <= img['height']
        assert isinstance(ann['segmentation'], list) and ann['segmentation']
        pts = []
        for poly in ann['segmentation']:
            assert len(poly) >= 6 and len(poly) % 2 == 0
            pts.append(np.asarray(poly, dtype=float).reshape(-1, 2))
        pts = np.concatenate(pts)
        assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= img['width'] - 1
        assert pts[:, 1].min() >= 0 and pts[:, 1].max() <= img['height'] - 1
        poly_box = [*pts.min(0), *(pts.max(0) - pts.min(0))]
        np.testing.assert_allclose(ann['bbox'], poly_box, atol=1.0)
        # Objects are 15-60 % of the shorter side (persons may be cut).
        short = min(img['width'], img['height'])
        if ann['category_id'] != 1:
            assert 0.15 * short - 1 <= max(w, h) <= 0.6 * short + 1
    assert all(1 <= n <= 4 for n in per_image.values()), per_image


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
                # Person polygons follow the pixel edges: exact.
                assert count == ann['area']
                np.testing.assert_array_equal(gap, 0)
            else:
                # Geometric outlines: boundary pixels count when their
                # centre is inside, so a sharp triangle tip may end up to
                # ~2 px short of the box; the area is within a few %.
                assert abs(count - ann['area']) <= 0.05 * ann['area'] + 5, (
                    count, ann['area'])
                assert np.all(gap >= -0.5) and np.all(gap <= 2.5), gap
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
        # Objects never share pixels.
        assert sum(m.sum() for m in masks) == union.sum()
        for i, a in enumerate(anns):
            for b in anns[i + 1:]:
                assert box_iou(a['bbox'], b['bbox']) <= 0.3
    assert min(ious) > 0.93 and np.mean(ious) > 0.98, (min(ious),
                                                         np.mean(ious))


def test_shapes_are_not_told_apart_by_colour(dataset):
    root, _ = dataset
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
    persons = [a for a in inst['annotations'] if a['category_id'] == 1]
    assert [a['id'] for a in kpt['annotations']] == list(
        range(1, len(persons) + 1))
    for a, b in zip(persons, kpt['annotations']):
        assert b['category_id'] == 1
        for key in ('image_id', 'bbox', 'area', 'segmentation', 'keypoints',
                    'num_keypoints'):
            assert a[key] == b[key], key
    # Most images show a person (person_prob=0.8 by default).
    with_person = {a['image_id'] for a in kpt['annotations']}
    assert len(with_person) >= 0.6 * len(kpt['images'])


@pytest.mark.parametrize('split', SPLITS)
def test_keypoints_lie_on_the_drawn_person(dataset, split):
    root, _ = dataset
    api = coco_api(root, 'person_keypoints', split)
    anns = api.loadAnns(api.getAnnIds())
    assert anns
    for ann in anns:
        img = api.loadImgs(ann['image_id'])[0]
        kp = np.asarray(ann['keypoints'], dtype=float).reshape(17, 3)
        vis = kp[:, 2] > 0
        assert set(kp[:, 2].tolist()) <= {0.0, 2.0}
        assert ann['num_keypoints'] == vis.sum() > 0
        assert np.all(kp[~vis, :2] == 0)
        x, y, w, h = ann['bbox']
        assert np.all(kp[vis, 0] >= x - 1) and np.all(kp[vis, 0] <= x + w + 1)
        assert np.all(kp[vis, 1] >= y - 1) and np.all(kp[vis, 1] <= y + h + 1)
        assert np.all(kp[vis, 0] <= img['width'] - 1)
        assert np.all(kp[vis, 1] <= img['height'] - 1)
        mask = api.annToMask(ann)
        cols = np.floor(kp[vis, 0]).astype(int)  # pixel i covers [i, i+1]
        rows = np.floor(kp[vis, 1]).astype(int)
        assert mask[rows, cols].all()


def test_keypoints_sit_on_the_limb_centre_lines(dataset):
    """Across each forearm and shin, at the midpoint of its two keypoints,
    the drawn limb is centred on the keypoints' line (on average, to well
    under the half pixel a pixel-convention slip would cause)."""
    root, _ = dataset
    offsets = []
    for split in SPLITS:
        api = coco_api(root, 'person_keypoints', split)
        for ann in api.loadAnns(api.getAnnIds()):
            mask = api.annToMask(ann)
            kp = np.asarray(ann['keypoints'], dtype=float).reshape(17, 3)
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


def test_persons_cut_by_the_border_hide_outside_keypoints():
    found = 0
    for seed in range(40):
        image, objects = render_synthetic_image(
            np.random.default_rng(seed), 128, 96, max_objects=1,
            person_prob=1.0)
        for obj in objects:
            if obj.category != 'person' or np.all(obj.keypoints[:, 2] > 0):
                continue
            found += 1
            kp = obj.keypoints
            assert set(kp[:, 2].tolist()) == {0.0, 2.0}
            assert np.all(kp[kp[:, 2] == 0, :2] == 0)
            vis = kp[kp[:, 2] > 0, :2]
            assert np.all(vis >= 0) and np.all(vis <= (128, 96))
            x, y, w, h = obj.bbox
            assert x == 0 or y == 0 or x + w == 128 or y + h == 96
    assert found >= 1


def test_left_and_right_are_distinguishable(dataset):
    root, _ = dataset
    kpt = load(root, 'person_keypoints', 'train2017')
    images = {i['id']: i for i in kpt['images']}
    brighter, facing_viewer, checked = 0, 0, 0
    for ann in kpt['annotations']:
        kp = np.asarray(ann['keypoints'], dtype=float).reshape(17, 3)
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


# --------------------------------------------------------------- metainfo
def test_metainfo_matches_categories(dataset):
    root, _ = dataset
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
def test_library_module_does_not_import_frameworks():
    code = (
        'import importlib.util, sys\n'
        'spec = importlib.util.spec_from_file_location("m", sys.argv[1])\n'
        'm = sys.modules["m"] = importlib.util.module_from_spec(spec)\n'
        'spec.loader.exec_module(m)\n'
        'assert m.generate_synthetic_coco\n'
        'bad = [n for n in ("torch", "mmengine", "mmcv", "mmdet", "mmpose")\n'
        '       if n in sys.modules]\n'
        'print(bad)\n'
        'assert not bad, bad\n')
    subprocess.run([sys.executable, '-c', code, str(MODULE_FILE)], check=True)


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
    assert tool.main([str(tmp_path / 'bad'), '--num-train', '0']) == 2
    assert 'num_train' in capsys.readouterr().err
