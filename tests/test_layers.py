"""Tests of jaxdl.layers: shapes, gradients, reference values, statistics and error messages."""

import functools
import math
import re
import types

import chex
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxdl
from jaxdl import LayerError, initializers
from jaxdl.layers import ACTIVATIONS

KEY = jax.random.key(0)


def normal(shape, seed=0):
    """Standard normal float32 samples drawn by NumPy (a jax.random sampler compiles slowly)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# Compiling jax.random's samplers on CPU takes most of a second per kernel shape, so tests that
# only need params of the right shape build layers with ``w_init="zeros"`` (and perturb them where
# values matter), and init/apply run under jit (one compilation instead of one per operation).
Z = types.SimpleNamespace(
    dense=functools.partial(jaxdl.dense, w_init="zeros"),
    conv=functools.partial(jaxdl.conv, w_init="zeros"),
    conv1d=functools.partial(jaxdl.conv1d, w_init="zeros"),
    conv2d=functools.partial(jaxdl.conv2d, w_init="zeros"),
)


def run(layer, x, *, key=None, train=False):
    """``layer.apply`` (jitted) on ``x`` with fresh params and state; returns ``(y, state)``."""
    params, state = jax.jit(layer.init)(KEY, x)
    apply = functools.partial(layer.apply, train=train)
    return jax.jit(apply)(params, state, x, key=key)


def perturbed(tree, seed, scale=0.3):
    """``tree`` plus Gaussian noise: params away from their (often trivial) initial values."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: a + jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), tree
    )


def distinct_inputs(shape, seed=0, dtype=jnp.float64):
    """Values in [-3, 3], all different and none near 0: no ties for max, no kinks for relu.

    Neighbouring values differ by ``6 / size`` and none is closer to 0 than ``1.5 / size``, far
    more than a finite-difference step moves them.
    """
    size = math.prod(shape)
    ranks = np.random.default_rng(seed).permutation(size)
    values = (ranks + 0.25 - size / 2) * (6.0 / size)  # ranks + 0.25 is never size / 2
    return jnp.asarray(values.reshape(shape), dtype)


# ----------------------------------------------------------------------------- shape formulas


def same_pads(size, window, stride, dilation=1):
    """(low, high) padding of ``"SAME"`` (XLA's convention: the extra zero goes at the end)."""
    span = (window - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def out_size(size, window, stride, padding, dilation=1):
    """Output length along one axis of a conv or pool, from the textbook formula."""
    if padding == "SAME":
        return -(-size // stride)  # ceil(size / stride)
    low, high = (0, 0) if padding == "VALID" else padding
    span = (window - 1) * dilation + 1
    return (size + low + high - span) // stride + 1


def assert_shapes_agree(layer, x, expected, *, train=False, concrete=True):
    """Init/apply give output shape ``expected``, abstractly and (unless not ``concrete``) really.

    The abstract pass is ``jax.eval_shape`` from a ``jax.ShapeDtypeStruct``; the real params,
    state and output must match it in shape and dtype, and ``apply`` keeps the state's shapes.
    """
    key = jax.random.key(1) if train else None
    struct = jax.ShapeDtypeStruct(x.shape, x.dtype)
    abstract_params, abstract_state = jax.eval_shape(layer.init, KEY, struct)

    def apply(p, s, x):
        return layer.apply(p, s, x, key=key, train=train)

    y_abstract, state_abstract = jax.eval_shape(apply, abstract_params, abstract_state, struct)
    chex.assert_shape(y_abstract, expected)
    assert y_abstract.dtype == x.dtype
    chex.assert_trees_all_equal_shapes_and_dtypes(state_abstract, abstract_state)
    if not concrete:
        return
    params, state = jax.jit(layer.init)(KEY, x)
    chex.assert_trees_all_equal_shapes_and_dtypes(
        (params, state), (abstract_params, abstract_state)
    )
    y, new_state = jax.jit(apply)(params, state, x)
    chex.assert_shape(y, expected)
    assert y.dtype == x.dtype
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)


ACT = [jaxdl.activation(name) for name in ACTIVATIONS]

SHAPE_CASES = [
    ("dense", jaxdl.dense(7), (3, 5), (3, 7)),
    ("dense_rank3", jaxdl.dense(7), (2, 3, 5), (2, 3, 7)),
    ("dense_no_bias", Z.dense(2, use_bias=False), (4, 5), (4, 2)),
    ("conv1d_same", Z.conv1d(4, 3), (2, 10, 3), (2, 10, 4)),
    ("conv1d_valid_stride", Z.conv1d(4, 3, stride=2, padding="VALID"), (2, 10, 3), (2, 4, 4)),
    ("conv1d_int_pad_dilation", Z.conv1d(4, 3, padding=1, dilation=2), (2, 10, 3), (2, 8, 4)),
    ("conv1d_same_stride", Z.conv1d(4, 4, stride=3), (2, 10, 3), (2, 4, 4)),
    ("conv2d_same", jaxdl.conv2d(6, 5), (2, 9, 8, 1), (2, 9, 8, 6)),
    ("conv2d_valid", Z.conv2d(6, (3, 2), padding="VALID"), (2, 9, 8, 1), (2, 7, 7, 6)),
    ("conv2d_stride", Z.conv2d(6, 3, stride=(2, 3)), (2, 9, 8, 1), (2, 5, 3, 6)),
    ("conv2d_pairs", Z.conv2d(6, 3, padding=[(2, 0), (0, 1)]), (2, 9, 8, 1), (2, 9, 7, 6)),
    (
        "conv2d_dilation",
        Z.conv2d(6, 3, padding="VALID", dilation=3),
        (2, 9, 8, 1),
        (2, 3, 2, 6),
    ),
    ("conv_ndim_from_input", Z.conv(2, 3, padding="VALID"), (2, 6, 5, 4, 1), (2, 4, 3, 2, 2)),
    ("conv_ndim_from_kernel", Z.conv(2, (3,), padding="VALID"), (2, 6, 1), (2, 4, 2)),
    ("max_pool_fast", jaxdl.max_pool(2), (2, 9, 9, 3), (2, 4, 4, 3)),
    ("max_pool_1d", jaxdl.max_pool(2), (2, 9, 3), (2, 4, 3)),
    ("max_pool_overlap", jaxdl.max_pool(3, stride=2), (2, 9, 9, 3), (2, 4, 4, 3)),
    ("max_pool_same", jaxdl.max_pool(3, stride=2, padding="SAME"), (2, 9, 9, 3), (2, 5, 5, 3)),
    ("avg_pool_fast", jaxdl.avg_pool((2, 3)), (2, 8, 9, 1), (2, 4, 3, 1)),
    ("avg_pool_overlap", jaxdl.avg_pool(2, stride=1), (2, 9, 9, 3), (2, 8, 8, 3)),
    ("avg_pool_same", jaxdl.avg_pool(3, stride=2, padding="SAME"), (2, 9, 8, 3), (2, 5, 4, 3)),
    ("avg_pool_int_pad", jaxdl.avg_pool(3, stride=1, padding=1), (2, 9, 3), (2, 9, 3)),
    ("flatten", jaxdl.flatten, (2, 3, 4, 5), (2, 60)),
    ("flatten_rank2", jaxdl.flatten, (2, 3), (2, 3)),
    ("layer_norm", jaxdl.layer_norm(), (2, 3, 5), (2, 3, 5)),
    ("batch_norm", jaxdl.batch_norm(), (4, 3, 5), (4, 3, 5)),
] + [(layer.kind, layer, (2, 3, 4), (2, 3, 4)) for layer in ACT]


@pytest.mark.parametrize(
    "layer, in_shape, out_shape", [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES]
)
def test_output_shape(layer, in_shape, out_shape):
    assert_shapes_agree(layer, jnp.ones(in_shape), out_shape)


@pytest.mark.parametrize(
    "layer, in_shape",
    [
        (jaxdl.dropout(0.5), (4, 6)),
        (jaxdl.batch_norm(), (4, 3, 5)),
        (jaxdl.dropout(0.1), (2, 3, 4, 1)),
    ],
    ids=["dropout", "batch_norm", "dropout_rank4"],
)
def test_output_shape_in_training(layer, in_shape):
    assert_shapes_agree(layer, jnp.ones(in_shape), in_shape, train=True)


PADDINGS = st.one_of(
    st.sampled_from(["SAME", "VALID"]),
    st.integers(0, 2),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
)


@settings(deadline=None, max_examples=25)
@given(data=st.data(), ndim=st.integers(1, 2))
def test_conv_shape_formula(data, ndim):
    sizes = data.draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim))
    kernel = data.draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    stride = data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    dilation = data.draw(st.lists(st.integers(1, 2), min_size=ndim, max_size=ndim))
    padding = data.draw(PADDINGS)
    pads = (
        [padding] * ndim
        if isinstance(padding, str)
        else [(padding, padding) if isinstance(padding, int) else padding] * ndim
    )
    expected = [
        out_size(n, k, s, p, d)
        for n, k, s, p, d in zip(sizes, kernel, stride, pads, dilation, strict=True)
    ]
    layer_padding = [padding] * ndim if isinstance(padding, tuple) else padding
    layer = jaxdl.conv(3, tuple(kernel), tuple(stride), layer_padding, tuple(dilation))
    x = jnp.ones((2, *sizes, 2))
    if min(expected) < 1:  # the dilated kernel does not fit the padded input
        with pytest.raises(LayerError, match="is larger than the input's spatial shape"):
            jax.eval_shape(layer.init, KEY, x)
        return
    assert_shapes_agree(layer, x, (2, *expected, 3), concrete=False)


