"""Dropout: zeroes a fraction ``rate`` of units in training, rescaling the rest."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl._checks import is_number
from jaxdl.layers._util import check_key, compute_dtype, param_dtype
from jaxdl.types import Layer, LayerError


def dropout(rate: float) -> Layer:
    """Zeroes each unit with probability ``rate`` when ``train=True``; identity otherwise.

    Kept units are divided by ``1 - rate`` so the expectation of every unit is unchanged; the
    division is done in float32 at least. The output has the input's floating dtype, float32
    for integer and bool inputs (in evaluation too).

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
        out_dtype = param_dtype(x)
        if not train or rate == 0.0:
            return x.astype(out_dtype), state
        if key is None:
            raise LayerError("dropout", "train=True needs a key (apply(..., key=key, train=True))")
        check_key("dropout", key)
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)  # [batch, ...]
        wide = x.astype(compute_dtype(x))  # an int's 1 - rate would be 0
        y = jnp.where(keep, wide / jnp.asarray(1.0 - rate, wide.dtype), jnp.zeros_like(wide))
        return y.astype(out_dtype), state

    return Layer(init, apply, "dropout")
