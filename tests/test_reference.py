"""Layers, initialisers and losses against independent references: flax.linen, jax.nn.initializers
and (where installed) torch.nn.functional, in values and gradients, over shapes drawn by hypothesis.

Geometries are drawn so that both the fast paths (reshape pooling of whole windows, im2col or
canonical convolutions) and the general ones (reduce_window, lax.conv) are taken.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import jaxdl
from jaxdl import initializers, losses

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is an optional (bench) dependency
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
KEY = jax.random.key(0)
FAST = settings(deadline=None, derandomize=True, database=None)
FLOAT64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}  # flax computes in float32 else


def rand(rng, shape, dtype=jnp.float64):
    return jnp.asarray(rng.standard_normal(shape), dtype)


def same_pads(size, window, stride, dilation=1):
    """(low, high) zeros of ``"SAME"``: XLA's (and TF's) convention, the extra zero at the end."""
    span = (window - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def pairs(padding, window, strides, dilation, sizes):
    """Any padding the layers take, as ``(low, high)`` zeros per spatial axis."""
    if padding == "SAME":
        return [same_pads(*a) for a in zip(sizes, window, strides, dilation, strict=True)]
    if padding == "VALID":
        return [(0, 0)] * len(window)
    if isinstance(padding, int):
        return [(padding, padding)] * len(window)
    return list(padding)


def draw_geometry(data, ndim, *, max_window=4, max_dilation=2, pool=False):
    """Window, strides, dilation, padding and fitting input sizes for a conv (or a pool)."""
    axes = functools.partial(st.lists, min_size=ndim, max_size=ndim)
    window = tuple(data.draw(axes(st.integers(1, max_window)), label="window"))
    dilation = tuple(data.draw(axes(st.integers(1, max_dilation)), label="dilation"))
    strides = tuple(data.draw(axes(st.integers(1, 3)), label="strides"))
    if pool:  # padding must stay below the window on each side
        smallest = min(window) - 1
        padding = data.draw(
            st.one_of(
                st.sampled_from(["SAME", "VALID"]),
                st.integers(0, smallest),
                st.tuples(
                    *(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)) for k in window)
                ),
            ),
            label="padding",
        )
    else:
        padding = data.draw(
            st.one_of(
                st.sampled_from(["SAME", "VALID"]),
                st.integers(0, 3),
                st.tuples(*(st.tuples(st.integers(0, 3), st.integers(0, 3)) for _ in window)),
            ),
            label="padding",
        )
    padding = [tuple(p) for p in padding] if isinstance(padding, tuple) else padding
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    if isinstance(padding, str):
        added = [0] * ndim  # "VALID" adds none, "SAME" what it needs: any size fits
    else:
        added = (
            [2 * padding] * ndim if isinstance(padding, int) else [lo + hi for lo, hi in padding]
        )
    sizes = []
    for span, pad in zip(spans, added, strict=True):
        smallest = max(1, span - pad)
        sizes.append(data.draw(st.integers(smallest, smallest + 6), label="size"))  # often odd
    return window, strides, dilation, padding, sizes


def assert_same_and_same_vjp(ours, theirs, args, *, rtol, atol, seed=0):
    """``ours(*args)`` and ``theirs(*args)``, each ``(y, aux)``, agree in ``y``, in ``aux``
    (unless None) and in the vector-Jacobian product of ``y`` with one random cotangent (the
    gradient of ``<y, c>`` with respect to every arg); both run in one jitted program."""
    y_struct = jax.eval_shape(lambda *a: ours(*a)[0], *args)
    c = rand(np.random.default_rng(seed), y_struct.shape, y_struct.dtype)

    def both(*args):
        results = []
        for f in (ours, theirs):
            y, pullback, aux = jax.vjp(f, *args, has_aux=True)
            results.append((y, pullback(c), aux))
        return results

    (y, grads, aux), (expected, expected_grads, expected_aux) = jax.jit(both)(*args)
    chex.assert_shape(y, expected.shape)
    np.testing.assert_allclose(y, expected, rtol=rtol, atol=atol)
    chex.assert_trees_all_close(grads, expected_grads, rtol=rtol, atol=atol)
    if expected_aux is not None:
        chex.assert_trees_all_close(aux, expected_aux, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- convolution


def flax_conv(features, window, strides, padding, dilation):
    """``nn.Conv`` with jaxdl's geometry; its params ``{"kernel", "bias"}`` are jaxdl's
    ``{"w", "b"}`` in the same ``[*window, in, out]`` layout."""
    return nn.Conv(
        features,
        window,
        strides=strides,
        padding=padding if isinstance(padding, str | int) else list(padding),
        kernel_dilation=dilation,
    )


@settings(FAST, max_examples=18)
@given(
    data=st.data(),
    ndim=st.integers(1, 2),
    impl=st.sampled_from(["auto", "canonical", "im2col", "xla"]),
)
def test_conv_matches_flax_conv_in_values_and_gradients(data, ndim, impl):
    window, strides, dilation, padding, sizes = draw_geometry(data, ndim)
    batch, channels, features = (data.draw(st.integers(1, 3)) for _ in range(3))
    rng = np.random.default_rng(len(sizes) + sum(sizes) + sum(window))
    layer = jaxdl.conv(
        features, window, strides, padding, dilation, w_init="zeros", impl=impl, ndim=ndim
    )
    reference = flax_conv(features, window, strides, padding, dilation)

    def ours(params, x):
        return layer.apply(params, {}, x)[0], None

    def theirs(params, x):
        flax_params = {"kernel": params["w"], "bias": params["b"]}
        return reference.apply({"params": flax_params}, x), None

    with jax.enable_x64(True):
        x = rand(rng, (batch, *sizes, channels))
        params = {"w": rand(rng, (*window, channels, features)), "b": rand(rng, (features,))}
        assert_same_and_same_vjp(ours, theirs, (params, x), rtol=1e-10, atol=1e-10)


def torch_conv(x, w, b, strides, pads, dilation):
    """The conv in torch: NCHW, kernel ``[out, in, *window]``, padding by ``F.pad``."""
    ndim = x.ndim - 2
    xt, wt, bt = (torch.tensor(np.asarray(a), requires_grad=True) for a in (x, w, b))
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad: last axis first
    xc = F.pad(xt.movedim(-1, 1), flat)  # [B, C, *padded]
    wc = wt.permute(ndim + 1, ndim, *range(ndim)).contiguous()  # [O, I, *window]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[ndim]
    y = conv(xc, wc, bt, stride=strides, dilation=dilation).movedim(1, -1)  # [B, *out, O]
    return (xt, wt, bt), y


@requires_torch
@settings(FAST, max_examples=6)
@given(
    data=st.data(),
    ndim=st.integers(1, 3),
    impl=st.sampled_from(["auto", "canonical", "im2col", "xla"]),
)
def test_conv_matches_torch_in_values_and_gradients(data, ndim, impl):
    window, strides, dilation, padding, sizes = draw_geometry(
        data, ndim, max_window=4 if ndim < 3 else 2
    )
    batch, channels, features = (data.draw(st.integers(1, 3)) for _ in range(3))
    rng = np.random.default_rng(sum(sizes) + 7)
    layer = jaxdl.conv(
        features, window, strides, padding, dilation, w_init="zeros", impl=impl, ndim=ndim
    )
    pads = pairs(padding, window, strides, dilation, sizes)
    with jax.enable_x64(True):
        x = rand(rng, (batch, *sizes, channels))
        params = {"w": rand(rng, (*window, channels, features)), "b": rand(rng, (features,))}
        y = layer.apply(params, {}, x)[0]
        leaves, expected = torch_conv(x, params["w"], params["b"], strides, pads, dilation)
        chex.assert_shape(y, tuple(expected.shape))
        np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-10, atol=1e-10)
        c = rand(rng, y.shape)
        (expected * torch.tensor(np.asarray(c))).sum().backward()

        def ours(params, x):
            return jnp.vdot(layer.apply(params, {}, x)[0], c)

        grads, grad_x = jax.jit(jax.grad(ours, argnums=(0, 1)))(params, x)
        for ours_grad, leaf in zip((grad_x, grads["w"], grads["b"]), leaves, strict=True):
            np.testing.assert_allclose(ours_grad, leaf.grad.numpy(), rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- pooling


def flax_pool(kind, x, window, strides, padding):
    if not isinstance(padding, str):  # an int or pairs: explicit zeros, as nn.max_pool takes them
        padding = [(padding, padding)] * len(window) if isinstance(padding, int) else padding
    if kind == "max":
        return nn.max_pool(x, window, strides, padding)
    return nn.avg_pool(x, window, strides, padding, count_include_pad=False)


def takes_fast_path(layer, x):
    """Whether ``layer`` pools ``x`` by a reshape (no ``reduce_window`` in its jaxpr)."""
    return "reduce_window" not in str(jax.make_jaxpr(lambda x: layer.apply({}, {}, x)[0])(x))


@settings(FAST, max_examples=22)
@given(
    data=st.data(),
    ndim=st.integers(1, 3),
    kind=st.sampled_from(["max", "avg"]),
    whole_windows=st.booleans(),
)
def test_pool_matches_flax_in_values_and_gradients(data, ndim, kind, whole_windows):
    """Both paths (the events count them), on inputs with tied values: flax's pools are
    reduce_window, whose max gradient goes to the first maximum of each window, while jaxdl's
    reshape path splits it among tied maxima (`test_tied_maxima_on_the_two_paths`), so a max
    pool taking that path gets no ties here.
    ``whole_windows``: the default stride or the window's, and padding that adds no zeros."""
    window, strides, _, padding, sizes = draw_geometry(
        data, ndim, max_window=4 if ndim < 3 else 2, max_dilation=1, pool=True
    )
    stride = strides
    if whole_windows:
        stride = data.draw(st.sampled_from([None, window]), label="stride")
        strides = window
        padding = data.draw(st.sampled_from(["VALID", 0, [(0, 0)] * ndim]), label="padding")
        sizes = [max(size, k) for size, k in zip(sizes, window, strict=True)]  # no zeros added
    batch, channels = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    rng = np.random.default_rng(sum(sizes) + ndim)
    x = 2.0 * rng.standard_normal((batch, *sizes, channels))
    layer = jaxdl.pool(kind, window, stride=stride, padding=padding)
    fast = takes_fast_path(layer, jnp.asarray(x, jnp.float32))
    if kind == "avg" or not fast:
        tied = rng.random(x.shape) < 0.5  # these mostly -1, 0 or 1: many windows tie
        x = np.where(tied, np.round(x / 2), x)
    x = jnp.asarray(x, jnp.float32)
    event(f"{kind}_pool {'reshape' if fast else 'reduce_window'} path")
    assert_same_and_same_vjp(
        lambda x: (layer.apply({}, {}, x)[0], None),
        lambda x: (flax_pool(kind, x, window, strides, padding), None),
        (x,),
        rtol=1e-6,
        atol=1e-6,
    )


