"""The compiled CPU ops use no wider vectors than torch's own kernels:
``ATEN_CPU_CAPABILITY`` holds both (checked in fresh processes, since the
capability is read at import)."""
import json
import os
import subprocess
import sys

import pytest

from dynconv_mm.execution import cpu_ops

REPORT = ('import json, dynconv_mm.execution.cpu_ops as c; '
          'print(json.dumps([c.CPU_CAPABILITY, c._AVX2_FMA, c._AVX512]))')


def flags_under(capability: str) -> list:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    out = subprocess.run([sys.executable, '-c', REPORT], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not cpu_ops.cpu_ops_available(),
                    reason='the compiled CPU ops are not built')
@pytest.mark.parametrize('capability, expected', [
    ('avx2', ['AVX2', True, False]),
    ('default', ['DEFAULT', False, False]),
])
def test_held_to_torchs_capability(capability, expected):
    ops = cpu_ops._CPU_OPS
    if capability == 'avx2' and not ops.avx2_fma_supported():
        pytest.skip('this CPU has no AVX2 and FMA')
    assert flags_under(capability) == expected


@pytest.mark.skipif(not cpu_ops.cpu_ops_available(),
                    reason='the compiled CPU ops are not built')
def test_avx512_where_torch_uses_it():
    if not cpu_ops._CPU_OPS.avx512_supported():
        pytest.skip('this CPU has no AVX-512')
    if cpu_ops.CPU_CAPABILITY != 'AVX512':
        pytest.skip('torch is held below AVX-512 in this process')
    assert flags_under('avx512') == ['AVX512', True, True]
