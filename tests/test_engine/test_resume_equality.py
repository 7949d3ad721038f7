"""Resuming is exact: N iterations, stop, resume, N more equals 2N
iterations in one go, mid-annealing, through the real mmengine Runner with
every dynamic layer type (CPU, float64, deterministic)."""
import uuid

import pytest
import torch
from mmengine.runner import Runner

from dynconv_mm.layers import DynamicAttention
from every_layer_toy import EveryLayerToy, EveryLayerToyData

pytestmark = pytest.mark.slow

N = 3  # iterations before the stop
START, END, ANNEAL = 10.0, 1.0, 4 * N  # still annealing at 2N


@pytest.fixture(autouse=True)
def on_the_cpu(monkeypatch):
    # the Runner puts the model on mmengine's device, a GPU where one is
    monkeypatch.setattr('mmengine.device.utils.DEVICE', 'cpu')


def make_runner(work_dir, max_iters, resume=False, load_from=None):
    torch.manual_seed(0)  # the same initial weights for every run
    return Runner(
        # BN in the attention: its running statistics must resume too
        model=EveryLayerToy(attention_norm_cfg=dict(type='BN')),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=EveryLayerToyData(size=10),
            # shuffled and wrapping around: the resumed run must skip
            # exactly the batches already seen
            sampler=dict(type='InfiniteSampler', shuffle=True, seed=0),
            batch_size=2,
            num_workers=0),
        # momentum: the optimizer state must resume too
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        custom_hooks=[dict(type='TemperatureAnnealingHook', start=START,
                           end=END, iters=ANNEAL)],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=N),
            logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        default_scope=None,
        # unique names: Runners of one process share instances by name
        experiment_name=f'resume-{uuid.uuid4().hex}')


def final_state(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_stop_and_resume_equals_training_in_one_go(tmp_path):
    straight = make_runner(tmp_path / 'straight', max_iters=2 * N)
    straight.train()
    expected = final_state(straight)

    first = make_runner(tmp_path / 'resumed', max_iters=N)
    first.train()
    assert first.iter == N
    resumed = make_runner(tmp_path / 'resumed', max_iters=2 * N, resume=True)
    resumed.train()
    assert resumed.iter == 2 * N
    got = final_state(resumed)

    # mid-annealing: the temperature the last iteration used is not `end`
    last = START + (END - START) * (2 * N - 1) / ANNEAL
    temperatures = [m.temperature.item() for m in resumed.model.modules()
                    if isinstance(m, DynamicAttention)]
    assert len(temperatures) == 4
    assert temperatures == pytest.approx([last] * 4) and last > END + 1

    assert got.keys() == expected.keys()
    # the run changed the weights, so equality below means something
    torch.manual_seed(0)
    initial = EveryLayerToy(attention_norm_cfg=dict(type='BN')).state_dict()
    assert not torch.equal(got['convs.0.weight'], initial['convs.0.weight'])
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