@settings(deadline=None, max_examples=25)
@given(
    data=st.data(),
    ndim=st.integers(1, 2),
    kind=st.sampled_from(["max", "avg"]),
    default_stride=st.booleans(),
)
def test_pool_shape_formula(data, ndim, kind, default_stride):
    sizes = data.draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim))
    window = data.draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    stride = data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    stride = window if default_stride else stride
    padding = data.draw(st.sampled_from(["SAME", "VALID", 0, 1]))
    pads = [padding if isinstance(padding, str) else (padding, padding)] * ndim
    expected = [out_size(*a) for a in zip(sizes, window, stride, pads, strict=True)]
    layer = jaxdl.pool(
        kind, tuple(window), stride=None if default_stride else tuple(stride), padding=padding
    )
    x = jnp.ones((2, *sizes, 3))
    if padding == 1 and min(window) == 1:  # a window of padding only: refused
        with pytest.raises(LayerError, match="must be smaller than the window"):
            jax.eval_shape(functools.partial(layer.apply, {}, {}), x)
        return
    if min(expected) < 1:
        with pytest.raises(LayerError, match="is larger than the input's spatial shape"):
            jax.eval_shape(functools.partial(layer.apply, {}, {}), x)
        return
    assert_shapes_agree(layer, x, (2, *expected, 3), concrete=False)


def test_flatten_keeps_an_empty_batch():
    y, _ = jaxdl.flatten.apply({}, {}, jnp.zeros((0, 3, 4)))
    chex.assert_shape(y, (0, 12))
    y, _ = jaxdl.flatten.apply({}, {}, jnp.zeros((2, 0, 4)))
    chex.assert_shape(y, (2, 0))


# ----------------------------------------------------------------------------- gradient check


def _shift(args, index, direction, step):
    """``args`` with ``args[index]`` moved by ``step * direction`` (pytrees of the same shape)."""
    moved = jax.tree.map(lambda a, d: a + step * d, args[index], direction)
    return (*args[:index], moved, *args[index + 1 :])


def assert_grads_match_finite_differences(f, args, *, seed=0, directions=2, eps=1e-6, rtol=1e-6):
    """Checks ``jax.grad`` of a scalar ``f(*args)`` against central finite differences.

    For each argument (a pytree of float64 arrays; empty ones are skipped) and a few random
    directions ``v``, ``vdot(grad, v)`` must equal ``(f(a + eps v) - f(a - eps v)) / (2 eps)``
    within relative error ``rtol``. The error is relative to ``|vdot(grad, v)|``, or to a tenth of
    its typical size ``|grad| |v| / sqrt(size)`` when a direction happens to be nearly orthogonal
    to the gradient. Arguments are checked one at a time so a failure names one.
    """
    f = jax.jit(f)
    grads = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
    rng = np.random.default_rng(seed)
    checked = 0
    for index, (arg, grad) in enumerate(zip(args, grads, strict=True)):
        leaves = jax.tree.leaves(arg)
        assert all(leaf.dtype == jnp.float64 for leaf in leaves), jax.tree.map(jnp.dtype, arg)
        if not leaves:
            continue
        grad_leaves = jax.tree.leaves(grad)
        grad_norm = math.sqrt(sum(float(jnp.vdot(g, g)) for g in grad_leaves))
        size = sum(leaf.size for leaf in leaves)
        assert grad_norm > 1e-6, f"argument {index}: zero gradient"
        for _ in range(directions):
            v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), arg)
            plus, minus = f(*_shift(args, index, v, eps)), f(*_shift(args, index, v, -eps))
            numeric = float(plus - minus) / (2 * eps)
            analytic = float(
                sum(jnp.vdot(g, d) for g, d in zip(grad_leaves, jax.tree.leaves(v), strict=True))
            )
            v_norm = math.sqrt(sum(float(jnp.vdot(d, d)) for d in jax.tree.leaves(v)))
            typical = grad_norm * v_norm / math.sqrt(size)
            error = abs(numeric - analytic) / max(abs(analytic), 0.1 * typical)
            assert error <= rtol, (
                f"argument {index}: grad {analytic} vs finite diff {numeric} (error {error:.2e})"
            )
            checked += 1
    assert checked > 0


GRAD_CASES = [
    ("dense", Z.dense(3), (4, 5)),
    ("dense_rank3", Z.dense(3), (2, 3, 5)),
    ("conv1d_same", Z.conv1d(3, 3), (2, 9, 2)),
    (
        "conv1d_stride_dilation",
        Z.conv1d(3, 3, stride=2, padding="VALID", dilation=2),
        (2, 11, 2),
    ),
    ("conv2d_same_stride", Z.conv2d(3, 3, stride=2), (2, 7, 6, 2)),
    ("conv2d_int_pad_dilation", Z.conv2d(3, (3, 2), padding=1, dilation=(1, 2)), (2, 6, 7, 2)),
    (
        "conv2d_pairs_stride",
        Z.conv2d(2, 3, stride=(1, 2), padding=[(1, 0), (0, 2)]),
        (1, 5, 6, 2),
    ),
    ("conv2d_xla_stride_dilation", Z.conv2d(3, 3, 2, 1, 2, impl="xla"), (2, 7, 8, 2)),
    ("max_pool_fast", jaxdl.max_pool(2), (2, 7, 6, 2)),
    ("max_pool_1d_fast", jaxdl.max_pool(3), (2, 10, 2)),
    ("max_pool_overlap", jaxdl.max_pool(3, stride=2), (2, 7, 7, 2)),
    ("max_pool_same", jaxdl.max_pool(3, stride=2, padding="SAME"), (2, 6, 7, 2)),
    ("avg_pool_fast", jaxdl.avg_pool((2, 3)), (2, 7, 6, 2)),
    ("avg_pool_overlap", jaxdl.avg_pool(2, stride=1), (2, 5, 5, 2)),
    ("avg_pool_same", jaxdl.avg_pool(3, stride=2, padding="SAME"), (2, 6, 7, 2)),
    ("avg_pool_1d_int_pad", jaxdl.avg_pool(3, stride=1, padding=1), (2, 8, 2)),
    ("layer_norm", jaxdl.layer_norm(), (3, 6)),
    ("layer_norm_rank3", jaxdl.layer_norm(), (2, 3, 4)),
    ("flatten", jaxdl.flatten, (2, 3, 2)),
] + [(layer.kind, layer, (3, 5)) for layer in ACT]


def layer_objective(layer, state, x_shape, *, seed, train=False, key=None):
    """``(params, x) -> vdot(apply(params, state, x), c)`` for a fixed random cotangent ``c``."""
    y_shape = jax.eval_shape(
        lambda x: layer.apply(layer.init(KEY, x)[0], state, x, key=key, train=train)[0],
        jax.ShapeDtypeStruct(x_shape, jnp.float64),
    ).shape
    c = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(y_shape))

    def objective(params, x):
        y, _ = layer.apply(params, state, x, key=key, train=train)
        return jnp.vdot(y, c)

    return objective


