"""tools/analysis/gpu_figures.sh: what can be checked without a GPU.

The figures themselves need one; here: the pins it downloads agree with the
ones the CPU install uses, it refuses clearly where it cannot work, and the
offline mmcv source it hands to tools/install.sh is checked like a download.
"""
import hashlib
import os
import os.path as osp
import re
import shlex
import subprocess

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'analysis', 'gpu_figures.sh')
INSTALL = osp.join(REPO, 'tools', 'install.sh')


def run(*args, **env):
    full_env = dict(os.environ, **{k: str(v) for k, v in env.items()})
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True,
                          text=True, env=full_env, timeout=300)


def read(path):
    with open(path) as f:
        return f.read()


def test_wheel_pins_agree_with_the_cpu_install():
    text = read(SCRIPT)
    wheels = dict(re.findall(r'([A-Za-z_.-]+)==([0-9.]+)', text))
    runtime = dict(
        re.findall(r'^([A-Za-z_.-]+)==([0-9.]+)',
                   read(osp.join(REPO, 'requirements', 'runtime.txt')),
                   re.M))
    assert runtime, 'requirements/runtime.txt pins nothing any more'
    for name, version in runtime.items():
        assert wheels.get(name) == version, (name, version, wheels.get(name))
    install = read(INSTALL)
    for name, variable in (('mmpose', 'MMPOSE_VERSION'),
                           ('xtcocotools', 'XTCOCOTOOLS_VERSION')):
        pinned = re.search(rf'^{variable}=(\S+)$', install, re.M).group(1)
        assert wheels.get(name) == pinned, (name, pinned, wheels.get(name))


def test_usage_on_an_unknown_command():
    proc = run('measure')
    assert proc.returncode == 2
    assert 'gpu_figures.sh wheelhouse DIR' in proc.stdout
    assert 'gpu_figures.sh run OUT_DIR' in proc.stdout


def test_install_refuses_a_missing_wheelhouse(tmp_path):
    proc = run('install', tmp_path / 'absent')
    assert proc.returncode == 1
    assert 'no wheelhouse at' in proc.stderr and 'absent' in proc.stderr


def test_install_refuses_a_python_without_torch(tmp_path):
    proc = run('install', tmp_path, PYTHON='/bin/false')
    assert proc.returncode == 1
    assert 'cannot import torch' in proc.stderr


def test_run_refuses_a_machine_without_a_gpu(tmp_path):
    python = osp.join(REPO, '.venv', 'bin', 'python')
    proc = run('run', tmp_path / 'out', 'env',
               PYTHON=python if osp.exists(python) else 'python3',
               CUDA_VISIBLE_DEVICES='')
    assert proc.returncode == 1
    assert 'sees no CUDA device' in proc.stderr


def test_offline_mmcv_source_is_checked_like_a_download(tmp_path):
    """install.sh builds from DYNCONV_MM_MMCV_SDIST without pip, and only
    if its sha256 is the pinned one."""
    sdist = tmp_path / 'mmcv-2.1.0.tar.gz'
    sdist.write_bytes(b'not the real sdist')
    dest = tmp_path / 'dest'
    dest.mkdir()

    def fetch(source, pin=''):
        body = (f'source {shlex.quote(INSTALL)}\n{pin}\nPIP=(/bin/false)\n'
                f'fetch_mmcv_sdist {shlex.quote(str(dest))}')
        env = dict(os.environ, DYNCONV_MM_MMCV_SDIST=str(source),
                   PYTHON='/bin/false')
        return subprocess.run(['bash', '-c', body], env=env,
                              capture_output=True, text=True, timeout=60)

    proc = fetch(sdist)
    assert proc.returncode == 1
    assert 'not the pinned' in proc.stderr

    digest = hashlib.sha256(b'not the real sdist').hexdigest()
    proc = fetch(sdist, f'MMCV_SDIST_SHA256={digest}')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest / 'mmcv-2.1.0.tar.gz')

    proc = fetch(tmp_path / 'absent.tar.gz', f'MMCV_SDIST_SHA256={digest}')
    assert proc.returncode == 1
    assert 'is not a file' in proc.stderr


def test_run_refuses_a_step_timeout_that_is_not_seconds(tmp_path):
    proc = run('run', tmp_path / 'out', DYNCONV_MM_STEP_TIMEOUT='10m')
    assert proc.returncode == 1
    assert "DYNCONV_MM_STEP_TIMEOUT must be a whole number of seconds, " \
        "got '10m'" in proc.stderr


def test_one_step_runs_on_its_own(tmp_path):
    """What run starts under the step timeout: an unknown step is named."""
    proc = run('step', 'warp', tmp_path)
    assert proc.returncode == 1
    assert "unknown step 'warp'" in proc.stderr and 'profile' in proc.stderr


def test_steps_pass_the_network_and_quick_options(tmp_path):
    """With a stand-in Python that records its arguments (and says it sees
    a GPU): DYNCONV_MM_NETWORKS reaches every network step's benchmark.py,
    and DYNCONV_MM_QUICK runs the compiling steps in one process."""
    calls = tmp_path / 'calls'
    python = tmp_path / 'python'
    python.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {calls}\n'
                      f'echo >> {calls}\n')
    python.chmod(0o755)
    proc = run('run', tmp_path / 'out', 'network', 'triton', 'captured',
               PYTHON=python, DYNCONV_MM_QUICK=1,
               DYNCONV_MM_NETWORKS='OD-ResNet-50 1x',
               DYNCONV_MM_SITE=tmp_path / 'no-site')
    assert proc.returncode == 0, proc.stderr
    lines = [line.split('|') for line in calls.read_text().splitlines()
             if 'benchmark.py' in line]
    assert len(lines) == 3
    for args in lines:
        assert args[args.index('--networks') + 1] == 'OD-ResNet-50 1x'
        assert '--quick' in args
    network, triton, captured = lines
    assert '--processes' not in network and '--execution' in triton
    assert captured[captured.index('--processes') + 1] == '1'
    assert captured[captured.index('--compile-mode') + 1] == \
        'reduce-overhead'
