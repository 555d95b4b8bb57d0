"""Checks of plain argument values shared across modules (a leaf: imports nothing of jaxdl)."""

from __future__ import annotations

import numbers


def is_count(value, minimum: int = 1) -> bool:
    """Whether ``value`` is a whole number ``>= minimum``: an int or a NumPy int, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
