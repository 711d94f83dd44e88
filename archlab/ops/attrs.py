"""Op attributes: their declaration (:class:`Attr`) and canonical forms, so that
a node's attributes compare equal however they were written (``3`` or ``[3, 3]``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from archlab.errors import short

_REQUIRED = object()


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {short(v)}")
    return v


def _as_pair(v: Any) -> tuple[int, int]:
    try:
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise TypeError
            return (_as_int(v[0]), _as_int(v[1]))
        x = _as_int(v)
        return (x, x)
    except TypeError:
        raise TypeError(f"expected an int or a pair of ints, got {short(v)}") from None


def _as_ints(v: Any) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of ints, got {short(v)}")
    return tuple(_as_int(x) for x in v)


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number, got {short(v)}")
    try:
        x = float(v)
    except OverflowError:  # an int beyond 1.8e308
        x = math.inf
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {short(v)}")
    return x


def _as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true/false, got {short(v)}")
    return v


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {short(v)}")
    return v


_KINDS: dict[str, Callable[[Any], Any]] = {
    "int": _as_int,
    "pair": _as_pair,
    "ints": _as_ints,
    "float": _as_float,
    "bool": _as_bool,
    "str": _as_str,
}


@dataclass(frozen=True)
class Attr:
    """One attribute of an op.

    Args:
        name: the keyword used in the builder and in description files.
        kind: ``int``, ``pair`` (an int or two ints, stored as a 2-tuple),
            ``ints``, ``float``, ``bool`` or ``str``.
        default: the value when omitted; omit it to make the attribute required.
            ``None`` is allowed as a default and means "derived" (e.g. a pooling
            stride that defaults to its kernel size).
        positive: reject values <= 0 (for ints and pairs).
    """

    name: str
    kind: str
    default: Any = _REQUIRED
    positive: bool = False
    nonnegative: bool = False

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def canon(self, value: Any) -> Any:
        """Return ``value`` in canonical form; raise ``TypeError``/``ValueError``."""
        if value is None and self.default is None:
            return None
        v = _KINDS[self.kind](value)
        if self.kind in ("int", "pair", "ints"):
            items = v if isinstance(v, tuple) else (v,)
            if self.positive and any(x <= 0 for x in items):
                raise ValueError(f"must be positive, got {short(value)}")
            if self.nonnegative and any(x < 0 for x in items):
                raise ValueError(f"must be >= 0, got {short(value)}")
        return v
