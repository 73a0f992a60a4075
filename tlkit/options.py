"""Checking option values, for :class:`tlkit.FitConfig` and for strategies' ``__init__``.

Options arrive from Python, YAML, JSON and the command line, so the same value may come as
``3e-4``, ``"3e-4"`` (YAML 1.1 reads a float without a dot as a string) or ``"false"``. Each
helper accepts those spellings, returns the value in its proper type, and otherwise raises
:class:`tlkit.StrategyOptionError` (a ``ValueError``) with a message that starts with the option's
name -- the engine adds which strategy or ``fit()`` argument it belongs to, once.

A strategy checks its options in ``__init__``::

    from tlkit import options

    class MyAdaptation:
        def __init__(self, trade_off=1.0, hidden_size=256, warmup=0.1):
            self.trade_off = options.positive("trade_off", trade_off)
            self.hidden_size = options.integer("hidden_size", hidden_size, minimum=1)
            self.warmup = options.fraction("warmup", warmup)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from tlkit.errors import StrategyOptionError

#: How BatchNorm may see a step's source and target batches: one pass over both, or one per
#: domain. ``FitConfig.domain_bn`` takes these (or "auto"); a strategy declares one of them.
DOMAIN_BN = ("shared", "separate")

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
_NONE = {"none", "null", "~", ""}


def _fail(name: str, value: Any, wanted: str) -> StrategyOptionError:
    return StrategyOptionError(f"{name} must be {wanted}, got {value!r}", name, value, wanted)


def number(name: str, value: Any) -> float:
    """``value`` as a finite float; numeric strings such as ``"3e-4"`` are accepted."""
    if isinstance(value, bool):
        raise _fail(name, value, "a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _fail(name, value, "a number") from None
    if not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise _fail(name, value, "a number")
    out = float(value)
    if not math.isfinite(out):
        raise _fail(name, value, "a finite number")
    return out


def positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    out = number(name, value)
    if out <= 0:
        raise _fail(name, value, "a positive number")
    return out


def non_negative(name: str, value: Any) -> float:
    """A finite number >= 0."""
    out = number(name, value)
    if out < 0:
        raise _fail(name, value, "a non-negative number")
    return out


def fraction(name: str, value: Any, *, closed_top: bool = True) -> float:
    """A number in [0, 1] (or [0, 1) with ``closed_top=False``)."""
    out = number(name, value)
    if not (0.0 <= out <= 1.0 if closed_top else 0.0 <= out < 1.0):
        raise _fail(name, value, f"a number in [0, 1{']' if closed_top else ')'}")
    return out


def integer(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """A whole number (``3``, ``3.0`` or ``"3"``; not ``1.5`` or ``True``) within the bounds."""
    if isinstance(value, bool):
        raise _fail(name, value, "a whole number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _fail(name, value, "a whole number") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise _fail(name, value, "a whole number")
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(value.__index__())
        except (AttributeError, TypeError):
            raise _fail(name, value, "a whole number") from None
    if minimum is not None and value < minimum:
        raise _fail(name, value, f"a whole number >= {minimum}")
    if maximum is not None and value > maximum:
        raise _fail(name, value, f"a whole number <= {maximum}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``True``/``False``, or their spellings ``"true"``, ``"no"``, ``1``, ``0``..."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _fail(name, value, "True or False")


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """One of ``allowed`` (strings compare case-sensitively)."""
    allowed = list(allowed)
    if value not in allowed:
        raise _fail(name, value, f"one of {allowed}")
    return value


def optional(check, name: str, value: Any, **kwargs: Any) -> Any:
    """``None`` (also spelled ``"none"``/``"null"``) or what ``check`` accepts."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
        return None
    return check(name, value, **kwargs)


__all__ = [
    "DOMAIN_BN",
    "boolean",
    "choice",
    "fraction",
    "integer",
    "non_negative",
    "number",
    "optional",
    "positive",
]
