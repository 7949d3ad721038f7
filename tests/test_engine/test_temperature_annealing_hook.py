"""TemperatureAnnealingHook through a real mmengine Runner."""
import types
import uuid

import pytest
import torch
import torch.nn as nn
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


def make_runner(work_dir, max_epochs, resume=False, hook=None, **model_kw):
    return Runner(
        model=ToyModel(**model_kw),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
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


def test_iters_form_and_values():
    hook = TemperatureAnnealingHook(start=30, end=1, epochs=None, iters=100)
    hook._anneal_iters = 100
    assert hook.temperature_at(0) == 30
    assert hook.temperature_at(50) == pytest.approx(15.5)
    assert hook.temperature_at(100) == 1
    assert hook.temperature_at(10_000) == 1


@pytest.mark.parametrize('kwargs,needle', [
    (dict(start=0), 'start=0'),
    (dict(end=-1.0), 'end=-1.0'),
    (dict(epochs=0), 'epochs=0'),
    (dict(epochs=None), 'exactly one'),
    (dict(epochs=3, iters=10), 'exactly one'),
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
        hub = types.SimpleNamespace(update_scalar=lambda *a, **k: None)
        runner = types.SimpleNamespace(model=wrapped, iter=2,
                                       train_dataloader=[0] * 5,
                                       message_hub=hub)
        hook = TemperatureAnnealingHook(start=11.0, end=1.0, epochs=2)
        hook.before_train(runner)
        for attention in attentions(model):
            assert attention.temperature.item() == pytest.approx(9.0)
        runner.iter = 7
        hook.before_train_iter(runner, 0)
        assert model.conv.temperature == pytest.approx(4.0)
    finally:
        dist.destroy_process_group()
