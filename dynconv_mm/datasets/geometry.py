"""Pixel geometry shared by the scene and the person model.

Coordinates: cv2 draws with pixel ``(i, j)`` centred on ``(i, j)``; COCO
annotations use pixel ``(i, j)`` covering ``[i, i+1] x [j, j+1]``, which is
how ``pycocotools`` rasterises polygons. Functions say which they use.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

SUBPIXEL_BITS = 4  # cv2 drawing `shift`: vertices on a 1/16 px grid
SUBPIXEL = 1 << SUBPIXEL_BITS


def rotation(angle_deg: float) -> np.ndarray:
    """2x2 rotation matrix."""
    t = math.radians(angle_deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t),
                                                    math.cos(t)]])


def quantize(points: np.ndarray) -> np.ndarray:
    """Snap to a 1/16 px grid: exact in JSON and in cv2 fixed point."""
    return np.round(np.asarray(points, np.float64) * SUBPIXEL) / SUBPIXEL


def fixed(points: np.ndarray) -> np.ndarray:
    """Quantized float points -> int32 fixed-point for cv2 ``shift``."""
    return np.round(points * SUBPIXEL).astype(np.int32)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon given as ``(N, 2)``."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) -
                           np.dot(y, np.roll(x, -1))))


def polygons_bbox(polys: Sequence[np.ndarray]) -> Tuple[float, ...]:
    """Tight ``(x, y, w, h)`` box of the polygons' vertices."""
    pts = np.concatenate(polys, axis=0)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def mask_bbox(mask: np.ndarray) -> Tuple[float, float, float, float]:
    """COCO ``(x, y, w, h)`` box of a mask's pixels (pixel edges)."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return (float(x0), float(y0), float(xs.max() + 1 - x0),
            float(ys.max() + 1 - y0))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x, y, w, h)`` boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def fill_convex(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Mask of the pixels whose centre lies inside a convex polygon.

    ``poly`` is in cv2 (pixel-centre) coordinates. This is the rule
    ``pycocotools`` rasterises polygons with, so the drawn pixels and
    ``annToMask`` agree (``cv2.fillPoly`` also paints pixels the outline
    merely touches, about half a pixel of fat all around).
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


def pixel_outline(mask: np.ndarray) -> Optional[List[np.ndarray]]:
    """Polygons running along the pixel edges of a binary mask.

    Returned in COCO coordinates, one polygon per connected part, so they
    enclose exactly the mask's pixels and their area is the pixel count.
    ``None`` if the mask has holes: COCO polygons cannot express them
    (``annToMask`` would fill them), so the caller rejects such a mask.
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
    if sum(polygon_area(p) for p in polys) != np.count_nonzero(mask):
        return None  # guard: the outline must enclose exactly the pixels
    return polys


def mask_to_rle(mask: np.ndarray) -> Dict[str, list]:
    """Uncompressed COCO RLE of a binary mask (what COCO's crowds use).

    ``counts`` alternate runs of 0 and 1 over the mask in column-major
    order, starting with a (possibly empty) run of zeros; ``size`` is
    ``[height, width]``. ``pycocotools.mask.frPyObjects`` reads it.
    """
    flat = np.asarray(mask, bool).flatten(order='F')
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])],
                counts=[int(c) for c in counts])
