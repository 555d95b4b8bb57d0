"""Tests of `canonical_conv` (``conv(impl="canonical")``, the CPU default): it equals
``lax.conv_general_dilated`` and its autodiff, in value, gradients of first and second order
and under ``vmap``, and compiles to canonical-layout convolutions only, never a grouped one.

Compiled HLO is read for ``dim_labels``: XLA:CPU's fast convolution is ``b01f_01io->b01f``
(``b0f_0io->b0f`` in 1-D); autodiff's kernel gradient inside ``lax.scan`` is ``f01b_i01o->01bf``
and ``vmap`` of ``lax.conv`` over kernels has ``feature_group_count`` (bench/NOTES.md).
"""

import functools
import re

import chex
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxdl
from jaxdl.layers import _canonical_conv
from jaxdl.layers.conv import (
    IMPLS,
    canonical_conv,
    dimension_numbers,
    im2col_conv,
    resolve_impl,
)

CANONICAL_LABELS = {"b0f_0io->b0f", "b01f_01io->b01f", "b012f_012io->b012f"}


def normal(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def xla_conv(x, w, strides, padding, dilation):
    """The reference: ``lax.conv_general_dilated`` and JAX's own autodiff and batching."""
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=dimension_numbers(x.ndim - 2),
    )


def objective(conv, geometry, c):
    """``(x, w) -> <sin(conv(x, w)), c>``: a non-linear scalar of the conv's output."""

    def f(x, w):
        return jnp.vdot(jnp.sin(conv(x, w, *geometry)), c)

    return f


