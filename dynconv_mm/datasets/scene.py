"""One synthetic image: background, shapes, persons and crowds, and what
was drawn where.

The data is meant to be *learnable* by a small model trained from scratch
for a few hundred iterations, and to contain what keypoint training meets
in COCO:

* a mildly textured, low-saturation background and saturated,
  high-contrast objects, so objectness is easy;
* three shape classes (``rectangle``, ``ellipse``, ``triangle``) whose
  colours are drawn from one shared palette, so shape (not colour) is the
  class cue;
* ``person``: a stick figure with the 17 COCO joints
  (:mod:`.person`). Optionally several per image, overlapping: a later
  person covers an earlier one, whose annotation then holds only its
  visible pixels. A joint covered by a limb (its own or another person's)
  is labelled ``v=1`` or, with probability ``hidden_drop_prob``, dropped
  (``v=0``, coordinates 0) as COCO annotators do; a joint outside the image
  is always dropped. Optionally large persons (60-95 % of the shorter
  side) and persons cut by the image border;
* a *crowd*: a band of many small overlapping figures annotated, as COCO
  does, by a single ``iscrowd=1`` person annotation with an RLE mask and no
  keypoints; evaluation ignores detections that fall on it.

Every random choice comes from the ``rng`` passed in, in a fixed order, so
an image is a pure function of the generator's state and the options. With
the default options (the ``'detection'`` preset) the images are exactly the
ones the generator drew before persons could overlap or crowds exist: each
new option draws from ``rng`` only when it is switched on, and the drop of
hidden joints draws after the last pixel is painted.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .geometry import (box_iou, fill_convex, mask_bbox, mask_to_rle,
                       pixel_outline, polygon_area, polygons_bbox, quantize,
                       rotation)
from .metainfo import SHAPE_CLASSES
from .person import (JOINT_PARTS, PersonDrawing, draw_person,
                     draw_person_parts, joint_pixels, paint_person,
                     person_pose, shade_colours)

__all__ = [
    'MIN_IMAGE_SIZE', 'MAX_IMAGE_SIZE', 'SCENE_PRESETS', 'SyntheticObject',
    'render_synthetic_image', 'scene_options'
]

#: Smallest / largest accepted image side: below 64 px the smallest objects
#: (15 % of the shorter side) and the person's limbs become a few pixels.
MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 4096

#: Named option sets for :func:`render_synthetic_image` and the generator.
#: ``detection`` is the default (one person at most, no crowd);
#: ``keypoints`` is what the pose configs and ``tools/demo.sh pose`` use.
SCENE_PRESETS: Dict[str, Dict[str, object]] = dict(
    detection=dict(min_objects=1, max_objects=4, person_prob=0.8,
                   max_persons=1, large_person_prob=0.0, crowd_prob=0.0,
                   truncation_prob=0.15, hidden_drop_prob=0.5),
    keypoints=dict(min_objects=1, max_objects=4, person_prob=0.95,
                   max_persons=3, large_person_prob=0.25, crowd_prob=0.2,
                   truncation_prob=0.3, hidden_drop_prob=0.5))



def scene_options(preset: str = 'detection',
                  **overrides: object) -> Dict[str, object]:
    """The options of a named preset, with ``overrides`` (not ``None``)
    replacing entries.

    Raises:
        ValueError: Unknown preset or option name.
    """
    if preset not in SCENE_PRESETS:
        raise ValueError(f'preset must be one of {sorted(SCENE_PRESETS)}, '
                         f'got {preset!r}')
    options = dict(SCENE_PRESETS[preset])
    for name, value in overrides.items():
        if name not in options:
            raise ValueError(f'unknown scene option {name!r} (known: '
                             f'{sorted(options)})')
        if value is not None:
            options[name] = value
    return options


# Shape extents as fractions of the image's shorter side.
_SHAPE_SIZE_RANGE = (0.15, 0.6)
_MAX_BOX_IOU = 0.3  # placements overlapping earlier boxes more are redrawn
_MAX_PERSON_IOU = 0.5  # ... except person over person: overlap is the point
_MIN_UNOCCLUDED_FRACTION = 0.5  # of a covered person's own pixels
_PLACEMENT_ATTEMPTS = 40
_BORDER_MARGIN = 2.0  # px kept free around shapes and crowds
_OBJECT_GAP = 2  # px between the pixels of two objects, so they never touch
# Crowd band (fractions of the image) and its figures.
_CROWD_WIDTH_RANGE = (0.35, 0.6)
_CROWD_HEIGHT_RANGE = (0.18, 0.3)  # of the shorter side = figure height
_CROWD_FIGURES = (6, 12)

# Object colours (BGR, as cv2 writes them). Saturated or extreme colours,
# far from the low-saturation grey background, shared by all shape classes.
_SHAPE_COLOURS = np.array(
    [(40, 40, 220), (60, 190, 40), (220, 70, 40), (40, 215, 235),
     (200, 40, 200), (210, 200, 40), (20, 130, 240), (245, 245, 245),
     (20, 20, 20), (180, 40, 120)],
    dtype=np.float32)
# A person's body colour: saturated mid colours only, whose light tint and
# dark shade (the left/right cue) both stay far from the background.
_PERSON_COLOURS = _SHAPE_COLOURS[[0, 1, 2, 4, 6, 9]]
_MIN_SHAPE_CONTRAST = 70.0  # max-channel |colour - local background|
_MIN_PERSON_CONTRAST = 45.0


@dataclass(frozen=True)
class SyntheticObject:
    """One object drawn into a synthetic image.

    Attributes:
        category: One of :data:`SYNTHETIC_COCO_CLASSES`.
        polygons: Outlines of the object's visible pixels, each an
            ``(N, 2)`` float array of ``(x, y)`` with ``N >= 3``, inside
            ``[0, width] x [0, height]``, in COCO coordinates (pixel
            ``(i, j)`` covers ``[i, i+1] x [j, j+1]``). Empty for a crowd.
        bbox: Tight ``(x, y, w, h)`` box of the visible pixels.
        area: Area of the visible pixels in square pixels (for persons and
            crowds exactly the pixel count).
        keypoints: ``(17, 3)`` array of ``(x, y, v)`` for persons (COCO
            visibility: 2 visible, 1 hidden behind a limb, 0 not labelled
            with ``x = y = 0``), else ``None``.
        iscrowd: A crowd region (category ``person``, no keypoints).
        rle: The crowd's uncompressed COCO RLE (``size``, ``counts``).
    """

    category: str
    polygons: Tuple[np.ndarray, ...]
    bbox: Tuple[float, float, float, float]
    area: float
    keypoints: Optional[np.ndarray] = None
    iscrowd: bool = False
    rle: Optional[Dict[str, list]] = field(default=None, compare=False)


@dataclass
class _Person:
    drawing: PersonDrawing
    colour_index: int


# --------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------
def check_int(name: str, value: object, low: int,
              high: Optional[int] = None, why: str = '') -> int:
    """Raise ``ValueError`` naming ``name`` unless ``low <= value <= high``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        bound = f'>= {low}' if high is None else f'in [{low}, {high}]'
        raise ValueError(f'{name} must be an integer {bound}{why}, '
                         f'got {value!r}')
    return int(value)


