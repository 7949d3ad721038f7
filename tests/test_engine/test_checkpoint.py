"""mmengine checkpoints load with weights_only=True; nothing else does.

Hostile files are written with a pickler whose ``reducer_override`` emits
any call or state, so each test states exactly what the file holds."""
import base64
import copy
import copyreg
import io
import os
import pickle
import pickletools
import re
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

import dynconv_mm  # noqa: F401  (allow-lists the checkpoint globals)

if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
    from numpy._core import multiarray
else:
    from numpy.core import multiarray


class Crafted:
    """Pickled as ``func(*args)``, then ``BUILD state`` if state is given."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state


def crafted_history_buffer(state):
    """Pickled as ``NEWOBJ HistoryBuffer`` + ``BUILD state``, as mmengine
    writes one, but with any state (pickle insists on the real class)."""
    buffer = HistoryBuffer.__new__(HistoryBuffer)
    vars(buffer)['crafted_state'] = state
    return buffer


class CraftingPickler(pickle.Pickler):

    def reducer_override(self, obj):
        if isinstance(obj, Crafted):
            return (obj.func, obj.args) + (
                () if obj.state is None else (obj.state, ))
        if type(obj) is HistoryBuffer and 'crafted_state' in vars(obj):
            return copyreg.__newobj__, (HistoryBuffer, ), obj.crafted_state
        return NotImplemented


def save(obj, crafting=False):
    buffer = io.BytesIO()
    module = pickle
    if crafting:
        module = types.ModuleType('crafting')
        module.Pickler = CraftingPickler
    torch.save(obj, buffer, pickle_module=module)
    return buffer.getvalue()


def load(data):
    return torch.load(io.BytesIO(data))  # the default: weights_only=True


def roundtrip(obj):
    return load(save(obj))


def pickled_globals(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
        ops = pickletools.genops(archive.read(name))
        return {arg.replace(' ', '.') for op, arg, _ in ops
                if op.name == 'GLOBAL'}


def dtype_(code, state='canonical'):
    """A pickled ``numpy.dtype(code, False, True)`` with BUILD ``state``
    (numpy's own by default, none if None)."""
    if state == 'canonical':
        state = np.dtype(code).__reduce__()[2]
    return Crafted(np.dtype, (code, False, True), state)


def array_(dtype, shape, data, version=1):
    return Crafted(multiarray._reconstruct, (np.ndarray, (0, ), b'b'),
                   (version, shape, dtype, False, data))


def mmengine_state():
    """What mmengine's message hub and meta put in a checkpoint."""
    hist = HistoryBuffer()
    for value in (1.0, 2.5, 4.0):
        hist.update(value)
    counts = HistoryBuffer([1, 2], [1, 1])
    arrays = {
        'f4': np.arange(3, dtype=np.float32),
        'bool': np.array([True, False]),
        'u1_2d_fortran': np.asfortranarray(
            np.arange(6, dtype=np.uint8).reshape(2, 3)),
        'big_endian': np.arange(4, dtype='>i4'),
        'c16_0d': np.array(1 + 2j),
        'empty': np.zeros((0, 5), dtype=np.int16),
        'f2': np.array([0.5, -1], dtype=np.float16),
    }
    return dict(
        state_dict=OrderedDict(w=torch.ones(2)),
        message_hub=dict(
            log_scalars=OrderedDict(loss=hist, n=counts),
            runtime_info=OrderedDict(eta=np.float64(3.5), iter=np.int64(7),
                                     flag=np.bool_(True),
                                     small=np.uint8(200))),
        meta=dict(arrays=arrays))


def test_mmengine_state_roundtrips_as_plain_objects():
    state = mmengine_state()
    loaded = roundtrip(state)
    scalars = loaded['message_hub']['log_scalars']
    assert type(scalars['loss']) is HistoryBuffer
    assert type(scalars['loss']._log_history) is np.ndarray
    assert scalars['loss'].mean() == 2.5
    assert scalars['loss'].statistics('max') == 4.0
    assert scalars['loss'].max_length == 1000000
    assert scalars['n'].max() == 2
    scalars['n'].update(5.0)  # still a working buffer
    assert scalars['n'].current() == 5.0
    info = loaded['message_hub']['runtime_info']
    for key, value in state['message_hub']['runtime_info'].items():
        assert type(info[key]) is type(value) and info[key] == value
    for key, array in state['meta']['arrays'].items():
        # numpy's own unpickling is the reference (it makes big-endian
        # arrays native, for one)
        expected = pickle.loads(pickle.dumps(array, protocol=2))
        got = loaded['meta']['arrays'][key]
        assert (got.dtype, got.shape, got.flags.f_contiguous) == (
            expected.dtype, expected.shape, expected.flags.f_contiguous), key
        np.testing.assert_array_equal(got, expected)
        assert type(copy.deepcopy(got)) is np.ndarray
    assert loaded['meta']['arrays']['u1_2d_fortran'].flags.f_contiguous
    # what mmengine does on resume, and saving it again: plain globals only
    again = save(copy.deepcopy(loaded))
    assert not any('dynconv_mm' in name for name in pickled_globals(again))
    assert roundtrip(loaded)['message_hub']['log_scalars']['loss'].mean() \
        == 2.5


@pytest.mark.parametrize('module', [
    'numpy.core.multiarray',  # written under numpy 1
    'numpy._core.multiarray',  # written under numpy 2
])
def test_numpy_1_and_2_checkpoints_load(module):
    data = save(mmengine_state())
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        entries = {info.filename: src.read(info) for info in src.infolist()}
    for name in entries:
        if name.endswith('data.pkl'):  # GLOBAL lines are 'module\nname\n'
            entries[name] = re.sub(rb'cnumpy\.(_core|core)\.multiarray\n',
                                   b'c' + module.encode() + b'\n',
                                   entries[name])
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for name, content in entries.items():
            dst.writestr(name, content)
    data = out.getvalue()
    names = pickled_globals(data)
    assert {f'{module}._reconstruct', f'{module}.scalar'} <= names
    loaded = load(data)
    assert loaded['message_hub']['runtime_info']['eta'] == 3.5
    assert loaded['message_hub']['log_scalars']['loss'].mean() == 2.5
    np.testing.assert_array_equal(loaded['meta']['arrays']['big_endian'],
                                  np.arange(4))


# pickle.dumps(obj, protocol=2) under numpy 1.26.4 (the protocol torch.save
# uses) of: eta=float64(3.5), iter=int64(7), flag=bool_(True),
# small=uint8(200), f4=arange(3, float32), bool=[True, False],
# big=arange(4, '>i4'), c16=array(1+2j), empty=zeros((0, 5), int16),
# fortran=asfortranarray(arange(6, uint8).reshape(2, 3)),
# f2=[0.5, -1] float16, longdouble=[1.5] longdouble
NUMPY1_PICKLE = base64.b64decode(
    'gAJ9cQAoWAMAAABldGFxAWNudW1weS5jb3JlLm11bHRpYXJyYXkKc2NhbGFyCnECY251bXB5'
    'CmR0eXBlCnEDWAIAAABmOHEEiYiHcQVScQYoSwNYAQAAADxxB05OTkr/////Sv////9LAHRx'
    'CGJjX2NvZGVjcwplbmNvZGUKcQlYCAAAAAAAAAAAAAxAcQpYBgAAAGxhdGluMXELhnEMUnEN'
    'hnEOUnEPWAQAAABpdGVycRBoAmgDWAIAAABpOHERiYiHcRJScRMoSwNoB05OTkr/////Sv//'
    '//9LAHRxFGJoCVgIAAAABwAAAAAAAABxFWgLhnEWUnEXhnEYUnEZWAQAAABmbGFncRpoAmgD'
    'WAIAAABiMXEbiYiHcRxScR0oSwNYAQAAAHxxHk5OTkr/////Sv////9LAHRxH2JoCVgBAAAA'
    'AXEgaAuGcSFScSKGcSNScSRYBQAAAHNtYWxscSVoAmgDWAIAAAB1MXEmiYiHcSdScSgoSwNo'
    'Hk5OTkr/////Sv////9LAHRxKWJoCVgCAAAAw4hxKmgLhnErUnEshnEtUnEuWAIAAABmNHEv'
    'Y251bXB5LmNvcmUubXVsdGlhcnJheQpfcmVjb25zdHJ1Y3QKcTBjbnVtcHkKbmRhcnJheQpx'
    'MUsAhXEyaAlYAQAAAGJxM2gLhnE0UnE1h3E2UnE3KEsBSwOFcThoA1gCAAAAZjRxOYmIh3E6'
    'UnE7KEsDaAdOTk5K/////0r/////SwB0cTxiiWgJWA0AAAAAAAAAAADCgD8AAABAcT1oC4Zx'
    'PlJxP3RxQGJYBAAAAGJvb2xxQWgwaDFLAIVxQmg1h3FDUnFEKEsBSwKFcUVoHYloCVgCAAAA'
    'AQBxRmgLhnFHUnFIdHFJYlgDAAAAYmlncUpoMGgxSwCFcUtoNYdxTFJxTShLAUsEhXFOaANY'
    'AgAAAGk0cU+JiIdxUFJxUShLA1gBAAAAPnFSTk5OSv////9K/////0sAdHFTYoloCVgQAAAA'
    'AAAAAAAAAAEAAAACAAAAA3FUaAuGcVVScVZ0cVdiWAMAAABjMTZxWGgwaDFLAIVxWWg1h3Fa'
    'UnFbKEsBKWgDWAMAAABjMTZxXImIh3FdUnFeKEsDaAdOTk5K/////0r/////SwB0cV9iiWgJ'
    'WBEAAAAAAAAAAADDsD8AAAAAAAAAQHFgaAuGcWFScWJ0cWNiWAUAAABlbXB0eXFkaDBoMUsA'
    'hXFlaDWHcWZScWcoSwFLAEsFhnFoaANYAgAAAGkycWmJiIdxalJxayhLA2gHTk5OSv////9K'
    '/////0sAdHFsYoljX19idWlsdGluX18KYnl0ZXMKcW0pUnFudHFvYlgHAAAAZm9ydHJhbnFw'
    'aDBoMUsAhXFxaDWHcXJScXMoSwFLAksDhnF0aCiIaAlYBgAAAAADAQQCBXF1aAuGcXZScXd0'
    'cXhiWAIAAABmMnF5aDBoMUsAhXF6aDWHcXtScXwoSwFLAoVxfWgDWAIAAABmMnF+iYiHcX9S'
    'cYAoSwNoB05OTkr/////Sv////9LAHRxgWKJaAlYBQAAAAA4AMK8cYJoC4Zxg1JxhHRxhWJY'
    'CgAAAGxvbmdkb3VibGVxhmgwaDFLAIVxh2g1h3GIUnGJKEsBSwGFcYpoA1gDAAAAZjE2cYuJ'
    'iIdxjFJxjShLA2gHTk5OSv////9K/////0sAdHGOYoloCVgUAAAAAAAAAAAAAMOAw78/PcKx'
    'w7x/AABxj2gLhnGQUnGRdHGSYnUu')


def test_a_pickle_written_by_numpy_1_loads():
    """Genuine numpy 1 output, not a rewritten name; numpy's own unpickler
    is the reference."""
    data = save({})  # torch's zip layout around numpy 1's pickle
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        entries = {info.filename: src.read(info) for info in src.infolist()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for name, content in entries.items():
            dst.writestr(name, NUMPY1_PICKLE if name.endswith('data.pkl')
                         else content)
    assert 'numpy.core.multiarray._reconstruct' in pickled_globals(
        out.getvalue())
    loaded = load(out.getvalue())
    expected = pickle.loads(NUMPY1_PICKLE)
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        got = loaded[key]
        assert (np.asarray(got).dtype, np.shape(got)) == (
            value.dtype, np.shape(value)), key
        np.testing.assert_array_equal(got, value)
    assert loaded['fortran'].flags.f_contiguous


@pytest.fixture
def statistics_methods():
    """HistoryBuffer's class-wide statistics, restored after the test
    (a loader that lets a file write them would change them here)."""
    saved = dict(HistoryBuffer._statistics_methods)
    HistoryBuffer()  # registers the defaults
    yield HistoryBuffer._statistics_methods
    HistoryBuffer._statistics_methods.clear()
    HistoryBuffer._statistics_methods.update(saved)


def history(log=(1.0, 2.0), count=(1, 1), **extra):
    state = dict(max_length=10,
                 _log_history=array_(dtype_('f8'), (len(log), ),
                                     np.array(log, 'f8').tobytes()),
                 _count_history=array_(dtype_('i8'), (len(count), ),
                                       np.array(count, 'i8').tobytes()),
                 statistics_methods={'mean': HistoryBuffer.mean})
    state.update(extra)
    return crafted_history_buffer(state)


def test_crafting_writes_what_mmengine_writes(statistics_methods):
    """The crafted files below differ from real ones only where stated."""
    data = save({'h': history()}, crafting=True)
    real = HistoryBuffer([1.0, 2.0], [1, 1], max_length=10)
    assert pickled_globals(data) == pickled_globals(save({'h': real}))
    assert load(data)['h'].mean() == 1.5


def fields_state(field_dtype, flags):
    """A dtype state that gives float64 a field 'a' of ``field_dtype``."""
    return (3, '|', None, ('a', ), {'a': (field_dtype, 0)}, 8, 1, flags)


HOSTILE = {
    # an array whose object "pointers" are the file's bytes: with the
    # previous allow-list it loaded, and mmengine's resume (a deep copy of
    # runtime_info) then died of SIGSEGV
    'object field in a float dtype': (array_(
        dtype_('f8', fields_state(dtype_('O', None), 1)), (1, ),
        b'\x10' + b'\0' * 7), 'numpy.dtype'),
    'numeric field in a float dtype': (array_(
        dtype_('f8', fields_state(dtype_('f8'), 0)), (1, ), b'\0' * 8),
        'numpy.dtype'),
    'object dtype array': (array_(dtype_('O', None), (2, ), [1, 2]),
                           'numpy.dtype'),
    'dtype flags from the file': (array_(
        dtype_('f8', (3, '<', None, None, None, -1, -1, 1)), (1, ),
        b'\0' * 8), 'numpy.dtype'),
    'string dtype': (array_(dtype_('U1'), (1, ), b'a\0\0\0'), 'numpy.dtype'),
    'data shorter than the shape': (array_(dtype_('f8'), (4, ), b'\0' * 8),
                                    'numpy.ndarray'),
    'ndarray called with a buffer': (Crafted(np.ndarray, ((2, ), 'O')),
                                     'numpy.ndarray'),
    'scalar of a dtype string': (Crafted(multiarray.scalar,
                                         ('f8', b'\0' * 8)),
                                 f'{multiarray.__name__}.scalar'),
    'scalar with short data': (Crafted(multiarray.scalar,
                                       (dtype_('f8'), b'\0' * 3)),
                               f'{multiarray.__name__}.scalar'),
    'reconstruct another class': (Crafted(multiarray._reconstruct,
                                          (np.matrix, (0, ), b'b')),
                                  'numpy.matrix'),
    # statistics_methods go into the class-wide dict of every buffer
    'HistoryBuffer replacing a statistic': (
        history(statistics_methods={'mean': HistoryBuffer.max}),
        'HistoryBuffer'),
    'HistoryBuffer with an extra attribute': (history(data=1),
                                              'HistoryBuffer'),
    'HistoryBuffer with histories of unequal length': (history(count=(1, )),
                                                       'HistoryBuffer'),
    'HistoryBuffer with a list history': (history(_log_history=[1.0, 2.0]),
                                          'HistoryBuffer'),
    'HistoryBuffer called with arguments': (Crafted(
        HistoryBuffer, ([1.0], [1])), 'HistoryBuffer'),
    'getattr of a non-statistics method': (
        Crafted(getattr, (HistoryBuffer, 'update')), 'builtins.getattr'),
    'getattr of a classmethod': (
        Crafted(getattr, (HistoryBuffer, 'register_statistics')),
        'builtins.getattr'),
    'getattr of a private attribute': (
        Crafted(getattr, (HistoryBuffer, '_statistics_methods')),
        'builtins.getattr'),
    'getattr with an array for a name': (Crafted(
        getattr, (HistoryBuffer, array_(dtype_('i8'), (2, ), b'\0' * 16))),
        'builtins.getattr'),
    'dtype state holding an array': (array_(
        dtype_('f8', (3, '<', None, array_(dtype_('i8'), (2, ), b'\0' * 16),
                      None, -1, -1, 0)), (1, ), b'\0' * 8), 'numpy.dtype'),
    'getattr on numpy': (Crafted(getattr, (np.ndarray, 'tofile')),
                         'builtins.getattr'),
    'unknown global': (Crafted(os.system, ('echo pwned', )),
                       'posix.system'),
    'numpy dtype class': (Crafted(type(np.dtype('f8')), ()),
                          'numpy.dtypes.Float64DType'),
}


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_files_are_refused_naming_the_global(case,
                                                     statistics_methods):
    crafted, name = HOSTILE[case]
    defaults = dict(statistics_methods)
    data = save({'x': crafted}, crafting=True)
    with pytest.raises(pickle.UnpicklingError, match=re.escape(name)):
        load(data)
    assert statistics_methods == defaults  # nothing class-wide changed


def test_stand_ins_cannot_be_called_from_a_file():
    from dynconv_mm.engine.checkpoint import (LoadedArray, NdarrayName,
                                              PickledDtype)
    for cls in (LoadedArray, NdarrayName, PickledDtype):
        name = f'{cls.__module__}.{cls.__qualname__}'
        with pytest.raises(pickle.UnpicklingError, match=re.escape(name)):
            load(save({'x': Crafted(cls, ())}, crafting=True))
