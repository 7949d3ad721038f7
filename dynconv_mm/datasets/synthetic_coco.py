"""Deterministic generator of small synthetic COCO-format datasets.

Real COCO cannot be downloaded everywhere this project is tested, so the
demo and the end-to-end tests train real MMDetection / MMPose models on
images drawn here and evaluate them with the real COCO metrics. The data
is meant to be *learnable* by a small model trained from scratch for a few
hundred iterations:

* a mildly textured, low-saturation background and saturated, high-contrast
  objects, so objectness is easy;
* three shape classes (``rectangle``, ``ellipse``, ``triangle``) whose
  colours are drawn from one shared palette, so shape (not colour) is the
  class cue;
* ``person``: a stick figure (filled head disc, filled torso, thick limbs)
  whose joints are the 17 COCO keypoints in the standard COCO order.

Left/right cue of a person
    Every figure faces the viewer, exactly like the COCO convention, so the
    person's *left* shoulder, hip, eye and ear are on the *image right* of
    the body's midline; that geometric cue is what makes the labels
    well-posed, also under flip augmentation (a mirrored front-facing figure
    is again a front-facing figure with swapped labels). In addition, the
    left arm, left leg and left eye are painted in a *lighter* tint of the
    body colour and the right ones in a *darker* shade, so a model can tell
    which limb is which where limbs cross the torso or each other. Note that
    the absolute shade is not flip-invariant (after a horizontal flip the
    light limbs carry the ``right_*`` labels); it helps to follow a limb, the
    side itself comes from geometry.

Output layout (identical to real COCO, so configs written for COCO only need
a different ``data_root``)::

    <out>/annotations/instances_{train,val}2017.json
    <out>/annotations/person_keypoints_{train,val}2017.json
    <out>/train2017/000000000001.png ...
    <out>/val2017/000000000001.png ...

Annotation coordinates use the COCO convention: pixel ``(i, j)`` covers
``[i, i+1] x [j, j+1]``, which is how ``pycocotools`` rasterises polygons, so
``COCO.annToMask`` reproduces the drawn pixels (exactly for persons, whose
polygons follow the pixel edges; up to boundary pixels for shapes, whose
polygons are the exact geometric outlines that were filled).

Everything is a pure function of the arguments: image ``k`` of a split is
rendered from ``numpy.random.default_rng([seed, split, k])``, so two runs
with the same arguments write byte-identical JSON and PNG files, train and
val never share an image, and growing ``num_train`` does not change the
images already generated.

This module deliberately imports only numpy, OpenCV and the standard
library (no torch / OpenMMLab), so generating data stays cheap.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    'SYNTHETIC_COCO_CLASSES', 'SYNTHETIC_COCO_PALETTE',
    'SYNTHETIC_COCO_METAINFO', 'COCO_KEYPOINT_NAMES', 'COCO_SKELETON',
    'MIN_IMAGE_SIZE', 'MAX_IMAGE_SIZE', 'SyntheticObject',
    'synthetic_coco_metainfo', 'render_synthetic_image',
    'generate_synthetic_coco'
]

#: Category names in category-id order (``person`` is id 1 as in COCO).
SYNTHETIC_COCO_CLASSES: Tuple[str, ...] = ('person', 'rectangle', 'ellipse',
                                           'triangle')
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

#: Smallest / largest accepted image side: below 64 px the smallest objects
#: (15 % of the shorter side) and the person's limbs become a few pixels.
MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 4096

SHAPE_CLASSES: Tuple[str, ...] = SYNTHETIC_COCO_CLASSES[1:]
SPLIT_NAMES: Tuple[str, ...] = ('train2017', 'val2017')

# Object extents as fractions of the image's shorter side. Persons have a
# higher floor so that the face keypoints stay a few pixels apart.
_SHAPE_SIZE_RANGE = (0.15, 0.6)
_PERSON_HEIGHT_RANGE = (0.3, 0.6)
_MAX_BOX_IOU = 0.3  # placements overlapping earlier boxes more are redrawn
_PLACEMENT_ATTEMPTS = 40
_BORDER_MARGIN = 2.0  # px kept free around shapes and untruncated persons
_OBJECT_GAP = 2  # px between the pixels of two objects, so they never touch
_TRUNCATION_PROB = 0.15  # chance a person may be cut by the image border
_MIN_VISIBLE_FRACTION = 0.6  # of a truncated person's pixels
_SUBPIXEL_BITS = 4  # cv2 drawing `shift`: vertices on a 1/16 px grid
_SUBPIXEL = 1 << _SUBPIXEL_BITS

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

# Person label-map values, painted in this order (limbs over the torso).
_BODY, _RIGHT, _LEFT, _LEFT_EYE, _RIGHT_EYE = 1, 2, 3, 4, 5

PathLike = Union[str, os.PathLike]

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


@dataclass(frozen=True)
class SyntheticObject:
    """One object drawn into a synthetic image.

    Attributes:
        category: One of :data:`SYNTHETIC_COCO_CLASSES`.
        polygons: Outlines of the drawn pixels, each an ``(N, 2)`` float
            array of ``(x, y)`` with ``N >= 3``, inside ``[0, width] x
            [0, height]``, in COCO coordinates (pixel ``(i, j)`` covers
            ``[i, i+1] x [j, j+1]``).
        bbox: Tight ``(x, y, w, h)`` box of the polygons.
        area: Area enclosed by the polygons, in square pixels (for persons
            exactly the number of drawn pixels).
        keypoints: ``(17, 3)`` array of ``(x, y, v)`` for persons (``v=2``
            inside the image, ``(0, 0, 0)`` outside), else ``None``.
    """

    category: str
    polygons: Tuple[np.ndarray, ...]
    bbox: Tuple[float, float, float, float]
    area: float
    keypoints: Optional[np.ndarray] = None


# --------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------
def _check_int(name: str, value: object, low: int,
               high: Optional[int] = None, why: str = '') -> int:
    """Raise ``ValueError`` naming ``name`` unless ``low <= value <= high``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        bound = f'>= {low}' if high is None else f'in [{low}, {high}]'
        raise ValueError(f'{name} must be an integer {bound}{why}, '
                         f'got {value!r}')
    return int(value)