def _check_probability(name: str, value: object) -> None:
    if (not isinstance(value, (int, float, np.floating))
            or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0):
        raise ValueError(f'{name} must be a number in [0, 1], got {value!r}')


def check_scene_args(width: int, height: int, min_objects: int,
                     max_objects: int, person_prob: float, max_persons: int,
                     large_person_prob: float, crowd_prob: float,
                     truncation_prob: float, hidden_drop_prob: float) -> None:
    """Validate :func:`render_synthetic_image`'s options (``ValueError``
    naming the option and the value)."""
    why = ' (smaller images leave no room for the objects)'
    check_int('width', width, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, why)
    check_int('height', height, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, why)
    check_int('min_objects', min_objects, 1, 16)
    check_int('max_objects', max_objects, min_objects, 16,
              f' and >= min_objects={min_objects}')
    check_int('max_persons', max_persons, 1, 16)
    for name, value in (('person_prob', person_prob),
                        ('large_person_prob', large_person_prob),
                        ('crowd_prob', crowd_prob),
                        ('truncation_prob', truncation_prob),
                        ('hidden_drop_prob', hidden_drop_prob)):
        _check_probability(name, value)


# --------------------------------------------------------------------------
# Background and colours
# --------------------------------------------------------------------------
def _background(rng: np.random.Generator, width: int,
                height: int) -> np.ndarray:
    """Low-saturation grey with a gradient and soft blotches (float32 BGR).

    Texture keeps the detector from learning "any non-flat pixel is an
    object"; the low saturation keeps every palette colour far away.
    """
    base = rng.uniform(85.0, 165.0) + rng.uniform(-12.0, 12.0, size=3)
    gx, gy = rng.uniform(-25.0, 25.0, size=2)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)
    ramp = gx * xs[None, :] + gy * ys[:, None]
    coarse = rng.normal(0.0, 1.0, size=(height // 16 + 2, width // 16 + 2))
    blotches = cv2.resize(coarse.astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC) * 10.0
    bg = base.astype(np.float32)[None, None, :] + (ramp + blotches)[..., None]
    return bg.astype(np.float32)


def _contrast(colour: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(colour - reference)))


def _pick_colour(rng: np.random.Generator,
                 palette: np.ndarray,
                 reference: np.ndarray,
                 minimum: float,
                 shades: bool,
                 exclude: Sequence[int] = ()) -> int:
    """Index of the first palette colour (random order) that contrasts
    with ``reference`` and is not in ``exclude``.

    With ``shades`` the light tint and dark shade used for a person's
    left/right limbs must contrast too. Falls back to the best candidate.
    """
    best, best_score = -1, -1.0
    for idx in rng.permutation(len(palette)):
        if idx in exclude:
            continue
        colour = palette[idx]
        cands = shade_colours(colour) if shades else [colour]
        score = min(_contrast(c, reference) for c in cands)
        if score >= minimum:
            return int(idx)
        if score > best_score:
            best, best_score = int(idx), score
    return best


# --------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------
def _shape_outline(rng: np.random.Generator, category: str) -> np.ndarray:
    """Unit-size outline of a shape centred at the origin, ``(N, 2)``."""
    if category == 'rectangle':
        # Aspect ratios up to ~1:2.2 and a mild rotation: still unmistakably
        # a four-cornered box, never a thin sliver.
        aspect = math.exp(rng.uniform(math.log(0.45), math.log(2.2)))
        hw, hh = 0.5 * aspect, 0.5
        pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        return pts @ rotation(rng.uniform(-25.0, 25.0)).T
    if category == 'ellipse':
        ratio = rng.uniform(0.45, 1.0)
        t = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), ratio * np.sin(t)], axis=1)
        return pts @ rotation(rng.uniform(0.0, 180.0)).T
    if category == 'triangle':
        # Vertices roughly 120 degrees apart; re-drawn until every interior
        # angle is >= 25 degrees so no triangle degenerates into a line.
        while True:
            angles = rng.uniform(0.0, 360.0) + np.array(
                [0.0, 120.0 + rng.uniform(-25, 25),
                 240.0 + rng.uniform(-25, 25)])
            radii = rng.uniform(0.75, 1.0, size=3)
            rad = np.radians(angles)
            pts = np.stack([radii * np.cos(rad), radii * np.sin(rad)], 1)
            if _min_triangle_angle(pts) >= 25.0:
                return pts
    raise ValueError(f'unknown shape category {category!r}')


