"""Losses and metrics over a batch, each reduced to a scalar mean."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy between ``softmax(logits)`` and integer class labels.

    Args:
      logits: unnormalised scores, shape ``[batch, num_classes]``.
      labels: class indices in ``[0, num_classes)``, shape ``[batch]``, integer dtype.

    Returns:
      The mean loss, shape ``()``.
    """
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

    Args:
      logits: scores, shape ``[batch, num_classes]``.
      labels: class indices, shape ``[batch]``.

    Returns:
      The accuracy in ``[0, 1]``, shape ``()``, float32.
    """
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