# (window, stride, padding, spatial sizes, fast path?)
TIE_CASES = {
    "1d_fast": ((3,), None, "VALID", (7,), True),
    "2d_fast": ((2, 2), None, "VALID", (5, 6), True),
    "2d_fast_zero_padding": ((2, 3), (2, 3), 0, (4, 6), True),
    "2d_fast_same_divisible": ((2, 2), None, "SAME", (4, 4), True),
    "3d_fast": ((2, 1, 2), None, "VALID", (4, 3, 5), True),
    "2d_overlapping": ((2, 2), (1, 1), "VALID", (4, 5), False),
    "2d_same_padded": ((3, 3), (2, 2), "SAME", (5, 5), False),
}


@pytest.mark.parametrize("case", TIE_CASES)
def test_tied_maxima_on_the_two_paths(case):
    """A constant input ties every window. reduce_window (flax, torch) gives each window's whole
    gradient to its first element; the reshape path (``jnp.max``) splits it equally among the
    ties: both are gradients of the max (bench/NOTES.md section 16: giving it to the first made
    the LeNet step 13-23 % slower). Either way each window passes on exactly its gradient."""
    window, stride, padding, sizes, fast = TIE_CASES[case]
    layer = jaxdl.max_pool(window, stride=stride, padding=padding)
    x = jnp.full((2, *sizes, 3), 1.5, jnp.float32).at[1, ..., 1].set(-4.0)
    assert takes_fast_path(layer, x) == fast
    strides = window if stride is None else stride
    y_struct = jax.eval_shape(lambda x: layer.apply({}, {}, x)[0], x)
    c = rand(np.random.default_rng(0), y_struct.shape, jnp.float32)

    @jax.jit
    def grads(x):
        ours = jax.grad(lambda x: jnp.vdot(layer.apply({}, {}, x)[0], c))(x)
        theirs = jax.grad(lambda x: jnp.vdot(flax_pool("max", x, window, strides, padding), c))
        return ours, theirs(x)

    grad, first_only = grads(x)
    if not fast:
        np.testing.assert_array_equal(grad, first_only)
        return
    # The windows tile the input: every element of a window gets its c / (window size).
    kept = tuple(s // w * w for s, w in zip(sizes, window, strict=True))
    tiles = grad[(slice(None), *(slice(0, k) for k in kept))]
    split = [d for k, w in zip(kept, window, strict=True) for d in (k // w, w)]
    tiles = tiles.reshape(2, *split, 3)  # [B, s1/w1, w1, ..., C]
    window_axes = tuple(range(2, 2 * len(window) + 1, 2))
    for index in np.ndindex(*window):
        tap = [slice(None)] + [a for i in index for a in (slice(None), i)] + [slice(None)]
        np.testing.assert_allclose(tiles[tuple(tap)], c / float(np.prod(window)), rtol=1e-6)
    np.testing.assert_allclose(tiles.sum(window_axes), c, rtol=1e-6)
    assert float(jnp.abs(grad).sum()) == pytest.approx(float(jnp.abs(first_only).sum()), 1e-5)


def test_max_pool_fast_path_propagates_nan_and_infinities():
    x = jnp.zeros((1, 4, 4, 1), jnp.float32)
    x = x.at[0, 1, 1, 0].set(jnp.nan).at[0, 2, 2, 0].set(jnp.inf).at[0, 0, 2, 0].set(-jnp.inf)
    x = jnp.concatenate([x, jnp.full_like(x, -jnp.inf)])  # [2, 4, 4, 1]
    layer = jaxdl.max_pool(2)
    assert takes_fast_path(layer, x)
    y = jax.jit(layer.apply)({}, {}, x)[0][..., 0]  # [2, 2, 2]
    np.testing.assert_array_equal(y[0], [[np.nan, 0.0], [0.0, np.inf]])
    np.testing.assert_array_equal(y[1], np.full((2, 2), -np.inf))


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.uint8, jnp.bfloat16])
def test_max_pool_fast_path_keeps_the_input_dtype(dtype):
    x = jnp.asarray(np.random.default_rng(0).integers(0, 100, (2, 4, 6, 3)), dtype)
    layer = jaxdl.max_pool((2, 3))
    assert takes_fast_path(layer, x)
    y = layer.apply({}, {}, x)[0]
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, nn.max_pool(x, (2, 3), (2, 3)))


