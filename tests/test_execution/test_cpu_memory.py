"""Freed CPU memory kept in the process (execution/cpu_memory.py): counted
in page faults, not timed. Each case runs in a fresh interpreter, since
malloc settings are process-wide."""
import json
import os
import platform
import subprocess
import sys

import pytest

from dynconv_mm.execution import cpu_memory

glibc = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
    reason='the thresholds are glibc malloc settings')

# The training step where it matters most: a 512-channel 3x3 layer with
# four kernels on 7x7 maps, batch 8, per-sample kernels (8 x 9 MiB, plus
# their gradients). Minor page faults per step, median of 9 steps after 3
# (with memory kept an occasional step still faults while the heap
# settles, so the median; default glibc faults ~5x the kernels' pages on
# every step).
PROBE = r'''
import json, resource, statistics
import torch
import dynconv_mm
from dynconv_mm.execution import cpu_memory_state
from dynconv_mm.layers import DynamicConv2d
torch.set_num_threads(1)
layer = DynamicConv2d(512, 512, 3, padding=1, num_kernels=4,
                      execution='aggregated')
x = torch.randn(8, 512, 7, 7, requires_grad=True)
faults = []
for step in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    layer(x).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(state=cpu_memory_state(),
                      faults_per_step=statistics.median(faults[3:]),
                      kernel_pages=8 * 512 * 512 * 9 * 4 // 4096)))
'''


def probe(**env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in cpu_memory.GLIBC_VARIABLES
           and k != cpu_memory.OPT_OUT_VARIABLE}
    env.update(env_changes)
    out = subprocess.run([sys.executable, '-c', PROBE], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc
def test_importing_the_package_stops_per_call_page_faults():
    result = probe()
    assert result['state']['applied'], result
    assert result['faults_per_step'] < result['kernel_pages'] / 20, result


@glibc
def test_opting_out_leaves_malloc_alone():
    """The opt-out restores glibc's behaviour, which is the reason for the
    module: every step faults in the fresh per-sample kernels."""
    result = probe(DYNCONV_MM_KEEP_FREED_MEMORY='0')
    assert not result['state']['applied']
    assert 'DYNCONV_MM_KEEP_FREED_MEMORY=0' in result['state']['reason']
    assert result['faults_per_step'] > result['kernel_pages'], result


@glibc
def test_a_users_own_malloc_setting_wins():
    result = probe(MALLOC_TRIM_THRESHOLD_='1000000')
    assert not result['state']['applied']
    assert 'MALLOC_TRIM_THRESHOLD_' in result['state']['reason']


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.delenv(cpu_memory.OPT_OUT_VARIABLE, raising=False)
    for name in cpu_memory.GLIBC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(platform, 'libc_ver', lambda: ('musl', '1.2'))
    before = cpu_memory.cpu_memory_state()
    try:
        assert not cpu_memory.keep_freed_cpu_memory()
        assert 'not glibc' in cpu_memory.cpu_memory_state()['reason']
    finally:  # the state the selection rule reads, as the import left it
        cpu_memory._record(**before)