@pytest.mark.parametrize(
    "layer, x_shape", [c[1:] for c in GRAD_CASES], ids=[c[0] for c in GRAD_CASES]
)
def test_gradients_match_finite_differences(layer, x_shape):
    with jax.enable_x64(True):
        x = distinct_inputs(x_shape, seed=3)
        params, state = layer.init(KEY, x)
        params = perturbed(params, seed=4)
        objective = layer_objective(layer, state, x_shape, seed=5)
        assert_grads_match_finite_differences(objective, (params, x))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("x_shape", [(6, 3), (3, 4, 2, 3)], ids=["dense", "conv"])
def test_batch_norm_gradients_match_finite_differences(train, x_shape):
    with jax.enable_x64(True):
        layer = jaxdl.batch_norm()
        x = distinct_inputs(x_shape, seed=6)
        params, state = layer.init(KEY, x)
        params = perturbed(params, seed=7)
        state = {"mean": state["mean"] + 0.1, "var": state["var"] * 1.5}
        objective = layer_objective(layer, state, x_shape, seed=8, train=train)
        assert_grads_match_finite_differences(objective, (params, x))


def test_dropout_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        layer = jaxdl.dropout(0.3)
        objective = layer_objective(layer, {}, (4, 5), seed=9, train=True, key=jax.random.key(3))
        assert_grads_match_finite_differences(objective, ({}, distinct_inputs((4, 5))))


def test_finite_difference_checker_catches_a_wrong_gradient():
    @jax.custom_jvp
    def bad_square(x):
        return x**2

    @bad_square.defjvp
    def _bad_square_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return x**2, 2.001 * x * t  # 0.05% off

    with jax.enable_x64(True):
        x = distinct_inputs((5,))
        with pytest.raises(AssertionError, match="finite diff"):
            assert_grads_match_finite_differences(lambda p, x: jnp.sum(bad_square(x)), ({}, x))


# ----------------------------------------------------------------------------- reference values