# ----------------------------------------------------------------------------- normalisation


@settings(FAST, max_examples=6)
@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    momentum=st.floats(0.0, 0.99),
    epsilon=st.sampled_from([1e-5, 1e-3, 0.5]),
    offset=st.sampled_from([0.0, 3.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_batch_norm_matches_flax_in_train_and_eval(shape, momentum, epsilon, offset, seed):
    """Outputs, running statistics (flax: ``momentum * old + (1 - momentum) * batch``, biased
    variance) and gradients, in training (batch statistics) and evaluation (running ones)."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    layer = jaxdl.batch_norm(momentum, epsilon)
    reference = nn.BatchNorm(
        momentum=momentum,
        epsilon=epsilon,
        use_fast_variance=False,
        force_float32_reductions=False,
        **FLOAT64,
    )

    def ours(params, x):
        y_train, new_state = layer.apply(params, state, x, train=True)
        y_eval, eval_state = layer.apply(params, state, x, train=False)
        return jnp.stack([y_train, y_eval]), (new_state, eval_state)

    def theirs(params, x):
        variables = {"params": params, "batch_stats": state}
        y_train, updated = reference.apply(
            variables, x, use_running_average=False, mutable=["batch_stats"]
        )
        y_eval = reference.apply(variables, x, use_running_average=True)
        return jnp.stack([y_train, y_eval]), (dict(updated["batch_stats"]), state)

    with jax.enable_x64(True):
        x = offset + rng.uniform(0.1, 3.0) * rand(rng, shape)
        params = {"scale": rand(rng, (channels,)), "bias": rand(rng, (channels,))}
        state = {"mean": rand(rng, (channels,)), "var": jnp.asarray(rng.uniform(0.5, 2, channels))}
        assert_same_and_same_vjp(ours, theirs, (params, x), rtol=1e-9, atol=1e-9)


@settings(FAST, max_examples=6)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    epsilon=st.sampled_from([1e-5, 1e-2]),
    offset=st.sampled_from([0.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_matches_flax(shape, epsilon, offset, seed):
    rng = np.random.default_rng(seed)
    features = shape[-1]
    layer = jaxdl.layer_norm(epsilon)
    reference = nn.LayerNorm(
        epsilon=epsilon, use_fast_variance=False, force_float32_reductions=False, **FLOAT64
    )
    with jax.enable_x64(True):
        x = offset + rand(rng, shape)
        params = {"scale": rand(rng, (features,)), "bias": rand(rng, (features,))}
        assert_same_and_same_vjp(
            lambda p, x: (layer.apply(p, {}, x)[0], None),
            lambda p, x: (reference.apply({"params": p}, x), None),
            (params, x),
            rtol=1e-9,
            atol=1e-9,
        )


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_dropout_equals_flax_dropout_with_the_same_key(rate):
    x = rand(np.random.default_rng(1), (16, 3, 5), jnp.float32)
    key = jax.random.key(3)
    layer, reference = jaxdl.dropout(rate), nn.Dropout(rate)

    def ours(x):
        return layer.apply({}, {}, x, key=key, train=True)[0]

    def theirs(x):
        return reference.apply({}, x, deterministic=False, rng=key)

    c = rand(np.random.default_rng(2), x.shape, jnp.float32)

    @jax.jit
    def values_and_grads(x):
        return [(f(x), jax.grad(lambda x, f=f: jnp.vdot(f(x), c))(x)) for f in (ours, theirs)]

    chex.assert_trees_all_equal(*values_and_grads(x))
    np.testing.assert_array_equal(layer.apply({}, {}, x, key=key)[0], x)  # evaluation


# ----------------------------------------------------------------------------- initialisers


JAX_SCHEMES = {
    "glorot_uniform": jax.nn.initializers.glorot_uniform(),
    "glorot_normal": jax.nn.initializers.glorot_normal(),
    "he_uniform": jax.nn.initializers.he_uniform(),
    "he_normal": jax.nn.initializers.he_normal(),
    "lecun_normal": jax.nn.initializers.lecun_normal(),
    "classic": jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
    "normal": jax.nn.initializers.normal(1.0),
}


LAYOUTS = [  # (layer, input shape, kernel shape)
    (jaxdl.dense, (2, 5), (5, 6)),
    (functools.partial(jaxdl.conv1d, kernel=3), (2, 9, 5), (3, 5, 6)),
    (functools.partial(jaxdl.conv2d, kernel=(4, 1)), (2, 9, 8, 5), (4, 1, 5, 6)),
]


def test_layer_kernels_equal_jax_initializers():
    """Each layer's ``w`` is the jax.nn.initializers sample for its key half and its
    ``[*window, in, out]`` shape (so fans are ``prod(window) * in`` and ``prod(window) * out``);
    ``init_scale`` multiplies it. Each scheme on one layout, all in one program (samplers
    compile slowly)."""
    cases = [(name, *LAYOUTS[i % len(LAYOUTS)]) for i, name in enumerate(JAX_SCHEMES)]

    @jax.jit
    def kernels(key):
        w_key, _ = jax.random.split(key)
        pairs = []
        for name, build, x_shape, w_shape in cases:
            x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
            ours = build(features=6, w_init=name, init_scale=0.5).init(key, x)[0]["w"]
            pairs.append((ours, 0.5 * JAX_SCHEMES[name](w_key, w_shape, jnp.float32)))
        return pairs

    for (name, _, _, w_shape), (ours, expected) in zip(cases, kernels(KEY), strict=True):
        chex.assert_shape(ours, w_shape)
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7, err_msg=name)


@requires_torch
@pytest.mark.parametrize("shape", [(7, 3), (3, 5, 4), (4, 1, 5, 6), (2, 3, 2, 4, 5)])
def test_fans_equal_torchs(shape):
    """jaxdl's ``[*window, in, out]`` is torch's ``[out, in, *window]``."""
    torch_shape = (shape[-1], shape[-2], *shape[:-2])
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_shape))
    assert initializers.fans(shape) == (fan_in, fan_out)


# ----------------------------------------------------------------------------- losses


@jax.jit
def cross_entropy_and_accuracy(logits, labels):
    loss, grad = jax.value_and_grad(losses.softmax_cross_entropy)(logits, labels)
    return loss, grad, losses.accuracy(logits, labels)


@requires_torch
@settings(FAST, max_examples=15)
@given(
    scale=st.sampled_from([1.0, 50.0, 1e4, 1e30]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_softmax_cross_entropy_matches_torch(scale, masked, seed):
    """Values and gradients, also for huge logits and ``-inf`` (masked) non-label logits."""
    rng = np.random.default_rng(seed)
    batch, classes = 4, 5
    logits = scale * rng.standard_normal((batch, classes)).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    if masked:  # one masked class per row, never the label
        other = (labels + 1 + rng.integers(0, classes - 1, batch)) % classes
        logits[np.arange(batch), other] = -np.inf
    logits_t = torch.tensor(logits, requires_grad=True)
    expected = F.cross_entropy(logits_t, torch.tensor(labels))
    expected.backward()
    loss, grad, accuracy = cross_entropy_and_accuracy(
        jnp.asarray(logits), jnp.asarray(labels, jnp.int32)
    )
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, logits_t.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(accuracy, np.mean(np.argmax(logits, -1) == labels))


@requires_torch
def test_mse_matches_torch():
    rng = np.random.default_rng(0)
    predictions, targets = rng.standard_normal((2, 4, 3, 2))
    p_t = torch.tensor(predictions, requires_grad=True)
    expected = F.mse_loss(p_t, torch.tensor(targets))
    expected.backward()
    with jax.enable_x64(True):
        loss, grad = jax.value_and_grad(losses.mse)(jnp.asarray(predictions), jnp.asarray(targets))
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, p_t.grad.numpy(), rtol=1e-12)
