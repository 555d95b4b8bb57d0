"""Layer normalisation (per example) and batch normalisation (per channel, with running state)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxdl._checks import is_number
from jaxdl.layers._util import check_keys, compute_dtype, param_dtype, per_channel, shape_of
from jaxdl.types import Layer, LayerError


def _scale_and_bias(channels: int, dtype) -> dict:
    return {"scale": jnp.ones((channels,), dtype), "bias": jnp.zeros((channels,), dtype)}


def _affine(params, y):
    """``y * scale + bias`` per channel (last axis), in ``y``'s dtype."""
    scale, bias = params["scale"].astype(y.dtype), params["bias"].astype(y.dtype)
    return y * per_channel(scale, y.ndim) + per_channel(bias, y.ndim)


def _normalized(x, mean, var, epsilon: float):
    """``(x - mean) / sqrt(var + epsilon)``; ``mean`` and ``var`` broadcast to ``x``."""
    return (x - mean) * lax.rsqrt(var + jnp.asarray(epsilon, x.dtype))


def _check_channels(kind: str, params, x) -> None:
    check_keys(kind, "params", params, ("scale", "bias"))
    channels = params["scale"].shape[0]
    if x.ndim < 2 or x.shape[-1] != channels:
        raise LayerError(kind, f"expected input [batch, ..., {channels}], got shape {x.shape}")


def _check_epsilon(kind: str, epsilon) -> None:
    if not is_number(epsilon) or not epsilon > 0:
        raise LayerError(kind, f"epsilon (added to the variance) must be > 0, got {epsilon!r}")


def _running(old, batch, momentum: float):
    """``momentum * old + (1 - momentum) * batch`` in float32 at least, stored as ``old``'s dtype.

    Args:
      old: a running statistic, shape ``[channels]``.
      batch: the batch's statistic, shape ``[channels]``.
      momentum: weight of ``old``.

    Returns:
      The updated statistic, shape ``[channels]``, dtype of ``old``.
    """
    dtype = compute_dtype(old)
    m = jnp.asarray(momentum, dtype)
    new = m * old.astype(dtype) + (1 - m) * lax.stop_gradient(batch.astype(dtype))
    return new.astype(old.dtype)


def layer_norm(epsilon: float = 1e-5) -> Layer:
    """Normalises each example over its last axis, then scales and shifts per feature.

    The statistics are computed in float32 at least (bfloat16 and integer inputs too); the
    output has the input's floating dtype, float32 for integer and bool inputs.

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
        wide = x.astype(compute_dtype(x))  # [batch, ..., features]
        mean = jnp.mean(wide, axis=-1, keepdims=True)
        var = jnp.var(wide, axis=-1, keepdims=True)
        y = _normalized(wide, mean, var, epsilon)
        return _affine(params, y).astype(param_dtype(x)), state

    return Layer(init, apply, "layer_norm")


def batch_norm(momentum: float = 0.9, epsilon: float = 1e-5) -> Layer:
    """Normalises each channel by batch statistics in training, by running averages in evaluation.

    With ``train=True`` the returned state holds
    ``running = momentum * running + (1 - momentum) * batch_statistic`` for the mean and the
    (biased) variance over every axis but the last. Statistics and state are float32 at least
    (in bfloat16 a momentum of 0.999 would round to 1.0); the output has the input's floating
    dtype, float32 for integer and bool inputs.

    Args:
      momentum: weight of the old running statistics in each update, in ``[0, 1)``.
      epsilon: added to the variance before the square root.

    Returns:
      A `Layer` mapping ``[batch, ..., channels]`` to the same shape; params
      ``{"scale": [channels], "bias": [channels]}``, state
      ``{"mean": [channels], "var": [channels]}``.
    """
    if not is_number(momentum) or not 0.0 <= momentum < 1.0:
        raise LayerError("batch_norm", f"momentum must be in [0, 1), got {momentum!r}")
    _check_epsilon("batch_norm", epsilon)

    def init(key, x):
        channels, dtype = shape_of(x)[-1], compute_dtype(x)
        state = {"mean": jnp.zeros((channels,), dtype), "var": jnp.ones((channels,), dtype)}
        return _scale_and_bias(channels, param_dtype(x)), state

    def apply(params, state, x, *, key=None, train=False):
        _check_channels("batch_norm", params, x)
        check_keys("batch_norm", "state", state, ("mean", "var"))
        wide = x.astype(compute_dtype(x))  # [batch, ..., channels]
        if train:
            axes = tuple(range(x.ndim - 1))
            mean, var = jnp.mean(wide, axis=axes), jnp.var(wide, axis=axes)  # [channels]
            state = {
                "mean": _running(state["mean"], mean, momentum),
                "var": _running(state["var"], var, momentum),
            }
        else:
            mean, var = state["mean"].astype(wide.dtype), state["var"].astype(wide.dtype)
        mean, var = per_channel(mean, x.ndim), per_channel(var, x.ndim)
        y = _normalized(wide, mean, var, epsilon)
        return _affine(params, y).astype(param_dtype(x)), state

    return Layer(init, apply, "batch_norm")
