"""`canonical_conv`: ``lax.conv`` whose gradients, and whose batching under ``vmap``, are
convolutions in the canonical channels-last layout, the one XLA:CPU runs fast.

Autodiff of an NHWC ``lax.conv`` gives a kernel-gradient convolution with dimension numbers
``[f, 0, 1, b] x [i, 0, 1, o]``, which XLA:CPU runs on a slow generic path inside ``lax.scan``
(over 100 times slower; jaxdl trains in scanned chunks), and ``vmap`` over kernels (a population
of networks) makes every convolution a grouped one, also slow. Here both gradients are canonical
convolutions after explicit transposes, and the batching rule never groups (bench/NOTES.md).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap


def dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels-last layouts ``[N, *S, C]``, ``[*S, I, O]``, ``[N, *S, C]``, any ``ndim``.

    This is the canonical layout of XLA:CPU's fast convolution.
    """
    spatial = tuple(range(1, ndim + 1))
    data = (0, ndim + 1, *spatial)  # (batch, feature, *spatial) axis numbers
    kernel = (ndim + 1, ndim, *range(ndim))  # (out, in, *spatial)
    return lax.ConvDimensionNumbers(data, kernel, data)


def _conv(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation):
    """``lax.conv_general_dilated`` in the canonical layout.

    A negative low padding (a crop: `_input_grad`'s where the forward padding is as wide as the
    kernel's span) is taken off the output instead, on axes of stride 1: XLA:CPU's convolution
    reads out of bounds with one (openxla/xla#48713) and returns garbage.
    """
    crops = tuple(max(-lo, 0) for lo, _ in padding)
    if any(c and s != 1 for c, s in zip(crops, strides, strict=True)):
        raise ValueError(f"negative low padding {padding} needs stride 1, got strides {strides}")
    y = lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=strides,
        padding=tuple((max(lo, 0), hi) for lo, hi in padding),
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers(lhs.ndim - 2),
    )
    if any(crops):
        y = y[(slice(None), *(slice(c, None) for c in crops), slice(None))]  # [B, *S_out, O]
    return y


class Geometry(NamedTuple):
    """The static shape of one convolution, per spatial axis; hashable, it keys `_ops`' cache."""

    spatial: tuple[int, ...]  # input size n
    window: tuple[int, ...]  # kernel size k
    strides: tuple[int, ...]  # s
    padding: tuple[tuple[int, int], ...]  # (low, high) zeros
    dilation: tuple[int, ...]  # kernel dilation d

    @property
    def spans(self) -> tuple[int, ...]:
        """Extent of the dilated kernel, ``K = (k - 1) * d + 1``."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.window, self.dilation, strict=True))

    @property
    def out(self) -> tuple[int, ...]:
        """Output size ``m = (n + low + high - K) // s + 1``."""
        return tuple(
            (n + lo + hi - span) // s + 1
            for n, (lo, hi), span, s in zip(
                self.spatial, self.padding, self.spans, self.strides, strict=True
            )
        )

    def input_grad_padding(self) -> tuple[tuple[int, int], ...]:
        """Padding of the output gradient for `_input_grad`.

        Dilated by the strides, the output gradient spans ``(m - 1) * s + 1``; correlated with
        the rotated kernel it must give the ``n`` input positions. Input position 0 met the
        kernel's tap ``low``, so ``K - 1 - low`` zeros go before, and the rest of ``n + K - 1``
        after (negative: cropped).
        """
        pads = []
        for n, (lo, _), span, m, s in zip(
            self.spatial, self.padding, self.spans, self.out, self.strides, strict=True
        ):
            before = span - 1 - lo
            pads.append((before, n + span - 1 - ((m - 1) * s + 1) - before))
        return tuple(pads)

    def kernel_grad_padding(self) -> tuple[tuple[int, int], ...]:
        """Padding of the input for `_kernel_grad`: the forward ``low``, and a ``high`` that
        makes the padded input span exactly what the taps read, ``(m - 1) * s + K``, so the
        output has the kernel's size (negative: cropped)."""
        return tuple(
            (lo, (m - 1) * s + span - n - lo)
            for n, (lo, _), span, m, s in zip(
                self.spatial, self.padding, self.spans, self.out, self.strides, strict=True
            )
        )