def _check_render_args(width: int, height: int, min_objects: int,
                       max_objects: int, person_prob: float) -> None:
    why = ' (smaller images leave no room for the objects)'
    _check_int('width', width, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, why)
    _check_int('height', height, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, why)
    _check_int('min_objects', min_objects, 1, 16)
    _check_int('max_objects', max_objects, min_objects, 16,
               f' and >= min_objects={min_objects}')
    if (not isinstance(person_prob, (int, float, np.floating))
            or isinstance(person_prob, bool)
            or not 0.0 <= float(person_prob) <= 1.0):
        raise ValueError(
            f'person_prob must be a number in [0, 1], got {person_prob!r}')


# --------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------
def _rotation(angle_deg: float) -> np.ndarray:
    t = math.radians(angle_deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t),
                                                    math.cos(t)]])


def _quantize(points: np.ndarray) -> np.ndarray:
    """Snap to a 1/16 px grid: exact in JSON and in cv2 fixed point."""
    return np.round(np.asarray(points, np.float64) * _SUBPIXEL) / _SUBPIXEL


def _fixed(points: np.ndarray) -> np.ndarray:
    """Quantized float points -> int32 fixed-point for cv2 ``shift``."""
    return np.round(points * _SUBPIXEL).astype(np.int32)


def _polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon given as ``(N, 2)``."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) -
                           np.dot(y, np.roll(x, -1))))


def _polygons_bbox(polys: Sequence[np.ndarray]) -> Tuple[float, ...]:
    pts = np.concatenate(polys, axis=0)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x, y, w, h)`` boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _shape_outline(rng: np.random.Generator, category: str) -> np.ndarray:
    """Unit-size outline of a shape centred at the origin, ``(N, 2)``."""
    if category == 'rectangle':
        # Aspect ratios up to ~1:2.2 and a mild rotation: still unmistakably
        # a four-cornered box, never a thin sliver.
        aspect = math.exp(rng.uniform(math.log(0.45), math.log(2.2)))
        hw, hh = 0.5 * aspect, 0.5
        pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        return pts @ _rotation(rng.uniform(-25.0, 25.0)).T
    if category == 'ellipse':
        ratio = rng.uniform(0.45, 1.0)
        t = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), ratio * np.sin(t)], axis=1)
        return pts @ _rotation(rng.uniform(0.0, 180.0)).T
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


