"""mmengine checkpoints load with weights_only=True; nothing else does."""
import io
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

import dynconv_mm  # noqa: F401  (allow-lists the checkpoint globals)


def roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer)  # the default: weights_only=True


def test_message_hub_state_loads():
    hist = HistoryBuffer()
    for value in (1.0, 2.5, 4.0):
        hist.update(value)
    counts = HistoryBuffer([1, 2], [1, 1])
    state = dict(state_dict={'w': torch.ones(2)},
                 message_hub=dict(log_scalars={'loss': hist, 'n': counts},
                                  runtime_info={'eta': np.float64(3.5),
                                                'iter': np.int64(7)}),
                 meta=dict(arr=np.arange(3, dtype=np.float32)))
    loaded = roundtrip(state)
    assert loaded['message_hub']['log_scalars']['loss'].mean() == 2.5
    assert loaded['message_hub']['runtime_info']['eta'] == 3.5
    np.testing.assert_array_equal(loaded['meta']['arr'], [0, 1, 2])
    assert loaded['message_hub']['log_scalars']['n'].max() == 2


class _Evil:

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return getattr, (self.target, self.name)


@pytest.mark.parametrize('target,name', [
    (HistoryBuffer, '__init__'),
    (HistoryBuffer, '__class__'),
    (np.ndarray, 'tofile'),
])
def test_getattr_is_limited_to_history_buffer_methods(target, name):
    with pytest.raises(pickle.UnpicklingError, match='getattr'):
        roundtrip({'x': _Evil(target, name)})


class _RunsCode:

    def __reduce__(self):
        return os.system, ('echo pwned',)


def test_arbitrary_callables_are_still_refused():
    with pytest.raises(pickle.UnpicklingError):
        roundtrip({'x': _RunsCode()})