def conv_labels(fn, *args) -> list[str]:
    """The ``dim_labels`` of every convolution in ``fn``'s compiled HLO, and each
    ``feature_group_count`` / ``batch_group_count`` as a label of its own."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", text)
    return labels + re.findall(r"(?:feature|batch)_group_count=\d+", text)


# ----------------------------------------------------------------------------- values


CASES = [
    # (x_shape, window, strides, padding, dilation)
    ((2, 9, 3), (3,), (1,), "SAME", (1,)),
    ((2, 11, 3), (3,), (2,), "VALID", (2,)),
    ((2, 10, 3), (4,), (3,), "SAME", (1,)),
    ((1, 7, 2), (2,), (1,), [(4, 3)], (1,)),  # padding wider than the kernel
    ((2, 9, 8, 3), (5, 5), (1, 1), "SAME", (1, 1)),
    ((2, 9, 8, 3), (3, 2), (2, 3), "SAME", (1, 2)),
    ((2, 9, 8, 3), (3, 3), (2, 1), [(2, 0), (0, 3)], (1, 1)),
    ((2, 7, 6, 2), (2, 3), (2, 2), "VALID", (2, 1)),
    ((2, 5, 6, 4, 2), (2, 3, 2), (1, 2, 1), "SAME", (1, 1, 2)),
]
IDS = [f"{len(c[1])}d-{i}" for i, c in enumerate(CASES)]


def case_arrays(x_shape, window, seed=0, dtype=jnp.float32, out=4):
    x = normal(x_shape, seed, dtype)
    w = normal((*window, x_shape[-1], out), seed + 1, dtype) * 0.3
    return x, w


class TestAgainstLaxConv(chex.TestCase):
    """Forward and gradients of `canonical_conv` vs ``lax.conv``, jitted and not."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, *case) for name, case in zip(IDS, CASES)))
    def test_forward_and_gradients_equal_lax_conv(
        self, x_shape, window, strides, padding, dilation
    ):
        geometry = (strides, padding, dilation)
        x, w = case_arrays(x_shape, window)
        y = self.variant(lambda x, w: canonical_conv(x, w, *geometry))(x, w)
        np.testing.assert_array_equal(y, xla_conv(x, w, *geometry))  # the same convolution
        c = normal(y.shape, 7)
        grads = {
            name: self.variant(jax.grad(objective(conv, geometry, c), argnums=(0, 1)))(x, w)
            for name, conv in (("canonical", canonical_conv), ("xla", xla_conv))
        }
        chex.assert_trees_all_close(grads["canonical"], grads["xla"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape, window, strides, padding, dilation", CASES[::2], ids=IDS[::2])
def test_second_order_gradients_equal_lax_conv(x_shape, window, strides, padding, dilation):
    """The custom rules are themselves differentiated: the gradient of a gradient penalty."""
    geometry = (strides, padding, dilation)
    with jax.enable_x64(True):
        x, w = case_arrays(x_shape, window, dtype=jnp.float64)
        c = normal(xla_conv(x, w, *geometry).shape, 7, jnp.float64)

        def penalty(conv):
            grad = jax.grad(objective(conv, geometry, c), argnums=(0, 1))
            return lambda x, w: sum(jnp.sum(jnp.tanh(g) ** 2) for g in grad(x, w))

        ours = jax.jit(jax.grad(penalty(canonical_conv), argnums=(0, 1)))(x, w)
        theirs = jax.jit(jax.grad(penalty(xla_conv), argnums=(0, 1)))(x, w)
        chex.assert_trees_all_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("x_shape, window, strides, padding, dilation", CASES, ids=IDS)
def test_gradients_match_finite_differences(x_shape, window, strides, padding, dilation):
    """Directional derivatives along random directions, float64 central differences."""
    geometry = (strides, padding, dilation)
    with jax.enable_x64(True):
        x, w = case_arrays(x_shape, window, dtype=jnp.float64)
        c = normal(xla_conv(x, w, *geometry).shape, 7, jnp.float64)
        f = jax.jit(objective(canonical_conv, geometry, c))
        grad_x, grad_w = jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)
        rng = np.random.default_rng(11)
        h = 1e-6
        for _ in range(3):
            vx, vw = (jnp.asarray(rng.standard_normal(a.shape)) for a in (x, w))
            numeric = (f(x + h * vx, w + h * vw) - f(x - h * vx, w - h * vw)) / (2 * h)
            analytic = jnp.vdot(grad_x, vx) + jnp.vdot(grad_w, vw)
            np.testing.assert_allclose(numeric, analytic, rtol=1e-6, atol=1e-8)


PADDINGS = st.one_of(
    st.sampled_from(["SAME", "VALID"]),
    st.tuples(st.integers(0, 3), st.integers(0, 3)),  # (low, high), the same on every axis
)


@settings(deadline=None, max_examples=12, derandomize=True, database=None)
@given(data=st.data(), ndim=st.integers(1, 3))
def test_any_geometry_equals_lax_conv_also_under_vmap(data, ndim):
    """Random shapes, strides, dilations and paddings: forward and gradients against
    ``lax.conv``; the gradients of a vmapped population against each member's alone."""
    draw_axes = functools.partial(st.lists, min_size=ndim, max_size=ndim)
    window = tuple(data.draw(draw_axes(st.integers(1, 3))))
    strides = tuple(data.draw(draw_axes(st.integers(1, 3))))
    dilation = tuple(data.draw(draw_axes(st.integers(1, 2))))
    padding = data.draw(PADDINGS)
    padding = padding if isinstance(padding, str) else [padding] * ndim
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    pads = [0] * ndim if padding in ("SAME", "VALID") else [lo + hi for lo, hi in padding]
    sizes = [data.draw(st.integers(max(1, s - p), s - p + 5)) for s, p in zip(spans, pads)]
    batch, channels = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    geometry = (strides, padding, dilation)
    x, w = case_arrays((batch, *sizes, channels), window, seed=sum(sizes), out=2)

    y = jax.jit(lambda x, w: canonical_conv(x, w, *geometry))(x, w)
    np.testing.assert_array_equal(y, xla_conv(x, w, *geometry))
    c = normal(y.shape, 3)
    grads = [
        jax.jit(jax.grad(objective(conv, geometry, c), argnums=(0, 1)))(x, w)
        for conv in (canonical_conv, xla_conv)
    ]
    chex.assert_trees_all_close(*grads, rtol=1e-5, atol=1e-5)

    members = 3  # own inputs and kernels: the population case of the batching rule
    xs = jnp.stack([x * (1 + i) for i in range(members)])
    ws = jnp.stack([w * (1 - 0.2 * i) for i in range(members)])
    grad = jax.grad(objective(canonical_conv, geometry, c), argnums=(0, 1))
    population = jax.jit(jax.vmap(grad))(xs, ws)
    alone = [jax.jit(grad)(xs[i], ws[i]) for i in range(members)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *alone)
    chex.assert_trees_all_close(population, stacked, rtol=1e-6, atol=1e-6)


@settings(deadline=None, max_examples=10, derandomize=True, database=None)
@given(
    data=st.data(),
    ndim=st.integers(1, 3),
    padding=st.one_of(
        st.sampled_from(["SAME", "VALID", 0, 2]), st.tuples(st.integers(0, 3), st.integers(0, 3))
    ),
)
def test_conv_layer_equals_flax_conv_for_every_impl(data, ndim, padding):
    """The layer with each ``impl`` against ``flax.linen.Conv`` with the same weights: odd
    sizes and strides where "SAME" pads unevenly (the extra zero last, as XLA), ints and
    ``(low, high)`` pairs, kernel dilation, windows wider than the input."""
    draw_axes = functools.partial(st.lists, min_size=ndim, max_size=ndim)
    window = tuple(data.draw(draw_axes(st.integers(1, 4))))
    strides = tuple(data.draw(draw_axes(st.integers(1, 3))))
    dilation = tuple(data.draw(draw_axes(st.integers(1, 2))))
    pairs = {"SAME": (0, 0), "VALID": (0, 0)}.get(padding, padding)
    pad = sum(pairs) if isinstance(pairs, tuple) else 2 * pairs
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    smallest = [1 if padding == "SAME" else max(1, span - pad) for span in spans]
    sizes = [data.draw(st.integers(low, low + 6)) for low in smallest]
    padding = [padding] * ndim if isinstance(padding, tuple) else padding
    x, w = case_arrays((2, *sizes, 3), window, seed=sum(sizes), out=2)
    b = normal((2,), 9)
    flax_conv = fnn.Conv(2, window, strides, padding, kernel_dilation=dilation)
    expected = flax_conv.apply({"params": {"kernel": w, "bias": b}}, x)
    for impl in IMPLS:
        layer = jaxdl.conv(2, window, strides, padding, dilation, impl=impl)
        y, _ = jax.jit(layer.apply)({"w": w, "b": b}, {}, x)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5, err_msg=impl)


