"""End to end through the real Runner: our tools/train.py and test.py,
resume, AMP, MMDetection's own train/test tools, and dist_train.sh with two
CPU processes, on a tiny generated COCO-format dataset."""
import importlib.util
import math
import os
import os.path as osp
import pickle
import re
import subprocess
import sys

import mmdet
import pytest
import torch

from dynconv_mm.datasets import generate_synthetic_coco

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MMDET_TOOLS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools')


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools', 'analysis', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The tiny two-iteration config of the demo detector, and a free port: the
# same as tools/analysis/repeat_dist_runs.py repeats.
_dist_runs = _load_tool('repeat_dist_runs')
DEMO_CONFIG = _dist_runs.DEMO_CONFIG
TINY_CONFIG = _dist_runs.TINY_CONFIG
free_port = _dist_runs.free_port


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny')
    data_root = str(root / 'data') + '/'
    generate_synthetic_coco(data_root, num_train=4, num_val=2, width=128,
                            height=96, seed=3)
    path = root / 'tiny_config.py'
    path.write_text(TINY_CONFIG.format(base=DEMO_CONFIG, data_root=data_root))
    return str(path)


def run(args, cwd=REPO, env=None):
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def test_train_test_resume(tiny_config, tmp_path):
    work_dir = str(tmp_path / 'work')
    out = run([sys.executable, 'tools/train.py', tiny_config, '--work-dir',
               work_dir])
    assert 'coco/bbox_mAP' in out and 'temperature: 30.0000' in out
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    preds = str(tmp_path / 'preds.pkl')
    out = run([sys.executable, 'tools/test.py', tiny_config, checkpoint,
               '--work-dir', work_dir, '--out', preds])
    assert 'Epoch(test)' in out and 'coco/bbox_mAP' in out
    with open(preds, 'rb') as f:
        unfused = pickle.load(f)
    assert len(unfused) == 2  # one entry per val image
    # the same checkpoint with its BatchNorms folded into the convs
    fused_preds = str(tmp_path / 'fused.pkl')
    out = run([sys.executable, 'tools/test.py', tiny_config, checkpoint,
               '--work-dir', work_dir, '--out', fused_preds,
               '--fuse-conv-bn'])
    folded = re.search(r'fuse_conv_bn: (\d+) BatchNorm\(s\) folded', out)
    assert folded and int(folded.group(1)) > 0, out[-3000:]
    with open(fused_preds, 'rb') as f:
        fused = pickle.load(f)
    for a, b in zip(unfused, fused):
        scores = a['pred_instances']['scores'], b['pred_instances']['scores']
        torch.testing.assert_close(scores[1].max(), scores[0].max(),
                                   rtol=1e-4, atol=1e-5)

    out = run([sys.executable, 'tools/train.py', tiny_config, '--work-dir',
               work_dir, '--resume', '--cfg-options',
               'train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1, iter: 2' in out
    # iteration 2 of an annealing over one epoch (2 iterations): at the end
    assert 'Epoch(train) [2][2/2]' in out and 'temperature: 1.0000' in out
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))


# Hides the GPUs of a GPU machine: what runs is the machine without one.
NO_GPU = dict(CUDA_VISIBLE_DEVICES='')


def test_amp_without_gpu_is_a_clear_error(tiny_config, tmp_path):
    proc = subprocess.run([sys.executable, 'tools/train.py', tiny_config,
                           '--amp', '--work-dir', str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **NO_GPU})
    assert proc.returncode != 0
    assert '--amp needs a GPU' in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_amp_training_on_gpu(tiny_config, tmp_path):
    """The demo detector, every backbone conv ODConv, trains a few
    iterations under mmengine's AmpOptimWrapper (fp16 with loss scaling)
    and evaluates, with finite losses."""
    out = run([sys.executable, 'tools/train.py', tiny_config, '--amp',
               '--work-dir', str(tmp_path)])
    assert 'AmpOptimWrapper' in out or 'loss_scale' in out
    losses = re.findall(r' loss: ([0-9.einf-]+)', out)
    assert losses and all(math.isfinite(float(v)) for v in losses), losses
    assert 'coco/bbox_mAP' in out


def test_mmdetection_own_tools_run_the_config(tiny_config, tmp_path):
    run([sys.executable, osp.join(MMDET_TOOLS, 'train.py'), tiny_config,
         '--work-dir', str(tmp_path)])
    checkpoint = osp.join(tmp_path, 'epoch_1.pth')
    out = run([sys.executable, osp.join(MMDET_TOOLS, 'test.py'), tiny_config,
               checkpoint, '--work-dir', str(tmp_path)])
    assert 'coco/bbox_mAP' in out


# Imported by every Python process of a run (as sitecustomize): its atexit
# handler, registered first, runs last, right before the interpreter
# finalises, and writes down which native threads are still alive then.
EXIT_THREAD_PROBE = """
import atexit, os

def _threads_at_exit():
    names = []
    for task in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{task}/comm') as f:
                names.append(f.read().strip())
        except OSError:
            pass
    path = os.path.join(os.environ['EXIT_THREAD_PROBE_DIR'],
                        f'{os.getpid()}.txt')
    with open(path, 'w') as f:
        f.write('\\n'.join(names))

atexit.register(_threads_at_exit)
"""


def run_probing_exit_threads(args, tmp_path, env):
    """``run`` with every process reporting its threads at exit; returns
    the output and the thread names of each process."""
    probe = tmp_path / 'probe'
    report = tmp_path / 'threads_at_exit'
    probe.mkdir(parents=True)
    report.mkdir()
    (probe / 'sitecustomize.py').write_text(EXIT_THREAD_PROBE)
    pythonpath = os.pathsep.join(
        p for p in (str(probe), os.environ.get('PYTHONPATH')) if p)
    out = run(args, env=dict(env, PYTHONPATH=pythonpath,
                             EXIT_THREAD_PROBE_DIR=str(report)))
    threads = [p.read_text().split() for p in report.iterdir()]
    return out, threads


@pytest.mark.skipif(not osp.isdir('/proc/self/task'),
                    reason='reads thread names from /proc')
def test_dist_train_two_cpu_processes(tiny_config, tmp_path):
    # gloo processes on the CPU, also on a machine with one GPU
    env = dict(PYTHON=sys.executable, PORT=str(free_port()), **NO_GPU)
    out, threads = run_probing_exit_threads(
        ['bash', 'tools/dist_train.sh', tiny_config, '2', '--work-dir',
         str(tmp_path / 'work')], tmp_path / 'train', env)
    assert 'Distributed launcher: pytorch' in out or 'world_size: 2' in out
    # the launcher and both ranks reported; no rank reaches interpreter
    # finalisation with gloo's threads alive (one of them freeing a
    # collective's tensors then aborts the process: SIGABRT, exit 1)
    assert len(threads) == 3, threads
    assert not [t for names in threads for t in names if 'gloo' in t]
    checkpoint = osp.join(tmp_path, 'work', 'epoch_1.pth')
    assert osp.isfile(checkpoint)
    out, threads = run_probing_exit_threads(
        ['bash', 'tools/dist_test.sh', tiny_config, checkpoint, '2',
         '--work-dir', str(tmp_path / 'work')], tmp_path / 'test', env)
    assert 'coco/bbox_mAP' in out
    assert len(threads) == 3, threads
    assert not [t for names in threads for t in names if 'gloo' in t]
