"""Checks of plain argument values shared across modules (a leaf: imports nothing of jaxdl)."""

from __future__ import annotations

import numbers


def is_number(value) -> bool:
    """Whether ``value`` is a real number: an int, a float or a NumPy scalar, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_count(value, minimum: int = 1) -> bool:
    """Whether ``value`` is a whole number ``>= minimum``: an int or a NumPy int, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
