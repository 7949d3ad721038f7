"""tools/install.sh: prerequisite checks, wheel-cache key, repair of what an
interrupted run leaves behind, and the mmcv sdist fetched through pip.

Nothing here installs anything: the script is sourced (it only defines
functions unless executed) and its functions run against stubs in a temp
dir. pip is pointed at no index in every run, so a script that got past the
step under test fails at once instead of downloading.
"""
import hashlib
import os
import os.path as osp
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = os.environ.get('DYNCONV_MM_INSTALL_SH_UNDER_TEST',
                        osp.join(REPO, 'tools', 'install.sh'))
PY_VER = '%d.%d' % sys.version_info[:2]


def write_exe(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def safe_env(tmp_path, **extra):
    """Environment in which pip can reach no index and the cache is ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
    env.update(
        PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX='1',
        PIP_DISABLE_PIP_VERSION_CHECK='1',
        HOME=str(tmp_path / 'home'), XDG_CACHE_HOME=str(tmp_path / 'xdg'),
        DYNCONV_MM_VENV=str(tmp_path / 'venv'),
        DYNCONV_MM_CACHE=str(tmp_path / 'cache'),
        # a sourced script that would install something fails here at once
        PYTHON='/bin/false')
    env.pop('DYNCONV_MM_MMCV_OPS', None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_sourced(tmp_path, body, **env):
    """Source the script in a fresh bash, then run `body` (bash code)."""
    code = f'source {shlex.quote(SCRIPT)}\n{body}'
    return subprocess.run(['bash', '-c', code], env=safe_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=300)


def make_venv(path):
    """A real venv without pip (fast), given a minimal, complete `pip`."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(path)],
                   check=True)
    site = subprocess.run(
        [str(path / 'bin' / 'python'), '-c',
         'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip()
    add_dist(site, 'pip', '99.0', present=True)
    return site


def add_dist(site, name, version, present):
    """An installed distribution whose RECORD names `name/__init__.py`,
    which exists only if `present` (a half-finished pip install if not)."""
    info = osp.join(site, f'{name}-{version}.dist-info')
    os.makedirs(info)
    with open(osp.join(info, 'METADATA'), 'w') as f:
        f.write(f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n')
    with open(osp.join(info, 'RECORD'), 'w') as f:
        f.write(f'{name}/__init__.py,,\n{name}-{version}.dist-info/METADATA,,\n'
                f'{name}-{version}.dist-info/RECORD,,\n')
    if present:
        os.makedirs(osp.join(site, name))
        open(osp.join(site, name, '__init__.py'), 'w').close()


# --- system prerequisites -------------------------------------------------

@pytest.mark.parametrize('compiler', ['rejects_cxx20', 'missing'])
def test_prerequisites_name_a_compiler_without_cxx20(tmp_path, compiler):
    if compiler == 'missing':
        cxx = str(tmp_path / 'no-such-c++')
        expected = 'not found'
    else:
        cxx = str(write_exe(tmp_path / 'old-g++', (
            '#!/bin/sh\n'
            'for a in "$@"; do [ "$a" = -std=c++20 ] && {\n'
            '  echo "old-g++: error: unrecognized command-line option'
            ' \'-std=c++20\'" >&2; exit 1; }; done\nexit 0\n')))
        expected = "unrecognized command-line option '-std=c++20'"
    proc = subprocess.run(
        ['bash', SCRIPT], capture_output=True, text=True, timeout=300,
        env=safe_env(tmp_path, CXX=cxx, PYTHON=sys.executable))
    assert proc.returncode == 1, proc.stderr
    assert 'missing system prerequisites' in proc.stderr
    assert 'C++' in proc.stderr and cxx in proc.stderr, proc.stderr
    assert expected in proc.stderr
    assert 'sudo apt-get install g++' in proc.stderr
    # failed before creating or downloading anything
    assert not (tmp_path / 'venv').exists()
    assert not (tmp_path / 'cache').exists()


def test_prerequisites_name_python_headers_and_venv_module(tmp_path):
    # A Python whose stdlib lacks ensurepip (Debian without python3.X-venv).
    shadow = tmp_path / 'shadow' / 'ensurepip'
    shadow.mkdir(parents=True)
    (shadow / '__init__.py').write_text(
        'raise ImportError("simulated: no python3-venv")\n')
    py = write_exe(tmp_path / 'python3', (
        f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(shadow.parent))} '
        f'exec {shlex.quote(sys.executable)} "$@"\n'))
    # a compiler that accepts anything, so only the Python items are missing
    cxx = write_exe(tmp_path / 'good-c++', '#!/bin/sh\nexit 0\n')
    proc = run_sourced(
        tmp_path,
        # headers looked up where there are none (no python3.X-dev)
        f'python_include_dir() {{ echo {shlex.quote(str(tmp_path))}/inc; }}\n'
        'check_prereqs',
        PYTHON=py, CXX=cxx)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert f'{tmp_path}/inc/Python.h is missing' in err, err
    assert f'sudo apt-get install python{PY_VER}-dev' in err
    assert 'ensurepip' in err
    assert f'sudo apt-get install python{PY_VER}-venv' in err
    assert 'C++' not in err  # the compiler is fine
    assert not (tmp_path / 'venv').exists()

    # and with headers, the venv module and a C++20 compiler it passes
    (tmp_path / 'inc').mkdir()
    (tmp_path / 'inc' / 'Python.h').touch()
    proc = run_sourced(
        tmp_path,
        f'python_include_dir() {{ echo {shlex.quote(str(tmp_path))}/inc; }}\n'
        'check_prereqs && echo PREREQS-OK',
        PYTHON=sys.executable, CXX=cxx, DYNCONV_MM_MMCV_OPS='cpu')
    assert proc.returncode == 0 and 'PREREQS-OK' in proc.stdout, proc.stderr


def test_unknown_ops_request_is_refused(tmp_path):
    proc = run_sourced(tmp_path, 'main', DYNCONV_MM_MMCV_OPS='gpu')
    assert proc.returncode == 1
    assert "DYNCONV_MM_MMCV_OPS='gpu' is not one of auto, cpu, cuda" \
        in proc.stderr


# --- wheel cache key ------------------------------------------------------

def probe(tmp_path, request, **env):
    proc = run_sourced(tmp_path,
                       f'probe_build {shlex.quote(sys.executable)} {request}',
                       **env)
    return proc.returncode, proc.stdout.split(), proc.stderr


def test_cache_key_names_abi_torch_build_and_ops(tmp_path):
    torch = pytest.importorskip('torch')
    rc, fields, err = probe(tmp_path, 'cpu')
    assert rc == 0, err
    abi, key, torch_cuda, archs = fields
    assert abi == f'cp{sys.version_info.major}{sys.version_info.minor}' + (
        't' if sysconfig.get_config_var('Py_GIL_DISABLED') else '')
    base = torch.__version__.split('+')[0]
    build = ('cu' + torch.version.cuda.replace('.', '')
             if torch.version.cuda else 'cpu')
    assert key == f'{abi}-torch{base}+{build}-ops_cpu'
    assert torch_cuda == (torch.version.cuda or '-') and archs == '-'

    if not torch.version.cuda:
        rc, _, err = probe(tmp_path, 'cuda')
        assert rc != 0 and 'not a CUDA build' in err
        return
    # CUDA ops get their own key, per GPU architecture list
    rc, fields, err = probe(tmp_path, 'cuda',
                            TORCH_CUDA_ARCH_LIST='8.0;9.0+PTX')
    assert rc == 0, err
    assert fields[1] == f'{abi}-torch{base}+{build}-ops_cuda-sm80_sm90ptx'
    assert fields[3] == '8.0;9.0+PTX'
    rc, fields, err = probe(tmp_path, 'auto')
    assert rc == 0, err
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert fields[1].split('-ops_')[1].split('-')[0] == expected


# --- what an interrupted run leaves behind --------------------------------

def make_wheel(path):
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('mmcv/__init__.py', 'x = 1\n' * 1000)
    return path


def test_corrupt_or_partial_cached_wheels_are_not_used(tmp_path):
    cache = tmp_path / 'key'
    cache.mkdir()
    name = 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    good = make_wheel(tmp_path / name).read_bytes()
    (cache / name).write_bytes(good[:len(good) // 2])  # truncated copy
    stale = cache / '.partial.old'
    stale.write_bytes(b'x')
    os.utime(stale, (0, 0))
    fresh = cache / '.partial.now'  # maybe another run's copy in flight
    fresh.write_bytes(b'x')
    find = (f'VPY={shlex.quote(sys.executable)}; '
            f'cached_wheel {shlex.quote(str(cache))} "mmcv-2.1.0-*.whl"')
    proc = run_sourced(tmp_path, find)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ''
    assert 'removing corrupt cached wheel' in proc.stderr
    assert not (cache / name).exists()
    assert not stale.exists() and fresh.exists()

    # a CRC error inside an intact zip directory is caught too
    bad = bytearray(good)
    i = bad.index(b'x = 1')
    bad[i] = ord('y')
    (cache / name).write_bytes(bytes(bad))
    proc = run_sourced(tmp_path, find)
    assert proc.stdout == '' and not (cache / name).exists(), proc.stderr

    (cache / name).write_bytes(good)
    proc = run_sourced(tmp_path, find)
    assert proc.stdout.strip() == str(cache / name), proc.stderr


def test_wheels_reach_the_cache_only_complete(tmp_path):
    src = make_wheel(tmp_path / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl')
    dest = tmp_path / 'cache' / 'key'
    # a `cp` killed half-way (disk full, ^C)
    stubs = tmp_path / 'stubs'
    stubs.mkdir()
    write_exe(stubs / 'cp', '#!/bin/sh\nhead -c 100 "$1" > "$2"\nexit 1\n')
    proc = run_sourced(
        tmp_path, f'PATH={shlex.quote(str(stubs))}:$PATH; publish_wheel '
        f'{shlex.quote(str(src))} {shlex.quote(str(dest))}')
    assert proc.returncode == 1
    assert 'could not write' in proc.stderr
    assert os.listdir(dest) == []

    proc = run_sourced(tmp_path, f'publish_wheel {shlex.quote(str(src))} '
                       f'{shlex.quote(str(dest))}')
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(dest) == [src.name]
    assert (dest / src.name).read_bytes() == src.read_bytes()


def venv_stub_python(tmp_path):
    """`$PYTHON -m venv DIR` makes a pip-less venv (fast) and logs the call."""
    log = tmp_path / 'venv-calls'
    return log, write_exe(tmp_path / 'stub-python', (
        f'#!/bin/sh\necho "$@" >> {shlex.quote(str(log))}\n'
        f'exec {shlex.quote(sys.executable)} "$@" --without-pip\n'))


def test_half_installed_packages_are_removed_for_reinstall(tmp_path):
    venv = tmp_path / 'venv'
    site = make_venv(venv)
    (venv / 'mine').touch()  # tells the original venv from a recreated one
    add_dist(site, 'whole', '1.0', present=True)
    log, py = venv_stub_python(tmp_path)

    proc = run_sourced(tmp_path, 'ensure_venv', PYTHON=py)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ''  # healthy: nothing touched

    # pip killed while installing: files missing, or no RECORD yet; pip
    # would call both "already satisfied"
    add_dist(site, 'half', '1.0', present=False)
    add_dist(site, 'norecord', '2.0', present=True)
    os.remove(osp.join(site, 'norecord-2.0.dist-info', 'RECORD'))
    proc = run_sourced(tmp_path, 'ensure_venv', PYTHON=py)
    assert proc.returncode == 0, proc.stderr
    assert 'removing half-installed half 1.0 (missing half/__init__.py)' \
        in proc.stderr
    assert 'removing half-installed norecord 2.0 (no RECORD)' in proc.stderr
    left = sorted(os.listdir(site))
    assert 'half-1.0.dist-info' not in left
    assert 'norecord-2.0.dist-info' not in left
    assert 'whole-1.0.dist-info' in left and 'pip-99.0.dist-info' in left
    assert (venv / 'mine').exists() and not log.exists()  # not recreated


@pytest.mark.parametrize('damage', ['python', 'pip', 'pip_files'])
def test_venv_without_working_python_or_pip_is_recreated(tmp_path, damage):
    venv = tmp_path / 'venv'
    site = make_venv(venv)
    (venv / 'mine').touch()
    if damage == 'python':  # base Python removed, or killed before the link
        (venv / 'bin' / 'python').unlink()
        (venv / 'bin' / 'python').symlink_to(tmp_path / 'gone')
        expected = 'missing or does not run'
    elif damage == 'pip':
        shutil.rmtree(osp.join(site, 'pip'))
        expected = 'has no working pip'
    else:  # pip itself half-installed: it cannot be trusted to repair
        with open(osp.join(site, 'pip-99.0.dist-info', 'RECORD'), 'a') as f:
            f.write('pip/_internal/__init__.py,,\n')
        expected = 'its pip is half-installed'
    log, py = venv_stub_python(tmp_path)
    proc = run_sourced(tmp_path, 'ensure_venv', PYTHON=py)
    assert proc.returncode == 0, proc.stderr
    assert f'recreating {venv}' in proc.stderr and expected in proc.stderr
    assert not (venv / 'mine').exists()
    assert log.read_text().split() == ['-m', 'venv', str(venv)]
    assert (venv / 'bin' / 'python').exists()
    assert not [p for p in os.listdir(tmp_path) if '.removing.' in p]


def test_a_directory_that_is_not_a_venv_is_left_alone(tmp_path):
    venv = tmp_path / 'venv'
    venv.mkdir()
    (venv / 'notes.txt').write_text('keep me')
    log, py = venv_stub_python(tmp_path)
    proc = run_sourced(tmp_path, 'ensure_venv', PYTHON=py)
    assert proc.returncode == 1
    assert 'is not a virtual environment' in proc.stderr
    assert (venv / 'notes.txt').read_text() == 'keep me'
    assert not log.exists()


def test_stamp_is_removed_before_and_written_only_after_success(tmp_path):
    venv = tmp_path / 'venv'
    make_venv(venv)
    stamp = venv / '.dynconv_mm_stamp'
    stamp.write_text('stamp of some earlier inputs\n')
    # the install is interrupted: nothing may claim the venv is complete,
    # even if the inputs later change back to the stamped ones
    proc = run_sourced(
        tmp_path, 'check_prereqs() { :; }; install_stack() { exit 3; }; main',
        PYTHON=sys.executable)
    assert proc.returncode == 3, proc.stderr
    assert not stamp.exists()
    # a stamp that matches makes the script return at once
    proc = run_sourced(tmp_path, 'stamp_want > "$STAMP_FILE"; '
                       'install_stack() { exit 3; }; main')
    assert proc.returncode == 0 and 'up to date' in proc.stderr


# --- the mmcv sdist comes through pip ---------------------------------------

def test_mmcv_sdist_is_fetched_by_pip_and_its_sha256_checked(tmp_path):
    calls = tmp_path / 'pip-calls'
    pip = write_exe(tmp_path / 'pip', (
        f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n'
        'while [ $# -gt 0 ]; do [ "$1" = -d ] && dest=$2; shift; done\n'
        'printf "not the real sdist" > "$dest/mmcv-2.1.0.tar.gz"\n'))
    dest = tmp_path / 'dl'
    dest.mkdir()
    body = (f'PIP=({shlex.quote(str(pip))}); '
            f'fetch_mmcv_sdist {shlex.quote(str(dest))}')
    proc = run_sourced(tmp_path, body)
    assert proc.returncode == 1
    assert 'not the pinned' in proc.stderr and 'sha256' in proc.stderr
    args = calls.read_text().split()
    assert args[0] == 'download' and 'mmcv==2.1.0' in args
    assert '--no-binary' in args and '--no-deps' in args
    with open(SCRIPT) as f:
        text = f.read()
    assert 'files.pythonhosted.org' not in text and 'curl' not in text

    # the same file under a pin that matches it is accepted
    digest = hashlib.sha256(b'not the real sdist').hexdigest()
    proc = run_sourced(tmp_path, f'MMCV_SDIST_SHA256={digest}; {body}')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest / 'mmcv-2.1.0.tar.gz')


def test_an_edit_of_the_compiled_ops_sources_reinstalls(tmp_path):
    # the editable install does not compile them; the stamp must change so
    # that the next run compiles them again (build_ext --inplace)
    root = tmp_path / 'repo'
    for relative in ('tools/install.sh', 'requirements/runtime.txt',
                     'requirements/tests.txt', 'setup.py'):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(osp.join(REPO, relative), root / relative)
    shutil.copytree(osp.join(REPO, 'dynconv_mm', 'execution', 'csrc'),
                    root / 'dynconv_mm' / 'execution' / 'csrc')
    script = shlex.quote(str(root / 'tools' / 'install.sh'))

    def stamp():
        proc = subprocess.run(['bash', '-c', f'source {script}; stamp_want'],
                              env=safe_env(tmp_path), capture_output=True,
                              text=True, timeout=60, check=True)
        return proc.stdout.strip()

    before = stamp()
    source = root / 'dynconv_mm' / 'execution' / 'csrc' / 'attention_cpu.cpp'
    source.write_text(source.read_text() + '\n// edited\n')
    assert stamp() != before