# --------------------------------------------------------------------------
# Person stick figure
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class _PersonPose:
    """A stick figure in pixels, before translation into the image."""

    keypoints: np.ndarray  # (17, 2) in COCO order
    head_centre: np.ndarray  # (2,)
    head_radius: float
    neck: np.ndarray  # (2,)
    thickness: int  # limb line width in px
    eye_radius: float


def _person_pose(rng: np.random.Generator, height: float) -> _PersonPose:
    """Draw a random front-facing pose of a figure ``height`` px tall.

    The figure is built in a unit frame (head top at y=0, feet near y=1,
    y pointing down, the person's left at +x because it faces the viewer),
    then rotated slightly and scaled.
    """
    r_head = rng.uniform(0.075, 0.095)
    head = np.array([rng.uniform(-0.02, 0.02), r_head])
    neck = np.array([0.0, 2.0 * r_head + 0.03])
    shoulder_half = rng.uniform(0.09, 0.13)
    hip_half = rng.uniform(0.06, 0.09)
    shoulder_y = neck[1] + 0.02
    hip_y = rng.uniform(0.50, 0.55)
    arm = rng.uniform(0.14, 0.18, size=2)  # upper arm, forearm
    leg = rng.uniform(0.20, 0.25, size=2)  # thigh, shin

    kpt = np.zeros((17, 2))
    # Face points on a slightly tilted head; ears kept well inside the disc.
    tilt = _rotation(rng.uniform(-15.0, 15.0))
    face = np.array([[0.0, 0.25], [0.4, -0.15], [-0.4, -0.15], [0.8, 0.05],
                     [-0.8, 0.05]]) * r_head
    kpt[0:5] = head + face @ tilt.T

    def direction(side: float, angle_deg: float) -> np.ndarray:
        # angle 0 = straight down, positive = away from the body's midline.
        a = math.radians(angle_deg)
        return np.array([side * math.sin(a), math.cos(a)])

    for side, offset in ((1.0, 0), (-1.0, 1)):  # left (+x) first, COCO order
        shoulder = np.array([side * shoulder_half, shoulder_y])
        a_upper = rng.uniform(-20.0, 150.0)
        a_fore = a_upper + rng.uniform(-100.0, 100.0)
        elbow = shoulder + arm[0] * direction(side, a_upper)
        wrist = elbow + arm[1] * direction(side, a_fore)
        hip = np.array([side * hip_half, hip_y])
        a_thigh = rng.uniform(-10.0, 40.0)
        a_shin = a_thigh + rng.uniform(-40.0, 20.0)
        knee = hip + leg[0] * direction(side, a_thigh)
        ankle = knee + leg[1] * direction(side, a_shin)
        for base, point in ((5, shoulder), (7, elbow), (9, wrist), (11, hip),
                            (13, knee), (15, ankle)):
            kpt[base + offset] = point

    rot = _rotation(rng.uniform(-15.0, 15.0))
    centre = np.array([0.0, 0.5])

    def place(p: np.ndarray) -> np.ndarray:
        return _quantize(((p - centre) @ rot.T) * height)

    thickness = max(2, int(round(height * rng.uniform(0.04, 0.06))))
    return _PersonPose(
        keypoints=place(kpt),
        head_centre=place(head),
        head_radius=r_head * height,
        neck=place(neck),
        thickness=thickness,
        eye_radius=max(1.0, 0.2 * r_head * height))


def _draw_person_labels(canvas: np.ndarray, pose: _PersonPose,
                        offset: np.ndarray) -> None:
    """Paint the figure's part labels into a single-channel ``canvas``.

    Lines are drawn without anti-aliasing so the label map, the painted
    image and the annotation mask are exactly the same pixels.
    """
    k = _fixed(pose.keypoints + offset)
    t = pose.thickness

    def line(a: np.ndarray, b: np.ndarray, label: int) -> None:
        cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b),
                 label, t, cv2.LINE_8, _SUBPIXEL_BITS)

    # Torso: filled quadrilateral shoulders-hips, outlined so its corners are
    # as round as the limbs joining it.
    torso = k[[5, 6, 12, 11]]
    cv2.fillPoly(canvas, [torso], _BODY, cv2.LINE_8, _SUBPIXEL_BITS)
    cv2.polylines(canvas, [torso], True, _BODY, t, cv2.LINE_8,
                  _SUBPIXEL_BITS)
    head = _fixed(pose.head_centre + offset)
    neck = _fixed(pose.neck + offset)
    line(head, neck, _BODY)
    cv2.circle(canvas, tuple(int(v) for v in head),
               int(round(pose.head_radius * _SUBPIXEL)), _BODY, -1,
               cv2.LINE_8, _SUBPIXEL_BITS)
    for label, (s, e, w, h, kn, a) in ((_RIGHT, (6, 8, 10, 12, 14, 16)),
                                       (_LEFT, (5, 7, 9, 11, 13, 15))):
        line(k[s], k[e], label)
        line(k[e], k[w], label)
        line(k[h], k[kn], label)
        line(k[kn], k[a], label)
    r_eye = int(round(pose.eye_radius * _SUBPIXEL))
    for label, idx in ((_LEFT_EYE, 1), (_RIGHT_EYE, 2)):
        cv2.circle(canvas, tuple(int(v) for v in k[idx]), r_eye, label, -1,
                   cv2.LINE_8, _SUBPIXEL_BITS)