def _min_triangle_angle(pts: np.ndarray) -> float:
    worst = 180.0
    for i in range(3):
        u = pts[(i + 1) % 3] - pts[i]
        v = pts[(i + 2) % 3] - pts[i]
        cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
        worst = min(worst, math.degrees(math.acos(np.clip(cos, -1, 1))))
    return worst


def _try_shape(rng: np.random.Generator, category: str, width: int,
               height: int) -> Tuple[np.ndarray, np.ndarray]:
    """One random placement of a shape: (polygon, mask), fully inside."""
    short = min(width, height)
    size = rng.uniform(*_SHAPE_SIZE_RANGE) * short
    outline = _shape_outline(rng, category)
    extent = outline.max(0) - outline.min(0)
    outline = outline * (size / extent.max())  # longest side == size
    lo, hi = outline.min(0), outline.max(0)
    m = _BORDER_MARGIN
    cx = rng.uniform(m - lo[0], width - 1 - m - hi[0])
    cy = rng.uniform(m - lo[1], height - 1 - m - hi[1])
    poly = quantize(outline + np.array([cx, cy]))
    return poly, fill_convex(poly, width, height)


# --------------------------------------------------------------------------
# Crowds
# --------------------------------------------------------------------------
def _draw_crowd(rng: np.random.Generator, image: np.ndarray,
                background: np.ndarray) -> np.ndarray:
    """Paint a band of small overlapping figures; return their union mask.

    The band keeps a margin from the border (on images near the minimum
    size a figure may still be clipped by it; the mask is what was drawn);
    every figure is a person-model figure 80-100 % as tall as the band,
    drawn over its left neighbours.
    """
    height, width = image.shape[:2]
    short = min(width, height)
    band_h = rng.uniform(*_CROWD_HEIGHT_RANGE) * short
    band_w = rng.uniform(*_CROWD_WIDTH_RANGE) * width
    m = _BORDER_MARGIN + band_h * 0.6  # room for arms and the tilt
    x0 = rng.uniform(m, width - 1 - m - band_w)
    y0 = rng.uniform(m, height - 1 - m - band_h)
    count = int(rng.integers(_CROWD_FIGURES[0], _CROWD_FIGURES[1] + 1))
    union = np.zeros((height, width), np.uint8)
    for x in np.sort(rng.uniform(x0, x0 + band_w, size=count)):
        pose = person_pose(rng, band_h * rng.uniform(0.8, 1.0))
        # The pose is centred on its mid-height: put it in the band.
        offset = quantize(np.array([x, y0 + band_h / 2.0]))
        parts = np.zeros((height, width), np.uint8)
        draw_person_parts(parts, pose, offset)
        if not parts.any():
            continue
        reference = background[parts > 0].mean(axis=0)
        body = _PERSON_COLOURS[_pick_colour(rng, _PERSON_COLOURS, reference,
                                            _MIN_PERSON_CONTRAST, True)]
        paint_person(image, parts, body)
        union |= (parts > 0).astype(np.uint8)
    return union