# ----------------------------------------------------------------------------- vmap


VMAP_AXES = {"population": (0, 0), "shared_kernel": (0, None), "shared_input": (None, 0)}
# A population's convolutions run unrolled up to UNROLLED_MEMBERS members, in a lax.map beyond.
LOOPED_MEMBERS = _canonical_conv.UNROLLED_MEMBERS + 1

VMAP_CASES = [
    (f"{axes}-{case_id}", in_axes, 3, *case)
    for axes, in_axes in VMAP_AXES.items()
    for case_id, case in zip(IDS[4:7], CASES[4:7], strict=True)
] + [(f"population-looped-{IDS[4]}", (0, 0), LOOPED_MEMBERS, *CASES[4])]


class TestVmap(chex.TestCase):
    """The batching rule against ``vmap`` of ``lax.conv``, for every mapped operand pattern."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*VMAP_CASES)
    def test_vmap_of_grad_and_grad_of_vmap_equal_lax_conv(
        self, in_axes, members, x_shape, window, strides, padding, dilation
    ):
        geometry = (strides, padding, dilation)
        x, w = case_arrays(x_shape, window)
        shifts = np.linspace(0, 1, members)  # members differ, values stay O(1)
        xs = jnp.stack([x + s for s in shifts]) if in_axes[0] == 0 else x
        ws = jnp.stack([w * (1 + s) for s in shifts]) if in_axes[1] == 0 else w
        c = normal(xla_conv(x, w, *geometry).shape, 5)
        results = {}
        for name, conv in (("canonical", canonical_conv), ("xla", xla_conv)):
            f = objective(conv, geometry, c)

            def summed(x, w, f=f):
                return jnp.sum(jax.vmap(f, in_axes=in_axes)(x, w))

            def forward(x, w, conv=conv):
                return conv(x, w, *geometry)

            results[name] = (
                self.variant(jax.vmap(forward, in_axes=in_axes))(xs, ws),
                self.variant(jax.vmap(jax.grad(f, argnums=(0, 1)), in_axes=in_axes))(xs, ws),
                self.variant(jax.grad(summed, argnums=(0, 1)))(xs, ws),
            )
        # the grouped convolution of nine members (the reference) sums in another order
        tol = 1e-5 if members <= 3 else 1e-4
        chex.assert_trees_all_close(results["canonical"], results["xla"], rtol=tol, atol=tol)


@pytest.mark.parametrize("in_axes", VMAP_AXES.values(), ids=VMAP_AXES.keys())
def test_vmapped_outputs_and_gradients_equal_the_members_alone(in_axes):
    geometry = ((1, 1), "SAME", (1, 1))
    members = 4
    x, w = case_arrays((3, 8, 8, 2), (3, 3))
    xs = jnp.stack([x * (i + 1) for i in range(members)])
    ws = jnp.stack([w - 0.1 * i for i in range(members)])
    f = objective(canonical_conv, geometry, normal((3, 8, 8, 4), 2))

    def output_and_grads(x, w):
        return canonical_conv(x, w, *geometry), jax.grad(f, argnums=(0, 1))(x, w)

    def operands(i):
        return (xs if i is None else xs[i]) if in_axes[0] == 0 else x, (
            (ws if i is None else ws[i]) if in_axes[1] == 0 else w
        )

    batched = jax.jit(jax.vmap(output_and_grads, in_axes=in_axes))(*operands(None))
    for i in range(members):
        alone = jax.jit(output_and_grads)(*operands(i))
        member = jax.tree.map(lambda a, i=i: a[i], batched)
        chex.assert_trees_all_close(member, alone, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- compiled HLO


def lenet_like_grad(conv):
    """Gradient of a two-conv network's loss w.r.t. its two kernels (and input)."""

    def loss(ws, x):
        for w in ws:
            x = jax.nn.relu(conv(x, w, (1, 1), "SAME", (1, 1)))
        return jnp.mean(x**2)

    return jax.grad(loss, argnums=(0, 1))


