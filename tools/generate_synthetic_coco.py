"""Write a small synthetic COCO-format dataset (detection + keypoints).

Example::

    python tools/generate_synthetic_coco.py data/synthetic_coco \
        --num-train 64 --num-val 16 --seed 0 --width 256 --height 192

The output has the real COCO layout (``annotations/instances_*2017.json``,
``annotations/person_keypoints_*2017.json``, ``train2017/``, ``val2017/``),
so a COCO config only needs ``data_root`` (and mmdet's ``metainfo``, see
``dynconv_mm.datasets.SYNTHETIC_COCO_METAINFO``) changed.
"""
from __future__ import annotations

import argparse
import importlib.util
import os.path as osp
import sys
from typing import List, Optional

if importlib.util.find_spec('dynconv_mm') is None:
    # Allow running from a source checkout that is not pip-installed.
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from dynconv_mm.datasets import generate_synthetic_coco  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a deterministic synthetic COCO-format '
        'dataset (rectangles, ellipses, triangles and stick-figure '
        'persons with the 17 COCO keypoints).')
    parser.add_argument('out_dir', help='dataset root to write')
    parser.add_argument('--num-train', type=int, default=64,
                        help='number of training images (default: 64)')
    parser.add_argument('--num-val', type=int, default=16,
                        help='number of validation images (default: 16)')
    parser.add_argument('--width', type=int, default=256,
                        help='image width in px (default: 256)')
    parser.add_argument('--height', type=int, default=192,
                        help='image height in px (default: 192)')
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed; same arguments give identical '
                        'files (default: 0)')
    parser.add_argument('--min-objects', type=int, default=1,
                        help='fewest objects per image (default: 1)')
    parser.add_argument('--max-objects', type=int, default=4,
                        help='most objects per image (default: 4)')
    parser.add_argument('--person-prob', type=float, default=0.8,
                        help='probability that an image contains a person '
                        '(default: 0.8)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        paths = generate_synthetic_coco(
            args.out_dir,
            num_train=args.num_train,
            num_val=args.num_val,
            width=args.width,
            height=args.height,
            seed=args.seed,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            person_prob=args.person_prob)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f'{key}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
