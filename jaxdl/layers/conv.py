"""Convolution over 1-D and 2-D (any N-D) channels-last inputs; `conv1d`/`conv2d` are partials."""

from __future__ import annotations

import functools
import itertools
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxdl import initializers
from jaxdl.layers._canonical_conv import canonical_conv, dimension_numbers
from jaxdl.layers._util import (
    bias_initializer,
    check_keys,
    is_count,
    param_dtype,
    per_axis,
    per_channel,
    promoted,
    shape_of,
    spatial_layout,
    split_key,
)
from jaxdl.types import Layer, LayerError

Padding = str | int | Sequence[tuple[int, int]]
IMPLS = ("auto", "xla", "canonical", "im2col")
# XLA:CPU's 3-D convolution is slower than im2col (bench/NOTES.md): "auto" keeps im2col there.
CANONICAL_MAX_NDIM = 2


def explicit_padding(padding: Padding, ndim: int, kind: str) -> str | list[tuple[int, int]]:
    """``"SAME"``/``"VALID"`` as they are, an int ``p`` as ``(p, p)`` on every spatial axis."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise LayerError(
                kind, f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}"
            )
        return padding.upper()
    if isinstance(padding, bool):
        raise LayerError(kind, f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
    if isinstance(padding, numbers.Integral):
        if padding < 0:
            raise LayerError(kind, f"padding must be a non-negative int, got {padding!r}")
        return [(int(padding), int(padding))] * ndim
    try:
        pairs = [tuple(p) for p in padding]
    except TypeError:
        pairs = []  # not a sequence of pairs (a float, say): the error below
    if len(pairs) != ndim or any(len(p) != 2 for p in pairs):
        raise LayerError(kind, f"padding needs {ndim} (low, high) pairs, got {padding!r}")
    # Counts of zeros: a float would be truncated by one implementation and refused by another,
    # a negative count crops (and breaks im2col).
    if not all(is_count(v, minimum=0) for p in pairs for v in p):
        raise LayerError(
            kind, f"padding pairs must hold non-negative ints (zeros added), got {padding!r}"
        )
    return [(int(lo), int(hi)) for lo, hi in pairs]


def resolve_impl(impl: str, ndim: int, spatial=None, window=None) -> str:
    """The implementation ``impl`` stands for with ``ndim`` spatial axes on the default backend.

    ``"auto"`` is decided at trace time (``jax.default_backend()``): ``"xla"`` off the CPU,
    where XLA's convolutions and their gradients are fast; on the CPU `canonical_conv` for 1-D
    and 2-D convs and `im2col_conv` for 3 or more spatial axes, or when the window is larger
    than the input on some axis (mostly padding: XLA:CPU's conv was measured 5x slower than
    im2col there, e.g. 5x5 windows on the 4x4 and 2x2 maps of a ConvNet on 8x8 digits).

    Args:
      impl: ``"auto"``, ``"xla"``, ``"canonical"`` or ``"im2col"``.
      ndim: number of spatial axes.
      spatial: the input's spatial shape, if known.
      window: the kernel's window, if known.

    Returns:
      ``"xla"``, ``"canonical"`` or ``"im2col"``.
    """
    if impl != "auto":
        return impl
    if jax.default_backend() != "cpu":
        return "xla"
    if spatial is not None and window is not None:
        if any(k > size for k, size in zip(window, spatial, strict=True)):
            return "im2col"
    return "canonical" if ndim <= CANONICAL_MAX_NDIM else "im2col"


def check_fits(kind: str, shape, window, dilation, padding) -> None:
    """Raises unless the (dilated) window fits the padded input on every spatial axis."""
    spatial = shape[1:-1]
    for axis, (size, k, d) in enumerate(zip(spatial, window, dilation, strict=True)):
        span = (k - 1) * d + 1
        pad = 0 if isinstance(padding, str) else sum(padding[axis])
        if padding != "SAME" and span > size + pad:
            raise LayerError(
                kind,
                f"window {tuple(window)} (dilation {tuple(dilation)}) is larger than the input's "
                f"spatial shape {tuple(spatial)} with padding {padding!r}; got input shape {shape}",
            )


def zeros_before_wide_low_padding(x, window, dilation, padding):
    """Puts a low padding as wide as the dilated kernel or wider into ``x`` as zeros.

    Autodiff's input gradient of ``lax.conv`` pads the output gradient by ``span - 1 - low``,
    negative there, and XLA:CPU's convolution reads out of bounds with a negative low padding
    (openxla/xla#48713). Zeros concatenated in front of ``x`` give the same convolution; their
    transpose is a slice (a ``jnp.pad``'s would be a negative pad again).

    Args:
      x: inputs ``[batch, *spatial, in]``.
      window: kernel size per spatial axis.
      dilation: kernel dilation per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs.

    Returns:
      ``(x, padding)``: ``x`` ``[batch, *padded, in]`` and the padding left to the convolution.
    """
    if isinstance(padding, str):
        return x, padding  # "SAME" pads below the span: at most (span - 1) // 2
    left = []
    for axis, ((lo, hi), k, d) in enumerate(zip(padding, window, dilation, strict=True), 1):
        if lo >= (k - 1) * d + 1:
            zeros = jnp.zeros((*x.shape[:axis], lo, *x.shape[axis + 1 :]), x.dtype)
            x = jnp.concatenate([zeros, x], axis=axis)  # [batch, ..., lo + size, ...]
            lo = 0
        left.append((lo, hi))
    return x, left


def im2col_conv(x, w, strides, padding, dilation):
    """A convolution as one matmul over gathered patches (im2col).

    Each kernel tap is a strided slice of the padded input; the taps are stacked on the channel
    axis and multiplied by the kernel reshaped to ``[taps * in, out]``. It materialises every
    patch: on XLA:CPU it is 1.4-2.2 times slower than `canonical_conv` for 1-D and 2-D convs,
    but faster for 3-D ones; like it, it has no cliff inside ``lax.scan`` (bench/NOTES.md).

    Args:
      x: inputs ``[batch, *spatial, in]``.
      w: kernel ``[*window, in, out]``.
      strides: one per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs.
      dilation: one per spatial axis.

    Returns:
      ``[batch, *spatial_out, out]``, equal to ``lax.conv_general_dilated``.
    """
    window, (in_channels, out_channels) = w.shape[:-2], w.shape[-2:]
    spatial = x.shape[1:-1]
    dilated = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, dilated, strides, padding)
    x = jnp.pad(x, [(0, 0), *padding, (0, 0)])  # [B, *padded, C]
    out = [
        (size + lo + hi - span) // s + 1
        for size, (lo, hi), span, s in zip(spatial, padding, dilated, strides, strict=True)
    ]
    taps = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = [0, *(o * d for o, d in zip(offset, dilation, strict=True)), 0]
        limit = [
            x.shape[0],
            *(b + (n - 1) * s + 1 for b, n, s in zip(start[1:-1], out, strides, strict=True)),
            in_channels,
        ]
        taps.append(lax.slice(x, start, limit, (1, *strides, 1)))  # [B, *out, C]
    patches = jnp.concatenate(taps, axis=-1)  # [B, *out, taps * C]
    return patches @ w.reshape(-1, out_channels)  # [B, *out, O]


def conv(
    features: int,
    kernel: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    dilation: int | Sequence[int] = 1,
    *,
    ndim: int | None = None,
    w_init="he_normal",
    b_init="zeros",
    init_scale: float = 1.0,
    use_bias: bool = True,
    impl: str = "auto",
) -> Layer:
    """A convolution with ``features`` output channels over channels-last inputs.

    Args:
      features: number of output channels.
      kernel: receptive field, an int (same on every spatial axis) or one int per axis.
      stride: step between windows, int or per axis.
      padding: ``"SAME"``, ``"VALID"``, an int (that many zeros on both sides of every axis) or
        one ``(low, high)`` pair per axis.
      dilation: spacing between kernel taps, int or per axis.
      ndim: number of spatial axes; ``None`` takes it from a tuple ``kernel`` or from the input
        (rank minus 2). `conv1d` and `conv2d` fix it.
      w_init: initialiser of ``w`` (``[*kernel, in, features]``), a name or a function.
      b_init: initialiser of ``b`` (``[features]``); not a scheme scaled by fan-in/fan-out.
      init_scale: multiplies the initial ``w``.
      use_bias: whether to add ``b``.
      impl: how the convolution is computed (the results agree to float rounding):
        ``"xla"``: ``lax.conv_general_dilated`` and autodiff's gradients and batching;
        ``"canonical"``: `canonical_conv`, the same convolution, with gradients and ``vmap``
        (a population: member by member) as canonical-layout convolutions, which XLA:CPU runs
        fast also inside ``lax.scan``; reverse-mode derivatives only (any order);
        ``"im2col"``: `im2col_conv`, patches @ kernel;
        ``"auto"`` (default): ``"canonical"`` on the CPU for 1-D and 2-D inputs, ``"im2col"`` on
        the CPU for 3-D, ``"xla"`` on other backends (`resolve_impl`, at trace time).
        Forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``, Hessian-vector products by
        jvp of grad) fails through ``"canonical"``, hence through ``"auto"`` on the CPU: use
        ``"xla"`` (or ``"im2col"``) there, and for populations sharded over members on a
        multi-device CPU mesh, which ``"canonical"`` runs unpartitioned (`canonical_conv`).

    Returns:
      A `Layer` mapping ``[batch, *spatial, in]`` to ``[batch, *spatial_out, features]``, params
      ``{"w": [*kernel, in, features], "b": [features]}``.

    Example:
      >>> layer = jaxdl.conv2d(32, 5)  # on [batch, 28, 28, 1] -> [batch, 28, 28, 32]
    """
    if not is_count(features):
        raise LayerError("conv", f"features must be a positive int, got {features!r}")
    if impl not in IMPLS:
        raise LayerError(
            "conv", f"impl must be 'auto', 'xla', 'canonical' or 'im2col', got {impl!r}"
        )
    if ndim is None and not isinstance(kernel, numbers.Integral):
        ndim = len(tuple(kernel))
    w_fn = initializers.get(w_init, init_scale)
    b_fn = bias_initializer("conv", b_init)

    def geometry(shape):
        n = ndim if ndim is not None else len(shape) - 2
        if n < 1 or len(shape) != n + 2:
            raise LayerError("conv", f"expected input {spatial_layout(n)}, got shape {shape}")
        window = per_axis(kernel, n, "conv", "kernel")
        strides = per_axis(stride, n, "conv", "stride")
        dilations = per_axis(dilation, n, "conv", "dilation")
        pads = explicit_padding(padding, n, "conv")
        check_fits("conv", shape, window, dilations, pads)
        return n, window, strides, dilations, pads

    def init(key, x):
        shape = shape_of(x)
        _, window, *_ = geometry(shape)
        w_key, b_key = split_key("conv", key)
        dtype = param_dtype(x)
        params = {"w": w_fn(w_key, (*window, shape[-1], features), dtype)}
        if use_bias:
            params["b"] = b_fn(b_key, (features,), dtype)
        return params, {}

    def apply(params, state, x, *, key=None, train=False):
        check_keys("conv", "params", params, ("w", "b") if use_bias else ("w",))
        n, _, strides, dilations, pads = geometry(x.shape)
        in_channels = params["w"].shape[-2]
        if x.shape[-1] != in_channels:
            raise LayerError(
                "conv",
                f"expected input with {in_channels} channels (last axis), got shape {x.shape}",
            )
        x, w = promoted(x, params["w"])  # as dense: int or bfloat16 x with float32 w -> float32
        chosen = resolve_impl(impl, n, x.shape[1:-1], w.shape[:-2])
        if chosen == "canonical":
            y = canonical_conv(x, w, strides, pads, dilations)
        elif chosen == "im2col":
            y = im2col_conv(x, w, strides, pads, dilations)
        else:
            x, pads = zeros_before_wide_low_padding(x, w.shape[:-2], dilations, pads)
            y = lax.conv_general_dilated(
                x,
                w,
                window_strides=strides,
                padding=pads,
                rhs_dilation=dilations,
                dimension_numbers=dimension_numbers(n),
            )
        if use_bias:
            y = y + per_channel(params["b"].astype(y.dtype), y.ndim)
        return y, state

    return Layer(init, apply, "conv")


conv1d = functools.partial(conv, ndim=1)
conv1d.__doc__ = """A 1-D `conv` over inputs ``[batch, length, channels]``.

Args:
  As `conv` (``features``, ``kernel``, ``stride``, ``padding``, ``dilation``, ...), with ``ndim=1``.

Returns:
  A `Layer` mapping ``[batch, length, in]`` to ``[batch, length_out, features]``.
"""
conv2d = functools.partial(conv, ndim=2)
conv2d.__doc__ = """A 2-D `conv` over inputs ``[batch, height, width, channels]``.

Args:
  As `conv` (``features``, ``kernel``, ``stride``, ``padding``, ``dilation``, ...), with ``ndim=2``.

Returns:
  A `Layer` mapping ``[batch, height, width, in]`` to ``[batch, height_out, width_out, features]``.
"""
