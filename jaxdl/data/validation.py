"""Checks that one split of a data set is usable: matching lengths, valid labels, finite inputs."""

from __future__ import annotations

import numpy as np

from jaxdl.data.dataset import DataError


def validate(x: np.ndarray, y: np.ndarray, *, num_classes: int, name: str) -> None:
    """Raises `DataError` unless ``(x, y)`` is a non-empty, well-formed classification split.

    The checks, in order: ``x`` has a batch axis and ``y`` is one integer label per example; both
    have the same number of examples; that number is not zero; every label lies in
    ``[0, num_classes)``; every input is finite.

    Args:
      x: inputs, shape ``[N, ...features]``.
      y: integer labels, shape ``[N]``.
      num_classes: the number of classes; labels must lie in ``[0, num_classes)``.
      name: what the split is called in error messages (``"mnist train"``).

    Returns:
      None. Raises `DataError` naming ``name``, what was expected and what was found.
    """
    _check_shapes(x, y, name)
    _check_labels(y, num_classes, name)
    _check_finite(x, name)


def _check_shapes(x: np.ndarray, y: np.ndarray, name: str) -> None:
    """Batch axes present and equal, labels 1-D integers, at least one example."""
    if x.ndim < 2:
        raise DataError(f"{name}: x must have shape [N, ...features], got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{name}: y must have shape [N] (one label per example), got {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{name}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise DataError(f"{name}: the data set is empty (x has shape {x.shape})")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: labels y must be integers, got dtype {y.dtype}")


def _check_labels(y: np.ndarray, num_classes: int, name: str) -> None:
    """Every label in ``[0, num_classes)``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{name}: {int(bad.sum())} label(s) outside [0, {num_classes}), "
            f"the first is y[{first}] = {int(y[first])}"
        )


def _check_finite(x: np.ndarray, name: str) -> None:
    """No NaN or inf anywhere in ``x``."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argmax(bad.reshape(x.shape[0], -1).any(axis=1)))
        raise DataError(
            f"{name}: x has {int(bad.sum())} non-finite value(s) (NaN or inf), "
            f"the first in example {first}"
        )
