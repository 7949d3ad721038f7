"""The tables of ``docs/model_zoo.md``: parameters and multiply-accumulates
of the papers' ImageNet backbones and of every shipped detection and
keypoint config, measured by ``dynconv_mm.analysis`` (the counter of
``tools/analysis/get_flops.py``), next to the papers' numbers.

    python tools/analysis/model_zoo_table.py imagenet
    python tools/analysis/model_zoo_table.py detection [CONFIG ...]
    python tools/analysis/model_zoo_table.py pose [CONFIG ...]
        [--convention {paper,executed}] [--json OUT]
    python tools/analysis/model_zoo_table.py TABLE --from-json OUT [OUT ...]

Prints a markdown table. ``imagenet`` counts every preset of
``PAPER_BACKBONES`` at 224x224 with a 1000-class classifier, as the
papers' tables do. ``detection`` / ``pose`` count each config (default:
every one shipped under ``configs/detection``, ``configs/odconv`` /
``configs/pose``, and the toolbox's own static configs they follow) at
its test pipeline's input size, all in this one process. ``--from-json``
prints a table again from the rows earlier runs wrote. The papers'
numbers below are references typed in from ``../shared/PAPERS.md`` with
its tags ([V] primary source, [S] secondary, [U] unconfirmed);
everything else in a table is measured.
"""
import argparse
import glob
import json
import os.path as osp
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
M = 1e6

# --- the papers' numbers (references, not results) -----------------------

# ImageNet, 1000-class classifier included: preset -> (params M, MAdds M,
# source). None: the paper gives no such number.
ODCONV, DYCONV, DYNET = 'ODConv [V]', 'DynamicConv [S]', 'DyNet [V]'
PAPER_IMAGENET: Dict[str, Tuple[Optional[float], Optional[float], str]] = {
    'resnet18': (11.69, 1814, ODCONV),
    'od_resnet18_1x': (11.94, 1838, ODCONV),
    'od_resnet18_4x': (44.90, 1916, ODCONV),
    'resnet50': (25.56, 3858, ODCONV),
    'od_resnet50_1x': (28.64, 3916, ODCONV),
    'od_resnet50_4x': (90.67, 4080, ODCONV),
    'mobilenetv2_100': (3.50, 300.8, ODCONV),
    'od_mobilenetv2_100_1x': (4.94, 311.8, ODCONV),
    'od_mobilenetv2_100_4x': (11.51, 327.1, ODCONV),
    'mobilenetv2_075': (2.64, 209.1, ODCONV),
    'od_mobilenetv2_075_1x': (3.51, 217.1, ODCONV),
    'od_mobilenetv2_075_4x': (7.50, 226.3, ODCONV),
    'mobilenetv2_050': (1.97, 97.1, ODCONV),
    'od_mobilenetv2_050_1x': (2.43, 101.8, ODCONV),
    'od_mobilenetv2_050_4x': (4.44, 106.4, ODCONV),
    'dy_resnet18': (42.7, 1850, DYCONV),
    'dy_mobilenetv2_100': (11.1, 312.9, DYCONV),
    'mobilenetv3_small': (2.9, 66.0, DYCONV),
    'dy_mobilenetv3_small': (4.8, 68.5, DYCONV),
    # DyNet's MFLOPs are on another scale than conv+FC MAdds (its static
    # ResNet-18/50 are 1730/3890): compare the FLOP cut against the static
    # network, also stated in DyNet's abstract (67.2% / 71.3%).
    'dynet_resnet18': (None, 550, DYNET),
    'dynet_resnet50': (None, 1075, DYNET),
}
# DyNet preset -> (our static preset, paper static MFLOPs, abstract's cut).
DYNET_STATIC = {'dynet_resnet18': ('resnet18', 1730, 0.672),
                'dynet_resnet50': ('resnet50', 3890, 0.713)}