def geometry(spatial, window, strides, padding, dilation) -> Geometry:
    """The `Geometry` of a conv; ``"SAME"``/``"VALID"`` become pairs (XLA's convention)."""
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, spans, strides, padding)
    return Geometry(
        tuple(spatial),
        tuple(window),
        tuple(strides),
        tuple((int(lo), int(hi)) for lo, hi in padding),
        tuple(dilation),
    )


# ----------------------------------------------------------------------------- the three convs
# y = conv(x, w) is bilinear; its transposes are dx = input_grad(dy, w) and dw = kernel_grad(x, dy),
# and each of the three is the transpose of the others (`_ops`), so derivatives of every order
# are these same three canonical convolutions.


def _forward(g: Geometry, x, w):
    """``x [B, *S, I], w [*K, I, O] -> y [B, *S_out, O]``."""
    ones = (1,) * len(g.window)
    return _conv(x, w, g.strides, g.padding, ones, g.dilation)


def _input_grad(g: Geometry, dy, w):
    """``dy [B, *S_out, O], w [*K, I, O] -> dx [B, *S, I]``: the output gradient, dilated by
    the strides, correlated with the kernel rotated by 180° with in and out swapped."""
    n = len(g.window)
    rotated = jnp.swapaxes(lax.rev(w, tuple(range(n))), -1, -2)  # [*K, O, I]
    return _conv(dy, rotated, (1,) * n, g.input_grad_padding(), g.strides, g.dilation)


def _kernel_grad(g: Geometry, x, dy):
    """``x [B, *S, I], dy [B, *S_out, O] -> dw [*K, I, O]``: the input correlated with the
    output gradient, the in-channels as the batch and the batch as the contracted feature axis;
    the kernel's dilation becomes the stride and the forward stride the dilation."""
    lhs = jnp.swapaxes(x, 0, -1)  # [I, *S, B]
    rhs = jnp.moveaxis(dy, 0, -2)  # [*S_out, B, O]
    dw = _conv(lhs, rhs, g.dilation, g.kernel_grad_padding(), (1,) * len(g.window), g.strides)
    return jnp.moveaxis(dw, 0, -2)  # [I, *K, O] -> [*K, I, O]


# ----------------------------------------------------------------------------- vmap


def _fold(a, axis: int):
    """``a [N, *s]`` with the mapped axis merged into ``s[axis]``, member-major."""
    axis = axis % (a.ndim - 1)
    moved = jnp.moveaxis(a, 0, axis)  # [*s[:axis], N, s[axis], ...]
    return moved.reshape(*moved.shape[:axis], -1, *moved.shape[axis + 2 :])


def _unfold(y, axis: int, size: int):
    """`_fold` undone on an output: ``y[axis] = size * t`` split, the ``size`` axis first."""
    axis = axis % y.ndim
    split = y.reshape(*y.shape[:axis], size, -1, *y.shape[axis + 1 :])  # [..., size, t, ...]
    return jnp.moveaxis(split, axis, 0)


# For each op and operand: the operand axis that absorbs a mapped axis, and the output axis that
# gives it back. Every op is linear in each operand, and the rows of these axes go through the
# convolution independently: batch rows of x and dy, out-channels of w (conv), in-channels of w
# (input_grad), channels of x and dy (kernel_grad).
_FOLDS = {
    "conv": ((0, 0), (-1, -1)),  # x: batch -> y batch; w: out -> y channels
    "input_grad": ((0, 0), (-2, -1)),  # dy: batch -> dx batch; w: in -> dx channels
    "kernel_grad": ((-1, -2), (-1, -1)),  # x: channels -> dw in; dy: channels -> dw out
}


# A population's convolutions unrolled, not in a loop: the map's loop cost a third of a small
# ConvNet population's step at 8 members on XLA:CPU; unrolled, 32 members compile 3x longer.
UNROLLED_MEMBERS = 8


