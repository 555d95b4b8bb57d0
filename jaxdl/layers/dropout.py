"""Dropout: zeroes a fraction ``rate`` of units in training, rescaling the rest."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl._checks import is_number
from jaxdl.types import Layer, LayerError


def dropout(rate: float) -> Layer:
    """Zeroes each unit with probability ``rate`` when ``train=True``; identity otherwise.

    Kept units are divided by ``1 - rate`` so the expectation of every unit is unchanged.

    Args:
      rate: fraction of units zeroed, in ``[0, 1)``.

    Returns:
      A parameter-free `Layer` mapping ``[batch, ...]`` to the same shape. In training its
      ``apply`` needs ``key``.
    """
    if not is_number(rate) or not 0.0 <= rate < 1.0:  # a NumPy scalar too (np.linspace grids)
        raise LayerError(
            "dropout", f"rate (fraction of units zeroed) must be in [0, 1), got {rate!r}"
        )
    rate = float(rate)

    def init(key, x):
        return {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not train or rate == 0.0:
            return x, state
        if key is None:
            raise LayerError("dropout", "train=True needs a key (apply(..., key=key, train=True))")
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x)), state

    return Layer(init, apply, "dropout")