# Why a row differs from the paper by more than 0.5% (the analyses are in
# tests/test_models/test_backbone_param_counts.py and
# tests/test_analysis/test_paper_tables.py).
IMAGENET_REASONS = {
    'od_resnet50_4x': 'MAdds: the table\'s R50 4x-1x step implies ~9 MAdds '
    'per extra 1x1 kernel element where its R18 and MobileNetV2 steps '
    'imply 7; params match',
    'od_mobilenetv2_075_1x': 'MAdds: ours - paper is about the same at 1x '
    'and 4x (also at widths 1.0 and 0.5): not the kernels but the attention '
    'side, which the authors\' tool counts differently (not pinned down)',
    'od_mobilenetv2_075_4x': 'as 1x',
    'od_mobilenetv2_050_1x': 'as 0.75 1x',
    'od_mobilenetv2_050_4x': 'as 0.75 1x',
    'dy_resnet18': 'params: the paper\'s static ResNet-18 is 11.1M, '
    'torchvision\'s 11.69M (ours); the dynamic/static ratio matches (3.844 '
    'vs 3.847). MAdds: 1.86G vs a 3-digit 1.85G',
    'mobilenetv3_small': 'params: with a 576->1280->1000 head, rounding to '
    'the paper\'s 2.9M (torchvision\'s 1024-wide head: 2.54M). MAdds: the '
    'paper\'s 66.0M is 9M above conv+FC; MobileNetV3\'s own paper says 56M',
    'dy_mobilenetv3_small': 'MAdds: on the same scale as the paper\'s '
    'static baseline (see the row above); params within 0.5%',
    'dynet_resnet18': 'DyNet\'s MFLOPs are on another scale (static '
    '1730M): the FLOP cut is compared; ours (coefficient FCs and kernel '
    'fusion included) equals the abstract\'s, the table\'s matches the '
    'fused convs alone (tests)',
    'dynet_resnet50': 'as Dy-ResNet18 (stride in the 3x3, mmdet\'s '
    'default, on both sides)',
}

# ResNet-50 rows are counted with the stride in the 1x1 conv ('caffe'), as
# the ODConv table's 3.858G is; mmdet's default ('pytorch') costs more.
CAFFE_PRESETS = ('resnet50', 'od_resnet50_1x', 'od_resnet50_4x')
# MobileNetV3-Small: the DynamicConv paper's counts fit a 1280-wide hidden
# FC in the classifier.
CLASSIFIER_HIDDEN = {'mobilenetv3_small': 1280, 'dy_mobilenetv3_small': 1280}

# ODConv paper, COCO val, MMDetection 1x, 1000-class classifier included in
# the params: config stem -> (params M, box AP, mask AP, source).
PAPER_DETECTION: Dict[str, Tuple[float, float, Optional[float], str]] = {
    'faster-rcnn_r50_fpn_1x_coco': (43.80, 37.4, None, '[V]'),
    'faster-rcnn_r50-odconv4x_fpn_1x_coco': (108.91, 39.4, None, '[V]'),
    'faster-rcnn_mv2_fpn_1x_coco': (21.13, 31.8, None, '[V]'),
    'faster-rcnn_mv2-odconv4x_fpn_1x_coco': (29.14, 35.5, None, '[V]'),
    'mask-rcnn_r50_fpn_1x_coco': (46.45, 38.2, 34.6, '[V]'),
    'mask-rcnn_r50-odconv4x_fpn_1x_coco': (111.56, 40.2, 36.1, '[V]'),
    'mask-rcnn_mv2_fpn_1x_coco': (23.78, 32.4, 29.8, '[V]'),
    'mask-rcnn_mv2-odconv4x_fpn_1x_coco': (31.80, 36.0, 33.0, '[V]'),
}
# The ODConv paper's comparison of dynamic convs on Faster R-CNN R50
# (its baseline there: 37.2) [S].
PAPER_DETECTION_COMPARISON = {
    'faster-rcnn_r50-dyconv_fpn_1x_coco': '38.3 (DynamicConv 4x, in a '
    'comparison whose baseline is 37.2) [S]',
    'faster-rcnn_r50-odconv4x_fpn_1x_coco': '39.2 in that comparison [S]',
}

