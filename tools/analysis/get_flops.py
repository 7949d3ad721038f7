"""Parameters and multiply-accumulates of the model a config builds,
dynamic convolutions included, at batch 1 and without any dataset.

    python tools/analysis/get_flops.py CONFIG [--shape H W]
        [--convention {paper,executed}] [--imagenet-classifier [N]]
        [--classifier-hidden C] [--depth D] [--no-strict]
        [--cfg-options KEY=VALUE ...]

CONFIG is a path or a toolbox's own config (``mmdet::faster_rcnn/
faster-rcnn_r50_fpn_1x_coco.py``). ``--shape`` defaults to the test
pipeline's resize size (e.g. 800x1333 for COCO detectors, padded by the
model to 800x1344). ``--imagenet-classifier`` counts only the backbone plus
a global-pool + N-class FC (default 1000) at 224x224, as the papers'
ImageNet tables do (``--classifier-hidden 1280``: MobileNetV3's head with a
hidden FC). The counting convention is documented in
``dynconv_mm/analysis/complexity.py``; an operator of unknown cost is an
error unless ``--no-strict`` (then it is listed).
"""
import argparse

from mmengine.config import DictAction

from dynconv_mm.analysis import CONVENTIONS, format_count
from dynconv_mm.analysis.config_complexity import count_config_complexity


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0].replace('\n', ' '))
    parser.add_argument('config', help='config file, or mmdet::/mmpose::'
                        'path of a config the toolbox ships')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width')
    parser.add_argument('--convention', choices=CONVENTIONS,
                        default='paper',
                        help='how a dynamic conv\'s kernel aggregation is '
                        'counted (default: paper)')
    parser.add_argument('--imagenet-classifier', type=int, nargs='?',
                        const=1000, default=None, metavar='N',
                        help='count the backbone with an N-class ImageNet '
                        'head (default N: 1000)')
    parser.add_argument('--classifier-hidden', type=int, default=None,
                        metavar='C', help='hidden FC width of that '
                        'classifier (MobileNetV3: 1024 or 1280)')
    parser.add_argument('--depth', type=int, default=2,
                        help='module depth of the per-module table')
    parser.add_argument('--no-strict', action='store_true',
                        help='list operators of unknown cost instead of '
                        'failing')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys')
    args = parser.parse_args()
    if args.shape is not None and min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    if args.classifier_hidden is not None and \
            args.imagenet_classifier is None:
        parser.error('--classifier-hidden needs --imagenet-classifier')
    result = count_config_complexity(
        args.config,
        tuple(args.shape) if args.shape else None,
        convention=args.convention,
        strict=not args.no_strict,
        imagenet_classifier=args.imagenet_classifier,
        classifier_hidden=args.classifier_hidden,
        cfg_options=args.cfg_options)
    report = result.report
    print(report.table(args.depth))
    line = '=' * 40
    height, width = result.input_shape
    print(line)
    print(f'Model: {result.model_type}'
          + (f' + {args.imagenet_classifier}-class classifier'
             if args.imagenet_classifier else ''))
    print(f'Input shape: {height}x{width} (batch 1)')
    if 'rois' in result.notes:
        own = result.notes.get('rpn_proposals')
        print(f'RoI head run on: {result.notes["rois"]} proposals'
              + (f' (test_cfg max_per_img; the untrained RPN kept {own})'
                 if own is not None else ''))
    print(f'MACs: {format_count(report.macs)} ({report.macs:,})')
    print(f'Params: {format_count(report.params)} ({report.params:,})')
    print(f'Dynamic convs counted as: {report.convention}')
    print(line)


if __name__ == '__main__':
    main()