def _pixel_outline(mask: np.ndarray) -> Optional[List[np.ndarray]]:
    """Polygons running along the pixel edges of a binary mask.

    Returned in COCO coordinates (pixel ``(i, j)`` covers ``[i, i+1] x
    [j, j+1]``), so they enclose exactly the mask's pixels and their area is
    the pixel count. ``None`` if the mask has holes: COCO polygons cannot
    express them (``annToMask`` would fill them), so a pose enclosing
    background, e.g. a hand on the hip, is rejected instead.
    """
    # cv2 contours pass through boundary pixel *centres*. On a 2x upsampled
    # mask every boundary pixel is one quadrant of an original pixel, and
    # its parity says which edge of that pixel it lies on: even -> i,
    # odd -> i + 1. Padding keeps objects touching the border closed.
    up = np.pad(np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1), 1)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_NONE,
                                           offset=(-1, -1))
    if hierarchy is None or np.any(hierarchy[0][:, 3] >= 0):
        return None
    polys = []
    for contour in contours:
        pts = contour.reshape(-1, 2)
        pts = pts // 2 + pts % 2
        # Drop repeated points, then the middle of straight runs.
        pts = pts[np.any(pts != np.roll(pts, 1, axis=0), axis=1)]
        step = pts - np.roll(pts, 1, axis=0)
        turn = np.any(step != np.roll(step, -1, axis=0), axis=1)
        pts = pts[turn].astype(np.float64)
        if len(pts) < 3:
            return None
        polys.append(pts)
    if sum(_polygon_area(p) for p in polys) != np.count_nonzero(mask):
        return None  # guard: the outline must enclose exactly the pixels
    return polys


# --------------------------------------------------------------------------
# Image rendering
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


def _pick_colour(rng: np.random.Generator, palette: np.ndarray,
                 reference: np.ndarray, minimum: float,
                 variants: bool) -> np.ndarray:
    """First palette colour (random order) contrasting with ``reference``.

    With ``variants`` the light tint and dark shade used for a person's
    left/right limbs must contrast too. Falls back to the best candidate.
    """
    best, best_score = palette[0], -1.0
    for idx in rng.permutation(len(palette)):
        colour = palette[idx]
        cands = _person_colours(colour).values() if variants else [colour]
        score = min(_contrast(c, reference) for c in cands)
        if score >= minimum:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def _person_colours(body: np.ndarray) -> Dict[int, np.ndarray]:
    """Label -> BGR colour: light tint for the left side, dark for right."""
    light = body + 0.45 * (255.0 - body)
    dark = 0.55 * body
    return {_BODY: body, _LEFT: light, _LEFT_EYE: light, _RIGHT: dark,
            _RIGHT_EYE: dark}


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
    poly = _quantize(outline + np.array([cx, cy]))
    return poly, _fill_convex(poly, width, height)


