"""Safe loading of mmengine checkpoints on torch >= 2.6.

torch.load defaults to ``weights_only=True``, which refuses the few Python
objects mmengine 0.10 pickles into a training checkpoint (read in
``mmengine/logging/history_buffer.py`` and ``message_hub.py``):

* the message hub's ``HistoryBuffer`` objects, pickled as
  ``NEWOBJ HistoryBuffer`` + ``BUILD {max_length, _log_history,
  _count_history, statistics_methods}``, where ``statistics_methods`` maps
  ``min``/``max``/``current``/``mean`` to ``getattr(HistoryBuffer, name)``
  (a ``builtins.getattr`` call in the pickle);
* numpy arrays (``_reconstruct(ndarray, (0,), b'b')`` + ``BUILD (1, shape,
  dtype, is_fortran, raw bytes)``, the bytes of an empty one as
  ``builtins.bytes()``), numpy scalars (``scalar(dtype, raw
  bytes)``) and the dtypes inside both (``dtype(code, False, True)`` +
  ``BUILD (3, byte order, None, None, None, -1, -1, 0)``).

Turning ``weights_only`` off would let a checkpoint run code, and allowing
the real ``numpy.ndarray``/``numpy.dtype``/``HistoryBuffer`` is nearly as bad:
the unpickler then calls their ``__setstate__`` with whatever state the file
holds, e.g. a float64 dtype given an object-typed field (an array whose
"object pointers" are bytes of the file's choosing, which crashes the
process when mmengine deep-copies or prints it), or a ``statistics_methods``
entry that replaces ``HistoryBuffer.mean`` for every buffer in the process
(mmengine's ``__setstate__`` writes it into the class-wide dict).

So each of those global names is served by a stand-in below that rebuilds
the object only after checking its arguments and state: numeric or bool
dtypes in numpy's canonical state, raw data whose length fits the shape, ``HistoryBuffer`` states with exactly mmengine's attributes and
the four default statistics. Anything else is refused with an
``UnpicklingError`` that names the global; globals not listed here are
refused by torch itself. Names are registered for numpy 2
(``numpy._core.multiarray``) and numpy 1 (``numpy.core.multiarray``), so a
checkpoint written under either loads under both.
"""
import math
import pickle
import warnings
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
    from numpy._core import multiarray as _MULTIARRAY
else:
    from numpy.core import multiarray as _MULTIARRAY
# numpy 2 names the module ``numpy._core``, numpy 1 ``numpy.core``; a
# pickle names the one it was written under.
_MULTIARRAY_NAMES = ('numpy._core.multiarray', 'numpy.core.multiarray')
# the statistics mmengine registers by default and pickles by reference
STATISTICS = ('min', 'max', 'current', 'mean')
_MAX_NDIM = 32  # numpy 1's limit; no checkpoint array comes close
# numpy raises a raw ValueError past this (even for an empty array, whose
# other dimensions still count)
_MAX_BYTES = np.iinfo(np.intp).max


def _plain(*values: Any) -> bool:
    """Whether values are ints, strs, bools or None, so that comparing
    them runs no file-made ``__eq__`` (an array's raises ValueError, which
    torch.load would not turn into an UnpicklingError)."""
    return all(type(v) in (int, str, bool, type(None)) for v in values)


def _refuse(name: str, why: str) -> pickle.UnpicklingError:
    # torch.load only rewraps UnpicklingError; other exceptions would escape
    # as raw tracebacks from deep inside the unpickler.
    return pickle.UnpicklingError(f'refused global {name}: {why}')


def _numeric_dtypes() -> Dict[str, np.dtype]:
    """``{pickle code: dtype}`` for bool, integer, float and complex types,
    keyed as numpy's ``dtype.__reduce__`` spells them ('b1', 'i8', 'f4')."""
    types = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
             np.uint16, np.uint32, np.uint64, np.float16, np.float32,
             np.float64, np.longdouble, np.complex64, np.complex128,
             np.clongdouble)
    codes: Dict[str, np.dtype] = {}
    for dtype in map(np.dtype, types):  # longdouble may share float64's code
        codes.setdefault(f'{dtype.kind}{dtype.itemsize}', dtype)
    return codes


