"""Distributed training is the same training: two gloo processes with b
images each equal one process with 2b images on the same data, for a model
with every dynamic layer type.

Without a norm in the attention this runs through the real Runner (our
build_runner, MMDistributedDataParallel). With a synchronised BatchNorm in
the attention, at one image per process, it cannot: on the CPU torch has no
SyncBatchNorm kernels and DDP refuses SyncBatchNorm modules. There the
layers run under a CPU stand-in subclass of ``nn.SyncBatchNorm`` (the
attention trunk sees a SyncBatchNorm in a two-process group) and the
gradients are averaged the way DDP does."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import uuid

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS

from dynconv_mm.engine import build_runner, distributed_teardown

HERE = osp.dirname(osp.abspath(__file__))
RUN_ID = os.environ.get('DDP_EQUALITY_RUN_ID', uuid.uuid4().hex[:8])
REPO = osp.dirname(osp.dirname(HERE))


class CpuSyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` computed on the CPU: torch's own has no CPU
    kernels (``aten::batch_norm_stats``), so CPU-only CI cannot run it. In
    training with more than one process, the batch statistics are summed
    over all processes with a differentiable all-reduce (as torch's
    ``sync_batch_norm`` does on GPUs); otherwise it is plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        channels = x.shape[1]
        dims = [0, 2, 3]
        local = torch.cat([
            x.sum(dims), x.pow(2).sum(dims),
            x.new_tensor([x.numel() / channels])
        ])
        total = all_reduce(local)
        count = total[-1]
        mean = total[:channels] / count
        var = total[channels:2 * channels] / count - mean.pow(2)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / (count - 1), self.momentum)
        shape = (1, channels, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


PER_PROCESS = 2  # images per process through the Runner
SIZE = 8  # samples: one epoch is 2 steps of 2 x 2 images
SYNC_BN_STEPS = 3  # steps of 2 x 1 images with the synchronised BN


def run_config(work_dir, batch_size, launcher):
    return Config(dict(
        model=dict(type='EveryLayerToy'),
        work_dir=work_dir,
        # unique in this process (Runners share instances by name), the
        # same in both processes
        experiment_name=f'ddp-{launcher}-{RUN_ID}',
        train_dataloader=dict(
            dataset=dict(type='EveryLayerToyData', size=SIZE),
            # process r of 2 takes samples r, r+2, ...: each step, the two
            # processes together see the single process's batch
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=batch_size,
            num_workers=0),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        # an epoch of each run is the same iterations: the same schedule
        custom_hooks=[dict(type='TemperatureAnnealingHook', start=10.,
                           end=1., epochs=2)],
        default_hooks=dict(checkpoint=None,
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        launcher=launcher,
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        default_scope=None))


def import_toy():
    import every_layer_toy  # registers the toy model and data
    return every_layer_toy


def train_through_the_runner(work_dir, batch_size, launcher):
    """Train one epoch; the initial and final state dicts (float64), the
    temperature schedule's length and the iterations run."""
    import_toy()
    runner = build_runner(run_config(work_dir, batch_size, launcher))
    model = runner.model.module if launcher != 'none' else runner.model
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runner.train()
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'TemperatureAnnealingHook')
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return initial, state, hook.anneal_iters, runner.iter