def naive_conv(x, w, b, stride, dilation, pads):
    """Channels-last N-D convolution by loops over output positions and kernel taps (NumPy)."""
    ndim = x.ndim - 2
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    spatial, kernel = x.shape[1:-1], w.shape[:ndim]
    out = [(spatial[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(ndim)]
    y = np.zeros((x.shape[0], *out, w.shape[-1]))
    for o in np.ndindex(*out):
        for k in np.ndindex(*kernel):
            at = tuple(o[i] * stride[i] + k[i] * dilation[i] for i in range(ndim))
            y[(slice(None), *o, slice(None))] += x[(slice(None), *at, slice(None))] @ w[k]
    return y + np.asarray(b)


def naive_pool(x, kind, window, stride, pads):
    """Max or mean over each window of the valid (unpadded) elements, by loops (NumPy)."""
    ndim = x.ndim - 2
    valid = np.pad(np.ones(x.shape[1:-1], bool), pads)
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    spatial = x.shape[1:-1]
    out = [(spatial[i] - window[i]) // stride[i] + 1 for i in range(ndim)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for o in np.ndindex(*out):
        box = tuple(slice(o[i] * stride[i], o[i] * stride[i] + window[i]) for i in range(ndim))
        values = x[(slice(None), *box, slice(None))][:, valid[box]]  # [B, valid in window, C]
        y[(slice(None), *o, slice(None))] = values.max(1) if kind == "max" else values.mean(1)
    return y


CONV_REFERENCE_CASES = [
    # (kernel, stride, padding, dilation, x_shape)
    ((3,), (1,), "VALID", (1,), (2, 8, 3)),
    ((3,), (2,), "VALID", (2,), (2, 11, 3)),
    ((4,), (3,), "SAME", (1,), (2, 10, 3)),
    ((3,), (1,), [(2, 1)], (3,), (1, 9, 2)),
    ((3, 2), (1, 1), "VALID", (1, 1), (2, 6, 5, 3)),
    ((3, 3), (2, 1), "VALID", (1, 2), (2, 7, 8, 2)),
    ((2, 3), (2, 2), "SAME", (2, 1), (1, 7, 6, 2)),
    ((3, 3), (1, 2), [(1, 1), (0, 2)], (2, 1), (1, 6, 6, 2)),
]


def numpy_pads(padding, kernel, stride, dilation, sizes):
    if padding == "SAME":
        return [same_pads(*a) for a in zip(sizes, kernel, stride, dilation, strict=True)]
    if padding == "VALID":
        return [(0, 0)] * len(kernel)
    return padding


class TestValuesWithAndWithoutJit(chex.TestCase):
    """Layer outputs against independent references, each run jitted and not."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_dense_is_affine_map(self):
        x = normal((4, 2, 5), seed=1)
        params, state = Z.dense(3).init(KEY, x)
        params = perturbed(params, 0)
        y, new_state = self.variant(Z.dense(3).apply)(params, state, x)
        w, b = np.asarray(params["w"]), np.asarray(params["b"])
        expected = np.einsum("bti,io->bto", np.asarray(x), w) + b
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
        assert new_state == {}

    @chex.variants(with_jit=True, without_jit=True)
    def test_conv_matches_naive_reference(self):
        with jax.enable_x64(True):
            for kernel, stride, padding, dilation, x_shape in CONV_REFERENCE_CASES:
                layer = Z.conv(4, kernel, stride, padding, dilation)
                x = distinct_inputs(x_shape, seed=len(x_shape))
                params = perturbed(layer.init(KEY, x)[0], seed=1)
                y, _ = self.variant(layer.apply)(params, {}, x)
                pads = numpy_pads(padding, kernel, stride, dilation, x_shape[1:-1])
                expected = naive_conv(
                    np.asarray(x), np.asarray(params["w"]), params["b"], stride, dilation, pads
                )
                np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_overlapping_and_padded_pools_match_naive_reference(self):
        cases = [
            # (window, stride, padding, x_shape)
            ((3, 3), (2, 2), "SAME", (2, 7, 8, 3)),
            ((2, 2), (1, 1), "VALID", (2, 5, 6, 3)),
            ((3, 2), (2, 3), "VALID", (1, 8, 9, 2)),
            ((3,), (1,), [(1, 1)], (2, 9, 3)),
            ((4,), (3,), "SAME", (2, 10, 3)),
        ]
        for kind in ("max", "avg"):
            for window, stride, padding, x_shape in cases:
                layer = jaxdl.pool(kind, window, stride=stride, padding=padding)
                x = distinct_inputs(x_shape, dtype=jnp.float32)
                y, _ = self.variant(layer.apply)({}, {}, x)
                pads = numpy_pads(padding, window, stride, [1] * len(window), x_shape[1:-1])
                expected = naive_pool(np.asarray(x), kind, window, stride, pads)
                np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_activation_values(self):
        x = np.linspace(-4.0, 4.0, 33)  # includes 0
        gelu_inner = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
        references = {
            "sigmoid": 1 / (1 + np.exp(-x)),
            "tanh": np.tanh(x),
            "relu": np.maximum(x, 0.0),
            "gelu": 0.5 * x * (1 + np.tanh(gelu_inner)),  # jax.nn.gelu's tanh approximation
            "elu": np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
            "leaky_relu": np.where(x > 0, x, 0.01 * x),
            "softplus": np.log1p(np.exp(x)),
            "log_sigmoid": -np.log1p(np.exp(-x)),
            "identity": x,
        }
        assert set(references) == set(ACTIVATIONS)
        with jax.enable_x64(True):
            for name, expected in references.items():
                layer = jaxdl.activation(name)
                assert layer.kind == name
                y, state = self.variant(layer.apply)({}, {}, jnp.asarray(x[None]))
                np.testing.assert_allclose(y[0], expected, rtol=1e-12, atol=1e-12, err_msg=name)
                assert state == {}

    @chex.variants(with_jit=True, without_jit=True)
    def test_layer_norm_normalises_each_example(self):
        x = 3.0 + 2.0 * normal((4, 3, 16), seed=2)
        layer = jaxdl.layer_norm()
        params, state = layer.init(KEY, x)
        y, _ = self.variant(layer.apply)(params, state, x)
        np.testing.assert_allclose(jnp.mean(y, -1), 0.0, atol=1e-5)
        np.testing.assert_allclose(jnp.var(y, -1), 1.0, atol=1e-4)
        # scale and bias act per feature, after normalising
        params = perturbed(params, 3)
        y2, _ = self.variant(layer.apply)(params, state, x)
        scale, bias = np.asarray(params["scale"]), np.asarray(params["bias"])
        np.testing.assert_allclose(y2, np.asarray(y) * scale + bias, rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_norm_training_uses_batch_statistics(self):
        with jax.enable_x64(True):
            momentum, epsilon = 0.8, 1e-5
            layer = jaxdl.batch_norm(momentum, epsilon)
            rng = np.random.default_rng(0)
            x = jnp.asarray(rng.normal([1.0, -2.0, 5.0], [2.0, 0.5, 3.0], (8, 5, 5, 3)))
            params, state = layer.init(KEY, x)
            params, state = (
                perturbed(params, 1),
                {"mean": jnp.zeros(3) + 0.7, "var": jnp.ones(3) * 2},
            )
            y, new_state = self.variant(functools.partial(layer.apply, train=True))(
                params, state, x
            )
            scale, bias = np.asarray(params["scale"]), np.asarray(params["bias"])
            before_affine = (np.asarray(y) - bias) / scale  # [8, 5, 5, 3]
            batch_mean = np.asarray(x).mean((0, 1, 2))
            batch_var = np.asarray(x).var((0, 1, 2))
            np.testing.assert_allclose(before_affine.mean((0, 1, 2)), 0.0, atol=1e-12)
            np.testing.assert_allclose(
                before_affine.var((0, 1, 2)), batch_var / (batch_var + epsilon), rtol=1e-12
            )
            np.testing.assert_allclose(before_affine.var((0, 1, 2)), 1.0, atol=1e-4)
            # running statistics follow the momentum rule
            np.testing.assert_allclose(
                new_state["mean"], momentum * 0.7 + (1 - momentum) * batch_mean, rtol=1e-12
            )
            np.testing.assert_allclose(
                new_state["var"], momentum * 2.0 + (1 - momentum) * batch_var, rtol=1e-12
            )
            assert new_state["mean"].dtype == jnp.float64

    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_norm_evaluation_uses_running_statistics(self):
        layer = jaxdl.batch_norm()
        x = normal((6, 4), seed=4)
        params, _ = layer.init(KEY, x)
        params = perturbed(params, 5)
        state = {"mean": jnp.array([0.5, -1.0, 0.0, 2.0]), "var": jnp.array([1.0, 4.0, 0.25, 9.0])}
        y, new_state = self.variant(layer.apply)(params, state, x)
        p, s = jax.tree.map(np.asarray, (params, state))
        expected = (np.asarray(x) - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_equal(new_state, state)

    @chex.variants(with_jit=True, without_jit=True)
    def test_dropout_is_identity_when_not_training(self):
        x = normal((8, 10), seed=5)
        for rate in (0.0, 0.5, 0.9):
            apply = self.variant(jaxdl.dropout(rate).apply)
            np.testing.assert_array_equal(apply({}, {}, x)[0], x)
            np.testing.assert_array_equal(apply({}, {}, x, key=jax.random.key(1))[0], x)


@pytest.mark.parametrize("kernel, stride, padding, dilation, x_shape", CONV_REFERENCE_CASES[1::2])
def test_conv_implementations_agree(kernel, stride, padding, dilation, x_shape):
    """``impl="canonical"`` (the CPU default), ``"im2col"`` and ``"xla"``: same outputs, same
    gradients (tests/test_conv_impl.py tests `canonical_conv` in depth)."""
    x = distinct_inputs(x_shape, dtype=jnp.float32)
    outputs = []
    for impl in ("canonical", "im2col", "xla"):
        layer = Z.conv(4, kernel, stride, padding, dilation, impl=impl)
        params = perturbed(layer.init(KEY, x)[0], seed=2)

        def loss(params, x, layer=layer):
            return jnp.sum(jnp.sin(layer.apply(params, {}, x)[0]))

        outputs.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x))
    chex.assert_trees_all_close(*outputs, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- pooling fast path


def reduce_window_reference(x, kind, window):
    """Non-overlapping VALID pooling written directly with ``lax.reduce_window``."""
    dims, (init, op) = (1, *window, 1), ((-np.inf, lax.max) if kind == "max" else (0.0, lax.add))
    y = lax.reduce_window(x, np.array(init, x.dtype), op, dims, dims, "VALID")
    return y if kind == "max" else y / math.prod(window)


@settings(deadline=None, max_examples=8)
@given(
    data=st.data(),
    ndim=st.integers(1, 2),
    kind=st.sampled_from(["max", "avg"]),
    explicit_stride=st.booleans(),
)
def test_pool_fast_path_matches_reduce_window(data, ndim, kind, explicit_stride):
    window = tuple(data.draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    sizes = [data.draw(st.integers(w, 3 * w + 2)) for w in window]  # often not divisible
    layer = jaxdl.pool(kind, window, **({"stride": window} if explicit_stride else {}))
    x = distinct_inputs((2, *sizes, 3), seed=sum(sizes), dtype=jnp.float32)

    def pooled_sum(x):
        return jnp.sum(layer.apply({}, {}, x)[0] ** 2)

    def reference_sum(x):
        return jnp.sum(reduce_window_reference(x, kind, window) ** 2)

    jaxpr = str(jax.make_jaxpr(pooled_sum)(x))
    assert "reduce_window" not in jaxpr, "non-overlapping windows should take the reshape path"
    y, _ = jax.jit(layer.apply)({}, {}, x)
    np.testing.assert_allclose(y, reduce_window_reference(x, kind, window), rtol=1e-6, atol=1e-6)
    grad = jax.jit(jax.grad(pooled_sum))(x)
    np.testing.assert_allclose(grad, jax.jit(jax.grad(reference_sum))(x), rtol=1e-5, atol=1e-6)


def test_max_pool_of_integers_matches_reduce_window():
    """Padded and overlapping windows on an integer input (which has no -inf to pad with)."""
    x = jnp.asarray(np.random.default_rng(0).integers(-50, 50, (2, 5, 6, 3)), jnp.int32)
    for stride, padding in [((1, 2), "SAME"), ((2, 1), 1), ((1, 1), "VALID")]:
        y, _ = jaxdl.max_pool((2, 3), stride=stride, padding=padding).apply({}, {}, x)
        pads = padding if isinstance(padding, str) else [(0, 0), (1, 1), (1, 1), (0, 0)]
        lowest = np.array(np.iinfo(np.int32).min, np.int32)
        expected = lax.reduce_window(x, lowest, lax.max, (1, 2, 3, 1), (1, *stride, 1), pads)
        assert y.dtype == jnp.int32
        np.testing.assert_array_equal(y, expected)


ZERO_PADDINGS = {
    "int_0": ((2, 2), 0, (2, 9, 8, 3)),
    "pairs_0": ((2, 3), [(0, 0), (0, 0)], (2, 8, 9, 3)),
    "same_divisible": ((2, 2), "SAME", (2, 8, 6, 3)),
    "same_1d_divisible": ((3,), "SAME", (2, 9, 3)),
}


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", ZERO_PADDINGS)
def test_pool_padding_that_adds_no_zeros_takes_the_fast_path(kind, case):
    """``padding=0``, ``[(0, 0), ...]`` and ``"SAME"`` on sizes that need no padding are
    ``"VALID"``: the reshape path, with reduce_window's values and gradients."""
    window, padding, x_shape = ZERO_PADDINGS[case]
    layer = jaxdl.pool(kind, window, padding=padding)
    x = distinct_inputs(x_shape, dtype=jnp.float32)

    def pooled_sum(x):
        return jnp.sum(layer.apply({}, {}, x)[0] ** 2)

    def reference_sum(x):
        return jnp.sum(reduce_window_reference(x, kind, window) ** 2)

    assert "reduce_window" not in str(jax.make_jaxpr(pooled_sum)(x))
    y, _ = jax.jit(layer.apply)({}, {}, x)
    np.testing.assert_allclose(y, reduce_window_reference(x, kind, window), rtol=1e-6, atol=1e-6)
    grad = jax.jit(jax.grad(pooled_sum))(x)
    np.testing.assert_allclose(grad, jax.jit(jax.grad(reference_sum))(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- dropout


def binomial_bound(n, p, sigmas=5.5):
    """Half-width of a ``sigmas``-standard-deviation interval for a fraction of ``n`` trials."""
    return sigmas * math.sqrt(p * (1 - p) / n)


@settings(deadline=None, max_examples=6, derandomize=True, database=None)
@given(rate=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_dropout_zeroes_a_fraction_rate_and_rescales_the_rest(rate, seed):
    x = 1.0 + normal((200, 250), seed=seed) ** 2  # no zeros of its own
    y, _ = jaxdl.dropout(rate).apply({}, {}, x, key=jax.random.key(seed + 1), train=True)
    zeroed = y == 0
    n = x.size
    assert abs(float(jnp.mean(zeroed)) - rate) <= binomial_bound(n, rate)
    kept = ~zeroed
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    # each unit keeps its expectation: mean(y / x) = kept fraction / (1 - rate) -> 1
    ratio_mean = float(jnp.mean(y / x))
    assert abs(ratio_mean - 1.0) <= binomial_bound(n, rate) / (1 - rate)


def test_dropout_preserves_each_units_expectation():
    rate, draws = 0.4, 4000
    x = normal((3, 4), seed=0)
    keys = jax.random.split(jax.random.key(1), draws)
    layer = jaxdl.dropout(rate)
    ys = jax.vmap(lambda k: layer.apply({}, {}, x, key=k, train=True)[0])(keys)  # [draws, 3, 4]
    # y = x * keep / (1 - rate): std of the mean over draws is |x| sqrt(rate / (1 - rate) / draws)
    std = jnp.abs(x) * math.sqrt(rate / (1 - rate) / draws)
    assert jnp.all(jnp.abs(jnp.mean(ys, axis=0) - x) <= 5.5 * std + 1e-6)


def test_dropout_masks_depend_only_on_the_key():
    layer, x = jaxdl.dropout(0.5), jnp.ones((16, 32))
    y1, _ = layer.apply({}, {}, x, key=jax.random.key(1), train=True)
    y1_again, _ = layer.apply({}, {}, x, key=jax.random.key(1), train=True)
    y2, _ = layer.apply({}, {}, x, key=jax.random.key(2), train=True)
    np.testing.assert_array_equal(y1, y1_again)
    assert not np.array_equal(y1 == 0, y2 == 0)


def test_dropout_accepts_numpy_scalar_rates():
    x = 1.0 + normal((100, 100), seed=0) ** 2  # no zeros of its own
    for rate in (np.float32(0.25), np.float64(0.25)):
        y, _ = jaxdl.dropout(rate).apply({}, {}, x, key=jax.random.key(3), train=True)
        assert abs(float(jnp.mean(y == 0)) - 0.25) <= binomial_bound(x.size, 0.25)
        np.testing.assert_allclose(y[y != 0], x[y != 0] / 0.75, rtol=1e-6)
    with pytest.raises(LayerError, match=message("must be in [0, 1), got False")):
        jaxdl.dropout(False)


def test_dropout_rate_zero_keeps_everything_in_training():
    x = normal((4, 5), seed=0)
    y, _ = jaxdl.dropout(0.0).apply({}, {}, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(y, x)


# ----------------------------------------------------------------------------- batch norm


def test_batch_norm_under_vmap_over_a_population():
    population, layer = 3, jaxdl.batch_norm(momentum=0.5)
    x = normal((8, 2, 4), seed=0) * 2.0 + 1.0
    keys = jax.random.split(jax.random.key(1), population)
    params, state = jax.vmap(layer.init, in_axes=(0, None))(keys, x)
    chex.assert_shape([params["scale"], state["mean"], state["var"]], (population, 4))
    params = perturbed(params, 2)
    state = {"mean": perturbed(state["mean"], 3), "var": state["var"] + jnp.arange(3.0)[:, None]}
    for train in (True, False):

        def apply(p, s, x, train=train):
            return layer.apply(p, s, x, train=train)

        ys, new_states = jax.jit(jax.vmap(apply, in_axes=(0, 0, None)))(params, state, x)
        chex.assert_shape(ys, (population, 8, 2, 4))
        for i in range(population):
            member = jax.tree.map(lambda a, i=i: a[i], (params, state))
            y_i, state_i = apply(*member, x)
            np.testing.assert_allclose(ys[i], y_i, rtol=1e-5, atol=1e-6)
            chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], new_states), state_i)
        assert not np.allclose(ys[0], ys[1])  # members differ


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "layer, x_shape",
    [
        (Z.dense(3), (2, 5)),
        (Z.conv2d(3, 3, impl="xla"), (2, 5, 5, 2)),
        (Z.conv2d(3, 3, impl="canonical"), (2, 5, 5, 2)),
        (Z.conv1d(3, 2, padding=[(2, 1)], impl="xla"), (2, 6, 2)),
        (Z.conv2d(3, 3, impl="im2col"), (2, 5, 5, 2)),
    ],
    ids=["dense", "conv_xla", "conv_canonical", "conv_wide_low_padding", "conv_im2col"],
)
def test_integer_and_bfloat16_inputs_are_promoted_with_float32_params(layer, x_shape):
    """As ``x @ w`` promotes them: float32 out, equal to the input cast to float32 (lax.conv
    refused mixed dtypes; strict promotion refused ``int32 @ float32``)."""
    values = np.random.default_rng(0).integers(-3, 4, x_shape)  # exact in bfloat16
    x32 = jnp.asarray(values, jnp.float32)
    params = perturbed(layer.init(KEY, x32)[0], seed=1)
    expected, _ = layer.apply(params, {}, x32)
    for dtype in (jnp.int32, jnp.bfloat16, jnp.bool_):
        x = x32.astype(dtype)
        y, _ = layer.apply(params, {}, x)
        assert y.dtype == jnp.float32, dtype
        np.testing.assert_array_equal(y, layer.apply(params, {}, x.astype(jnp.float32))[0])
    np.testing.assert_array_equal(layer.apply(params, {}, x32.astype(jnp.int32))[0], expected)


def test_batch_norm_running_statistics_move_in_bfloat16_as_in_float32():
    """Momentum 0.999 was rounded to 1.0 in bfloat16, and the running averages never moved."""
    layer = jaxdl.batch_norm(momentum=0.999)
    x = normal((64, 4)) * 2.0 + 3.0

    @jax.jit
    def trained(x):
        params, state = layer.init(KEY, x)

        def step(state, _):
            y, state = layer.apply(params, state, x, train=True)
            return state, y.dtype == x.dtype

        state, _ = lax.scan(step, state, None, length=100)
        return state, layer.apply(params, state, x)[0]

    (state32, y32), (state16, y16) = trained(x), trained(x.astype(jnp.bfloat16))
    assert state16["mean"].dtype == state16["var"].dtype == jnp.float32
    assert y16.dtype == jnp.bfloat16
    assert np.all(np.asarray(state16["mean"]) > 0.2)  # about 3 * (1 - 0.999 ** 100) = 0.29
    chex.assert_trees_all_close(state16, state32, rtol=1e-2)
    np.testing.assert_allclose(y16.astype(jnp.float32), y32, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "layer", [jaxdl.layer_norm(), jaxdl.batch_norm(momentum=0.9)], ids=["layer", "batch"]
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_normalizations_of_integers_equal_those_of_their_float_values(layer, train):
    """An int's epsilon was 0 (a constant row gave NaN) and its momentum 0."""
    x = jnp.array([[3, 3, 3, 3], [1, 2, 3, 5], [0, 7, 2, 2]], jnp.int32)
    params, state = layer.init(KEY, x)
    params = perturbed(params, seed=1)
    y, new_state = layer.apply(params, state, x, train=train)
    expected, expected_state = layer.apply(params, state, x.astype(jnp.float32), train=train)
    assert y.dtype == jnp.float32
    chex.assert_tree_all_finite(y)
    np.testing.assert_array_equal(y, expected)
    chex.assert_trees_all_equal(new_state, expected_state)


def test_dropout_of_integers_rescales_in_float32():
    """An int's ``1 - rate`` was 0: dropout(0.5) of int ones gave inf."""
    x, key = jnp.ones((100, 100), jnp.int32), jax.random.key(1)
    layer = jaxdl.dropout(0.5)
    y, _ = layer.apply({}, {}, x, key=key, train=True)
    assert y.dtype == jnp.float32
    assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, 2.0}
    assert abs(float(jnp.mean(y == 0)) - 0.5) <= binomial_bound(x.size, 0.5)
    expected, _ = layer.apply({}, {}, x.astype(jnp.float32), key=key, train=True)
    np.testing.assert_array_equal(y, expected)
    y_eval, _ = layer.apply({}, {}, x)  # the same dtype in evaluation
    assert y_eval.dtype == jnp.float32
    np.testing.assert_array_equal(y_eval, jnp.ones((100, 100)))


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_of_booleans_on_both_paths_matches_their_float_values(kind):
    """Overlapping windows (``lax.reduce_window``) had no identity for a bool max, no bool sum."""
    x = jnp.asarray(np.random.default_rng(0).random((2, 5, 6, 3)) > 0.5)
    for stride in (1, None):  # reduce_window, then the reshape path
        layer = jaxdl.pool(kind, 2, stride=stride)
        y, _ = layer.apply({}, {}, x)
        expected, _ = layer.apply({}, {}, x.astype(jnp.float32))
        assert y.dtype == (jnp.bool_ if kind == "max" else jnp.float32)
        np.testing.assert_array_equal(y.astype(jnp.float32), expected)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int8, jnp.bfloat16], ids=lambda d: d.__name__)
def test_avg_pool_sums_small_dtypes_wide_on_both_paths(dtype):
    """``lax.reduce_window`` summed a uint8 image in uint8: a window of 100s wrapped around
    and averaged 36, where the reshape path's ``jnp.mean`` (float32 sums) gave 100."""
    x = jnp.asarray(np.random.default_rng(0).integers(90, 110, (2, 7, 6, 3)), dtype)
    wide = x.astype(jnp.float32)
    for stride, padding in [(None, "VALID"), (1, "VALID"), (2, "SAME"), (1, 1)]:
        layer = jaxdl.avg_pool(3, stride=stride, padding=padding)
        y, _ = jax.jit(layer.apply)({}, {}, x)
        expected, _ = layer.apply({}, {}, wide)
        assert y.dtype == (jnp.bfloat16 if dtype == jnp.bfloat16 else jnp.float32)
        # bfloat16: one rounding of the float32 mean (half an ulp: at most 2**-8 relative)
        np.testing.assert_allclose(y.astype(jnp.float32), expected, rtol=2**-8, atol=0)


# ----------------------------------------------------------------------------- against flax.linen


def per_axis_padding(padding, ndim):
    """A drawn padding as both jaxdl and flax.linen's pools take it: a string as it is, an int
    or a ``(low, high)`` pair as one pair per axis."""
    if isinstance(padding, str):
        return padding
    return [(padding, padding) if isinstance(padding, int) else padding] * ndim


@settings(deadline=None, max_examples=20, derandomize=True, database=None)
@given(
    data=st.data(),
    ndim=st.integers(1, 3),
    kind=st.sampled_from(["max", "avg"]),
    padding=st.one_of(
        st.sampled_from(["SAME", "VALID", 0, 1]), st.tuples(st.integers(0, 2), st.integers(0, 2))
    ),
)
def test_pools_equal_flax_pools(data, ndim, kind, padding):
    """Windows other than the stride (overlapping or with gaps), odd sizes and every padding form
    against ``flax.linen.max_pool`` and ``avg_pool(count_include_pad=False)``: jaxdl's mean is
    over the window's valid elements, and "SAME" pads where XLA does (the extra zero last)."""
    draw_axes = functools.partial(st.lists, min_size=ndim, max_size=ndim)
    window = tuple(data.draw(draw_axes(st.integers(1, 4))))
    stride = data.draw(st.one_of(st.none(), draw_axes(st.integers(1, 4)).map(tuple)))
    pairs = {"SAME": None, "VALID": (0, 0)}.get(padding, padding)
    pairs = (pairs, pairs) if isinstance(pairs, int) else pairs
    if pairs is not None and max(pairs) >= min(window):  # windows of padding only: refused
        return
    low = 1 if pairs is None else max(1, max(window) - sum(pairs))
    sizes = data.draw(draw_axes(st.integers(low, 9)))
    x = distinct_inputs((2, *sizes, 3), seed=sum(sizes), dtype=jnp.float32)
    pads = per_axis_padding(padding, ndim)
    layer_padding = padding if isinstance(padding, str | int) else pads  # ints as ints
    layer = jaxdl.pool(kind, window, stride=stride, padding=layer_padding)
    y, _ = jax.jit(layer.apply)({}, {}, x)
    strides = window if stride is None else stride
    if kind == "max":
        expected = fnn.max_pool(x, window, strides, pads)
    else:
        expected = fnn.avg_pool(x, window, strides, pads, count_include_pad=False)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("x_shape", [(6, 5), (3, 4, 5, 6), (2, 3, 3, 2, 4)])
def test_normalizations_equal_flax(x_shape):
    """Layer norm over the last axis, batch norm over all but the last, biased variances, the
    momentum weighting the old running average, epsilon inside the root, as flax.linen."""
    momentum, epsilon = 0.8, 1e-3
    rng = np.random.default_rng(len(x_shape))
    x = jnp.asarray(rng.normal(2.0, 3.0, x_shape), jnp.float32)
    channels = x_shape[-1]
    params = {"scale": normal((channels,), 1), "bias": normal((channels,), 2)}
    variances = jnp.asarray(rng.random(channels) + 0.5, jnp.float32)
    running = {"mean": normal((channels,), 3), "var": variances}

    y, _ = jaxdl.layer_norm(epsilon).apply(params, {}, x)
    expected = fnn.LayerNorm(epsilon=epsilon).apply({"params": params}, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    layer = jaxdl.batch_norm(momentum, epsilon)
    variables = {"params": params, "batch_stats": running}
    y, state = layer.apply(params, running, x, train=True)
    flax_train = fnn.BatchNorm(use_running_average=False, momentum=momentum, epsilon=epsilon)
    expected, updates = flax_train.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(state, updates["batch_stats"], rtol=1e-5, atol=1e-6)
    y, state = layer.apply(params, running, x, train=False)
    flax_eval = fnn.BatchNorm(use_running_average=True, momentum=momentum, epsilon=epsilon)
    np.testing.assert_allclose(y, flax_eval.apply(variables, x), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_equal(state, running)


def test_activations_and_their_gradients_are_finite_at_extremes():
    """float32 inputs of +-1e4 (and 0): no overflow to inf or NaN in a value or a gradient;
    saturated gradients are 0 or the asymptotic slope."""
    x = jnp.array([-1e4, -100.0, 0.0, 100.0, 1e4], jnp.float32)
    slopes_at_minus_1e4 = {"leaky_relu": 0.01, "log_sigmoid": 1.0, "identity": 1.0}
    for name in ACTIVATIONS:
        layer = jaxdl.activation(name)
        y, _ = layer.apply({}, {}, x)
        grad = jax.vmap(jax.grad(lambda v, layer=layer: layer.apply({}, {}, v)[0]))(x)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad)), name
        far_right = 0.0 if name in ("sigmoid", "tanh", "log_sigmoid") else 1.0
        far_left = slopes_at_minus_1e4.get(name, 0.0)
        np.testing.assert_allclose(np.asarray(grad)[[0, -1]], [far_left, far_right], err_msg=name)


# ----------------------------------------------------------------------------- error messages


def message(text):
    """``text`` as a regular expression that matches it literally."""
    return re.escape(text)


@pytest.mark.parametrize(
    "build, x_shape, expected",
    [
        (
            lambda: jaxdl.dense(3),
            (5,),
            "dense: expected input [batch, ..., features], got shape (5,)",
        ),
        (
            lambda: jaxdl.conv2d(3, 3),
            (2, 8, 1),
            "conv: expected input [batch, height, width, channels], got shape (2, 8, 1)",
        ),
        (
            lambda: jaxdl.conv1d(3, 3),
            (2, 8, 8, 1),
            "conv: expected input [batch, length, channels], got shape (2, 8, 8, 1)",
        ),
        (
            lambda: jaxdl.conv(3, 3),
            (2, 8),
            "conv: expected input [batch, *spatial, channels], got shape (2, 8)",
        ),
        (
            lambda: jaxdl.conv2d(3, 5, padding="VALID"),
            (1, 3, 3, 1),
            "conv: window (5, 5) (dilation (1, 1)) is larger than the input's spatial shape (3, 3) "
            "with padding 'VALID'; got input shape (1, 3, 3, 1)",
        ),
        (
            lambda: jaxdl.conv1d(3, 3, padding="VALID", dilation=3),
            (1, 6, 1),
            "conv: window (3,) (dilation (3,)) is larger than the input's spatial shape (6,)",
        ),
        (
            lambda: jaxdl.conv2d(3, 0),
            (1, 6, 6, 1),
            "conv: kernel must be a positive int or 2 positive ints, got 0",
        ),
        (
            lambda: jaxdl.conv2d(3, (2, 2, 2)),
            (1, 6, 6, 1),
            "conv: kernel must be a positive int or 2 positive ints, got (2, 2, 2)",
        ),
    ],
    ids=[
        "dense_rank",
        "conv2d_rank",
        "conv1d_rank",
        "conv_rank",
        "conv_kernel_too_large",
        "conv_dilated_too_large",
        "conv_kernel_zero",
        "conv_kernel_arity",
    ],
)
def test_init_errors(build, x_shape, expected):
    with pytest.raises(LayerError, match=message(expected)):
        build().init(KEY, jnp.zeros(x_shape))


@pytest.mark.parametrize(
    "layer, kind",
    [(jaxdl.dense(3), "dense"), (jaxdl.conv2d(3, 2), "conv"), (jaxdl.mlp(hidden=(4,)), "serial")],
)
def test_an_int_seed_as_key_names_the_layer_and_how_to_make_a_key(layer, kind):
    expected = f"{kind}: key must be a JAX random key, e.g. jax.random.key(0), got 0"
    with pytest.raises(LayerError, match=message(expected)):
        layer.init(0, jnp.zeros((1, 4, 4, 1)))


def test_an_int_seed_as_dropout_key_names_the_layer():
    model = jaxdl.mlp(hidden=(4,), dropout=0.5)
    params, state = model.init(KEY, jnp.zeros((1, 4)))
    with pytest.raises(LayerError, match=message("serial: key must be a JAX random key")):
        model.apply(params, state, jnp.zeros((1, 4)), key=3, train=True)
    expected = "dropout: key must be a JAX random key, e.g. jax.random.key(0), got 0"
    with pytest.raises(LayerError, match=message(expected)):
        jaxdl.dropout(0.5).apply({}, {}, jnp.ones((2, 3)), key=0, train=True)


def test_kernel_fits_once_padded():
    y, _ = run(Z.conv1d(3, 3, padding=1, dilation=3), jnp.zeros((1, 6, 1)))
    chex.assert_shape(y, (1, 2, 3))
    y, _ = run(Z.conv2d(3, 5), jnp.zeros((1, 3, 3, 1)))  # SAME pads any kernel
    chex.assert_shape(y, (1, 3, 3, 3))


@pytest.mark.parametrize(
    "layer, init_shape, x_shape, expected",
    [
        (Z.dense(3), (2, 4), (2, 3), "dense: expected input [batch, ..., 4], got shape (2, 3)"),
        (Z.dense(3), (2, 4), (4,), "dense: expected input [batch, ..., 4], got shape (4,)"),
        (
            Z.conv1d(3, 3),
            (1, 8, 2),
            (1, 8, 5),
            "conv: expected input with 2 channels (last axis), got shape (1, 8, 5)",
        ),
        (
            Z.conv2d(3, 3),
            (1, 8, 8, 2),
            (1, 8, 2),
            "conv: expected input [batch, height, width, channels], got shape (1, 8, 2)",
        ),
        (
            jaxdl.layer_norm(),
            (2, 4),
            (2, 5),
            "layer_norm: expected input [batch, ..., 4], got shape (2, 5)",
        ),
        (
            jaxdl.batch_norm(),
            (2, 4),
            (2, 3, 5),
            "batch_norm: expected input [batch, ..., 4], got shape (2, 3, 5)",
        ),
        (
            jaxdl.max_pool(4),
            (1, 3, 3, 1),
            (1, 3, 3, 1),
            "max_pool: window (4, 4) (dilation (1, 1)) is larger than the input's spatial shape "
            "(3, 3) with padding 'VALID'",
        ),
        (
            jaxdl.avg_pool(2),
            (2, 3),
            (2, 3),
            "avg_pool: expected input [batch, *spatial, channels], got shape (2, 3)",
        ),
        (
            jaxdl.flatten,
            (2, 3),
            (3,),
            "flatten: expected input [batch, ...features], got shape (3,)",
        ),
    ],
    ids=[
        "dense_channels",
        "dense_rank",
        "conv_channels",
        "conv_rank",
        "layer_norm_channels",
        "batch_norm_channels",
        "pool_too_large",
        "pool_rank",
        "flatten_rank",
    ],
)
def test_apply_errors(layer, init_shape, x_shape, expected):
    params, state = layer.init(KEY, jnp.zeros(init_shape))
    with pytest.raises(LayerError, match=message(expected)):
        layer.apply(params, state, jnp.zeros(x_shape))
    with pytest.raises(LayerError, match=message(expected)):  # raised at trace time under jit
        jax.jit(layer.apply)(params, state, jnp.zeros(x_shape))


def without(tree, key):
    """A copy of the dict ``tree`` without ``key``."""
    return {k: v for k, v in tree.items() if k != key}


@pytest.mark.parametrize(
    "layer, x_shape, edit, expected",
    [
        (
            Z.dense(3),
            (2, 4),
            lambda p, s: ({}, s),
            "dense: expected the params init returns, with keys ['w', 'b'], got keys []",
        ),
        (
            Z.dense(3, use_bias=False),
            (2, 4),
            lambda p, s: (None, s),
            "dense: expected the params init returns, with keys ['w'], got None",
        ),
        (
            Z.conv2d(3, 3),
            (1, 5, 5, 2),
            lambda p, s: (without(p, "w"), s),
            "conv: expected the params init returns, with keys ['w', 'b'], got keys ['b']",
        ),
        (
            jaxdl.layer_norm(),
            (2, 4),
            lambda p, s: (without(p, "scale"), s),
            "layer_norm: expected the params init returns, with keys ['scale', 'bias'], "
            "got keys ['bias']",
        ),
        (
            jaxdl.batch_norm(),
            (2, 4),
            lambda p, s: (p, {}),
            "batch_norm: expected the state init returns, with keys ['mean', 'var'], got keys []",
        ),
        (
            jaxdl.mlp(hidden=(4,), norm="batch", init="zeros"),
            (2, 4),
            lambda p, s: (p, {}),
            "batch_norm 'norm1': expected the state init returns, with keys ['mean', 'var']",
        ),
        (
            jaxdl.serial(("d1", Z.dense(3)), ("d2", Z.dense(2))),
            (2, 4),
            lambda p, s: (without(p, "d2"), s),
            "dense 'd2': expected the params init returns, with keys ['w', 'b'], got keys []",
        ),
    ],
    ids=[
        "dense",
        "dense_no_bias",
        "conv",
        "layer_norm",
        "batch_norm",
        "batch_norm_in_serial",
        "dense_in_serial",
    ],
)
def test_params_or_state_not_from_init_name_the_layer_and_the_keys(layer, x_shape, edit, expected):
    """These were a raw ``KeyError: 'w'`` (or ``'mean'``) from inside the layer."""
    params, state = edit(*layer.init(KEY, jnp.zeros(x_shape)))
    for train in (False, True):
        with pytest.raises(LayerError, match=message(expected)):
            layer.apply(params, state, jnp.zeros(x_shape), train=train)


@pytest.mark.parametrize(
    "build, expected",
    [
        (
            lambda: jaxdl.dropout(1.0),
            "dropout: rate (fraction of units zeroed) must be in [0, 1), got 1.0",
        ),
        (lambda: jaxdl.dropout(-0.1), "must be in [0, 1), got -0.1"),
        (lambda: jaxdl.dropout(1.5), "must be in [0, 1), got 1.5"),
        (lambda: jaxdl.batch_norm(momentum=1.0), "batch_norm: momentum must be in [0, 1), got 1.0"),
        (
            lambda: jaxdl.batch_norm(momentum="0.9"),
            "batch_norm: momentum must be in [0, 1), got '0.9'",
        ),
        (lambda: jaxdl.batch_norm(momentum=None), "momentum must be in [0, 1), got None"),
        (lambda: jaxdl.dense(0), "dense: features must be a positive int, got 0"),
        (lambda: jaxdl.conv2d(2.5, 3), "conv: features must be a positive int, got 2.5"),
        (
            lambda: jaxdl.conv1d(2, 3, impl="cudnn"),
            "conv: impl must be 'auto', 'xla', 'canonical' or 'im2col', got 'cudnn'",
        ),
        (lambda: jaxdl.dense(True), "dense: features must be a positive int, got True"),
        (
            lambda: jaxdl.conv2d(4, (3, True)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))),
            "conv: kernel must be a positive int or 2 positive ints, got (3, True)",
        ),
        (
            lambda: jaxdl.dense(3, b_init="he_normal"),
            "dense: b_init 'he_normal' scales by fan-in/fan-out, which a 1-D bias does not have",
        ),
        (lambda: jaxdl.conv2d(3, 3, b_init="classic"), "conv: b_init 'classic' scales by fan"),
        (
            lambda: jaxdl.batch_norm(epsilon=-1e-5),
            "batch_norm: epsilon (added to the variance) must be > 0, got -1e-05",
        ),
        (lambda: jaxdl.layer_norm(0.0), "layer_norm: epsilon (added to the variance) must be > 0"),
    ],
    ids=[
        "dropout_1",
        "dropout_negative",
        "dropout_above_1",
        "momentum",
        "momentum_str",
        "momentum_none",
        "dense_0",
        "conv_float",
        "impl",
        "dense_bool",
        "kernel_bool",
        "dense_fan_scaled_bias",
        "conv_fan_scaled_bias",
        "batch_norm_epsilon",
        "layer_norm_epsilon",
    ],
)
def test_configuration_errors(build, expected):
    with pytest.raises(LayerError, match=message(expected)):
        build()


