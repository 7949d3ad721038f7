"""A stand-in for the compiled CPU ops module that counts the calls of
each op and runs the real one, so a test sees which path ran."""
from collections import Counter

import pytest

import dynconv_mm.execution.cpu_ops as cpu_ops


class CountingOps:

    def __init__(self, ops):
        self._ops = ops
        self.calls = Counter()
        self.last_arguments = {}  # each op's arguments in its last call

    def __getattr__(self, name):
        op = getattr(self._ops, name)

        def counted(*args):
            self.calls[name] += 1
            self.last_arguments[name] = args
            return op(*args)

        return counted


def count_cpu_op_calls(monkeypatch) -> CountingOps:
    """Replace the compiled module by a :class:`CountingOps` around it for
    the test. Skipped where it was not built (a source tree on
    ``PYTHONPATH``, as on the GPU machine): tools/install.sh, which every
    CI run starts with, fails when it does not build."""
    if not cpu_ops.cpu_ops_available():
        pytest.skip('the compiled CPU ops are not available: '
                    f'{cpu_ops.CPU_OPS_ERROR}')
    spy = CountingOps(cpu_ops._CPU_OPS)
    monkeypatch.setattr(cpu_ops, '_CPU_OPS', spy)
    return spy


def skip_without_avx2_fma(ops: str) -> None:
    """Skip a test of ``ops`` (the sample-kernel or sample-GEMM ops), which
    are not offered on a CPU without AVX2 and FMA."""
    if not cpu_ops._avx2_fma_supported():
        pytest.skip(f'this CPU has no AVX2 and FMA: the {ops} ops are not '
                    'offered')