def train_with_sync_bn():
    """SYNC_BN_STEPS SGD steps of the toy with the CPU SyncBatchNorm in
    every attention, 2 images a step: all of them in one process, or one
    in each of two, gradients averaged over the processes as DDP does.
    Returns the final state."""
    toy = import_toy()
    MODELS.register_module('CpuSyncBN', module=CpuSyncBatchNorm, force=True)
    distributed = dist.is_initialized()
    rank, world = (dist.get_rank(), 2) if distributed else (0, 1)
    torch.manual_seed(0)
    model = toy.EveryLayerToy(attention_norm_cfg=dict(type='CpuSyncBN'))
    model.train()
    data = toy.EveryLayerToyData(size=2 * SYNC_BN_STEPS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(SYNC_BN_STEPS):
        samples = [data[2 * step], data[2 * step + 1]][rank::world]
        loss = model([s['inputs'] for s in samples],
                     [s['data_samples'] for s in samples], mode='loss')
        optimizer.zero_grad()
        loss['loss'].backward()
        if distributed:
            for param in model.parameters():
                dist.all_reduce(param.grad)
                param.grad /= world
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def worker(out_dir):
    """One of two processes (RANK, WORLD_SIZE etc. from the environment)."""
    rank = int(os.environ['RANK'])
    with distributed_teardown():
        _, state, anneal_iters, iters = train_through_the_runner(
            osp.join(out_dir, 'work'), PER_PROCESS, 'pytorch')
        torch.save(state, osp.join(out_dir, f'runner_rank{rank}.pth'))
        with open(osp.join(out_dir, f'runner_rank{rank}.json'), 'w') as f:
            json.dump(dict(anneal_iters=anneal_iters, iters=iters), f)
        # one image per process: allowed for a SyncBatchNorm in a group
        state = train_with_sync_bn()
        torch.save(state, osp.join(out_dir, f'sync_bn_rank{rank}.pth'))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def two_process_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('ddp'))
    env = {**os.environ, 'DDP_EQUALITY_RUN_ID': uuid.uuid4().hex[:8],
           'MASTER_ADDR': '127.0.0.1',
           'MASTER_PORT': str(free_port()), 'WORLD_SIZE': '2',
           'OMP_NUM_THREADS': '1',
           # gloo processes on the CPU, also on a machine with a GPU
           'CUDA_VISIBLE_DEVICES': ''}
    code = (f'import sys; sys.path[:0] = [{HERE!r}]; '
            f'import test_ddp_equality as t; t.worker({out_dir!r})')
    procs = [
        subprocess.Popen([sys.executable, '-c', code], cwd=REPO,
                         env={**env, 'RANK': str(r), 'LOCAL_RANK': str(r)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True) for r in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-4000:]
    return out_dir


def load_ranks(out_dir, name):
    return [torch.load(osp.join(out_dir, f'{name}_rank{r}.pth'))
            for r in range(2)]


def assert_same_states(single, ranks):
    assert single.keys() == ranks[0].keys() == ranks[1].keys()
    for key, value in single.items():
        for rank in range(2):
            torch.testing.assert_close(ranks[rank][key], value, rtol=1e-9,
                                       atol=1e-12, msg=f'{key}, rank {rank}')


@pytest.mark.slow
def test_two_processes_equal_one_with_the_double_batch(two_process_results,
                                                        tmp_path,
                                                        monkeypatch):
    # the Runner puts the model on mmengine's device, a GPU where one is
    monkeypatch.setattr('mmengine.device.utils.DEVICE', 'cpu')
    initial, single, anneal_iters, iters = train_through_the_runner(
        str(tmp_path), 2 * PER_PROCESS, 'none')
    assert iters == SIZE // (2 * PER_PROCESS)
    for rank in range(2):
        with open(osp.join(two_process_results,
                           f'runner_rank{rank}.json')) as f:
            # the same steps, and the annealing counted the same in both
            assert json.load(f) == dict(anneal_iters=anneal_iters,
                                        iters=iters)
    # training moved the weights: the equality below is not trivial
    assert not torch.allclose(single['convs.0.weight'],
                              initial['convs.0.weight'])
    assert_same_states(single, load_ranks(two_process_results, 'runner'))


@pytest.mark.slow
def test_sync_bn_attention_at_one_image_per_process(two_process_results):
    single = train_with_sync_bn()  # plain BatchNorm over the 2 images
    assert sum(k.endswith('norm.running_var') for k in single) == 4
    assert_same_states(single, load_ranks(two_process_results, 'sync_bn'))


def test_sync_bn_attention_without_a_group_refuses_one_image():
    toy = import_toy()
    model = toy.EveryLayerToy(attention_norm_cfg=dict(type='SyncBN'))
    sample = toy.EveryLayerToyData(size=1)[0]
    with pytest.raises(ValueError, match='cannot train on a batch of 1'):
        model([sample['inputs']], [sample['data_samples']], mode='loss')
