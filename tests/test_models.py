"""Tests of `serial`, the `mlp`/`convnet` recipes and the losses: names, keys, shapes, transforms.

Sampling initial weights compiles slowly on CPU (most of a second per kernel shape), so tests that
need some random weights but do not test the initialisers build models with ``init="zeros"`` and
add NumPy noise (`randomized`); the tests of keys and ``init`` itself sample for real.
"""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl

KEY = jax.random.key(0)


def normal(shape, seed=0):
    """Standard normal float32 samples drawn by NumPy (a jax.random sampler compiles slowly)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def param_shapes(params):
    return jax.tree.map(jnp.shape, params)


def randomized(tree, seed=0, scale=0.3):
    """``tree`` plus Gaussian noise (NumPy): random weights without compiling a sampler."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: a + jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), tree
    )


# ----------------------------------------------------------------------------- serial: names


def test_serial_uses_explicit_names():
    model = jaxdl.serial(
        ("hidden", jaxdl.dense(3, w_init="zeros")),
        ("act", jaxdl.relu),
        ("norm", jaxdl.batch_norm()),
        ("out", jaxdl.dense(2, w_init="zeros")),
    )
    params, state = model.init(KEY, jnp.zeros((1, 4)))
    assert param_shapes(params) == {
        "hidden": {"w": (4, 3), "b": (3,)},
        "norm": {"scale": (3,), "bias": (3,)},
        "out": {"w": (3, 2), "b": (2,)},
    }
    assert param_shapes(state) == {"norm": {"mean": (3,), "var": (3,)}}
    assert model.kind == "serial"


def test_serial_generates_names_by_kind_and_position():
    model = jaxdl.serial(
        jaxdl.dense(3, w_init="zeros"),
        jaxdl.relu,
        jaxdl.batch_norm(),
        jaxdl.dense(3, w_init="zeros"),
        jaxdl.relu,
        jaxdl.batch_norm(),
        jaxdl.dense(2, w_init="zeros"),
    )
    params, state = model.init(KEY, jnp.zeros((1, 4)))
    assert sorted(params) == ["batch_norm1", "batch_norm2", "dense1", "dense2", "dense3"]
    assert sorted(state) == ["batch_norm1", "batch_norm2"]
    assert param_shapes(params)["dense3"] == {"w": (3, 2), "b": (2,)}
    # parameter-free layers are numbered too: the second relu is relu2, the dropout dropout1
    model = jaxdl.serial(jaxdl.relu, jaxdl.relu, jaxdl.flatten, ("drop", jaxdl.dropout(0.5)))
    with pytest.raises(jaxdl.LayerError, match="flatten 'flatten1'"):
        model.init(KEY, jnp.zeros((3,)))
    model = jaxdl.serial(jaxdl.relu, jaxdl.relu, jaxdl.dropout(0.5))
    with pytest.raises(jaxdl.LayerError, match="dropout 'dropout1'"):
        model.apply({}, {}, jnp.ones((1, 2)), train=True)


def test_serial_rejects_duplicate_names():
    with pytest.raises(ValueError, match=r"layer names must be unique, repeated: \['a'\]"):
        jaxdl.serial(("a", jaxdl.dense(2)), ("a", jaxdl.dense(3)))
    # a generated name may collide with an explicit one: the unnamed dense is the 2nd dense
    with pytest.raises(ValueError, match=r"repeated: \['dense2'\]"):
        jaxdl.serial(("dense2", jaxdl.dense(2)), jaxdl.dense(3))


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match="expected a Layer or a"):
        jaxdl.serial(jaxdl.dense(2), "relu")
    with pytest.raises(TypeError, match="expected a Layer or a"):
        jaxdl.serial(("a", jaxdl.dense(2), "extra"))


def test_serial_rejects_names_that_are_not_strings():
    # an int name used to be accepted and broke jax's sorting of the params dict's keys later
    with pytest.raises(TypeError, match=r"serial: a layer's name must be a str, got 1 in \(1, "):
        jaxdl.serial((1, jaxdl.dense(3)), jaxdl.dense(2))


def test_nested_serial_params_nest():
    block = jaxdl.serial(jaxdl.dense(3, w_init="zeros"), jaxdl.relu)
    model = jaxdl.serial(("block1", block), ("block2", block), jaxdl.dense(1, w_init="zeros"))
    params, _ = model.init(KEY, jnp.zeros((2, 5)))
    assert param_shapes(params) == {
        "block1": {"dense1": {"w": (5, 3), "b": (3,)}},
        "block2": {"dense1": {"w": (3, 3), "b": (3,)}},
        "dense1": {"w": (3, 1), "b": (1,)},
    }


