"""The ODConv paper's COCO detection table as shipped configs: parameter
counts pinned against the paper, the dataset switch, and every config
trained and evaluated for an iteration through the real Runner on the
synthetic dataset (MMDetection's own tools/train.py on one of them)."""
import glob
import os
import os.path as osp
import subprocess
import sys

import mmdet
import pytest
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner

from dynconv_mm.datasets import generate_synthetic_coco
from dynconv_mm.layers import (DynamicConv2d, DynamicConv2dBase, DyNetConv2d,
                               ODConv2d)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DETECTION = osp.join(REPO, 'configs', 'detection')
CONFIGS = sorted(glob.glob(osp.join(DETECTION, '*.py')))
NAMES = [osp.basename(p)[:-3] for p in CONFIGS]
MMDET_TOOLS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools')

# ODConv paper, Table (COCO, MMDetection): parameters of the detectors,
# minus the 1000-class ImageNet classifier that the authors' backbones
# keep unused (2048*1000+1000 for ResNet-50, 1280*1000+1000 for
# MobileNetV2): 43.80M -> 41.75M, 108.91M -> 106.87M, 21.13M -> 19.85M,
# 29.14M -> 27.86M; Mask R-CNN 46.45M, 111.56M, 23.78M, 31.80M likewise.
PAPER_PARAMS = {
    'faster-rcnn_r50_fpn_1x_coco': 43.80e6 - 2049000,
    'faster-rcnn_r50-odconv4x_fpn_1x_coco': 108.91e6 - 2049000,
    'faster-rcnn_mv2_fpn_1x_coco': 21.13e6 - 1281000,
    'faster-rcnn_mv2-odconv4x_fpn_1x_coco': 29.14e6 - 1281000,
    'mask-rcnn_r50_fpn_1x_coco': 46.45e6 - 2049000,
    'mask-rcnn_r50-odconv4x_fpn_1x_coco': 111.56e6 - 2049000,
    'mask-rcnn_mv2_fpn_1x_coco': 23.78e6 - 1281000,
    'mask-rcnn_mv2-odconv4x_fpn_1x_coco': 31.80e6 - 1281000,
}
EXPECTED_CONV = {
    'odconv1x': (ODConv2d, 1),
    'odconv4x': (ODConv2d, 4),
    'dyconv': (DynamicConv2d, 4),
    'dynet': (DyNetConv2d, 6),
}


def load(path, data='coco', monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.setenv('DYNCONV_MM_DATA', data)
    return Config.fromfile(path)


def build(cfg):
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


def variant(name):
    for key in EXPECTED_CONV:
        if f'-{key}_' in name:
            return key
    return None


def test_every_row_of_the_table_is_shipped():
    for det in ('faster-rcnn', 'mask-rcnn'):
        for backbone in ('r50', 'mv2'):
            assert f'{det}_{backbone}_fpn_1x_coco' in NAMES
            for key in EXPECTED_CONV:
                assert f'{det}_{backbone}-{key}_fpn_1x_coco' in NAMES


@pytest.mark.parametrize('path', CONFIGS, ids=NAMES)
def test_config_builds_with_the_papers_placement(path, monkeypatch):
    monkeypatch.delenv('DYNCONV_MM_DATA', raising=False)
    cfg = load(path)
    name = osp.basename(path)[:-3]
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.train_cfg.max_epochs == 12  # the 1x schedule
    model = build(cfg)
    params = sum(p.numel() for p in model.parameters())
    if name in PAPER_PARAMS:
        assert abs(params / PAPER_PARAMS[name] - 1) < 0.005, params
    backbone = model.backbone
    dynamic = [m for m in backbone.modules()
               if isinstance(m, DynamicConv2dBase)]
    key = variant(name)
    if key is None:
        assert not dynamic
        return
    layer_type, num_kernels = EXPECTED_CONV[key]
    assert dynamic and all(
        isinstance(m, layer_type) and m.num_kernels == num_kernels
        for m in dynamic)
    # The stem and the projections stay static in every paper.
    stem = backbone.conv1
    assert not isinstance(getattr(stem, 'conv', stem), DynamicConv2dBase)
    for module_name, module in backbone.named_modules():
        if 'downsample' in module_name:
            assert not isinstance(module, DynamicConv2dBase), module_name
    if key != 'dynet' or 'mv2' in name:
        # Fine-tuned from ImageNet weights with the first stage frozen.
        assert cfg.model.backbone.init_cfg['type'] == 'Pretrained'
        assert cfg.model.backbone.frozen_stages >= 1
        assert cfg.model.backbone.norm_eval is True


def test_the_dataset_switch(monkeypatch):
    path = osp.join(DETECTION, 'mask-rcnn_r50-odconv4x_fpn_1x_coco.py')
    real = load(path, 'coco', monkeypatch)
    synthetic = load(path, 'synthetic_coco', monkeypatch)
    assert real.model.roi_head.mask_head.num_classes == 80
    assert synthetic.model.roi_head.mask_head.num_classes == 4
    assert synthetic.model.roi_head.bbox_head.num_classes == 4
    assert synthetic.model.backbone.init_cfg is None  # no download
    assert synthetic.train_dataloader.dataset.data_root == \
        'data/synthetic_coco/'
    assert synthetic.val_evaluator.metric == ['bbox', 'segm']
    # Only the data changed: the model is the paper's.
    assert synthetic.model.backbone.dynamic_conv_cfg == \
        real.model.backbone.dynamic_conv_cfg


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('det_data')) + '/'
    generate_synthetic_coco(root, num_train=2, num_val=2, width=128,
                            height=96, seed=5)
    return root