def test_conv_padding_error():
    with pytest.raises(LayerError, match=message("conv: padding must be 'SAME', 'VALID'")):
        jaxdl.conv2d(3, 3, padding="FULL").init(KEY, jnp.zeros((1, 5, 5, 1)))
    with pytest.raises(LayerError, match=message("conv: padding needs 2 (low, high) pairs")):
        jaxdl.conv2d(3, 3, padding=[(1, 1)]).init(KEY, jnp.zeros((1, 5, 5, 1)))


@pytest.mark.parametrize(
    "build, expected",
    [
        (
            lambda: Z.conv2d(3, 3, padding=-1),
            "conv: padding must be a non-negative int, got -1",
        ),
        (
            lambda: Z.conv2d(3, 3, padding=[(1.5, 1), (1, 1)]),
            "conv: padding pairs must hold non-negative ints (zeros added), got [(1.5, 1), (1, 1)]",
        ),
        (
            lambda: Z.conv2d(3, 3, padding=[(0, -1), (2, 0)], impl="im2col"),
            "conv: padding pairs must hold non-negative ints (zeros added), got [(0, -1), (2, 0)]",
        ),
        (
            lambda: Z.conv2d(3, 3, padding=1.0),
            "conv: padding needs 2 (low, high) pairs, got 1.0",
        ),
        (
            lambda: jaxdl.max_pool(2, stride=1, padding=-1),
            "max_pool: padding must be a non-negative int, got -1",
        ),
        (
            lambda: Z.conv2d(3, 3, padding=True),
            "conv: padding must be 'SAME', 'VALID', an int or pairs, got True",
        ),
        (
            lambda: Z.conv2d(3, 3, padding=[(1, True), (1, 1)]),
            "conv: padding pairs must hold non-negative ints (zeros added), "
            "got [(1, True), (1, 1)]",
        ),
    ],
    ids=[
        "conv_negative_int",
        "conv_float_pair",
        "conv_negative_pair",
        "conv_float",
        "pool",
        "conv_bool",
        "conv_bool_pair",
    ],
)
def test_padding_must_count_zeros(build, expected):
    """Padding is a number of zeros: a float was truncated by ``"canonical"`` and refused by
    ``"xla"``; a negative count cropped in ``"xla"`` and crashed ``"im2col"``."""
    layer = build()
    with pytest.raises(LayerError, match=message(expected)):
        layer.apply(*layer.init(KEY, jnp.zeros((1, 6, 6, 1))), jnp.zeros((1, 6, 6, 1)))


