"""Checks of plain argument values shared across modules (a leaf: imports nothing of jaxdl)."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np


def is_number(value) -> bool:
    """Whether ``value`` is a real number: an int, a float or a NumPy scalar, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_count(value, minimum: int = 1) -> bool:
    """Whether ``value`` is a whole number ``>= minimum``: an int or a NumPy int, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def host_array(value: Any) -> np.ndarray | None:
    """``value`` as a host array, or ``None`` where it is traced (or lives on other processes)
    and so is known only inside the compiled program; a concrete jax.Array is copied."""
    if isinstance(value, jax.Array) and (
        isinstance(value, jax.core.Tracer) or not value.is_fully_addressable
    ):
        return None
    return np.asarray(value)
