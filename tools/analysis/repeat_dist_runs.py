"""Run two-process CPU training and evaluation many times in a row and count
the runs that exit non-zero (the check behind "a job that succeeded exits 0,
every time").

    python tools/analysis/repeat_dist_runs.py [--runs 30] [--procs 2]
        [--work-dir DIR]

Each run is ``tools/dist_train.sh`` on a tiny config (the demo detector on 4
generated 128x96 images, one epoch of 2 iterations, validation included),
then ``tools/dist_test.sh`` on its checkpoint, each on a free port. Logs of
failed runs are kept in the work dir; the last line is the tally.
"""
import argparse
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import tempfile

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join(
    REPO, 'configs/odconv/faster-rcnn_r18-slim-odconv_fpn_synthetic-coco.py')
TINY_CONFIG = """
_base_ = {base!r}
data_root = {data_root!r}
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(**loader, dataset=dict(data_root=data_root))
val_dataloader = dict(**loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
custom_hooks = [dict(type='TemperatureAnnealingHook', start=30., end=1.,
                     epochs=1)]
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_logged(args, log_path: str, env: dict) -> int:
    with open(log_path, 'w') as log:
        return subprocess.run(args, cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--procs', type=int, default=2)
    parser.add_argument('--work-dir', help='default: a new temporary dir')
    args = parser.parse_args()
    root = args.work_dir or tempfile.mkdtemp(prefix='repeat_dist_runs_')
    os.makedirs(root, exist_ok=True)

    from dynconv_mm.datasets import generate_synthetic_coco
    data_root = osp.join(root, 'data') + '/'
    generate_synthetic_coco(data_root, num_train=4, num_val=2, width=128,
                            height=96, seed=3)
    config = osp.join(root, 'tiny_config.py')
    with open(config, 'w') as f:
        f.write(TINY_CONFIG.format(base=DEMO_CONFIG, data_root=data_root))

    env = dict(os.environ, PYTHON=sys.executable)
    failures = dict(train=0, test=0)
    for run in range(1, args.runs + 1):
        work_dir = osp.join(root, 'work')
        shutil.rmtree(work_dir, ignore_errors=True)
        steps = dict(
            train=['bash', 'tools/dist_train.sh', config, str(args.procs),
                   '--work-dir', work_dir],
            test=['bash', 'tools/dist_test.sh', config,
                  osp.join(work_dir, 'epoch_1.pth'), str(args.procs),
                  '--work-dir', work_dir])
        for step, command in steps.items():
            log = osp.join(root, f'run{run}_{step}.log')
            code = run_logged(command, log, dict(env, PORT=str(free_port())))
            if code == 0:
                os.remove(log)
            else:
                failures[step] += 1
                print(f'run {run} {step}: exit {code}, log {log}',
                      flush=True)
        print(f'after run {run}: {failures["train"]} train and '
              f'{failures["test"]} test failures', flush=True)
    print(f'runs={args.runs} procs={args.procs} '
          f'train_failures={failures["train"]} '
          f'test_failures={failures["test"]}')


if __name__ == '__main__':
    main()