# ----------------------------------------------------------------------------- serial: keys


def test_identical_layers_get_different_keys():
    model = jaxdl.serial(jaxdl.dense(4), jaxdl.dense(4), jaxdl.serial(jaxdl.dense(4)))
    params, _ = model.init(KEY, jnp.zeros((1, 4)))
    weights = [params["dense1"]["w"], params["dense2"]["w"], params["serial1"]["dense1"]["w"]]
    for i in range(3):
        for j in range(i):
            assert not np.allclose(weights[i], weights[j]), (i, j)
    # and init is a function of the key alone
    again, _ = model.init(KEY, jnp.zeros((1, 4)))
    chex.assert_trees_all_equal(params, again)
    other, _ = model.init(jax.random.key(1), jnp.zeros((1, 4)))
    assert not np.allclose(other["dense1"]["w"], params["dense1"]["w"])


def test_dropout_layers_in_serial_draw_independent_masks():
    # With one shared key both layers would zero the same units (a fraction 0.5 of zeros);
    # independent masks zero 1 - 0.5 * 0.5 = 0.75 of them.
    model = jaxdl.serial(jaxdl.dropout(0.5), jaxdl.dropout(0.5))
    x = jnp.ones((100, 100))
    y, _ = model.apply({}, {}, x, key=jax.random.key(3), train=True)
    assert abs(float(jnp.mean(y == 0)) - 0.75) < 0.025
    np.testing.assert_array_equal(y[y != 0], 4.0)


# ----------------------------------------------------------------------------- recipes: shapes

SMALL = {"channels": (3, 4), "kernel": 3, "hidden": (6,), "num_classes": 5}


def flattened_width(spatial, pool, blocks=2, pool_size=2, channels=4):
    """Features after the conv blocks: each pooling halves (floor) every spatial axis."""
    for _ in range(blocks if pool is not None else 0):
        spatial = [s // pool_size for s in spatial]
    return int(np.prod(spatial)) * channels


@pytest.mark.parametrize("pool", ["max", "avg", None])
@pytest.mark.parametrize("x_shape", [(3, 40, 1), (3, 8, 8, 1)], ids=["1d", "2d"])
def test_convnet_init_and_apply_shapes_agree(x_shape, pool):
    # zeros init: the shapes are what is tested, and sampling would compile for every shape
    model = jaxdl.convnet(**SMALL, pool=pool, init="zeros")
    x = jnp.ones(x_shape)
    params, state = model.init(KEY, x)
    abstract = jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(x.shape, x.dtype))
    chex.assert_trees_all_equal_shapes_and_dtypes((params, state), abstract)
    kernel = (3,) * (len(x_shape) - 2)
    width = flattened_width(x_shape[1:-1], pool)
    assert param_shapes(params) == {
        "conv1": {"w": (*kernel, 1, 3), "b": (3,)},
        "conv2": {"w": (*kernel, 3, 4), "b": (4,)},
        "dense1": {"w": (width, 6), "b": (6,)},
        "dense2": {"w": (6, 5), "b": (5,)},
    }
    y, _ = jax.jit(model.apply)(params, state, x)
    y_abstract, _ = jax.eval_shape(model.apply, *abstract, x)
    chex.assert_shape([y, y_abstract], (3, 5))
    # the batch size is free: params made for a batch of 3 apply to a batch of 7
    x7 = jax.ShapeDtypeStruct((7, *x_shape[1:]), x.dtype)
    chex.assert_shape(jax.eval_shape(model.apply, params, state, x7)[0], (7, 5))


def test_mlp_shapes_and_names():
    model = jaxdl.mlp(hidden=(8, 6), num_classes=3, init="zeros", norm="batch")
    params, state = model.init(KEY, jnp.zeros((2, 4, 5)))
    assert param_shapes(params) == {
        "dense1": {"w": (20, 8), "b": (8,)},
        "norm1": {"scale": (8,), "bias": (8,)},
        "dense2": {"w": (8, 6), "b": (6,)},
        "norm2": {"scale": (6,), "bias": (6,)},
        "dense3": {"w": (6, 3), "b": (3,)},
    }
    assert sorted(state) == ["norm1", "norm2"]
    chex.assert_shape(model.apply(params, state, jnp.zeros((9, 4, 5)))[0], (9, 3))


