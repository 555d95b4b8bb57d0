"""Max and average pooling over the spatial axes of channels-last inputs."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl.layers._util import compute_dtype, per_axis, spatial_layout
from jaxdl.layers.conv import Padding, check_fits, explicit_padding
from jaxdl.types import Layer, LayerError


def _tiles(x, window):
    """``[B, *spatial, C]`` cropped to whole windows and split: ``[B, s1/w1, w1, s2/w2, w2, C]``."""
    spatial = x.shape[1:-1]
    kept = tuple(s // w * w for s, w in zip(spatial, window, strict=True))
    x = x[(slice(None), *(slice(0, k) for k in kept), slice(None))]
    split = [d for k, w in zip(kept, window, strict=True) for d in (k // w, w)]
    return x.reshape(x.shape[0], *split, x.shape[-1])  # [B, s1/w1, w1, ..., C]


def _zero_padding_as_valid(pads, spatial, window, strides):
    """``"VALID"`` when ``pads`` adds no zeros (``0``, ``[(0, 0), ...]``, or ``"SAME"`` on sizes
    that need none), so such pooling keeps the reshape path; otherwise ``pads`` unchanged."""
    explicit = lax.padtype_to_pads(spatial, window, strides, pads) if pads == "SAME" else pads
    if explicit == "VALID" or all(tuple(p) == (0, 0) for p in explicit):
        return "VALID"
    return pads


def _pool(kind: str, window, stride, padding, reduce_tiles, reduce_window) -> Layer:
    def geometry(x):
        n = x.ndim - 2
        if n < 1:
            raise LayerError(kind, f"expected input {spatial_layout(n)}, got shape {x.shape}")
        win = per_axis(window, n, kind, "window")
        strides = win if stride is None else per_axis(stride, n, kind, "stride")
        pads = explicit_padding(padding, n, kind)
        # A side padded by a whole window or more has windows of padding only: their max would
        # be -inf and their mean 0 / 0. ("SAME" pads at most window - 1 in all.)
        if not isinstance(pads, str) and any(max(p) >= w for p, w in zip(pads, win, strict=True)):
            raise LayerError(
                kind,
                f"padding {padding!r} must be smaller than the window {win} on every side",
            )
        check_fits(kind, x.shape, win, (1,) * n, pads)
        return n, win, strides, _zero_padding_as_valid(pads, x.shape[1:-1], win, strides)

    def init(key, x):
        return {}, {}

    def apply(params, state, x, *, key=None, train=False):
        n, win, strides, pads = geometry(x)
        if strides == win and pads == "VALID":
            # Non-overlapping windows: a reshape and a reduction. XLA:CPU differentiates this
            # several times faster than reduce_window (whose backward pass is select_and_scatter).
            window_axes = tuple(range(2, 2 * n + 1, 2))
            return reduce_tiles(_tiles(x, win), window_axes), state
        full = (1, *win, 1)
        full_strides = (1, *strides, 1)
        full_pads = pads if isinstance(pads, str) else [(0, 0), *pads, (0, 0)]
        return reduce_window(x, full, full_strides, full_pads), state

    return Layer(init, apply, kind)


# The init values are NumPy constants, not jnp arrays: under jit a jnp constant is not concrete, so
# lax.reduce_window would fall back to its generic form, which reverse-mode autodiff rejects.


def _lowest(dtype) -> np.ndarray:
    """The identity of max: -inf, the smallest integer (an int has no -inf), or False."""
    if jnp.issubdtype(dtype, jnp.floating):
        return np.array(-np.inf, dtype)
    if dtype == jnp.bool_:
        return np.array(False)
    return np.array(np.iinfo(dtype).min, dtype)


def _max_window(x, window, strides, padding):
    return lax.reduce_window(x, _lowest(x.dtype), lax.max, window, strides, padding)


def _avg_window(x, window, strides, padding):
    # The mean over the window's valid (unpadded) elements, in the fast path's jnp.mean dtype
    # (floats keep theirs, integers and bools get a float) and summed, as it sums, in float32 at
    # least: a uint8 or int8 sum wraps around (a window of 100s averaged 36), a bfloat16 one
    # loses bits, and a bool sum is not defined.
    mean = jax.eval_shape(jnp.mean, x)  # the dtype jnp.mean gives
    wide = x.astype(compute_dtype(mean))  # [B, *spatial, C]
    zero = np.array(0, wide.dtype)
    total = lax.reduce_window(wide, zero, lax.add, window, strides, padding)
    count = lax.reduce_window(jnp.ones_like(wide), zero, lax.add, window, strides, padding)
    return (total / count).astype(mean.dtype)


def max_pool(
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
) -> Layer:
    """Max over each spatial window, channel by channel.

    Where a window holds tied maxima its gradient is split equally among them on the fast path
    (non-overlapping windows, no zeros padded: a reshape and ``jnp.max``) and goes to the first
    of them otherwise (``lax.reduce_window``, as in flax and torch). Both are gradients of the
    max, and ties between distinct inputs are rare after a ReLU (tied zeros pass none back);
    the first-maximum rule on the fast path cost 13-23 % of a LeNet step on CPU.

    Args:
      window: window size, an int (every spatial axis) or one per axis.
      stride: step between windows; ``None`` means ``window`` (non-overlapping windows).
      padding: ``"VALID"`` (default), ``"SAME"``, an int or ``(low, high)`` pairs.

    Returns:
      A parameter-free `Layer` mapping ``[batch, *spatial, channels]`` to
      ``[batch, *pooled, channels]`` (``pooled = spatial // window`` for the default stride).
    """
    return _pool("max_pool", window, stride, padding, jnp.max, _max_window)


def avg_pool(
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: Padding = "VALID",
) -> Layer:
    """Mean over each spatial window (padding excluded from the count), channel by channel.

    Args:
      window: window size, an int (every spatial axis) or one per axis.
      stride: step between windows; ``None`` means ``window``.
      padding: ``"VALID"`` (default), ``"SAME"``, an int or ``(low, high)`` pairs.

    Returns:
      A parameter-free `Layer` mapping ``[batch, *spatial, channels]`` to
      ``[batch, *pooled, channels]``.
    """
    return _pool("avg_pool", window, stride, padding, jnp.mean, _avg_window)


def pool(kind: str, window: int, **kwargs) -> Layer:
    """The pooling layer named ``kind`` (``"max"`` or ``"avg"``).

    Args:
      kind: ``"max"`` or ``"avg"``.
      window: window size.
      **kwargs: ``stride`` and ``padding``, as `max_pool`.

    Returns:
      A `Layer`.
    """
    makers = {"max": max_pool, "avg": avg_pool}
    if kind not in makers:
        raise ValueError(f"unknown pooling {kind!r}; valid: {', '.join(makers)} (or None)")
    return makers[kind](window, **kwargs)
