"""Checks that a data set is usable: each split with matching lengths, valid labels and finite
inputs, and both splits with inputs of one shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl._checks import is_count
from jaxdl.data.dataset import DataError


def validate(x: np.ndarray, y: np.ndarray, *, num_classes: int | None, name: str) -> None:
    """Raises `DataError` unless ``(x, y)`` is a non-empty, well-formed classification split.

    The checks, in order: ``x`` has a batch axis and ``y`` is one integer label per example; both
    have the same number of examples; that number is not zero; ``x`` is floating point; every
    label lies in ``[0, num_classes)``; every input is finite.

    Args:
      x: inputs, shape ``[N, ...features]``, floating point.
      y: integer labels, shape ``[N]``.
      num_classes: the number of classes; labels must lie in ``[0, num_classes)``. ``None``
        checks only that labels are ``>= 0`` (the model's output width decides the rest).
      name: what the split is called in error messages (``"mnist train"``).

    Returns:
      None. Raises `DataError` naming ``name``, what was expected and what was found.
    """
    _check_shapes(x, y, name)
    _check_labels(y, num_classes, name)
    _check_finite(x, name)


def validate_on_device(x: jax.Array, y: jax.Array, *, num_classes: int | None, name: str) -> None:
    """`validate` for arrays already on a device, without copying them to the host.

    Shapes and dtypes are read from the arrays' metadata; the labels' range and the inputs'
    finiteness are reduced on the device, so three scalars come back. Only a split that fails
    is copied to the host, where `validate` words the error.

    Args:
      x: inputs on a device, shape ``[N, ...features]``, floating point.
      y: integer labels on a device, shape ``[N]``.
      num_classes: as in `validate`.
      name: as in `validate`.

    Returns:
      None. Raises `DataError` as `validate` does.
    """
    _check_shapes(x, y, name)
    (low, high), finite = jax.device_get((label_range(y), _all_finite(x)))
    top_ok = num_classes is None or (is_count(num_classes) and high < num_classes)
    if low < 0 or not top_ok or not finite:
        validate(np.asarray(x), np.asarray(y), num_classes=num_classes, name=name)


@jax.jit
def label_range(y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(min label, max label)`` of labels ``[N]``, each of shape ``()``, reduced where ``y``
    lies (one compiled program per shape, shared by every check that needs it)."""
    return jnp.min(y), jnp.max(y)


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    """Whether every input is finite, shape ``()``."""
    return jnp.all(jnp.isfinite(x))


def _check_shapes(x: np.ndarray, y: np.ndarray, name: str) -> None:
    """Batch axes present and equal, labels 1-D integers, at least one example, float inputs."""
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
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"{name}: inputs x must be floating point (float32; scale raw pixels to [0, 1]), "
            f"got dtype {x.dtype}"
        )


def _check_labels(y: np.ndarray, num_classes: int | None, name: str) -> None:
    """Every label in ``[0, num_classes)`` (``>= 0`` if ``num_classes`` is None)."""
    if num_classes is None or (y < 0).any():  # "outside [0, 3)" would hide that -1 is the fault
        bad, what = y < 0, "negative label(s)"
    elif not is_count(num_classes):
        raise DataError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    else:
        bad, what = (y < 0) | (y >= num_classes), f"label(s) outside [0, {num_classes})"
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{name}: {int(bad.sum())} {what}, the first is y[{first}] = {int(y[first])}"
        )


def check_labels(y: np.ndarray, *, num_classes: int | None, name: str) -> None:
    """Raises `DataError` unless every label is an integer in ``[0, num_classes)``.

    Loaders call it on each labels file as soon as it is read, so that the message names the
    file and the index within it (`validate` sees the splits only once files are joined).

    Args:
      y: labels, shape ``[N]``.
      num_classes: as in `validate`.
      name: what the labels are called in error messages (the file's path).

    Returns:
      None. Raises `DataError` worded as `validate` words it.
    """
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: labels y must be integers, got dtype {y.dtype}")
    _check_labels(y, num_classes, name)


def _check_finite(x: np.ndarray, name: str) -> None:
    """No NaN or inf anywhere in ``x``."""
    # A NaN or an inf anywhere makes the sum non-finite, so a finite sum clears the whole array
    # without an [N, ...] mask; only a non-finite sum (or an overflow) needs the element check.
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf, or an overflow
        if np.isfinite(np.sum(x, dtype=np.float64)):
            return
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argmax(bad.reshape(x.shape[0], -1).any(axis=1)))
        raise DataError(
            f"{name}: x has {int(bad.sum())} non-finite value(s) (NaN or inf), "
            f"the first in example {first}"
        )


def check_same_features(name: str, train_shape: tuple, test_shape: tuple) -> None:
    """Raises `DataError` unless the train and test inputs match past the batch axis.

    Args:
      name: the data set's name in the message.
      train_shape: ``x_train.shape``, ``[N, ...features]``.
      test_shape: ``x_test.shape``, ``[M, ...features]``.

    Returns:
      None.
    """
    if tuple(train_shape[1:]) != tuple(test_shape[1:]):
        raise DataError(
            f"{name}: train and test inputs must match past the batch axis, "
            f"got shapes {tuple(train_shape)} and {tuple(test_shape)}"
        )
