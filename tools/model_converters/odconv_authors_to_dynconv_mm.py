"""Convert an ODConv authors' ImageNet checkpoint (Li, Zhou, Yao, ICLR
2022; layout in dynconv_mm.models.pretrained.odconv_authors) into one of
our backbones, and report every key that could not be placed.

    python tools/model_converters/odconv_authors_to_dynconv_mm.py \\
        od_resnet50_4x.pth.tar od_resnet50_4x_dynconv_mm.pth \\
        --backbone od_resnet50_4x [--attention-norm none]

or ``--config CONFIG`` to convert into that config's ``model.backbone``.
The output loads with ``init_cfg=dict(type='Pretrained',
checkpoint='od_resnet50_4x_dynconv_mm.pth')`` on a backbone built with the
same options (the attention norm included).
"""
import argparse
import sys

from mmengine.config import Config

import dynconv_mm  # noqa: F401  (registers the types)
from dynconv_mm.models.backbones import PAPER_BACKBONES, paper_backbone
from dynconv_mm.models.pretrained.odconv_authors import (
    classifier_keys, convert_odconv_authors_checkpoint)

NORMS = {'none': None, 'bn': dict(type='BN')}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help="the authors' checkpoint (path or URL)")
    parser.add_argument('dst', help='where to write the converted one')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        '--backbone',
        choices=sorted(n for n in PAPER_BACKBONES if n.startswith('od_')),
        help='a paper backbone preset (authors\' layer: BN in the '
        'attention, unless --attention-norm none)')
    target.add_argument('--config',
                        help='a config whose model.backbone is '
                        'the target')
    parser.add_argument(
        '--attention-norm',
        choices=sorted(NORMS),
        help='override the target\'s attention_norm_cfg: "none" folds '
        'their attention BN into the FC (exact in eval mode), "bn" copies '
        'it; default: the preset\'s or config\'s own')
    parser.add_argument('--bn-eps',
                        type=float,
                        default=1e-5,
                        help='eps of their attention BN (default 1e-5)')
    parser.add_argument('--temperature',
                        type=float,
                        default=1.0,
                        help='temperature written into every attention '
                        '(their networks end training at 1)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.backbone:
        backbone = paper_backbone(args.backbone)
    else:
        backbone = Config.fromfile(args.config).model.backbone.to_dict()
    if args.attention_norm:
        conv_cfg = backbone.get('dynamic_conv_cfg')
        if not conv_cfg:
            print('error: the target backbone has no dynamic_conv_cfg',
                  file=sys.stderr)
            return 1
        backbone['dynamic_conv_cfg'] = dict(
            conv_cfg, attention_norm_cfg=NORMS[args.attention_norm])
    try:
        report = convert_odconv_authors_checkpoint(args.src, args.dst,
                                                   backbone, args.bn_eps,
                                                   args.temperature)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(report.summary())
    others = sorted(
        set(report.not_placed) - set(classifier_keys(report.not_placed)))
    if others:
        print(f'warning: {len(others)} keys not placed that are not the '
              f'classifier\'s: {", ".join(others)}')
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