# Dynamic Convolution's keypoint study (COCO val AP): what is known, by
# backbone and setting (the config name's backbone and setting parts).
PAPER_POSE = {
    ('mobilenetv3-small', 'static'): 'dynamic +2.9 AP over static, '
    'setting not stated [V]',
    ('mobilenetv2-x0.5', 'static'): '59.2 AP [S], backbone [U]',
    ('mobilenetv2-x0.5', 'dy-head'): '60.3 AP [S], backbone [U]',
    ('mobilenetv2-x0.5', 'dy-backbone'): '62.3 AP [S], backbone [U]',
    ('mobilenetv2-x0.5', 'dy-both'): '62.8 AP [S], backbone [U]',
}


def paper_pose(stem: str) -> str:
    """What the paper says about the model of the study config named
    ``stem`` (``td-hm_<backbone>_<setting>_4xb32-210e_coco-256x192``)."""
    if stem.endswith('td-hm_mobilenetv2_8xb64-210e_coco-256x192'):
        return ('64.8 AP (MMPose, ImageNet-pretrained; not from the paper) '
                '[S]')
    parts = stem.split('_')
    if len(parts) < 3 or not stem.endswith('_coco-256x192'):
        return '–'
    return PAPER_POSE.get((parts[1], parts[2]), '–')


# --- measuring -----------------------------------------------------------


@dataclass
class Row:
    """One measured model."""
    name: str  # preset or config path relative to the repository
    params: int
    macs: int
    input_shape: Tuple[int, int]  # (H, W) the model saw, after padding
    parts: Dict[str, Tuple[int, int]]  # top module -> (params, MACs)
    extra: Dict[str, int]


def count_preset(name: str, convention: str = 'paper') -> Row:
    """A ``PAPER_BACKBONES`` preset with its 1000-class ImageNet classifier
    at 224x224 (ResNet-50 rows with ``style='caffe'``, MobileNetV3-Small
    with a 1280-wide hidden FC)."""
    from mmengine.config import Config

    from dynconv_mm.analysis.config_complexity import count_config_complexity
    from dynconv_mm.models.backbones import paper_backbone

    def count(**options) -> Tuple[int, int]:
        cfg = Config(dict(model=paper_backbone(name, **options),
                          default_scope='mmdet'))
        result = count_config_complexity(
            cfg, convention=convention, imagenet_classifier=1000,
            classifier_hidden=CLASSIFIER_HIDDEN.get(name))
        return result.report.params, result.report.macs

    extra = {}
    if name in CAFFE_PRESETS:
        params, macs = count(style='caffe')
        extra['macs_pytorch_style'] = count()[1]
    else:
        params, macs = count()
    return Row(name, params, macs, (224, 224), {}, extra)


def _relative(path: str) -> str:
    if '::' in path:  # a toolbox's own config
        return path
    path = osp.abspath(path)
    return osp.relpath(path, ROOT) if path.startswith(ROOT) else path


def count_config(path: str, convention: str = 'paper',
                 shape: Optional[Tuple[int, int]] = None) -> Row:
    """A config's model at its test input size (or ``shape``); ``extra``
    holds the 1000-class classifier the backbone's last output would take
    (``C*1000+1000``) and, for two-stage detectors, the RoIs counted."""
    import torch

    from dynconv_mm.analysis.config_complexity import (
        build_model, count_config_complexity, load_config)
    cfg = load_config(path)
    backbone = build_model(cfg).backbone
    with torch.no_grad():
        outputs = backbone(torch.zeros(1, 3, 64, 64))
    last = outputs if isinstance(outputs, torch.Tensor) else outputs[-1]
    del backbone
    result = count_config_complexity(cfg, shape, convention=convention)
    report = result.report
    parts = {
        part: (report.params_of(part), report.macs_of(part))
        for part in ('backbone', 'neck', 'rpn_head', 'roi_head', 'head')
        if report.params_of(part) or report.macs_of(part)
    }
    extra = dict(classifier_params=int(last.shape[1]) * 1000 + 1000)
    if 'rois' in result.notes:
        extra['rois'] = result.notes['rois']
    return Row(_relative(path), report.params, report.macs,
               result.input_shape, parts, extra)


