"""The synthetic person: a front-facing stick figure with COCO's 17 joints.

A figure is a filled torso, a head disc, two eye dots and eight thick limb
segments, painted in a fixed order (torso, head, right limbs, left limbs,
eyes), each segment under its own *part label*. The label map says which
part the picture shows at each pixel, and so whether a joint is seen:
joint ``j`` is visible where the top-most part at its pixel is one of the
parts that meet at ``j`` (:data:`JOINT_PARTS`); a wrist under the other
arm, or a nose under a raised forearm, is hidden (COCO ``v=1``).

Left/right cue
    Every figure faces the viewer, exactly like the COCO convention, so the
    person's *left* shoulder, hip, eye and ear are on the *image right* of
    the body's midline; that geometric cue is what makes the labels
    well-posed, also under flip augmentation (a mirrored front-facing figure
    is again a front-facing figure with swapped labels). In addition, the
    left arm, left leg and left eye are painted in a *lighter* tint of the
    body colour and the right ones in a *darker* shade, so a model can tell
    which limb is which where limbs cross the torso or each other. The
    absolute shade is not flip-invariant (after a horizontal flip the light
    limbs carry the ``right_*`` labels); it helps to follow a limb, the side
    itself comes from geometry.
"""
import math
from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple

import cv2
import numpy as np

from .geometry import (SUBPIXEL, SUBPIXEL_BITS, fixed, pixel_outline,
                       quantize, rotation)

# Part labels, in painting order (later parts cover earlier ones).
TORSO, HEAD = 1, 2
R_UPPER_ARM, R_FOREARM, R_THIGH, R_SHIN = 3, 4, 5, 6
L_UPPER_ARM, L_FOREARM, L_THIGH, L_SHIN = 7, 8, 9, 10
L_EYE, R_EYE = 11, 12
NUM_PARTS = 12

#: For each of the 17 COCO joints, the parts that meet there: the joint is
#: visible when the top-most part at its pixel is one of these.
JOINT_PARTS: Tuple[FrozenSet[int], ...] = tuple(
    frozenset(p) for p in (
        (HEAD, ), (L_EYE, ), (R_EYE, ), (HEAD, ), (HEAD, ),  # face
        (L_UPPER_ARM, ), (R_UPPER_ARM, ),  # shoulders
        (L_UPPER_ARM, L_FOREARM), (R_UPPER_ARM, R_FOREARM),  # elbows
        (L_FOREARM, ), (R_FOREARM, ),  # wrists
        (L_THIGH, ), (R_THIGH, ),  # hips
        (L_THIGH, L_SHIN), (R_THIGH, R_SHIN),  # knees
        (L_SHIN, ), (R_SHIN, )))  # ankles

# Colour class of each part label (index = label): 0 body, 1 light (left),
# 2 dark (right). Index 0 (background) is unused.
_PART_SHADE = np.array([0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1, 1, 2])

#: A figure's height as a fraction of the image's shorter side; the floor
#: keeps the face keypoints a few pixels apart. Large persons fill most of
#: the image, as COCO's large instances fill most of a 256x192 crop.
PERSON_HEIGHT_RANGE = (0.3, 0.6)
LARGE_PERSON_HEIGHT_RANGE = (0.6, 0.95)
_BORDER_MARGIN = 2.0  # px kept free around persons not cut by the border
_MIN_VISIBLE_FRACTION = 0.6  # of a truncated person's pixels


@dataclass(frozen=True)
class PersonPose:
    """A stick figure in pixels, before translation into the image."""

    keypoints: np.ndarray  # (17, 2) in COCO joint order, cv2 coordinates
    head_centre: np.ndarray  # (2,)
    head_radius: float
    neck: np.ndarray  # (2,)
    thickness: int  # limb line width in px
    eye_radius: float


@dataclass(frozen=True)
class PersonDrawing:
    """One person placed in an image (nothing painted yet).

    Attributes:
        mask: ``(H, W)`` uint8, the figure's pixels inside the image.
        parts: ``(H, W)`` uint8 part labels (0 outside the figure).
        joints: ``(17, 2)`` joint positions in cv2 (pixel-centre)
            coordinates, possibly outside the image.
        in_image: ``(17,)`` bool, joint inside the image.
    """

    mask: np.ndarray
    parts: np.ndarray
    joints: np.ndarray
    in_image: np.ndarray


def shade_colours(body: np.ndarray) -> Tuple[np.ndarray, ...]:
    """``(body, light tint, dark shade)`` BGR colours of one person."""
    return body, body + 0.45 * (255.0 - body), 0.55 * body


def paint_person(image: np.ndarray, parts: np.ndarray,
                 body: np.ndarray) -> None:
    """Paint a figure's part map into ``image`` in its three shades."""
    shade = _PART_SHADE[parts]
    for index, colour in enumerate(shade_colours(body)):
        image[(parts > 0) & (shade == index)] = colour


def person_pose(rng: np.random.Generator, height: float) -> PersonPose:
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
    tilt = rotation(rng.uniform(-15.0, 15.0))
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

    rot = rotation(rng.uniform(-15.0, 15.0))
    centre = np.array([0.0, 0.5])

    def place(p: np.ndarray) -> np.ndarray:
        return quantize(((p - centre) @ rot.T) * height)

    thickness = max(2, int(round(height * rng.uniform(0.04, 0.06))))
    return PersonPose(
        keypoints=place(kpt),
        head_centre=place(head),
        head_radius=r_head * height,
        neck=place(neck),
        thickness=thickness,
        eye_radius=max(1.0, 0.2 * r_head * height))