def test_mlp_without_hidden_layers_is_logistic_regression():
    model = jaxdl.mlp(hidden=(), num_classes=3)
    x = normal((4, 2, 5), seed=1)
    params, state = model.init(KEY, x)
    assert param_shapes(params) == {"dense1": {"w": (10, 3), "b": (3,)}}
    assert state == {}
    params = {"dense1": {"w": params["dense1"]["w"], "b": jnp.array([0.1, -0.2, 0.3])}}
    y, _ = model.apply(params, state, x)
    w, b = np.asarray(params["dense1"]["w"]), np.asarray(params["dense1"]["b"])
    np.testing.assert_allclose(y, np.asarray(x).reshape(4, 10) @ w + b, rtol=1e-5, atol=1e-6)


def test_init_from_shape_dtype_struct_equals_init_from_array():
    model = jaxdl.serial(
        jaxdl.conv2d(2, 3), jaxdl.batch_norm(), jaxdl.flatten, jaxdl.dense(3, w_init="zeros")
    )
    from_array = model.init(KEY, jnp.zeros((1, 8, 8, 1)))
    from_struct = model.init(KEY, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    chex.assert_trees_all_equal(from_array, from_struct)
    assert float(jnp.std(from_struct[0]["conv1"]["w"])) > 0.1  # really sampled


def test_recipe_errors():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        jaxdl.mlp(activation="swish")
    with pytest.raises(ValueError, match="unknown norm 'group'; valid: layer, batch"):
        jaxdl.convnet(norm="group")
    with pytest.raises(ValueError, match="unknown pooling 'min'"):
        jaxdl.convnet(pool="min")


# ----------------------------------------------------------------------------- transforms


class TestApplyUnderJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_apply_with_and_without_jit(self):
        model = jaxdl.mlp(hidden=(8, 8), num_classes=3, init="zeros", norm="batch", dropout=0.3)
        x = normal((4, 2, 3), seed=1)
        params, state = model.init(KEY, x)
        params = randomized(params)
        key = jax.random.key(2)
        y, new_state = self.variant(lambda p, s, x, k: model.apply(p, s, x, key=k, train=True))(
            params, state, x, key
        )
        y_eval, same_state = self.variant(model.apply)(params, state, x)
        expected, expected_state = jax.jit(
            lambda p, s, x, k: model.apply(p, s, x, key=k, train=True)
        )(params, state, x, key)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(new_state, expected_state, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_equal(same_state, state)  # evaluation leaves the state alone
        assert not np.allclose(y, y_eval)  # training mode differs (dropout, batch statistics)


def test_jitted_apply_does_not_retrace():
    model = jaxdl.mlp(hidden=(8,), num_classes=3, init="zeros")
    params, state = model.init(KEY, jnp.zeros((1, 6)))
    params = randomized(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(params, x):
        return model.apply(params, state, x)[0]

    first = forward(params, jnp.ones((5, 6)))
    second = forward(jax.tree.map(lambda a: a * 2, params), jnp.zeros((5, 6)))
    assert not np.allclose(first, second)


GRAD_MODELS = {  # name: (recipe keyword arguments, input shape); zeros init, then randomized
    "convnet_1d_max_batchnorm": (dict(SMALL, pool="max", norm="batch"), (6, 40, 1)),
    "convnet_2d_avg_dropout": (
        dict(SMALL, pool="avg", activation="tanh", dropout=0.2),
        (6, 8, 8, 1),
    ),
    "mlp_layernorm": ({"hidden": (7, 5), "norm": "layer"}, (6, 3, 4)),
}


@pytest.mark.parametrize("name", list(GRAD_MODELS))
def test_every_param_gets_a_finite_nonzero_gradient(name):
    kwargs, x_shape = GRAD_MODELS[name]
    recipe = jaxdl.convnet if name.startswith("convnet") else jaxdl.mlp
    model = recipe(**kwargs, init="zeros")
    x = normal(x_shape, seed=1)
    labels = jnp.arange(x_shape[0]) % 5
    params, state = model.init(KEY, x)
    params = randomized(params)

    @jax.jit
    def loss(params, key):
        logits, _ = model.apply(params, state, x, key=key, train=True)
        return jaxdl.softmax_cross_entropy(logits, labels)

    grads = jax.grad(loss)(params, jax.random.key(2))
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
    chex.assert_tree_all_finite(grads)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert float(jnp.max(jnp.abs(g))) > 0, jax.tree_util.keystr(path)


def test_vmap_over_a_population_equals_a_loop():
    population = 3
    model = jaxdl.serial(jaxdl.dense(4), jaxdl.batch_norm(), jaxdl.relu, jaxdl.dropout(0.25))
    x = normal((5, 6), seed=1)
    keys = jax.random.split(jax.random.key(2), population)
    apply_keys = jax.random.split(jax.random.key(3), population)

    def train_apply(params, state, key):
        return model.apply(params, state, x, key=key, train=True)

    params, state = jax.jit(jax.vmap(model.init, in_axes=(0, None)))(keys, x)
    chex.assert_shape(params["dense1"]["w"], (population, 6, 4))
    chex.assert_shape(state["batch_norm1"]["mean"], (population, 4))
    ys, new_states = jax.jit(jax.vmap(train_apply))(params, state, apply_keys)
    chex.assert_shape(ys, (population, 5, 4))
    init = jax.jit(model.init)
    for i in range(population):
        params_i, state_i = init(keys[i], x)
        chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], params), params_i)
        y_i, new_state_i = train_apply(params_i, state_i, apply_keys[i])
        np.testing.assert_allclose(ys[i], y_i, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], new_states), new_state_i, rtol=1e-5, atol=1e-6
        )
    assert not np.allclose(ys[0], ys[1])  # different keys, different members