def two_kernels(seed=0, lead=()):
    return [normal((*lead, 3, 3, 2, 4), seed) * 0.3, normal((*lead, 3, 3, 4, 4), seed + 1) * 0.3]


def scanned(grad):
    """Two gradient steps inside a rolled ``lax.scan`` (how jaxdl trains, in chunks)."""

    def run(ws, x):
        def body(ws, _):
            g, _ = grad(ws, x)
            return [w - 1e-2 * d for w, d in zip(ws, g, strict=True)], None

        return lax.scan(body, ws, None, length=2)[0]

    return run


HLO_CASES = {
    "grad": (lambda conv: lenet_like_grad(conv), ()),
    "grad_in_scan": (lambda conv: scanned(lenet_like_grad(conv)), ()),
    "population": (lambda conv: jax.vmap(lenet_like_grad(conv)), (3,)),
    "population_in_scan": (lambda conv: jax.vmap(scanned(lenet_like_grad(conv))), (3,)),
}


@pytest.mark.parametrize("case", HLO_CASES)
def test_compiled_convolutions_are_canonical_and_never_grouped(case):
    make, lead = HLO_CASES[case]
    ws, x = two_kernels(lead=lead), normal((*lead, 2, 6, 6, 2), 9)
    labels = conv_labels(make(canonical_conv), ws, x)
    assert labels, "expected convolutions"
    assert set(labels) <= CANONICAL_LABELS, labels


@pytest.mark.parametrize("case", ["grad_in_scan", "population"])
def test_the_hlo_check_catches_lax_conv_autodiff(case):
    make, lead = HLO_CASES[case]
    ws, x = two_kernels(lead=lead), normal((*lead, 2, 6, 6, 2), 9)
    assert not set(conv_labels(make(xla_conv), ws, x)) <= CANONICAL_LABELS


def test_vmapped_population_of_layer_grads_has_no_grouped_convolution():
    """The library path: ``jax.vmap`` of a jaxdl ConvNet's gradient, ``impl="auto"`` on CPU."""
    model = jaxdl.serial(jaxdl.conv2d(4, 3), jaxdl.relu, jaxdl.conv2d(4, 3), jaxdl.flatten)
    x = jax.ShapeDtypeStruct((3, 2, 6, 6, 1), jnp.float32)  # [members, batch, H, W, C]
    example = jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.eval_shape(jax.vmap(lambda key: model.init(key, example)[0]), keys)

    def loss(params, x):
        return jnp.mean(model.apply(params, {}, x)[0] ** 2)

    labels = conv_labels(jax.vmap(jax.grad(loss)), params, x)
    assert labels and set(labels) <= CANONICAL_LABELS, labels


# ----------------------------------------------------------------------------- the layer


