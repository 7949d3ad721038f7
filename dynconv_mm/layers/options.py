"""Validation of layer options: every error names the layer type, the option
and the bad value, and nothing is clamped into range silently."""
import inspect
import math
from numbers import Real
from typing import Any, Dict


def check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    """``value`` must be an ``int`` (not a ``bool``) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or value < minimum:
        raise ValueError(f'{owner}: option {name}={value!r} is invalid: '
                         f'it must be an integer >= {minimum}')
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
    does (``build_conv_layer`` passes every extra cfg key as a kwarg)."""
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
