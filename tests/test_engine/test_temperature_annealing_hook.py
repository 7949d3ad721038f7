"""TemperatureAnnealingHook through a real mmengine Runner."""
import types
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import dynconv_mm  # noqa: F401
from dynconv_mm.engine import TemperatureAnnealingHook
from dynconv_mm.layers import DynamicAttention, ODConv2d


class ToyDataset(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(3, 8, 8, generator=g))


class ToyModel(BaseModel):

    def __init__(self, dynamic=True):
        super().__init__()
        self.conv = ODConv2d(3, 4, 3, padding=1) if dynamic else nn.Conv2d(
            3, 4, 3, padding=1)
        self.head = ODConv2d(4, 2, 1) if dynamic else nn.Conv2d(4, 2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.head(torch.relu(self.conv(torch.stack(inputs))))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


def make_runner(work_dir, max_epochs=None, resume=False, hook=None,
                batch_size=2, max_iters=None, **model_kw):
    if max_iters is None:  # epoch-based
        sampler = dict(type='DefaultSampler', shuffle=False)
        train_cfg = dict(by_epoch=True, max_epochs=max_epochs)
    else:
        sampler = dict(type='InfiniteSampler', shuffle=False)
        train_cfg = dict(by_epoch=False, max_iters=max_iters)
    return Runner(
        model=ToyModel(**model_kw),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=sampler,
            batch_size=batch_size,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=train_cfg,
        custom_hooks=[hook or dict(type='TemperatureAnnealingHook',
                                   start=10.0, end=1.0, epochs=2)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        default_scope=None,
        # unique names: Runners of one process share instances by name
        experiment_name=f'toy-{uuid.uuid4().hex}')


def attentions(model):
    return [m for m in model.modules() if isinstance(m, DynamicAttention)]


def schedule(iteration, start=10.0, end=1.0, anneal=8):
    return start + (end - start) * min(iteration / anneal, 1.0)


def test_anneals_per_iteration_and_resumes(tmp_path):
    # 8 samples / batch 2 = 4 iterations an epoch; annealed over 2 epochs.
    runner = make_runner(tmp_path, max_epochs=1)
    runner.train()
    logged = runner.message_hub.get_scalar('train/temperature').data[0]
    assert list(logged) == pytest.approx([schedule(i) for i in range(4)])
    # the buffer went into the checkpoint with the last value
    state = torch.load(tmp_path / 'epoch_1.pth')['state_dict']
    assert state['conv.attention.temperature'].item() == pytest.approx(
        schedule(3))

    resumed = make_runner(tmp_path, max_epochs=3, resume=True)
    resumed.train()
    logged = resumed.message_hub.get_scalar('train/temperature').data[0]
    assert list(logged) == pytest.approx([schedule(i) for i in range(12)])
    for attention in attentions(resumed.model):
        assert attention.temperature.item() == pytest.approx(1.0)


def logged_temperatures(runner):
    return list(runner.message_hub.get_scalar('train/temperature').data[0])


def test_iters_form_through_the_runner(tmp_path):
    # the form the papers' recipes use: iters alone (this raised before)
    hook = TemperatureAnnealingHook(start=30., end=1., iters=6)
    assert hook.epochs is None and hook.iters == 6
    runner = make_runner(tmp_path, max_epochs=2, hook=hook)
    runner.train()
    assert hook.anneal_iters == 6
    assert logged_temperatures(runner) == pytest.approx(
        [schedule(i, 30., 1., 6) for i in range(8)])
    assert hook.temperature_at(3) == pytest.approx(15.5)
    assert hook.temperature_at(10_000) == 1


def test_default_is_the_papers_ten_epochs():
    hook = TemperatureAnnealingHook()
    assert (hook.start, hook.end, hook.epochs, hook.iters) == (30., 1., 10,
                                                               None)


def test_resume_with_another_batch_size_continues_the_schedule(tmp_path):
    # 8 samples / batch 2 = 4 iterations an epoch: annealed over 8.
    runner = make_runner(tmp_path, max_epochs=1)
    runner.train()
    assert runner.message_hub.get_info(
        TemperatureAnnealingHook.INFO_KEY) == 8
    # Resumed at batch 4 (2 iterations an epoch): 2 epochs would now be 4
    # iterations, and iteration 4 would jump to the end value.
    resumed = make_runner(tmp_path, max_epochs=3, resume=True, batch_size=4)
    resumed.train()
    assert resumed.iter == 8
    assert logged_temperatures(resumed) == pytest.approx(
        [schedule(i) for i in range(8)])


def test_infinite_sampler_counts_epochs_over_all_processes(tmp_path,
                                                           monkeypatch):
    # 8 samples, batch 2, 2 processes: one pass over the dataset is 2
    # iterations, while len(train_dataloader) says 4 (the sampler's length
    # is the whole dataset, whatever the number of processes).
    import dynconv_mm.engine.temperature_annealing_hook as module
    monkeypatch.setattr(module, 'get_world_size', lambda: 2)
    hook = TemperatureAnnealingHook(start=10., end=1., epochs=2)
    runner = make_runner(tmp_path, max_iters=6, hook=hook)
    assert len(runner.train_dataloader) == 4
    runner.train()
    assert hook.anneal_iters == 4
    assert logged_temperatures(runner) == pytest.approx(
        [schedule(i, anneal=4) for i in range(6)])


@pytest.mark.parametrize('kwargs,needle', [
    (dict(start=0), 'start=0'),
    (dict(end=-1.0), 'end=-1.0'),
    (dict(epochs=0), 'epochs=0'),
    (dict(iters=0), 'iters=0'),
    (dict(epochs=3, iters=10), 'not both'),
])
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match='TemperatureAnnealingHook') as err:
        TemperatureAnnealingHook(**kwargs)
    assert needle in str(err.value)


def test_model_without_dynamic_convs_is_an_error(tmp_path):
    runner = make_runner(tmp_path, max_epochs=1, dynamic=False)
    with pytest.raises(RuntimeError, match='no dynamic convolution'):
        runner.train()


def test_reaches_the_model_inside_ddp(tmp_path):
    from mmengine.model import MMDistributedDataParallel
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        model = ToyModel()
        wrapped = MMDistributedDataParallel(module=model, device_ids=None)
        hub = MessageHub(f'toy-{uuid.uuid4().hex}')
        runner = types.SimpleNamespace(model=wrapped, iter=2,
                                       message_hub=hub)
        hook = TemperatureAnnealingHook(start=11.0, end=1.0, iters=10)
        hook.before_train(runner)
        for attention in attentions(model):
            assert attention.temperature.item() == pytest.approx(9.0)
        runner.iter = 7
        hook.before_train_iter(runner, 0)
        assert model.conv.temperature == pytest.approx(4.0)
    finally:
        dist.destroy_process_group()