def test_auto_picks_canonical_for_1d_2d_on_cpu_and_xla_elsewhere(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert [resolve_impl("auto", n) for n in (1, 2, 3)] == ["canonical", "canonical", "im2col"]
    assert resolve_impl("xla", 2) == "xla" and resolve_impl("im2col", 1) == "im2col"
    # a window larger than the input (mostly padding) goes to im2col on the CPU
    assert resolve_impl("auto", 2, (8, 8), (5, 5)) == "canonical"
    assert resolve_impl("auto", 2, (4, 4), (5, 5)) == "im2col"
    assert resolve_impl("auto", 1, (40,), (5,)) == "canonical"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert [resolve_impl("auto", n) for n in (1, 2, 3)] == ["xla", "xla", "xla"]
    assert resolve_impl("auto", 2, (4, 4), (5, 5)) == "xla"


@pytest.mark.parametrize("impl", ["auto", "canonical", "im2col"])
def test_layer_impls_agree_with_xla(impl):
    x = normal((2, 7, 8, 3), 1)
    outputs = {}
    for name in (impl, "xla"):
        layer = jaxdl.conv2d(
            4, 3, stride=(2, 1), padding=[(1, 0), (2, 1)], dilation=(1, 2), impl=name
        )
        params, _ = layer.init(jax.random.key(0), x)

        def loss(params, x, layer=layer):
            return jnp.sum(jnp.sin(layer.apply(params, {}, x)[0]))

        outputs[name] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
    chex.assert_trees_all_close(outputs[impl], outputs["xla"], rtol=1e-5, atol=1e-5)


def test_forward_mode_needs_impl_xla():
    x = normal((2, 6, 6, 1), 1)
    for impl, works in (("auto", False), ("canonical", False), ("xla", True), ("im2col", True)):
        layer = jaxdl.conv2d(2, 3, impl=impl)
        params, _ = layer.init(jax.random.key(0), x)

        def f(x, layer=layer, params=params):
            return layer.apply(params, {}, x)[0]

        if works:
            jax.jvp(f, (x,), (jnp.ones_like(x),))
        else:
            with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
                jax.jvp(f, (x,), (jnp.ones_like(x),))


def test_im2col_equals_canonical():
    x, w = case_arrays((2, 9, 8, 3), (3, 2))
    geometry = ((2, 1), "SAME", (1, 2))
    np.testing.assert_allclose(
        im2col_conv(x, w, *geometry), canonical_conv(x, w, *geometry), rtol=1e-5, atol=1e-5
    )


# (input [batch, *spatial, in], kernel, stride, padding): a low padding as wide as the kernel's
# span or wider, where autodiff's input gradient has a negative low padding, which XLA:CPU's
# convolution reads out of bounds with (openxla/xla#48713: garbage of 1e10-1e35 here before).
WIDE_LOW_PADDING = [
    ((2, 6, 6, 2), 2, 1, [(3, 0), (3, 0)]),
    ((1, 15, 6, 8), 1, 1, [(0, 0), (5, 1)]),  # the XLA issue's geometry
    ((2, 7, 2), 3, 1, [(3, 1)]),
    ((2, 9, 3), 2, 2, [(4, 2)]),
    ((2, 6, 5, 4), (2, 3), (1, 2), [(2, 3), (5, 0)]),
]


@pytest.mark.parametrize("impl", ["auto", "canonical", "xla"])
@pytest.mark.parametrize("x_shape, kernel, stride, padding", WIDE_LOW_PADDING)
def test_low_padding_wider_than_the_kernel_gives_true_gradients(
    impl, x_shape, kernel, stride, padding
):
    """Values and gradients (input and kernel; eager, jitted and vmapped) equal im2col's, whose
    gradients are slices and sums only."""
    x = normal(x_shape, 1)
    results = {}
    for name in (impl, "im2col"):
        layer = jaxdl.conv(3, kernel, stride=stride, padding=padding, impl=name)
        params, _ = layer.init(jax.random.key(0), x)

        def loss(params, x, layer=layer):
            return jnp.sum(jnp.sin(layer.apply(params, {}, x)[0]))

        grad = jax.value_and_grad(loss, argnums=(0, 1))
        population = jax.tree.map(lambda a: jnp.stack([a, -a]), (params, x))
        vmapped = jax.jit(jax.vmap(grad))(*population)
        results[name] = grad(params, x), jax.jit(grad)(params, x), vmapped
    chex.assert_trees_all_close(results[impl], results["im2col"], rtol=1e-5, atol=1e-5)