# The toolboxes' own static configs that the paper configs follow,
# counted alongside as a cross-check of the tool and of our static builds.
REFERENCE_CONFIGS = {
    'detection': ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                  'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'],
    'pose': [
        'mmpose::body_2d_keypoint/topdown_heatmap/coco/'
        'td-hm_res50_8xb64-210e_coco-256x192.py',
        'mmpose::body_2d_keypoint/topdown_heatmap/coco/'
        'td-hm_mobilenetv2_8xb64-210e_coco-256x192.py',
    ],
}


def shipped_configs(kind: str) -> List[str]:
    if kind == 'detection':
        patterns = ['configs/detection/*.py', 'configs/odconv/*.py']
    else:
        patterns = ['configs/pose/**/*.py']
    paths = []
    for pattern in patterns:
        paths += sorted(
            p for p in glob.glob(osp.join(ROOT, pattern), recursive=True)
            if '_base_' not in p.split(osp.sep))
    return paths


# --- formatting ----------------------------------------------------------


def percent(ours: float, paper: float) -> str:
    """``ours`` relative to ``paper``, signed, in %."""
    return f'{(ours / paper - 1) * 100:+.2f}%'


def millions(count: int, digits: int = 2) -> str:
    return f'{count / M:.{digits}f}M'


def billions(count: int, digits: int = 2) -> str:
    return f'{count / 1e9:.{digits}f}G'


def imagenet_table(rows: Sequence[Row]) -> str:
    by_name = {row.name: row for row in rows}
    lines = [
        '| preset | params (ours) | params (paper) | diff | MAdds (ours) '
        '| MAdds (paper) | diff | source | why > 0.5% |',
        '|---|---|---|---|---|---|---|---|---|'
    ]
    for row in rows:
        paper_params, paper_macs, source = PAPER_IMAGENET[row.name]
        params_diff = percent(row.params, paper_params * M) \
            if paper_params else '–'
        if row.name in DYNET_STATIC:  # compare the FLOP cuts
            static_name, paper_static, abstract_cut = DYNET_STATIC[row.name]
            static = by_name[static_name]
            # Both in mmdet's default ResNet (stride in the 3x3).
            static_macs = static.extra.get('macs_pytorch_style', static.macs)
            cut = 1 - row.macs / static_macs
            macs_ours = (f'{row.macs / M:.1f}M (cut {cut * 100:.1f}% from '
                         f'our static {static_macs / M:.1f}M)')
            macs_paper = (f'{paper_macs:g}M (cut '
                          f'{(1 - paper_macs / paper_static) * 100:.1f}% '
                          f'from {paper_static}M; abstract: '
                          f'{abstract_cut * 100:.1f}%)')
            points = round((cut - abstract_cut) * 100, 1) + 0.0  # no -0.0
            macs_diff = f'cut {points:+.1f} pt vs abstract'
        else:
            macs_paper = f'{paper_macs:g}M'
            macs_ours = f'{row.macs / M:.1f}M'
            macs_diff = percent(row.macs, paper_macs * M)
        if 'macs_pytorch_style' in row.extra:
            macs_ours += (f' (caffe; pytorch style '
                          f'{row.extra["macs_pytorch_style"] / M:.1f}M)')
        reason = IMAGENET_REASONS.get(row.name, '')
        lines.append(
            f'| `{row.name}` | {row.params / M:.3f}M | '
            f'{f"{paper_params:g}M" if paper_params else "–"} | '
            f'{params_diff} | {macs_ours} | {macs_paper} | {macs_diff} | '
            f'{source} | {reason} |')
    return '\n'.join(lines)


