"""Config handling behind tools/train.py and tools/test.py."""
import os
import time
import weakref

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel

from dynconv_mm.engine import (distributed_teardown, enable_amp,
                               load_run_config, set_resume)

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


def gloo_threads():
    """Names of this process's native threads that gloo started."""
    names = []
    for task in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{task}/comm') as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(n for n in names if 'gloo' in n)


def train_a_step_in_ddp():
    """What a tool's main() does: a DDP model that trains, then goes out
    of scope (with a reference cycle, as the Runner's)."""
    model = MMDistributedDataParallel(module=nn.Linear(3, 2),
                                      device_ids=None)
    model.cycle = [model]
    model(torch.ones(2, 3)).sum().backward()


needs_proc = pytest.mark.skipif(not os.path.isdir('/proc/self/task'),
                                reason='reads thread names from /proc')


@pytest.fixture(autouse=True)
def no_group_left_behind():
    """A test that fails with its process group up must not fail the next
    ones ("trying to initialize the default process group twice")."""
    yield
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def started_gloo_threads(before, timeout=10.0):
    """The gloo threads beyond ``before``, once there are any: a thread
    names itself when it starts running, which may come a moment after
    the process group that created it is returned."""
    deadline = time.monotonic() + timeout
    while True:
        threads = gloo_threads()
        if len(threads) > len(before) or time.monotonic() > deadline:
            return threads
        time.sleep(0.01)


@needs_proc
def test_distributed_teardown_joins_the_gloo_threads(tmp_path):
    before = gloo_threads()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    group = weakref.ref(dist.group.WORLD)
    assert len(started_gloo_threads(before)) > len(before)
    with distributed_teardown():
        train_a_step_in_ddp()
    assert not dist.is_initialized()
    # the group's C++ object is gone and its worker threads are joined now,
    # not at interpreter exit (where they abort the process)
    assert group() is None
    assert gloo_threads() == before


def test_distributed_teardown_warns_when_the_group_survives(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    kept = MMDistributedDataParallel(module=nn.Linear(3, 2), device_ids=None)
    with pytest.warns(RuntimeWarning, match='still referenced'):
        with distributed_teardown():
            pass
    assert not dist.is_initialized()
    del kept


def test_distributed_teardown_leaves_a_failed_run_alone(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        with pytest.raises(KeyError):
            with distributed_teardown():
                raise KeyError('boom')
        # no barrier or teardown that could block on a dead peer
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_distributed_teardown_without_a_group_does_nothing():
    with distributed_teardown():
        pass
    assert not dist.is_initialized()
