"""tools/analysis/profile_layer.py on the CPU: both tables, the ratio, and
what a dynamic layer runs besides its convolution."""
import os.path as osp
import subprocess
import sys

from dynconv_mm.execution.cpu_ops import cpu_ops_available

TOOL = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'analysis',
                'profile_layer.py')


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True,
                          text=True, timeout=300)


def test_profiles_a_layer_against_a_static_conv():
    result = run('--layer', 'ODConv 4x', '--shape', '8,8,3,6', '--batch',
                 '2', '--steps', '1', '--execution', 'im2col', '--top',
                 '1000')
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    static, dynamic = out.split('\nstatic conv: ')[1].split(
        '\nODConv 4x: ', 1)
    assert 'convolution' in static
    # the attention and mixing ops a static conv does not run
    assert 'aten::mean' in dynamic and 'aten::_softmax' in dynamic
    # the unfold: the compiled op's autograd Function, or PyTorch's
    unfold = ('_UnfoldColumns' if cpu_ops_available() else 'aten::im2col')
    assert unfold in dynamic and unfold not in static
    assert "x the static conv's CPU time" in out
    # each module's wall time and dispatched ops: a static conv's step is a
    # handful of ops (forward, backward, the loss), the layer's many more
    summary = {line.split(': wall ')[0]: line for line in out.splitlines()
               if ': wall ' in line}
    ops = {name: int(line.split(', ')[-1].split()[0])
           for name, line in summary.items()}
    assert set(ops) == {'static conv', 'ODConv 4x'}
    assert 3 <= ops['static conv'] <= 12 < 3 * ops['static conv'] < \
        ops['ODConv 4x']
    assert 'dispatched ops' in out.splitlines()[-1]


def test_bad_arguments_are_named():
    result = run('--shape', '8,8,3')
    assert result.returncode != 0 and '--shape' in result.stderr
    result = run('--execution', 'fused')
    assert result.returncode != 0 and "'fused'" in result.stderr