def test_numpy_int_padding_equals_python_int_padding():
    x = normal((1, 6, 6, 2))
    layer, same = Z.conv2d(3, 3, padding=np.int64(2)), Z.conv2d(3, 3, padding=2)
    params = perturbed(layer.init(KEY, x)[0], seed=1)
    np.testing.assert_array_equal(layer.apply(params, {}, x)[0], same.apply(params, {}, x)[0])


@pytest.mark.parametrize(
    "layer, expected",
    [
        (
            jaxdl.max_pool(2, stride=2, padding=2),
            "max_pool: padding 2 must be smaller than the window (2, 2) on every side",
        ),
        (
            jaxdl.avg_pool(3, stride=1, padding=[(0, 0), (3, 1)]),
            "avg_pool: padding [(0, 0), (3, 1)] must be smaller than the window (3, 3) on every "
            "side",
        ),
    ],
    ids=["max", "avg"],
)
def test_pool_padding_of_a_whole_window_is_refused(layer, expected):
    """Such padding makes windows of padding only, whose max was -inf and whose mean was NaN."""
    with pytest.raises(LayerError, match=message(expected)):
        layer.apply({}, {}, jnp.ones((1, 4, 4, 1)))


def test_dropout_in_training_needs_a_key():
    expected = "dropout: train=True needs a key (apply(..., key=key, train=True))"
    with pytest.raises(LayerError, match=message(expected)):
        jaxdl.dropout(0.5).apply({}, {}, jnp.ones((2, 3)), train=True)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'swish'; valid names: ") as error:
        jaxdl.activation("swish")
    for name in ACTIVATIONS:
        assert re.search(rf"\b{name}\b", str(error.value)), name
    assert jaxdl.activation(jaxdl.relu) is jaxdl.relu


