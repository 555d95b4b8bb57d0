"""The fully connected layer."""

from __future__ import annotations

from jaxdl import initializers
from jaxdl.layers._util import (
    bias_initializer,
    check_keys,
    is_count,
    param_dtype,
    per_channel,
    promoted,
    shape_of,
    split_key,
)
from jaxdl.types import Layer, LayerError


def dense(
    features: int,
    *,
    w_init="glorot_uniform",
    b_init="zeros",
    init_scale: float = 1.0,
    use_bias: bool = True,
) -> Layer:
    """A fully connected layer ``y = x @ w + b`` over the last axis.

    Args:
      features: number of output units.
      w_init: initialiser of ``w`` (``[in, features]``): a name from `jaxdl.initializers.NAMES` or a
        function ``(key, shape, dtype) -> array``.
      b_init: initialiser of ``b`` (``[features]``); not a scheme scaled by fan-in/fan-out.
      init_scale: multiplies the initial ``w``.
      use_bias: whether to add ``b``.

    Returns:
      A `Layer` mapping ``[batch, ..., in]`` to ``[batch, ..., features]``, params
      ``{"w": [in, features], "b": [features]}``. Inputs of another dtype than ``w`` are
      promoted with it (integer or bfloat16 inputs with float32 params give float32).
    """
    if not is_count(features):
        raise LayerError("dense", f"features must be a positive int, got {features!r}")
    w_fn = initializers.get(w_init, init_scale)
    b_fn = bias_initializer("dense", b_init)

    def init(key, x):
        shape = shape_of(x)
        if len(shape) < 2:
            raise LayerError("dense", f"expected input [batch, ..., features], got shape {shape}")
        w_key, b_key = split_key("dense", key)
        dtype = param_dtype(x)
        params = {"w": w_fn(w_key, (shape[-1], features), dtype)}
        if use_bias:
            params["b"] = b_fn(b_key, (features,), dtype)
        return params, {}

    def apply(params, state, x, *, key=None, train=False):
        check_keys("dense", "params", params, ("w", "b") if use_bias else ("w",))
        in_features = params["w"].shape[0]
        if x.ndim < 2 or x.shape[-1] != in_features:
            raise LayerError(
                "dense", f"expected input [batch, ..., {in_features}], got shape {x.shape}"
            )
        x, w = promoted(x, params["w"])
        y = x @ w  # [batch, ..., features]
        if use_bias:
            y = y + per_channel(params["b"].astype(y.dtype), y.ndim)
        return y, state

    return Layer(init, apply, "dense")
