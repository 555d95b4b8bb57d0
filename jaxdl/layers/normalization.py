"""Layer normalisation (per example) and batch normalisation (per channel, with running state)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxdl._checks import is_number
from jaxdl.layers._util import param_dtype, per_channel, shape_of
from jaxdl.types import Layer, LayerError


def _scale_and_bias(channels: int, dtype) -> dict:
    return {"scale": jnp.ones((channels,), dtype), "bias": jnp.zeros((channels,), dtype)}


def _affine(params, y):
    """``y * scale + bias`` per channel (last axis)."""
    return y * per_channel(params["scale"], y.ndim) + per_channel(params["bias"], y.ndim)


def _check_channels(kind: str, params, x) -> None:
    channels = params["scale"].shape[0]
    if x.ndim < 2 or x.shape[-1] != channels:
        raise LayerError(kind, f"expected input [batch, ..., {channels}], got shape {x.shape}")


def _check_epsilon(kind: str, epsilon) -> None:
    if not is_number(epsilon) or not epsilon > 0:
        raise LayerError(kind, f"epsilon (added to the variance) must be > 0, got {epsilon!r}")


def layer_norm(epsilon: float = 1e-5) -> Layer:
    """Normalises each example over its last axis, then scales and shifts per feature.

    Args:
      epsilon: added to the variance before the square root.

    Returns:
      A `Layer` mapping ``[batch, ..., features]`` to the same shape, params
      ``{"scale": [features], "bias": [features]}``.
    """
    _check_epsilon("layer_norm", epsilon)

    def init(key, x):
        return _scale_and_bias(shape_of(x)[-1], param_dtype(x)), {}

    def apply(params, state, x, *, key=None, train=False):
        _check_channels("layer_norm", params, x)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.var(x, axis=-1, keepdims=True)
        y = (x - mean) * lax.rsqrt(var + jnp.asarray(epsilon, x.dtype))
        return _affine(params, y), state

    return Layer(init, apply, "layer_norm")


def batch_norm(momentum: float = 0.9, epsilon: float = 1e-5) -> Layer:
    """Normalises each channel by batch statistics in training, by running averages in evaluation.

    With ``train=True`` the returned state holds
    ``running = momentum * running + (1 - momentum) * batch_statistic`` for the mean and the
    (biased) variance over every axis but the last.

    Args:
      momentum: weight of the old running statistics in each update, in ``[0, 1)``.
      epsilon: added to the variance before the square root.

    Returns:
      A `Layer` mapping ``[batch, ..., channels]`` to the same shape; params
      ``{"scale": [channels], "bias": [channels]}``, state
      ``{"mean": [channels], "var": [channels]}``.
    """
    if not 0.0 <= momentum < 1.0:
        raise LayerError("batch_norm", f"momentum must be in [0, 1), got {momentum!r}")
    _check_epsilon("batch_norm", epsilon)

    def init(key, x):
        channels, dtype = shape_of(x)[-1], param_dtype(x)
        state = {"mean": jnp.zeros((channels,), dtype), "var": jnp.ones((channels,), dtype)}
        return _scale_and_bias(channels, dtype), state

    def apply(params, state, x, *, key=None, train=False):
        _check_channels("batch_norm", params, x)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean, var = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
            m = jnp.asarray(momentum, x.dtype)
            state = {
                "mean": m * state["mean"] + (1 - m) * lax.stop_gradient(mean),
                "var": m * state["var"] + (1 - m) * lax.stop_gradient(var),
            }
        else:
            mean, var = state["mean"], state["var"]
        mean, var = per_channel(mean, x.ndim), per_channel(var, x.ndim)
        y = (x - mean) * lax.rsqrt(var + jnp.asarray(epsilon, x.dtype))
        return _affine(params, y), state

    return Layer(init, apply, "batch_norm")
