"""Config handling behind tools/train.py and tools/test.py."""
import pytest
import torch
from mmengine.config import Config

from dynconv_mm.engine import enable_amp, load_run_config, set_resume

CONFIG = 'configs/odconv/faster-rcnn_r18-slim-odconv_fpn_synthetic-coco.py'


def test_load_run_config_work_dir_and_options():
    cfg = load_run_config(CONFIG, cfg_options={'train_cfg.max_epochs': 3})
    assert cfg.train_cfg.max_epochs == 3
    assert cfg.work_dir.endswith(
        'work_dirs/faster-rcnn_r18-slim-odconv_fpn_synthetic-coco')
    assert cfg.launcher == 'none'
    assert cfg.model.backbone.conv_cfg == dict(type='ODConv')
    assert load_run_config(CONFIG, work_dir='/tmp/x').work_dir == '/tmp/x'


def test_set_resume():
    cfg = Config(dict(load_from=None, resume=False))
    set_resume(cfg, None)
    assert cfg.resume is False
    set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    set_resume(cfg, 'a.pth')
    assert cfg.resume is True and cfg.load_from == 'a.pth'


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_amp_on_cpu_is_refused_clearly():
    with pytest.raises(RuntimeError, match='--amp needs a GPU'):
        enable_amp(Config(dict(optim_wrapper=dict(type='OptimWrapper'))))


def test_amp_switches_the_optim_wrapper(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper',
                                         optimizer=dict(type='SGD'))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    bad = Config(dict(optim_wrapper=dict(type='ApexOptimWrapper')))
    with pytest.raises(ValueError, match='ApexOptimWrapper'):
        enable_amp(bad)
