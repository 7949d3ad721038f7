"""From a config file and command-line options to an mmengine Runner: the
logic behind ``tools/train.py`` and ``tools/test.py``, toolbox-agnostic
(the config's ``default_scope`` decides mmdet or mmpose)."""
import argparse
import gc
import os
import os.path as osp
import warnings
import weakref
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

if torch_dist.is_available():
    # torch.distributed.nn.functional binds the default group as default
    # arguments when first imported: imported once a group exists, it keeps
    # that group (and its threads) alive past destroy_process_group().
    import torch.distributed.nn  # noqa: F401


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """The options train and test share: ``--work-dir``, ``--cfg-options``,
    ``--launcher`` and the launcher-supplied ``--local-rank``."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'train_cfg.max_epochs=2')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def config_from_args(args: argparse.Namespace) -> Config:
    """:func:`load_run_config` from arguments added by
    :func:`add_runner_arguments` (and a positional ``config``)."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return load_run_config(args.config, args.work_dir, args.cfg_options,
                           args.launcher)


def load_run_config(config: str,
                    work_dir: Optional[str] = None,
                    cfg_options: Optional[dict] = None,
                    launcher: str = 'none') -> Config:
    """Read ``config``, apply ``--cfg-options`` and pick the work dir
    (``--work-dir``, else the config's, else ``work_dirs/<config name>``)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg


def _start_cpu_distributed(cfg: Config) -> None:
    """Distributed training without GPUs: gloo processes on the CPU.

    mmengine's launchers call ``torch.cuda.set_device``, so the process
    group is started here (the Runner then skips its own), and DDP must not
    be given device ids (the Runner's default passes ``LOCAL_RANK``).
    """
    if cfg.launcher != 'pytorch':
        raise ValueError(f'launcher {cfg.launcher!r} needs GPUs; without '
                         "them use 'pytorch' (tools/dist_train.sh)")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def enable_amp(cfg: Config) -> None:
    """Train with automatic mixed precision (``--amp``).

    mmengine's ``AmpOptimWrapper`` runs on GPUs (and NPU/MLU/MUSA) only;
    without one this fails now with a clear message instead of later in the
    Runner. (The layers themselves run under CPU autocast.)
    """
    if not torch.cuda.is_available():
        raise RuntimeError('--amp needs a GPU: mmengine\'s AmpOptimWrapper '
                           'does not train on the CPU')
    optim_wrapper = cfg.optim_wrapper
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type == 'AmpOptimWrapper':
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError('--amp needs optim_wrapper.type OptimWrapper or '
                         f'AmpOptimWrapper, got {wrapper_type!r}')
    optim_wrapper.type = 'AmpOptimWrapper'
    optim_wrapper.setdefault('loss_scale', 'dynamic')


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` alone resumes from the work dir's latest checkpoint;
    ``--resume PATH`` from that checkpoint."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume


def build_runner(cfg: Config) -> Runner:
    """The config's runner (``runner_type`` if it names one)."""
    if cfg.get('launcher', 'none') != 'none' and not torch.cuda.is_available():
        _start_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


@contextmanager
def distributed_teardown() -> Iterator[None]:
    """Run a tool's entry point, then shut the default process group down.

    Why: a process group still alive when the interpreter finalises keeps
    its gloo worker threads running. A worker that drops the last reference
    to a finished collective's tensors must take the GIL to free them, and
    during finalisation Python ends such a thread with ``pthread_exit``
    inside a ``noexcept`` destructor: "terminate called without an active
    exception", SIGABRT, a non-zero exit of a job that had succeeded.
    ``destroy_process_group()`` alone does not prevent it while the
    Runner's DDP model still holds the group (its C++ object, and with it
    the threads, then survive until finalisation).

    So after the body returns: every rank meets at a barrier (no rank tears
    its connections down while a peer still communicates), the body's
    garbage is collected (the Runner and its DDP wrapper live in reference
    cycles), and the group is destroyed, which joins its threads while the
    interpreter is fully alive. Wrap the whole entry point, so that no
    Runner is reachable any more when the body ends; a group that survives
    the teardown anyway is reported with a warning. After an exception
    nothing is done: peers may be gone or blocked in a collective, and the
    launcher stops the job.
    """
    yield
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    torch_dist.barrier()
    group = weakref.ref(torch_dist.group.WORLD)
    gc.collect()
    torch_dist.destroy_process_group()
    if group() is not None:
        warnings.warn(
            'distributed_teardown: the process group is still referenced '
            'after destroy_process_group() (is a Runner or a DDP model '
            'still alive?); its worker threads may abort the interpreter '
            'at exit. Wrap the whole entry point in distributed_teardown().',
            RuntimeWarning)
