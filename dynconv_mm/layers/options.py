"""Validation of layer options: every error names the layer type, the option
and the bad value, and nothing is clamped into range silently."""
import inspect
import math
from numbers import Integral, Real
from typing import Any, Dict, Tuple


def _is_int(value: Any) -> bool:
    # bool is an Integral too, but True as a channel count is a config slip.
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    """``value`` must be an integer (not a ``bool``) ``>= minimum``."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f'{owner}: option {name}={value!r} is invalid: '
                         f'it must be an integer >= {minimum}')
    return int(value)


def check_pair(owner: str, name: str, value: Any,
               minimum: int) -> Tuple[int, int]:
    """``value`` must be an integer ``>= minimum`` or a pair of them, as
    ``nn.Conv2d`` takes ``kernel_size``, ``stride``, ``padding`` and
    ``dilation``; returns the pair."""
    if isinstance(value, (tuple, list)):
        items = tuple(value)
    elif _is_int(value):
        items = (value, value)
    else:
        items = ()
    if len(items) != 2 or not all(
            _is_int(v) and v >= minimum for v in items):
        raise ValueError(f'{owner}: option {name}={value!r} is invalid: '
                         f'it must be an integer >= {minimum} or a pair of '
                         'them')
    return int(items[0]), int(items[1])


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f'{owner}: option {name}={value!r} is invalid: '
                         'it must be True or False')
    return value


def check_positive(owner: str, name: str, value: Any) -> float:
    """``value`` must be a finite real number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{owner}: option {name}={value!r} is invalid: '
                         'it must be a finite number > 0')
    return float(value)


def reject_unknown_options(owner: str, cls: type,
                           unknown: Dict[str, Any]) -> None:
    """Raise for options ``cls.__init__`` does not take, listing those it
    does (``build_conv_layer`` passes every extra cfg key as a kwarg).

    A ``TypeError``, as Python raises for an unexpected keyword: the option's
    name is wrong, not its value."""
    if not unknown:
        return
    accepted = [
        p.name for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name != 'self'
    ]
    listed = ', '.join(f'{k}={v!r}' for k, v in unknown.items())
    raise TypeError(f'{owner}: unknown option(s) {listed}; '
                    f'accepted options: {", ".join(accepted)}')
