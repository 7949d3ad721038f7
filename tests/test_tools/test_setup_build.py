"""setup.py's build of the compiled CPU ops: a machine that cannot compile
them gets the pure-Python package and a warning that says why, unless
DYNCONV_MM_REQUIRE_CPU_OPS=1 (tools/install.sh) asks for them.

The build runs on a copy of setup.py and the package's sources with a
compiler that is missing or will not run, so it fails within seconds; that
the real compiler builds the ops is tools/install.sh's check (it imports
them after building).
"""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def source_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('setup_build')
    shutil.copy(osp.join(REPO, 'setup.py'), root)
    shutil.copytree(osp.join(REPO, 'dynconv_mm'), root / 'dynconv_mm',
                    ignore=shutil.ignore_patterns('*.so', '__pycache__'))
    return root


def build_ext(tree, out, compiler, **env):
    environment = {k: v for k, v in os.environ.items()
                   if k != 'DYNCONV_MM_REQUIRE_CPU_OPS'}
    environment.update(CC=compiler, CXX=compiler, **env)
    return subprocess.run(
        [sys.executable, 'setup.py', 'build_ext', '--build-lib',
         str(out / 'lib'), '--build-temp', str(out / 'temp')],
        cwd=tree, env=environment, capture_output=True, text=True,
        timeout=300)


def built_ops(out):
    return [name for _, _, names in os.walk(out) for name in names
            if name.startswith('_cpu_ops')]


def compiler_too_old(directory):
    """A compiler that gives its version but compiles nothing (as one
    without C++20 would fail on torch's headers)."""
    path = directory / 'old-c++'
    path.write_text('#!/bin/sh\ncase "$*" in *-v*) echo "g++ (GCC) 9.5.0"; '
                    'exit 0;; esac\necho "error: C++20 required" >&2\n'
                    'exit 1\n')
    path.chmod(0o755)
    return str(path)


# will not run: torch's version query of the compiler fails; missing, or
# too old: the compile itself fails (ninja's RuntimeError)
@pytest.mark.parametrize('compiler', ['will not run', 'missing', 'too old'])
def test_a_failed_build_installs_without_the_ops_and_says_why(
        source_tree, tmp_path, compiler):
    path = {'will not run': '/bin/false', 'missing': '/nonexistent/c++',
            'too old': None}[compiler] or compiler_too_old(tmp_path)
    result = build_ext(source_tree, tmp_path, path)
    assert result.returncode == 0, result.stderr[-2000:]
    warning = [line for line in result.stderr.splitlines()
               if line.startswith('WARNING: dynconv_mm: building')]
    assert len(warning) == 1, result.stderr[-2000:]
    assert 'dynconv_mm._cpu_ops failed' in warning[0]
    assert 'DYNCONV_MM_REQUIRE_CPU_OPS=1' in warning[0]
    assert not built_ops(tmp_path)


def test_a_failed_build_is_an_error_where_the_ops_are_required(
        source_tree, tmp_path):
    result = build_ext(source_tree, tmp_path, '/nonexistent/c++',
                       DYNCONV_MM_REQUIRE_CPU_OPS='1')
    assert result.returncode != 0
    assert 'WARNING: dynconv_mm' not in result.stderr
    assert not built_ops(tmp_path)


def test_install_script_requires_the_ops():
    with open(osp.join(REPO, 'tools', 'install.sh')) as f:
        build_lines = [line for line in f if 'build_ext' in line
                       and not line.lstrip().startswith('#')]
    assert build_lines and all('DYNCONV_MM_REQUIRE_CPU_OPS=1' in line
                               for line in build_lines)
