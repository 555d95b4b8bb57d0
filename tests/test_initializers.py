"""Tests of jaxdl.initializers: each scheme's variance, bounds, fans, scaling and name errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import initializers

KEY = jax.random.key(0)

# Large enough that the sample variance is within ~0.5% of the true one (for a normal sample its
# relative standard deviation is sqrt(2 / n)); the tests allow 3%.
DENSE_SHAPE = (600, 400)  # [in, out]: fan_in 600, fan_out 400
CONV_SHAPE = (3, 3, 64, 96)  # [kh, kw, in, out]: fan_in 576, fan_out 864
SHAPES = {"dense": DENSE_SHAPE, "conv": CONV_SHAPE}


def expected_variance(name, shape, std=1.0):
    """The variance each scheme promises, from its textbook formula."""
    fan_in, fan_out = initializers.fans(shape)
    return {
        "classic": 1 / (3 * fan_in),
        "normal": std**2,
        "glorot_uniform": 2 / (fan_in + fan_out),
        "glorot_normal": 2 / (fan_in + fan_out),
        "he_uniform": 2 / fan_in,
        "he_normal": 2 / fan_in,
        "lecun_normal": 1 / fan_in,
        "zeros": 0.0,
    }[name]


def test_every_scheme_has_an_expected_variance():
    for name in initializers.NAMES:
        expected_variance(name, DENSE_SHAPE)  # KeyError for a scheme this file does not know


@pytest.mark.parametrize("layout", ["dense", "conv"])
@pytest.mark.parametrize("name", initializers.NAMES)
def test_empirical_variance_matches_formula(name, layout):
    shape = SHAPES[layout]
    w = np.asarray(initializers.get(name)(KEY, shape, jnp.float32), np.float64)
    assert w.shape == shape
    variance = expected_variance(name, shape)
    if variance == 0.0:
        np.testing.assert_array_equal(w, 0.0)
    else:
        np.testing.assert_allclose(np.var(w), variance, rtol=0.03)
        assert abs(np.mean(w)) < 5 * math.sqrt(variance / w.size)
    # scale multiplies every sample, so the standard deviation
    half = np.asarray(initializers.get(name, 0.5)(KEY, shape, jnp.float32), np.float64)
    np.testing.assert_allclose(half, 0.5 * w, rtol=1e-6)
    np.testing.assert_allclose(np.var(half), 0.25 * variance, rtol=0.03)


@pytest.mark.parametrize("std", [0.05, 2.0])
def test_normal_std_and_scale(std):
    w = initializers.get("normal", std=std)(KEY, DENSE_SHAPE, jnp.float32)
    np.testing.assert_allclose(np.std(w), std, rtol=0.015)
    # scale multiplies the standard deviation: the very same samples, times scale
    scaled = initializers.get("normal", 3.0, std=std)(KEY, DENSE_SHAPE, jnp.float32)
    np.testing.assert_allclose(scaled, 3.0 * w, rtol=1e-6)


@pytest.mark.parametrize("layout", ["dense", "conv"])
def test_classic_samples_fill_the_textbook_interval(layout):
    shape = SHAPES[layout]
    bound = 1 / math.sqrt(initializers.fans(shape)[0])
    w = np.asarray(initializers.get("classic")(KEY, shape, jnp.float32))
    assert np.all(np.abs(w) <= bound * (1 + 1e-6))
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound  # uniform up to the edge
    # uniform: a quarter of the samples in each quarter of the interval
    counts, _ = np.histogram(w, bins=4, range=(-bound, bound))
    np.testing.assert_allclose(counts / w.size, 0.25, atol=0.01)


@pytest.mark.parametrize("name", ["classic", "glorot_uniform", "he_uniform"])
def test_uniform_schemes_are_bounded(name):
    bound = math.sqrt(3 * expected_variance(name, CONV_SHAPE))  # U(-b, b) has variance b**2 / 3
    w = np.asarray(initializers.get(name)(KEY, CONV_SHAPE, jnp.float32))
    assert np.all(np.abs(w) <= bound * (1 + 1e-6)) and np.abs(w).max() > 0.99 * bound


def test_fans():
    assert initializers.fans((600, 400)) == (600, 400)
    assert initializers.fans((3, 3, 64, 96)) == (3 * 3 * 64, 3 * 3 * 96)
    assert initializers.fans((5, 2, 7)) == (10, 35)  # 1-D conv [k, in, out]
    assert initializers.fans((2, 3, 4, 5, 6)) == (2 * 3 * 4 * 5, 2 * 3 * 4 * 6)
    assert all(isinstance(f, int) for f in initializers.fans((3, 3, 2, 4)))


def test_scale_may_be_traced():
    shape = (40, 30)
    base = initializers.get("he_normal")(KEY, shape, jnp.float32)

    @jax.jit
    def sample(scale):
        return initializers.get("he_normal", scale)(KEY, shape, jnp.float32)

    np.testing.assert_allclose(sample(0.25), 0.25 * base, rtol=1e-6)
    np.testing.assert_allclose(sample(2.0), 2.0 * base, rtol=1e-6)


def test_functions_pass_through_and_are_scaled():
    def ones(key, shape, dtype=jnp.float32):
        return jnp.ones(shape, dtype)

    assert initializers.get(ones) is ones
    np.testing.assert_array_equal(initializers.get(ones, 0.5)(KEY, (2, 3), jnp.float32), 0.5)


def test_dtype_follows_the_request():
    with jax.enable_x64(True):
        for name in ("classic", "zeros"):
            assert initializers.get(name)(KEY, (4, 3), jnp.float64).dtype == jnp.float64, name
    assert initializers.get("he_normal")(KEY, (4, 3), jnp.bfloat16).dtype == jnp.bfloat16


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown initializer 'kaiming'; valid names: ") as error:
        initializers.get("kaiming")
    assert str(error.value).endswith(", ".join(initializers.NAMES))


def test_layers_pass_their_kernel_layout_to_the_initializer():
    # a conv kernel is [kh, kw, in, out], so he_normal's fan_in is 3 * 3 * 64
    x = jnp.zeros((1, 5, 5, 64))
    params, _ = jaxdl.conv2d(96, 3, w_init="he_normal", init_scale=0.5).init(KEY, x)
    assert params["w"].shape == CONV_SHAPE
    np.testing.assert_allclose(np.var(params["w"]), 0.25 * 2 / (3 * 3 * 64), rtol=0.03)
    np.testing.assert_array_equal(params["b"], 0.0)
    params, _ = jaxdl.dense(400, w_init="classic").init(KEY, jnp.zeros((1, 600)))
    np.testing.assert_allclose(np.var(params["w"]), 1 / (3 * 600), rtol=0.03)