def _batching_rule(op, folds):
    """The vmap rule of one canonical ``op(a, b)``, which never makes a grouped convolution.

    One operand mapped: its mapped axis is folded into a batch or channel axis (`_FOLDS`), one
    convolution. Both mapped (a population of networks, each with its own kernels and data,
    which autodiff's batching would make a grouped convolution): one convolution per member,
    each the same as alone; up to `UNROLLED_MEMBERS` members unrolled, more in a ``lax.map``.
    On XLA:CPU the map beat im2col's batched matmul 1.3-1.9 times and runs within 1.1-1.2 times
    a loop of the members alone; unrolled, a population of 8 small ConvNets trains 1.3 times
    faster than in the map (bench/NOTES.md sections 7 and 17).
    """

    def rule(axis_size, in_batched, a, b):
        a_batched, b_batched = in_batched
        (a_axis, a_out), (b_axis, b_out) = folds
        if a_batched and b_batched:
            if 0 < axis_size <= UNROLLED_MEMBERS:  # no loop: [N, ...]
                return jnp.stack([op(a[i], b[i]) for i in range(axis_size)]), True
            return lax.map(lambda ab: op(*ab), (a, b)), True  # [N, ...]
        if a_batched:
            return _unfold(op(_fold(a, a_axis), b), a_out, axis_size), True
        return _unfold(op(a, _fold(b, b_axis)), b_out, axis_size), True

    return rule


@functools.cache
def _ops(g: Geometry):
    """``(conv, input_grad, kernel_grad)`` of ``g``, each a ``custom_vjp`` of a ``custom_vmap``
    (JAX requires that order)."""
    raws = {"conv": _forward, "input_grad": _input_grad, "kernel_grad": _kernel_grad}
    ops = {}
    for name, raw in raws.items():
        op = custom_vmap(functools.partial(raw, g))
        op.def_vmap(_batching_rule(op, _FOLDS[name]))
        ops[name] = jax.custom_vjp(op)
    conv, input_grad, kernel_grad = ops["conv"], ops["input_grad"], ops["kernel_grad"]

    # <conv(x, w), dy> = <x, input_grad(dy, w)> = <w, kernel_grad(x, dy)>: each op's transposes.
    conv.defvjp(
        lambda x, w: (conv(x, w), (x, w)),
        lambda res, dy: (input_grad(dy, res[1]), kernel_grad(res[0], dy)),
    )
    input_grad.defvjp(
        lambda dy, w: (input_grad(dy, w), (dy, w)),
        lambda res, dx: (conv(dx, res[1]), kernel_grad(dx, res[0])),
    )
    kernel_grad.defvjp(
        lambda x, dy: (kernel_grad(x, dy), (x, dy)),
        lambda res, dw: (input_grad(res[1], dw), conv(res[0], dw)),
    )
    return conv, input_grad, kernel_grad


def canonical_conv(x, w, strides, padding, dilation):
    """``lax.conv_general_dilated`` whose gradients and ``vmap`` are canonical convolutions.

    Gradients (``jax.custom_vjp``, reverse mode of any order): the input gradient correlates the
    output gradient, dilated by the strides, with the rotated kernel; the kernel gradient
    correlates the input as ``[in, *spatial, batch]`` with the output gradient as
    ``[*spatial_out, batch, out]``. On XLA:CPU both run as fast as the forward conv, also inside
    ``lax.scan``, where autodiff's kernel gradient is over 100 times slower.

    Under ``jax.vmap`` (``jax.custom_batching.custom_vmap``): a mapped input with a shared kernel
    is folded into the batch, a mapped kernel with a shared input into the channels (one conv
    each); a population, kernels and inputs both mapped, runs member by member (unrolled up to
    `UNROLLED_MEMBERS`, else a ``lax.map``) instead of as a grouped convolution, each member the
    same convolutions as alone.

    Not supported: forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``,
    Hessian-vector products by jvp of grad), which ``jax.custom_vjp`` rejects; use
    ``lax.conv_general_dilated`` there (reverse over reverse, ``jax.jacrev(jax.jacrev(f))``,
    works). Not partitioned: a population vmapped with ``spmd_axis_name`` over a device mesh
    runs its member-by-member loop on every device (correct, but without member parallelism).

    Args:
      x: inputs ``[batch, *spatial, in]``.
      w: kernel ``[*window, in, out]``.
      strides: one per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs.
      dilation: kernel dilation, one per spatial axis.

    Returns:
      ``[batch, *spatial_out, out]``, equal to ``lax.conv_general_dilated`` (same convolution).

    Example:
      >>> y = canonical_conv(x, w, (1, 1), "SAME", (1, 1))  # [B, 28, 28, 1] -> [B, 28, 28, O]
    """
    g = geometry(x.shape[1:-1], w.shape[:-2], strides, padding, dilation)
    return _ops(g)[0](x, w)
