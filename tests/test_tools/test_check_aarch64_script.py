"""tools/check_aarch64.sh runs the execution floor's tests under emulation
with a package that holds the execution floor only (its layers need mmcv,
which has no aarch64 wheel). What it copies must stay able to run there:
the floor imports nothing of OpenMMLab, and the tests it lists exist and
import nothing beyond it, nor start a process (the emulated Python cannot
start another one without the host's binfmt setup)."""
import ast
import glob
import os.path as osp
import re

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'check_aarch64.sh')
TESTS_DIR = osp.join(REPO, 'tests', 'test_execution')
# what the script copies besides the listed tests
HELPERS = {'oracle', 'cpu_ops_spy', 'float32_layer_check'}
OPENMMLAB = {'mmcv', 'mmengine', 'mmdet', 'mmpose'}


def listed_tests():
    with open(SCRIPT) as f:
        text = f.read()
    match = re.search(r'^TESTS=\(([^)]*)\)', text, re.MULTILINE)
    assert match, 'the script no longer lists its tests in TESTS=(...)'
    return match.group(1).split()


def imported_modules(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level >= 2:  # from the package above: outside the floor
                yield f'dynconv_mm.{node.module or ""}'
            elif node.module:
                yield node.module


def allowed(module, siblings):
    root = module.split('.')[0]
    if module.startswith('dynconv_mm'):
        return module.startswith('dynconv_mm.execution')
    return (root in siblings
            or root not in OPENMMLAB | {'subprocess', 'multiprocessing'})


def test_the_listed_tests_exist_and_need_only_the_execution_floor():
    tests = listed_tests()
    assert 'test_dynamic_conv2d' in tests  # every formulation vs the oracle
    siblings = set(tests) | HELPERS
    for name in tests:
        path = osp.join(TESTS_DIR, f'{name}.py')
        assert osp.exists(path), f'{name}.py is not in tests/test_execution'
        bad = [m for m in imported_modules(path) if not allowed(m, siblings)]
        assert not bad, f'{name}.py imports {bad}'


def test_the_execution_floor_imports_nothing_of_openmmlab():
    sources = glob.glob(osp.join(REPO, 'dynconv_mm', 'execution', '*.py'))
    assert sources
    for path in sources:
        bad = [m for m in imported_modules(path)
               if m.split('.')[0] in OPENMMLAB
               or (m.startswith('dynconv_mm')
                   and not m.startswith('dynconv_mm.execution'))]
        assert not bad, f'{osp.basename(path)} imports {bad}'
