"""Safe loading of mmengine checkpoints on torch >= 2.6.

torch.load defaults to ``weights_only=True``, which refuses the few Python
objects mmengine pickles into a training checkpoint: the message hub's
``HistoryBuffer`` objects, the numpy arrays and scalars inside them, and
``getattr(HistoryBuffer, 'min')``-style references to its statistics
methods. Turning ``weights_only`` off would let a checkpoint run arbitrary
code. Instead exactly those globals are allowed, and the pickle's
``builtins.getattr`` is served by :func:`history_buffer_method`, which looks
up nothing but HistoryBuffer's own statistics methods (a real ``getattr``
would hand a malicious file any attribute of any allowed object).
"""
import inspect
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


def history_buffer_method(owner: Any, name: Any) -> Callable:
    """``getattr`` restricted to the public methods of ``HistoryBuffer``
    (its statistics such as ``min``/``mean`` are pickled that way)."""
    method = vars(HistoryBuffer).get(name) if (
        owner is HistoryBuffer and isinstance(name, str)
        and not name.startswith('_')) else None
    if not inspect.isfunction(method):
        raise pickle.UnpicklingError(
            f'checkpoint asks for getattr({owner!r}, {name!r}); only '
            'public HistoryBuffer methods are allowed')
    return method


def mmengine_checkpoint_globals() -> List[Union[Any, Tuple[Any, str]]]:
    """What an mmengine 0.10 training checkpoint pickles besides tensors,
    in the form ``torch.serialization.add_safe_globals`` takes."""
    core = getattr(np, '_core', None) or np.core  # numpy 2 / numpy 1
    multiarray = core.multiarray
    # numpy 2 rebuilds a dtype as an instance of its per-type class
    dtype_classes = {type(np.dtype(code)) for code in '?bhilqBHILQefd'}
    return [
        HistoryBuffer, np.ndarray, np.dtype, *sorted(dtype_classes, key=str),
        (multiarray._reconstruct, f'{multiarray.__name__}._reconstruct'),
        (multiarray.scalar, f'{multiarray.__name__}.scalar'),
        (history_buffer_method, 'builtins.getattr'),
    ]


def allow_mmengine_checkpoint_globals() -> None:
    """Register :func:`mmengine_checkpoint_globals` with torch.load."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 loads these without an allow-list
        add(mmengine_checkpoint_globals())