# --------------------------------------------------------------------------
# Persons: who covers whom, and which joints are seen
# --------------------------------------------------------------------------
def _top_person_maps(persons: Sequence[_Person], width: int,
                     height: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(owner, parts)``: index of the top-most person at each pixel (-1
    for none) and that person's part label there."""
    owner = np.full((height, width), -1, np.int16)
    parts = np.zeros((height, width), np.uint8)
    for index, person in enumerate(persons):
        sel = person.drawing.mask > 0
        owner[sel] = index
        parts[sel] = person.drawing.parts[sel]
    return owner, parts


def _joint_visibility(person: PersonDrawing, index: int, owner: np.ndarray,
                      parts: np.ndarray) -> np.ndarray:
    """COCO ``v`` per joint before any drop: 2 seen, 1 hidden, 0 outside.

    A joint is seen when the top-most part at its pixel belongs to this
    person and meets at that joint (:data:`JOINT_PARTS`).
    """
    vis = np.zeros(17, np.int64)
    cols, rows = joint_pixels(person.joints).T
    for j in np.flatnonzero(person.in_image):
        r, c = rows[j], cols[j]
        seen = owner[r, c] == index and parts[r, c] in JOINT_PARTS[j]
        vis[j] = 2 if seen else 1
    return vis


def _covered_persons_stay_valid(persons: Sequence[_Person], width: int,
                                height: int) -> bool:
    """Whether every person under the last one keeps enough of itself:
    half its pixels, a hole-free outline and at least one seen joint."""
    owner, parts = _top_person_maps(persons, width, height)
    for index, person in enumerate(persons[:-1]):
        visible = owner == index
        own = np.count_nonzero(person.drawing.mask)
        if np.count_nonzero(visible) < _MIN_UNOCCLUDED_FRACTION * own:
            return False
        if pixel_outline(visible.astype(np.uint8)) is None:
            return False
        if not np.any(
                _joint_visibility(person.drawing, index, owner, parts) == 2):
            return False
    return True


# --------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------
def render_synthetic_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    min_objects: int = 1,
    max_objects: int = 4,
    person_prob: float = 0.8,
    max_persons: int = 1,
    large_person_prob: float = 0.0,
    crowd_prob: float = 0.0,
    truncation_prob: float = 0.15,
    hidden_drop_prob: float = 0.5,
) -> Tuple[np.ndarray, List[SyntheticObject]]:
    """Render one image and describe what was drawn.

    Args:
        rng: Source of all randomness; the result is a pure function of its
            state and the other arguments.
        width: Image width in px, in ``[MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]``.
        height: Image height in px, same range.
        min_objects: Fewest objects attempted (>= 1).
        max_objects: Most objects attempted (>= ``min_objects``).
        person_prob: Probability that the image contains persons; the
            other objects are shapes of uniformly random class.
        max_persons: Most persons in an image that has persons (their
            number is uniform in ``[1, max_persons]``; they take the place
            of shapes, and are all placed even beyond ``max_objects``).
        large_person_prob: Chance that a person is 60-95 % of the shorter
            image side tall instead of 30-60 %.
        crowd_prob: Chance that the image holds a crowd region.
        truncation_prob: Chance that a person may be cut by the image
            border (keeping >= 60 % of its pixels).
        hidden_drop_prob: Chance that a joint hidden behind a limb is left
            unlabelled (``v=0``) instead of labelled ``v=1``.

    Returns:
        ``(image, objects)``: a ``(height, width, 3)`` uint8 BGR image and
        the objects in drawing order (crowd, persons, shapes). Shapes and
        crowds never share or touch pixels with any other object; persons
        may cover earlier persons (box IoU <= 0.5, the covered one keeping
        >= half its pixels and a seen joint), other boxes overlap with IoU
        <= 0.3. An object that finds no place in 40 tries is left out, so
        fewer than ``min_objects`` may be drawn on crowded images (never
        zero).
    """
    check_scene_args(width, height, min_objects, max_objects, person_prob,
                     max_persons, large_person_prob, crowd_prob,
                     truncation_prob, hidden_drop_prob)
    background = _background(rng, width, height)
    image = background.copy()
    # Pixels (dilated by the gap) that a new shape / a new person must not
    # touch: persons may overlap persons, nothing else overlaps anything.
    occupied = np.zeros((height, width), np.uint8)
    occupied_for_persons = np.zeros((height, width), np.uint8)
    gap_kernel = np.ones((2 * _OBJECT_GAP + 1, 2 * _OBJECT_GAP + 1),
                         np.uint8)

    count = int(rng.integers(min_objects, max_objects + 1))
    categories = [
        str(SHAPE_CLASSES[i])
        for i in rng.integers(0, len(SHAPE_CLASSES), size=count)
    ]
    if rng.random() < person_prob:
        # Persons first: the biggest objects pack best.
        num_persons = 1 if max_persons == 1 else int(
            rng.integers(1, max_persons + 1))
        categories = ['person'] * num_persons + categories[num_persons:]

    boxes: List[Tuple[Tuple[float, ...], str]] = []
    crowd: Optional[SyntheticObject] = None
    if crowd_prob > 0 and rng.random() < crowd_prob:
        # First, on the empty image: it always fits.
        mask = _draw_crowd(rng, image, background)
        if mask.any():
            bbox = mask_bbox(mask)
            crowd = SyntheticObject(
                category='person', polygons=(), bbox=bbox,
                area=float(np.count_nonzero(mask)),
                keypoints=np.zeros((17, 3)), iscrowd=True,
                rle=mask_to_rle(mask))
            boxes.append((bbox, 'crowd'))
            dilated = cv2.dilate(mask, gap_kernel)
            occupied |= dilated
            occupied_for_persons |= dilated

    persons: List[_Person] = []
    shapes: List[SyntheticObject] = []
    for category in categories:
        for _ in range(_PLACEMENT_ATTEMPTS):
            if category == 'person':
                large = (large_person_prob > 0
                         and rng.random() < large_person_prob)
                drawing = draw_person(rng, width, height, large=large,
                                      truncation_prob=truncation_prob)
                if drawing is None:
                    continue
                mask = drawing.mask
                bbox = mask_bbox(mask)
                blocked = occupied_for_persons
            else:
                poly, mask = _try_shape(rng, category, width, height)
                polys = [poly + 0.5]  # cv2 pixel centres -> COCO coordinates
                bbox = polygons_bbox(polys)
                blocked = occupied
            if any(
                    box_iou(bbox, other) > (
                        _MAX_PERSON_IOU if kind == category == 'person'
                        else _MAX_BOX_IOU) for other, kind in boxes):
                continue
            if np.any(blocked[mask > 0]):
                continue
            if category == 'person' and persons:
                candidate = _Person(drawing, -1)
                if not _covered_persons_stay_valid(persons + [candidate],
                                                   width, height):
                    continue
            break
        else:
            continue  # no room left for this object

        inside = mask > 0
        reference = background[inside].mean(axis=0)
        dilated = cv2.dilate(mask, gap_kernel)
        if category == 'person':
            # A person must not wear the colour of one it touches.
            near = [p.colour_index for p in persons
                    if np.any(p.drawing.mask[dilated > 0])]
            index = _pick_colour(rng, _PERSON_COLOURS, reference,
                                 _MIN_PERSON_CONTRAST, True, exclude=near)
            paint_person(image, drawing.parts, _PERSON_COLOURS[index])
            persons.append(_Person(drawing, index))
        else:
            index = _pick_colour(rng, _SHAPE_COLOURS, reference,
                                 _MIN_SHAPE_CONTRAST, False)
            image[inside] = _SHAPE_COLOURS[index]
            occupied_for_persons |= dilated
            shapes.append(
                SyntheticObject(
                    category=category,
                    polygons=tuple(polys),
                    bbox=bbox,
                    area=float(sum(polygon_area(p) for p in polys))))
        occupied |= dilated
        boxes.append((bbox, category))

    if not boxes:  # cannot happen: the first object always fits
        raise RuntimeError('no object could be placed')
    # Sensor-like noise over everything, so objects are not perfectly flat.
    image += rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    # Annotations of the persons, now that nothing covers them any more.
    # Drop decisions draw after the last pixel: the image does not change.
    owner, parts = _top_person_maps(persons, width, height)
    objects: List[SyntheticObject] = [] if crowd is None else [crowd]
    for index, person in enumerate(persons):
        visible = (owner == index).astype(np.uint8)
        polys = pixel_outline(visible)
        if polys is None:  # excluded at placement
            raise RuntimeError('a covered person lost its outline')
        vis = _joint_visibility(person.drawing, index, owner, parts)
        for j in np.flatnonzero(vis == 1):
            if hidden_drop_prob > 0 and rng.random() < hidden_drop_prob:
                vis[j] = 0
        keypoints = np.zeros((17, 3))
        labelled = vis > 0
        keypoints[labelled, :2] = person.drawing.joints[labelled] + 0.5
        keypoints[:, 2] = vis
        objects.append(
            SyntheticObject(
                category='person',
                polygons=tuple(polys),
                bbox=polygons_bbox(polys),
                area=float(np.count_nonzero(visible)),
                keypoints=keypoints))
    objects += shapes
    return image, objects

