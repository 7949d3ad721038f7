"""Every shipped config loads and builds its model in its toolbox's scope
(what each family promises is checked in its own test file)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from dynconv_mm.datasets import SYNTHETIC_COCO_METAINFO
from dynconv_mm.layers import DynamicConv2dBase, ODConv2d

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)


def build_model(cfg):
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert 'dynconv_mm' in cfg.custom_imports['imports']
    assert sum(p.numel() for p in build_model(cfg).parameters()) > 0


def test_demo_config_is_odconv_everywhere_in_the_backbone():
    cfg = Config.fromfile(osp.join(
        REPO,
        'configs/odconv/faster-rcnn_r18-slim-odconv_fpn_synthetic-coco.py'))
    model = build_model(cfg)
    convs = [m for m in model.backbone.modules()
             if isinstance(m, (torch.nn.Conv2d, DynamicConv2dBase))]
    assert convs and all(isinstance(m, ODConv2d) for m in convs)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        meta = cfg[key].dataset.metainfo
        assert tuple(meta.classes) == SYNTHETIC_COCO_METAINFO['classes']
        assert [tuple(c) for c in meta.palette] == \
            SYNTHETIC_COCO_METAINFO['palette']
    assert cfg.model.roi_head.bbox_head.num_classes == len(
        SYNTHETIC_COCO_METAINFO['classes'])