def _stem(row: Row) -> str:
    return osp.splitext(osp.basename(row.name))[0]


def detection_table(rows: Sequence[Row]) -> str:
    lines = [
        '| config | params (ours) | + classifier | paper (with / without '
        'classifier) | diff | GMACs (input) | backbone GMACs | paper box / '
        'mask AP |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for row in rows:
        stem = _stem(row)
        classifier = row.extra['classifier_params']
        if stem in PAPER_DETECTION:
            params, box, mask, tag = PAPER_DETECTION[stem]
            without = params * M - classifier
            paper = f'{params:.2f}M / {without / M:.2f}M'
            diff = percent(row.params, without)
            ap = f'{box} / {mask if mask is not None else "–"} {tag}'
            if stem in PAPER_DETECTION_COMPARISON:
                ap += '; ' + PAPER_DETECTION_COMPARISON[stem]
        else:
            paper, diff = 'not in the paper', '–'
            ap = PAPER_DETECTION_COMPARISON.get(stem, '–')
        height, width = row.input_shape
        lines.append(
            f'| `{row.name}` | {millions(row.params)} | '
            f'{millions(row.params + classifier)} | {paper} | {diff} | '
            f'{billions(row.macs, 1)} ({height}x{width}) | '
            f'{billions(row.parts["backbone"][1], 1)} | {ap} |')
    return '\n'.join(lines)


def pose_table(rows: Sequence[Row]) -> str:
    lines = [
        '| config | backbone params | head params | params | head GMACs | '
        'GMACs (input) | paper |',
        '|---|---|---|---|---|---|---|'
    ]
    for row in rows:
        height, width = row.input_shape
        lines.append(
            f'| `{row.name}` | {millions(row.parts["backbone"][0])} | '
            f'{millions(row.parts["head"][0])} | {millions(row.params)} | '
            f'{billions(row.parts["head"][1], 3)} | '
            f'{billions(row.macs, 3)} ({height}x{width}) | '
            f'{paper_pose(_stem(row))} |')
    return '\n'.join(lines)


TABLES = {'imagenet': imagenet_table, 'detection': detection_table,
          'pose': pose_table}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('table', choices=sorted(TABLES))
    parser.add_argument('configs', nargs='*',
                        help='configs to count (default: every shipped '
                        'one of that kind; ignored for imagenet)')
    parser.add_argument('--convention', default='paper',
                        choices=('paper', 'executed'))
    parser.add_argument('--json', help='also write the measured rows here')
    parser.add_argument('--from-json', metavar='JSON', nargs='+',
                        help='print the table of the rows --json runs '
                        'wrote, without counting again')
    args = parser.parse_args(argv)
    import dynconv_mm  # noqa: F401  (registers the types)
    if args.from_json:
        rows = []
        for path in args.from_json:
            with open(path) as f:
                rows += [Row(**row) for row in json.load(f)]
    elif args.table == 'imagenet':
        from dynconv_mm.models.backbones import PAPER_BACKBONES
        missing = set(PAPER_BACKBONES) - set(PAPER_IMAGENET)
        if missing:
            raise ValueError(f'model_zoo_table: no paper numbers for the '
                             f'presets {sorted(missing)}')
        rows = [count_preset(name, args.convention)
                for name in PAPER_IMAGENET]
    else:
        rows = []
        paths = args.configs or (shipped_configs(args.table) +
                                 REFERENCE_CONFIGS[args.table])
        for path in paths:
            print(f'counting {_relative(path)}', file=sys.stderr, flush=True)
            rows.append(count_config(path, args.convention))
    print(TABLES[args.table](rows))
    if args.json and not args.from_json:
        with open(args.json, 'w') as f:
            json.dump([asdict(row) for row in rows], f, indent=1)


if __name__ == '__main__':
    main()
