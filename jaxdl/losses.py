"""Losses and metrics over a batch, each reduced to a scalar mean, and the checks of the integer
class labels they take."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl._checks import host_array as host_labels  # None where traced


def check_label_range(where: str, labels: Any, num_classes: int, *, name: str = "labels") -> None:
    """Raises a ValueError unless every label is in ``[0, num_classes)``, where the labels are
    concrete; traced labels are left alone (a check under jit would cost a transfer per step).

    Args:
      where: the function named first in the message (``"accuracy"``).
      labels: integer class indices, any shape.
      num_classes: the number of classes (the logits' last axis).
      name: what the labels are called in the message.

    Returns:
      None.
    """
    host = host_labels(labels)
    if host is None or host.size == 0:
        return
    bad = (host < 0) | (host >= num_classes)
    if bad.any():
        first = ", ".join(str(int(i)) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{where}: {name} must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got {int(bad.sum())} outside, the first {name}[{first}] = {int(host[bad][0])}"
        )


def check_labels(where: str, logits: jax.Array, labels: Any) -> None:
    """Raises a ValueError unless ``labels`` hold one integer class index per row of ``logits``.

    The shape and dtype are checked when traced (no cost in the compiled program); the range
    ``[0, num_classes)`` only where the labels are concrete (`check_label_range`).

    Args:
      where: the function named first in the message.
      logits: scores, shape ``[..., num_classes]``.
      labels: class indices, shape ``logits.shape[:-1]``, integer dtype.

    Returns:
      None.
    """
    shape = np.shape(logits)
    if len(shape) == 0:
        raise ValueError(f"{where}: expected logits [..., num_classes], got shape ()")
    if np.shape(labels) != shape[:-1]:
        raise ValueError(
            f"{where}: expected labels of shape {shape[:-1]} (one per row of logits {shape}), "
            f"got labels of shape {np.shape(labels)}"
        )
    dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{where}: labels must be integer class indices, got dtype {dtype}")
    check_label_range(where, labels, shape[-1])


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy between ``softmax(logits)`` and integer class labels.

    Under jit the labels' range cannot be checked without a cost in every step, so a label
    outside ``[0, num_classes)`` is refused only where the labels are concrete (not traced);
    traced, a negative label wraps around (``-1`` is the last class) and one too large gives NaN.

    Args:
      logits: unnormalised scores, shape ``[batch, num_classes]``.
      labels: class indices in ``[0, num_classes)``, shape ``[batch]``, integer dtype.

    Returns:
      The mean loss, shape ``()``. A ValueError names both shapes unless ``labels.shape ==
      logits.shape[:-1]`` (labels ``[batch, 1]`` would not be one class per row).
    """
    check_labels("softmax_cross_entropy", logits, labels)
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error.

    Args:
      predictions: shape ``[batch, ...]``.
      targets: same shape as ``predictions``.

    Returns:
      The mean of ``(predictions - targets) ** 2`` over every element, shape ``()``.
    """
    return jnp.mean(optax.losses.squared_error(predictions, targets))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose highest-scoring class is the label.

    As in `softmax_cross_entropy`, the labels' range is checked only where they are concrete;
    traced, a label outside ``[0, num_classes)`` is simply never correct.

    Args:
      logits: scores, shape ``[batch, num_classes]``.
      labels: class indices in ``[0, num_classes)``, shape ``[batch]``, integer dtype.

    Returns:
      The accuracy in ``[0, 1]``, shape ``()``, float32. A ValueError names both shapes unless
      ``labels.shape == logits.shape[:-1]`` (labels ``[batch, 1]`` would broadcast to
      ``[batch, batch]`` and give a wrong accuracy).
    """
    check_labels("accuracy", logits, labels)
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