# ----------------------------------------------------------------------------- losses


def test_softmax_cross_entropy_equals_manual_log_softmax():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [10.0, -10.0, 3.0], [1.0, 2.0, 3.0]])
    labels = np.array([0, 2, 1, 2])
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(4), labels])
    loss_fn = jax.jit(jaxdl.softmax_cross_entropy)
    loss = loss_fn(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    chex.assert_shape(loss, ())
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # two equal logits: log 2
    np.testing.assert_allclose(loss_fn(jnp.zeros((1, 2)), jnp.array([1])), np.log(2), rtol=1e-6)
    # gradient: (softmax - one_hot) / batch
    grad = jax.jit(jax.grad(jaxdl.softmax_cross_entropy))(jnp.asarray(logits, jnp.float32), labels)
    expected_grad = (np.exp(log_softmax) - np.eye(3)[labels]) / 4
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_mse():
    predictions = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    targets = jnp.array([[1.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(jaxdl.mse(predictions, targets), (0 + 4 + 9 + 0) / 4)
    np.testing.assert_allclose(jaxdl.mse(targets, targets), 0.0)
    chex.assert_shape(jaxdl.mse(predictions, targets), ())


def test_accuracy():
    logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.0, 1.0]])
    acc = jaxdl.accuracy(logits, jnp.array([1, 0, 0, 1, 1]))
    np.testing.assert_allclose(acc, 3 / 5)
    assert acc.dtype == jnp.float32 and acc.shape == ()
    np.testing.assert_allclose(jaxdl.accuracy(logits, jnp.array([1, 0, 1, 0, 1])), 1.0)
    np.testing.assert_allclose(jaxdl.accuracy(logits, jnp.array([0, 1, 0, 1, 0])), 0.0)


def test_serial_outputs_match_apply_and_name_every_layer():
    entries = jaxdl.mlp_entries(hidden=(16, 8), activation="tanh")
    model = jaxdl.serial(*entries)
    x = jnp.linspace(-1.0, 1.0, 2 * 64, dtype=jnp.float32).reshape(2, 8, 8, 1)
    params, state = model.init(jax.random.key(0), x)
    outputs = jaxdl.serial_outputs(entries, params, state, x)
    assert list(outputs) == ["flatten", "dense1", "act1", "dense2", "act2", "dense3"]
    np.testing.assert_array_equal(outputs["dense3"], model.apply(params, state, x)[0])
    np.testing.assert_allclose(outputs["act1"], jnp.tanh(outputs["dense1"]), rtol=1e-6)


def test_serial_outputs_name_the_failing_layer():
    entries = [("hidden", jaxdl.dense(3, w_init="zeros")), ("out", jaxdl.dense(2, w_init="zeros"))]
    params, state = jaxdl.serial(*entries).init(KEY, jnp.zeros((1, 4)))
    with pytest.raises(
        jaxdl.LayerError, match=r"dense 'hidden': expected input \[batch, \.\.\., 4\], got shape"
    ):
        jaxdl.serial_outputs(entries, params, state, jnp.zeros((1, 5)))


def test_convnet_entries_rebuild_convnet_and_name_every_layer():
    kwargs = dict(channels=(4, 6), kernel=3, hidden=(5,), num_classes=3)
    entries = jaxdl.convnet_entries(**kwargs)
    x = jnp.linspace(-1.0, 1.0, 2 * 64, dtype=jnp.float32).reshape(2, 8, 8, 1)
    key = jax.random.key(1)
    params, state = jaxdl.serial(*entries).init(key, x)
    expected_params, _ = jaxdl.convnet(**kwargs).init(key, x)
    chex.assert_trees_all_equal(params, expected_params)
    outputs = jaxdl.serial_outputs(entries, params, state, x)
    names = ["conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten", "dense1", "act3"]
    assert list(outputs) == [*names, "dense2"]
    chex.assert_shape(outputs["pool2"], (2, 2, 2, 6))
    logits, _ = jaxdl.convnet(**kwargs).apply(params, state, x)
    np.testing.assert_array_equal(outputs["dense2"], logits)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: jaxdl.mlp(hidden=128),
            r"mlp: hidden must be a sequence of positive ints.*got 128",
        ),
        (lambda: jaxdl.mlp(hidden=(128, 0)), r"mlp: hidden .*got \(128, 0\)"),
        (lambda: jaxdl.mlp(hidden=(64.0,)), r"mlp: hidden .*got \(64.0,\)"),
        (lambda: jaxdl.convnet(channels=16), r"convnet: channels .*got 16"),
        (lambda: jaxdl.convnet(hidden=8), r"convnet: hidden .*got 8"),
        (lambda: jaxdl.convnet(channels="32"), r"convnet: channels .*got '32'"),
    ],
)
def test_recipes_refuse_widths_that_are_not_a_sequence_of_positive_ints(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_recipes_take_numpy_int_widths_as_dense_does():
    x = jnp.zeros((2, 6, 1))
    for model in [
        jaxdl.mlp(hidden=(np.int64(3),), num_classes=np.int64(2), init="zeros"),
        jaxdl.convnet(channels=(np.int32(2),), hidden=[np.int64(3)], num_classes=2, init="zeros"),
    ]:
        params, state = model.init(KEY, x)
        assert model.apply(params, state, x)[0].shape == (2, 2)


@pytest.mark.parametrize("recipe", [jaxdl.convnet, jaxdl.mlp], ids=["convnet", "mlp"])
def test_dropout_without_hidden_layers_is_refused(recipe):
    """Dropout acts on the dense hidden layers only: with ``hidden=()`` (convnet's default) it
    was silently left out."""
    name = recipe.__name__
    expected = (
        f"{name}: dropout applies to the dense hidden layers and hidden=() gives none; pass "
        "hidden widths (e.g. hidden=(128,)) or dropout=0, got dropout=0.5"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        recipe(hidden=(), dropout=0.5)
    entries = getattr(jaxdl.models, f"{name}_entries")
    with pytest.raises(ValueError, match=re.escape(expected)):
        entries(hidden=(), dropout=0.5)
    names = [n for n, _ in entries(hidden=(4,), dropout=0.5)]
    assert "dropout1" in names


@pytest.mark.parametrize("hidden", [(), (4,)])
def test_an_unknown_norm_is_refused_even_where_no_layer_would_use_it(hidden):
    """`mlp` built its norm layers only per hidden layer: with ``hidden=()`` any name passed."""
    for build in (jaxdl.mlp, jaxdl.models.mlp_entries):
        with pytest.raises(ValueError, match="^mlp: unknown norm 'bogus'; valid: layer, batch"):
            build(hidden=hidden, norm="bogus")
    with pytest.raises(ValueError, match="^convnet: unknown norm 'bogus'; valid: layer, batch"):
        jaxdl.convnet(hidden=hidden, norm="bogus")


def test_an_unknown_pooling_is_refused_even_without_conv_blocks():
    """`convnet` built its pooling per conv block: with ``channels=()`` any name passed."""
    with pytest.raises(ValueError, match="^unknown pooling 'bogus'; valid: max, avg"):
        jaxdl.convnet(channels=(), pool="bogus")


def test_a_norm_without_layers_to_normalise_is_refused():
    """An `mlp` without hidden layers has nothing a norm acts on (it normalises before each
    hidden activation): like dropout, it was silently left out. A convnet normalises its convs."""
    expected = (
        "mlp: norm applies before each hidden activation and hidden=() gives none; pass "
        "hidden widths (e.g. hidden=(128,)) or norm=None, got norm='batch'"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        jaxdl.mlp(hidden=(), norm="batch")
    names = [n for n, _ in jaxdl.models.convnet_entries(channels=(2,), hidden=(), norm="layer")]
    assert "conv_norm1" in names


def test_a_model_config_with_a_norm_and_nothing_to_normalise_is_refused():
    from jaxdl.config import ModelConfig

    with pytest.raises(ValueError, match=r"^model.norm acts .* model 'logistic' has none"):
        ModelConfig(name="logistic", norm="batch")
    with pytest.raises(ValueError, match=r"^model.norm acts .* got 'layer'"):
        ModelConfig(name="mlp", hidden=(), norm="layer")
    assert ModelConfig(name="convnet", norm="batch").norm == "batch"  # its convs are normalised
    assert ModelConfig(name="mlp", hidden=(4,), norm="batch").norm == "batch"
