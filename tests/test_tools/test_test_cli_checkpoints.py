"""tools/test.py refuses a checkpoint that does not fit the config (unless
--allow-partial-load) or cannot be read, with one line and exit 1, before
anything is evaluated. The checkpoint is the tiny demo model's weights as
built (no training: fit is about keys and shapes). That a fitting,
Runner-written checkpoint is evaluated is test_train_test_cli's part."""
import subprocess
import sys

import pytest
import test_train_test_cli as end_to_end
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow

NARROW = ['--cfg-options', 'model.backbone.conv_cfg.num_kernels=2']
# the tiny config and synthetic data of the end-to-end tests
tiny_config = end_to_end.tiny_config


@pytest.fixture(scope='module')
def checkpoint(tiny_config, tmp_path_factory):
    """The config's model (ODConv with K=4) as mmengine saves weights."""
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(tiny_config).model)
    path = str(tmp_path_factory.mktemp('ckpt') / 'k4.pth')
    save_checkpoint(dict(state_dict=model.state_dict(), meta={}), path)
    return path


def run_test_tool(config, checkpoint, work_dir, *args):
    proc = subprocess.run(
        [sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
         str(work_dir), *args], cwd=end_to_end.REPO, capture_output=True,
        text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_mismatched_checkpoint_is_refused(tiny_config, checkpoint, tmp_path):
    rc, out, err = run_test_tool(tiny_config, checkpoint, tmp_path, *NARROW)
    assert rc == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'test.py: error: checkpoint {checkpoint} does '
                           'not fit the model: ')
    assert ('backbone.conv1.weight: checkpoint [4, 16, 3, 7, 7], model '
            '[2, 16, 3, 7, 7]') in last
    assert '--allow-partial-load' in last
    assert 'Traceback' not in err and 'Epoch(test)' not in out + err


def test_partial_load_evaluates_with_a_warning(tiny_config, checkpoint,
                                               tmp_path):
    rc, out, err = run_test_tool(tiny_config, checkpoint, tmp_path, *NARROW,
                             '--allow-partial-load')
    assert rc == 0, err[-3000:]
    output = out + err
    assert f'loading checkpoint {checkpoint} partially: ' in output
    assert 'size mismatch' in output and 'coco/bbox_mAP' in output


@pytest.mark.parametrize('kind', ['truncated', 'garbage'])
def test_unreadable_checkpoint_is_one_line(tiny_config, checkpoint, tmp_path,
                                           kind):
    path = str(tmp_path / f'{kind}.pth')
    with open(checkpoint, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2] if kind == 'truncated' else
                b'\x00garbage' * 100)
    rc, out, err = run_test_tool(tiny_config, path, tmp_path)
    assert rc == 1
    assert 'Traceback' not in err
    errors = [line for line in err.splitlines() if 'error' in line.lower()]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith(f'test.py: error: cannot load checkpoint '
                                f'{path}: ')