def test_unknown_initializer_lists_valid_names():
    for build in (
        lambda: jaxdl.dense(3, w_init="xavier"),
        lambda: jaxdl.conv2d(3, 3, b_init="xavier"),
        lambda: initializers.get("xavier"),
    ):
        with pytest.raises(
            ValueError, match="unknown initializer 'xavier'; valid names: "
        ) as error:
            build()
        for name in initializers.NAMES:
            assert re.search(rf"\b{name}\b", str(error.value)), name


def test_unknown_pooling_lists_valid_kinds():
    with pytest.raises(ValueError, match=message("unknown pooling 'min'; valid: max, avg")):
        jaxdl.pool("min", 2)


def test_errors_inside_serial_name_the_layer():
    model = jaxdl.serial(("conv1", Z.conv2d(4, 5, padding="VALID")), jaxdl.flatten)
    with pytest.raises(LayerError, match=message("conv 'conv1': window (5, 5)")):
        model.init(KEY, jnp.zeros((1, 3, 3, 1)))

    # generated names, and a parameter-free layer failing while init traces its apply
    model = jaxdl.serial(Z.conv2d(2, 3), jaxdl.relu, jaxdl.max_pool(2), jaxdl.max_pool(4))
    with pytest.raises(LayerError, match=message("max_pool 'max_pool2': window (4, 4)")):
        model.init(KEY, jnp.zeros((1, 6, 6, 1)))

    # nested serials give the path from the outside in
    inner = jaxdl.serial(("conv1", Z.conv1d(2, 3)))
    model = jaxdl.serial(("block", inner))
    with pytest.raises(
        LayerError, match=message("conv 'block/conv1': expected input [batch, length")
    ):
        model.init(KEY, jnp.zeros((1, 6, 6, 1)))

    # at apply time: wrong input width for the first dense layer
    model = jaxdl.serial(Z.dense(3), jaxdl.relu, Z.dense(2))
    params, state = model.init(KEY, jnp.zeros((1, 4)))
    with pytest.raises(LayerError, match=message("dense 'dense1': expected input [batch, ..., 4]")):
        model.apply(params, state, jnp.zeros((1, 5)))

    # dropout without a key
    model = jaxdl.serial(Z.dense(3), jaxdl.dropout(0.5))
    params, state = model.init(KEY, jnp.zeros((1, 4)))
    with pytest.raises(
        LayerError, match=message("dropout 'dropout1': train=True needs a key")
    ) as info:
        model.apply(params, state, jnp.zeros((1, 4)), train=True)
    assert (info.value.kind, info.value.path) == ("dropout", ("dropout1",))


@pytest.mark.parametrize("name", jaxdl.layers.activations.NAMES)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_])
def test_activations_take_integer_inputs_as_float32(name, dtype):
    """As every other layer does: `sigmoid` raised JAX's TypeError on integers, and `elu`,
    `leaky_relu` a promotion error under strict promotion."""
    layer = jaxdl.layers.activation(name)
    x = jnp.asarray([0, 1, 2, 3], dtype)
    y, _ = layer.apply({}, {}, x)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, layer.apply({}, {}, x.astype(jnp.float32))[0])
