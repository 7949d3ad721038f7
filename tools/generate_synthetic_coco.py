"""Write a small synthetic COCO-format dataset (detection + keypoints).

Example::

    python tools/generate_synthetic_coco.py data/synthetic_coco \
        --num-train 64 --num-val 16 --seed 0 --width 256 --height 192
    # keypoint scenes: several overlapping persons, large and cut persons,
    # crowds, hidden joints (what the pose configs train on)
    python tools/generate_synthetic_coco.py data/synthetic_coco_pose \
        --preset keypoints

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

from dynconv_mm.datasets import (SCENE_PRESETS,  # noqa: E402
                                 generate_synthetic_coco)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a deterministic synthetic COCO-format '
        'dataset (rectangles, ellipses, triangles, stick-figure '
        'persons with the 17 COCO keypoints, crowds).')
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
    parser.add_argument(
        '--preset', choices=sorted(SCENE_PRESETS), default='detection',
        help='scene options to start from (default: detection); the '
        'options below override single entries')
    for name, kind, what in (
            ('min_objects', int, 'fewest objects per image'),
            ('max_objects', int, 'most objects per image'),
            ('person_prob', float, 'probability that an image has persons'),
            ('max_persons', int, 'most persons in an image'),
            ('large_person_prob', float, 'chance of a large person'),
            ('crowd_prob', float, 'chance of a crowd region'),
            ('truncation_prob', float,
             'chance a person may be cut by the border'),
            ('hidden_drop_prob', float,
             'chance a hidden joint is left unlabelled (v=0, else v=1)')):
        defaults = ', '.join(f'{preset}: {options[name]}'
                             for preset, options in SCENE_PRESETS.items())
        parser.add_argument(f'--{name.replace("_", "-")}', type=kind,
                            default=None, help=f'{what} ({defaults})')
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
            preset=args.preset,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            person_prob=args.person_prob,
            max_persons=args.max_persons,
            large_person_prob=args.large_person_prob,
            crowd_prob=args.crowd_prob,
            truncation_prob=args.truncation_prob,
            hidden_drop_prob=args.hidden_drop_prob)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f'{key}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