def tiny_overrides(data_root, work_dir):
    """One iteration of 2 images at 128x96, evaluated on 2 images."""
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                  dataset=dict(data_root=data_root))
    return {
        'work_dir': work_dir,
        'train_dataloader': dict(loader, batch_sampler=None),
        'val_dataloader': loader,
        'test_dataloader': loader,
        'val_evaluator.ann_file':
        data_root + 'annotations/instances_val2017.json',
        'train_cfg.max_epochs': 1,
        'param_scheduler': [dict(type='ConstantLR', factor=1.0)],
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'env_cfg.dist_cfg': dict(backend='gloo'),
        'log_level': 'WARNING',
    }


def shrink_images(cfg):
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for step in cfg[key].dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (128, 96)
    cfg.val_evaluator = cfg.test_evaluator = dict(
        cfg.val_evaluator,
        ann_file=cfg.train_dataloader.dataset.data_root +
        'annotations/instances_val2017.json')


# Every variant (baseline, ODConv 1x/4x, DynamicConv, DyNet) trains with
# both detectors and both backbones: Faster R-CNN on ResNet-50, Mask R-CNN
# on MobileNetV2 (the other ten only differ in what these two cover).
TRAINED = [(p, n) for p, n in zip(CONFIGS, NAMES)
           if n.startswith(('faster-rcnn_r50', 'mask-rcnn_mv2'))]


@pytest.mark.slow
@pytest.mark.parametrize('path', [p for p, _ in TRAINED],
                         ids=[n for _, n in TRAINED])
def test_config_trains_and_evaluates_on_synthetic_data(
        path, synthetic_root, tmp_path, monkeypatch):
    cfg = load(path, 'synthetic_coco', monkeypatch)
    cfg.merge_from_dict(tiny_overrides(synthetic_root, str(tmp_path)))
    shrink_images(cfg)
    cfg.experiment_name = f'{osp.basename(path)[:-3]}_{id(cfg)}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    if 'mask-rcnn' in path:
        assert 0.0 <= metrics['coco/segm_mAP'] <= 1.0


@pytest.mark.slow
def test_mmdetection_own_train_tool_runs_a_paper_config(synthetic_root,
                                                        tmp_path):
    path = osp.join(DETECTION, 'faster-rcnn_mv2-odconv4x_fpn_1x_coco.py')
    # Scalar overrides only: mmdet's train.py takes --cfg-options too.
    options = [
        f'train_dataloader.dataset.data_root={synthetic_root}',
        f'val_dataloader.dataset.data_root={synthetic_root}',
        f'test_dataloader.dataset.data_root={synthetic_root}',
        'val_evaluator.ann_file='
        f'{synthetic_root}annotations/instances_val2017.json',
        'test_evaluator.ann_file='
        f'{synthetic_root}annotations/instances_val2017.json',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        'train_cfg.max_epochs=1',
    ]
    proc = subprocess.run(
        [sys.executable, osp.join(MMDET_TOOLS, 'train.py'), path,
         '--work-dir', str(tmp_path), '--cfg-options', *options],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, 'DYNCONV_MM_DATA': 'synthetic_coco'})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