def draw_person_parts(canvas: np.ndarray, pose: PersonPose,
                      offset: np.ndarray) -> None:
    """Paint the figure's part labels into a single-channel ``canvas``.

    Lines are drawn without anti-aliasing so the label map, the painted
    image and the annotation mask are exactly the same pixels.
    """
    k = fixed(pose.keypoints + offset)
    t = pose.thickness

    def line(a: np.ndarray, b: np.ndarray, label: int) -> None:
        cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b),
                 label, t, cv2.LINE_8, SUBPIXEL_BITS)

    # Torso: filled quadrilateral shoulders-hips, outlined so its corners are
    # as round as the limbs joining it.
    torso = k[[5, 6, 12, 11]]
    cv2.fillPoly(canvas, [torso], TORSO, cv2.LINE_8, SUBPIXEL_BITS)
    cv2.polylines(canvas, [torso], True, TORSO, t, cv2.LINE_8,
                  SUBPIXEL_BITS)
    head = fixed(pose.head_centre + offset)
    neck = fixed(pose.neck + offset)
    line(head, neck, HEAD)
    cv2.circle(canvas, tuple(int(v) for v in head),
               int(round(pose.head_radius * SUBPIXEL)), HEAD, -1,
               cv2.LINE_8, SUBPIXEL_BITS)
    for first, (s, e, w, h, kn, a) in ((R_UPPER_ARM, (6, 8, 10, 12, 14, 16)),
                                       (L_UPPER_ARM, (5, 7, 9, 11, 13, 15))):
        line(k[s], k[e], first)  # upper arm
        line(k[e], k[w], first + 1)  # forearm
        line(k[h], k[kn], first + 2)  # thigh
        line(k[kn], k[a], first + 3)  # shin
    r_eye = int(round(pose.eye_radius * SUBPIXEL))
    for label, idx in ((L_EYE, 1), (R_EYE, 2)):
        cv2.circle(canvas, tuple(int(v) for v in k[idx]), r_eye, label, -1,
                   cv2.LINE_8, SUBPIXEL_BITS)


def draw_person(rng: np.random.Generator, width: int, height: int, *,
                large: bool,
                truncation_prob: float) -> Optional[PersonDrawing]:
    """One random placement of a person in a ``width x height`` image.

    Args:
        rng: Randomness source.
        width, height: Image size in px.
        large: Draw the height from :data:`LARGE_PERSON_HEIGHT_RANGE`.
        truncation_prob: Chance that up to 30 % of the figure's extent may
            leave the image (keeping >= 60 % of its pixels).

    Returns:
        The placement, or ``None`` when the pose is unusable (holes, too
        little visible, no joint in the image, or it does not fit).
    """
    short = min(width, height)
    span = LARGE_PERSON_HEIGHT_RANGE if large else PERSON_HEIGHT_RANGE
    pose = person_pose(rng, rng.uniform(*span) * short)
    pad = pose.thickness / 2.0 + 1.0
    pts = np.concatenate([
        pose.keypoints, pose.head_centre[None] - pose.head_radius,
        pose.head_centre[None] + pose.head_radius
    ])
    lo, hi = pts.min(0) - pad, pts.max(0) + pad
    size = hi - lo
    if rng.random() < truncation_prob:
        slack = 0.3 * size  # up to 30 % of the extent may leave the image
    else:
        slack = -np.full(2, _BORDER_MARGIN)
    limits = np.array([width - 1, height - 1], np.float64)
    low = -lo - slack
    high = limits - hi + slack
    if np.any(high < low):
        return None
    offset = quantize(rng.uniform(low, high))

    # Draw on a padded canvas to know the full (untruncated) pixel count.
    border = int(math.ceil(max(size.max(), 1.0))) + 4
    canvas = np.zeros((height + 2 * border, width + 2 * border), np.uint8)
    draw_person_parts(canvas, pose, offset + border)
    full = int(np.count_nonzero(canvas))
    parts = np.ascontiguousarray(canvas[border:border + height,
                                        border:border + width])
    mask = (parts > 0).astype(np.uint8)
    visible = int(np.count_nonzero(mask))
    if full == 0 or visible < _MIN_VISIBLE_FRACTION * full:
        return None
    outline = pixel_outline(mask)
    if outline is None or len(outline) != 1:
        return None  # one connected, hole-free figure only

    joints = pose.keypoints + offset
    in_image = ((joints[:, 0] >= 0) & (joints[:, 0] <= width - 1) &
                (joints[:, 1] >= 0) & (joints[:, 1] <= height - 1))
    if not in_image.any():
        return None
    # A joint inside the image must sit on the drawn figure (its own part
    # or one painted over it), so that its label is about the picture.
    cols = np.clip(np.round(joints[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(joints[:, 1]).astype(int), 0, height - 1)
    if not np.all(mask[rows[in_image], cols[in_image]]):
        return None
    return PersonDrawing(mask=mask, parts=parts, joints=joints,
                         in_image=in_image)


def joint_pixels(joints: np.ndarray) -> np.ndarray:
    """``(N, 2)`` integer ``(col, row)`` of the pixel each joint lies in.

    A joint at cv2 coordinate ``p`` is at COCO coordinate ``p + 0.5``,
    inside pixel ``floor(p + 0.5)``.
    """
    return np.floor(joints + 0.5).astype(int)