NUMERIC_DTYPES = _numeric_dtypes()


class PickledDtype:
    """What the pickle's ``numpy.dtype(code, align, copy)`` returns: a
    numeric dtype held until the following ``BUILD`` has shown a canonical
    state. Only :func:`_reconstruct` and :func:`_scalar` (the stand-ins that
    consume dtypes) accept it; a real ``np.dtype`` never reaches
    ``dtype.__setstate__``, which would accept fields, flags and sizes."""
    __slots__ = ('dtype', )

    def __new__(cls, *args: Any, **kwargs: Any) -> 'PickledDtype':
        raise _refuse(f'{cls.__module__}.{cls.__qualname__}',
                      'made only by the numpy.dtype stand-in')

    @classmethod
    def create(cls, code: Any, align: Any = False,
               copy: Any = True) -> 'PickledDtype':
        if not isinstance(code, str) or code not in NUMERIC_DTYPES:
            raise _refuse(
                'numpy.dtype', f'dtype code {code!r} is not a bool, '
                f'integer, float or complex type (allowed: '
                f'{", ".join(sorted(NUMERIC_DTYPES))})')
        if align is not False or copy is not True:
            raise _refuse('numpy.dtype', f'arguments align={align!r}, '
                          f'copy={copy!r}; numpy pickles False, True')
        made = object.__new__(cls)
        made.dtype = NUMERIC_DTYPES[code]
        return made

    def __setstate__(self, state: Any) -> None:
        canonical = self.dtype.__reduce__()[2]
        orders = ('|', ) if self.dtype.itemsize == 1 else ('<', '>', '=')
        if (type(state) is not tuple or not _plain(*state)
                or len(state) != len(canonical) or state[0] != canonical[0]
                or state[1] not in orders or state[2:] != canonical[2:]):
            raise _refuse(
                'numpy.dtype', f'state {state!r} of dtype {self.dtype} is '
                f'not the plain one numpy writes ({canonical!r}, byte order '
                f'one of {orders})')
        self.dtype = self.dtype.newbyteorder(state[1])

    def __repr__(self) -> str:
        return f'PickledDtype({self.dtype!r})'