def _fill_convex(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Mask of the pixels whose centre lies inside a convex polygon.

    This is the rule ``pycocotools`` rasterises polygons with, so the drawn
    pixels and ``annToMask`` agree (``cv2.fillPoly`` also paints pixels the
    outline merely touches, about half a pixel of fat all around).
    """
    mask = np.zeros((height, width), np.uint8)
    x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + 1,
                        (width, height))
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    # Orient counter-clockwise (in y-down image axes: positive cross).
    signed = np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) -
                    np.roll(poly[:, 0], -1) * poly[:, 1])
    if signed < 0:
        poly = poly[::-1]
    inside = np.ones(xs.shape, bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        inside &= (bx - ax) * (ys - ay) - (by - ay) * (xs - ax) >= 0
    mask[y0:y1, x0:x1] = inside
    return mask


def _try_person(
    rng: np.random.Generator, width: int, height: int
) -> Optional[Tuple[List[np.ndarray], np.ndarray, np.ndarray, np.ndarray]]:
    """One random placement of a person.

    Returns ``(polygons, mask, labels, keypoints)`` or ``None`` when the
    pose is unusable (holes, too little visible, or it does not fit).
    """
    short = min(width, height)
    pose = _person_pose(rng, rng.uniform(*_PERSON_HEIGHT_RANGE) * short)
    pad = pose.thickness / 2.0 + 1.0
    pts = np.concatenate([
        pose.keypoints, pose.head_centre[None] - pose.head_radius,
        pose.head_centre[None] + pose.head_radius
    ])
    lo, hi = pts.min(0) - pad, pts.max(0) + pad
    size = hi - lo
    if rng.random() < _TRUNCATION_PROB:
        # Let up to 30 % of the figure's extent leave the image.
        slack = 0.3 * size
    else:
        slack = -np.full(2, _BORDER_MARGIN)
    limits = np.array([width - 1, height - 1], np.float64)
    low = -lo - slack
    high = limits - hi + slack
    if np.any(high < low):
        return None
    offset = _quantize(rng.uniform(low, high))

    # Draw on a padded canvas to know the full (untruncated) pixel count.
    border = int(math.ceil(max(size.max(), 1.0))) + 4
    canvas = np.zeros((height + 2 * border, width + 2 * border), np.uint8)
    _draw_person_labels(canvas, pose, offset + border)
    full = int(np.count_nonzero(canvas))
    labels = np.ascontiguousarray(canvas[border:border + height,
                                         border:border + width])
    mask = (labels > 0).astype(np.uint8)
    visible = int(np.count_nonzero(mask))
    if full == 0 or visible < _MIN_VISIBLE_FRACTION * full:
        return None
    polys = _pixel_outline(mask)
    if polys is None or len(polys) != 1:
        return None  # one connected, hole-free figure only

    kpts = pose.keypoints + offset
    inside = ((kpts[:, 0] >= 0) & (kpts[:, 0] <= width - 1) &
              (kpts[:, 1] >= 0) & (kpts[:, 1] <= height - 1))
    if not inside.any():
        return None
    # A keypoint inside the image must sit on a drawn pixel, so that v=2
    # ("labelled and visible") is true of the picture.
    cols = np.clip(np.round(kpts[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(kpts[:, 1]).astype(int), 0, height - 1)
    if not np.all(mask[rows[inside], cols[inside]]):
        return None
    keypoints = np.zeros((17, 3))
    keypoints[inside, :2] = kpts[inside] + 0.5  # pixel centre -> COCO
    keypoints[inside, 2] = 2
    return polys, mask, labels, keypoints


def render_synthetic_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    min_objects: int = 1,
    max_objects: int = 4,
    person_prob: float = 0.8,
) -> Tuple[np.ndarray, List[SyntheticObject]]:
    """Render one image and describe what was drawn.

    Args:
        rng: Source of all randomness; the result is a pure function of its
            state and the other arguments.
        width: Image width in px, in ``[MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]``.
        height: Image height in px, same range.
        min_objects: Fewest objects attempted (>= 1).
        max_objects: Most objects attempted (>= ``min_objects``).
        person_prob: Probability that the image contains a person; the
            other objects are shapes of uniformly random class.

    Returns:
        ``(image, objects)``: a ``(height, width, 3)`` uint8 BGR image and
        the objects in drawing order. Objects never share or touch pixels
        and their boxes overlap with IoU <= 0.3; an object that finds no
        such place in 40 tries is left out, so fewer than ``min_objects``
        may be drawn on crowded images (never zero). Shapes lie fully
        inside the image; a person is occasionally (15 %) cut by the image
        border, keeping >= 60 % of its pixels, and its keypoints outside the
        image are ``(0, 0, 0)``.
    """
    _check_render_args(width, height, min_objects, max_objects, person_prob)
    background = _background(rng, width, height)
    image = background.copy()
    occupied = np.zeros((height, width), np.uint8)
    gap_kernel = np.ones((2 * _OBJECT_GAP + 1, 2 * _OBJECT_GAP + 1),
                         np.uint8)

    count = int(rng.integers(min_objects, max_objects + 1))
    categories = [
        str(SHAPE_CLASSES[i])
        for i in rng.integers(0, len(SHAPE_CLASSES), size=count)
    ]
    if rng.random() < person_prob:
        categories[0] = 'person'  # the biggest object goes first: packs best

    objects: List[SyntheticObject] = []
    for category in categories:
        for _ in range(_PLACEMENT_ATTEMPTS):
            keypoints = labels = None
            if category == 'person':
                attempt = _try_person(rng, width, height)
                if attempt is None:
                    continue
                polys, mask, labels, keypoints = attempt
            else:
                poly, mask = _try_shape(rng, category, width, height)
                polys = [poly + 0.5]  # cv2 pixel centres -> COCO coordinates
            bbox = _polygons_bbox(polys)
            if any(_box_iou(bbox, o.bbox) > _MAX_BOX_IOU for o in objects):
                continue
            if np.any(occupied[mask > 0]):
                continue
            break
        else:
            continue  # no room left for this object

        inside = mask > 0
        reference = background[inside].mean(axis=0)
        if category == 'person':
            body = _pick_colour(rng, _PERSON_COLOURS, reference,
                                _MIN_PERSON_CONTRAST, variants=True)
            for label, colour in _person_colours(body).items():
                image[labels == label] = colour
        else:
            image[inside] = _pick_colour(rng, _SHAPE_COLOURS, reference,
                                         _MIN_SHAPE_CONTRAST, False)
        occupied |= cv2.dilate(mask, gap_kernel)
        objects.append(
            SyntheticObject(
                category=category,
                polygons=tuple(polys),
                bbox=bbox,
                area=float(sum(_polygon_area(p) for p in polys)),
                keypoints=keypoints))

    if not objects:  # cannot happen: the first object always fits
        raise RuntimeError('no object could be placed')
    # Sensor-like noise over everything, so objects are not perfectly flat.
    image += rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), objects


# --------------------------------------------------------------------------
# COCO files
# --------------------------------------------------------------------------
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
    ann = dict(
        id=ann_id,
        image_id=image_id,
        category_id=SYNTHETIC_COCO_CLASSES.index(obj.category) + 1,
        segmentation=[[float(v) for v in p.reshape(-1)]
                      for p in obj.polygons],
        area=round(obj.area, 2),
        bbox=[round(v, 4) for v in obj.bbox],
        iscrowd=0)
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
        contributor='dynconv_mm.datasets.synthetic_coco',
        date_created='',
        generator_args=params)


_LICENSES = [
    dict(id=1, name='CC0 1.0 (synthetic data)',
         url='https://creativecommons.org/publicdomain/zero/1.0/')
]


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
    min_objects: int = 1,
    max_objects: int = 4,
    person_prob: float = 0.8,
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
        min_objects: Fewest objects attempted per image (>= 1).
        max_objects: Most objects attempted per image (>= ``min_objects``).
        person_prob: Probability that an image contains a person.

    Returns:
        Written paths as strings: ``data_root``, ``instances_train``,
        ``instances_val``, ``person_keypoints_train``,
        ``person_keypoints_val``, ``train_img_dir``, ``val_img_dir``.

    Raises:
        ValueError: An argument is out of range; the message names it.

    Both ``instances_*`` (all categories; person annotations keep their
    keypoints) and ``person_keypoints_*`` (category ``person`` only) list
    every image of the split with the same image ids, as real COCO does; an
    image without a person simply has no keypoint annotation. Annotation
    ids are ``1..N`` within each file.
    """
    num_train = _check_int('num_train', num_train, 1)
    num_val = _check_int('num_val', num_val, 1)
    seed = _check_int('seed', seed, 0)
    _check_render_args(width, height, min_objects, max_objects, person_prob)
    params = dict(
        seed=seed, width=int(width), height=int(height),
        min_objects=int(min_objects), max_objects=int(max_objects),
        person_prob=float(person_prob))

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
            image, objects = render_synthetic_image(
                rng, int(width), int(height), min_objects=min_objects,
                max_objects=max_objects, person_prob=person_prob)
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