class LoadedArray(np.ndarray):
    """What the pickle's ``_reconstruct(numpy.ndarray, (0,), b'b')``
    returns: an empty array whose ``BUILD`` accepts only a numeric
    :class:`PickledDtype` and raw data whose length fits the shape (numpy's
    own ``__setstate__`` would take an object dtype or a crafted one).

    A subclass is needed because ``BUILD`` calls the ``__setstate__`` of the
    object's own type and ``numpy.ndarray``'s cannot be replaced. Arrays
    inside a ``HistoryBuffer`` come back as plain ``np.ndarray`` views; one
    anywhere else stays a ``LoadedArray``, which pickles and deep-copies as a
    plain ndarray, so a checkpoint saved again names no dynconv_mm global.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> 'LoadedArray':
        raise _refuse(f'{cls.__module__}.{cls.__qualname__}',
                      'made only by the _reconstruct stand-in')

    def __setstate__(self, state: Any) -> None:
        name = 'numpy.ndarray'
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _refuse(name, f'state of type {type(state).__name__} is '
                          'not (version, shape, dtype, is_fortran, data)')
        version, shape, dtype, is_fortran, data = state
        if type(dtype) is not PickledDtype:
            raise _refuse(name, f'dtype {dtype!r} was not made by the '
                          'numpy.dtype stand-in')
        if type(version) is not int or version != 1 \
                or type(is_fortran) is not bool:
            raise _refuse(name, f'version {version!r} / is_fortran '
                          f'{is_fortran!r}; numpy writes 1 and a bool')
        itemsize = dtype.dtype.itemsize
        if not (type(shape) is tuple and len(shape) <= _MAX_NDIM
                and all(type(n) is int and n >= 0 for n in shape)
                and math.prod(max(n, 1) for n in shape) * itemsize
                <= _MAX_BYTES):
            raise _refuse(name, f'shape {shape!r} is not a tuple of at most '
                          f'{_MAX_NDIM} non-negative ints addressing at most '
                          f'{_MAX_BYTES} bytes')
        expected = math.prod(shape) * itemsize
        if type(data) is not bytes or len(data) != expected:
            size = len(data) if isinstance(data, (bytes, str)) else None
            raise _refuse(
                name, f'data of type {type(data).__name__} and length '
                f'{size} does not hold shape {shape} of {dtype.dtype} '
                f'({expected} bytes)')
        np.ndarray.__setstate__(self,
                                (version, shape, dtype.dtype, is_fortran,
                                 data))

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.view(np.ndarray).__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self.view(np.ndarray).__reduce__()

    def __deepcopy__(self, memo: Any) -> np.ndarray:
        return self.view(np.ndarray).copy()


class NdarrayName:
    """Stands for ``numpy.ndarray`` in a pickle: the first argument of
    ``_reconstruct``. Calling it (as the real class could be, with a buffer
    and a dtype) is refused."""

    def __new__(cls, *args: Any, **kwargs: Any) -> None:
        raise _refuse('numpy.ndarray', 'may only be the class argument '
                      'of numpy.core.multiarray._reconstruct')


def _reconstruct_as(module: str) -> Callable:
    name = f'{module}._reconstruct'

    def _reconstruct(subtype: Any, shape: Any, code: Any) -> LoadedArray:
        if subtype is not NdarrayName or type(shape) is not tuple \
                or not _plain(*shape) or shape != (0, ) \
                or type(code) is not bytes or code != b'b':
            raise _refuse(name, f'arguments ({subtype!r}, {shape!r}, '
                          f"{code!r}); numpy writes (numpy.ndarray, (0,), "
                          "b'b')")
        return np.ndarray.__new__(LoadedArray, (0, ), np.uint8)

    _reconstruct.__qualname__ = _reconstruct.__name__ = name
    return _reconstruct


def _scalar_as(module: str) -> Callable:
    name = f'{module}.scalar'

    def _scalar(dtype: Any, data: Any = None) -> Any:
        if type(dtype) is not PickledDtype:
            raise _refuse(name, f'dtype {dtype!r} was not made by the '
                          'numpy.dtype stand-in')
        if type(data) is not bytes or len(data) != dtype.dtype.itemsize:
            raise _refuse(name, f'data {data!r} is not '
                          f'{dtype.dtype.itemsize} bytes of {dtype.dtype}')
        return _MULTIARRAY.scalar(dtype.dtype, data)

    _scalar.__qualname__ = _scalar.__name__ = name
    return _scalar


class LoadedHistoryBuffer(HistoryBuffer):
    """What the pickle's ``mmengine...HistoryBuffer`` names. ``NEWOBJ``
    makes an empty one; ``BUILD`` validates the state, then turns the object
    into a plain ``HistoryBuffer``. mmengine's own ``__setstate__`` is not
    used: it copies the file's ``statistics_methods`` into the class-wide
    dict shared by every buffer in the process."""

    _NAME = 'mmengine.logging.history_buffer.HistoryBuffer'

    def __new__(cls, *args: Any, **kwargs: Any) -> 'LoadedHistoryBuffer':
        if args or kwargs:
            raise _refuse(cls._NAME, 'is rebuilt from its pickled state; '
                          'calling it with arguments is refused')
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise _refuse(self._NAME, 'is rebuilt from its pickled state; '
                      'calling it is refused')

    def __setstate__(self, state: Any) -> None:
        name = self._NAME
        required = {'max_length', '_log_history', '_count_history'}
        if not (type(state) is dict and required <= set(state) <=
                required | {'statistics_methods'}):
            keys = sorted(state) if isinstance(state, dict) else state
            raise _refuse(name, f'state {keys!r} is not mmengine\'s '
                          f'{sorted(required | {"statistics_methods"})}')
        max_length = state['max_length']
        if type(max_length) is not int or max_length < 1:
            raise _refuse(name, f'max_length {max_length!r} is not a '
                          'positive int')
        log, count = state['_log_history'], state['_count_history']
        if not (type(log) is LoadedArray and type(count) is LoadedArray
                and log.ndim == count.ndim == 1
                and len(log) == len(count) <= max_length):
            raise _refuse(
                name, 'histories must be two 1-d numeric arrays of equal '
                f'length <= max_length ({max_length}), got '
                f'{_describe(log)} and {_describe(count)}')
        methods = state.get('statistics_methods', {})
        default = {key: vars(HistoryBuffer)[key] for key in STATISTICS}
        if not (type(methods) is dict and all(
                type(key) is str and key in default and value is default[key]
                for key, value in methods.items())):
            raise _refuse(name, f'statistics_methods {methods!r} are not '
                          f'a subset of the defaults {STATISTICS}')
        self.__class__ = HistoryBuffer
        self.max_length = max_length
        self._log_history = log.view(np.ndarray)
        self._count_history = count.view(np.ndarray)
        # what mmengine's __setstate__ does, minus the file's methods: a
        # process that never built a HistoryBuffer has an empty class dict
        self._set_default_statistics()


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f'{type(value).__name__} of shape {value.shape}'
    return type(value).__name__


def history_buffer_statistic(owner: Any, name: Any) -> Callable:
    """``builtins.getattr`` as a checkpoint may call it: only
    ``getattr(HistoryBuffer, s)`` for the default statistics ``s`` (how
    pickle refers to the functions in ``statistics_methods``)."""
    if (owner is not LoadedHistoryBuffer and owner is not HistoryBuffer) \
            or type(name) is not str or name not in STATISTICS:
        raise _refuse(
            'builtins.getattr', f'getattr({owner!r}, {name!r}); only '
            f'getattr(HistoryBuffer, name) for name in {STATISTICS}')
    return vars(HistoryBuffer)[name]


def _numpy_dtype(*args: Any) -> PickledDtype:
    return PickledDtype.create(*args)


def empty_bytes(*args: Any) -> bytes:
    """``builtins.bytes`` as pickle protocol 2 calls it: ``bytes()`` for
    the raw data of an empty array (e.g. a HistoryBuffer never updated);
    non-empty bytes are pickled through ``_codecs.encode``."""
    if args:
        raise _refuse('builtins.bytes', f'arguments {args!r}; only bytes() '
                      'for empty data')
    return b''


def mmengine_checkpoint_globals() -> List[Tuple[Any, str]]:
    """The stand-ins, in the form ``torch.serialization.add_safe_globals``
    takes: ``(object, global name in the pickle)``. The stand-in classes are
    listed under their own names as well, which torch requires for
    ``BUILD`` on their instances; they refuse to be called."""
    return list(_GLOBALS)


def _build_globals() -> List[Tuple[Any, str]]:
    named: List[Tuple[Any, str]] = [
        (LoadedHistoryBuffer, LoadedHistoryBuffer._NAME),
        (history_buffer_statistic, 'builtins.getattr'),
        (_numpy_dtype, 'numpy.dtype'),
        (empty_bytes, 'builtins.bytes'),
        (NdarrayName, 'numpy.ndarray'),
    ]
    for module in _MULTIARRAY_NAMES:
        named += [(_reconstruct_as(module), f'{module}._reconstruct'),
                  (_scalar_as(module), f'{module}.scalar')]
    named += [(cls, f'{cls.__module__}.{cls.__qualname__}')
              for cls in (PickledDtype, LoadedArray)]
    return named


def allow_mmengine_checkpoint_globals() -> None:
    """Register :func:`mmengine_checkpoint_globals` with torch.load.

    Warns when something else in the process has allow-listed another
    object under one of these names (say the real ``numpy.dtype``): torch
    then picks one of the two per load, so the checks may be bypassed."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 has no weights_only allow-list
        return
    ours = dict((name, obj) for obj, name in mmengine_checkpoint_globals())
    for entry in torch.serialization.get_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (
            entry, f'{entry.__module__}.{entry.__qualname__}')
        if name in ours and ours[name] is not obj:
            warnings.warn(f'torch safe globals already allow {obj!r} as '
                          f'{name}; dynconv_mm\'s checks on checkpoints that '
                          'name it may be bypassed')
    add(mmengine_checkpoint_globals())


_GLOBALS = _build_globals()
