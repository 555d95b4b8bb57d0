"""`make_train` under ``jax.vmap`` runs its members in parts (`jaxdl.parts`): the same training as
one vmap, its gradients the plain run's, and parts only where the rule says they pay."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import parts as parts_module
from jaxdl import train
from jaxdl.train import Hparams, TrainConfig

MEMBERS = 4
CONFIG = TrainConfig(steps=6, batch_size=16, chunk_steps=3, eval_batch_size=32)
SGD = TrainConfig(steps=4, batch_size=16, chunk_steps=2, eval_batch_size=32, optimizer="sgd")
HPARAMS = Hparams(lr=3e-3).as_arrays()


@pytest.fixture(scope="module")
def data():
    return train.to_device(jaxdl.data.load("digits").subset(64, 32))


def model():
    return jaxdl.mlp(hidden=(8,), dropout=0.25)  # dropout: the data key in the step


def keys(count=MEMBERS):
    return jax.random.split(jax.random.key(0), count)  # [count]


@pytest.fixture
def parted_chunks(monkeypatch):
    """The part counts `make_parted_chunk` is built with while the test traces (a vmapped scan
    may trace its body, and so build the chunk, more than once)."""
    counts = []
    real = parts_module.make_parted_chunk

    def recording(model, config, num_steps, parts, *args):
        counts.append(parts)
        return real(model, config, num_steps, parts, *args)

    monkeypatch.setattr(parts_module, "make_parted_chunk", recording)
    return counts


def without_keys(state):
    return state._replace(key=jax.random.key_data(state.key))


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0)], ids=["keys", "lrs"])
def test_vmapped_train_in_parts_trains_each_member_as_one_vmap(data, parted_chunks, in_axes):
    """Two chunks, members in 2 parts against one vmap: states and metrics agree to rounding.
    Vmapped over the learning rate alone, the state's step, key and divergence are shared
    (unbatched) and are repeated for the parts."""
    lrs = jnp.asarray([1e-3, 3e-3, 1e-2, 3e-2], jnp.float32)  # [MEMBERS]
    per_member = HPARAMS._replace(lr=lrs, init_scale=jnp.ones(MEMBERS, jnp.float32))
    hparams = per_member if in_axes[1] == 0 else HPARAMS
    member_keys = keys() if in_axes[0] == 0 else jax.random.key(0)
    runs = {}
    for parts in (1, 2):
        train_fn = jaxdl.make_train(model(), data, CONFIG, parts=parts)
        runs[parts] = jax.jit(jax.vmap(train_fn, in_axes=in_axes))(member_keys, hparams)
    assert set(parted_chunks) == {2}  # scan's vmap may trace its body more than once
    (one_vmap, one_metrics), (parted, metrics) = runs[1], runs[2]
    chex.assert_trees_all_close(without_keys(parted), without_keys(one_vmap), atol=1e-6)
    chex.assert_trees_all_close(metrics, one_metrics, atol=1e-6)
    chex.assert_shape(metrics["loss"], (MEMBERS, 2))
    first_weights = jax.tree.leaves(parted.params)[-1]  # [MEMBERS, ...]
    assert float(jnp.max(jnp.abs(first_weights[0] - first_weights[1]))) > 1e-4  # members differ


def test_called_plainly_it_is_the_plain_chunk(data, parted_chunks):
    state = train.build_program(model(), CONFIG, data.x_train[:1]).init(
        *[train.seed_array(0)] * 2, HPARAMS
    )
    chunk = jax.jit(parts_module.make_population_chunk(model(), CONFIG, 3, parts=2))
    expected = jax.jit(train.make_chunk(model(), CONFIG, 3))(state, HPARAMS, data)
    chex.assert_trees_all_equal(
        jax.tree.map(np.asarray, without_keys(chunk(state, HPARAMS, data)[0])),
        jax.tree.map(np.asarray, without_keys(expected[0])),
    )
    assert parted_chunks == []


def test_a_vmap_over_the_data_too_is_one_plain_vmap(data, parted_chunks):
    """Members with their own data sets cannot share the parts' data: one vmap, bit for bit."""
    program = train.build_program(model(), CONFIG, data.x_train[:1], population=True)
    seeds = train.seed_array([0, 1])
    hparams = jax.tree.map(lambda h: jnp.stack([h, h]), HPARAMS)
    state = program.init(seeds, seeds, hparams)
    datasets = jax.tree.map(lambda a: jnp.stack([a, a[::-1]]), data)
    chunk = parts_module.make_population_chunk(model(), CONFIG, 3, parts=2)
    actual = jax.jit(jax.vmap(chunk))(state, hparams, datasets)
    expected = jax.jit(jax.vmap(train.make_chunk(model(), CONFIG, 3)))(state, hparams, datasets)
    chex.assert_trees_all_equal(without_keys(actual[0]), without_keys(expected[0]))
    assert parted_chunks == []


def final_loss(train_fn):
    def loss(key, lr):
        _, metrics = train_fn(key, HPARAMS._replace(lr=lr))
        return metrics["loss"][-1]

    return loss


def test_hyper_gradients_through_a_parted_train_are_the_plain_runs(data):
    """``vmap(grad)``, ``vmap(jvp)`` and ``grad`` of a ``vmap``: each member's derivative of its
    final loss by its learning rate equals that of the run trained alone, and a finite
    difference."""
    parted = final_loss(jaxdl.make_train(model(), data, SGD, parts=2))
    plain = jax.jit(final_loss(jaxdl.make_train(model(), data, SGD, parts=1)))
    plain_grad = jax.jit(jax.grad(plain, argnums=1))
    lrs = jnp.asarray([0.05, 0.1, 0.2, 0.4], jnp.float32)  # [MEMBERS]
    alone = np.asarray([plain_grad(k, lr) for k, lr in zip(keys(), lrs)])
    grads = jax.jit(jax.vmap(jax.grad(parted, argnums=1)))(keys(), lrs)
    np.testing.assert_allclose(grads, alone, rtol=1e-5)
    jvp = jax.vmap(lambda k, lr: jax.jvp(lambda lr: parted(k, lr), (lr,), (1.0,))[1])
    np.testing.assert_allclose(jax.jit(jvp)(keys(), lrs), alone, rtol=1e-4)
    summed = jax.jit(jax.grad(lambda lrs: jax.vmap(parted)(keys(), lrs).sum()))(lrs)
    np.testing.assert_allclose(summed, alone, rtol=1e-5)
    eps = 1e-3
    finite = [(plain(k, lr + eps) - plain(k, lr - eps)) / (2 * eps) for k, lr in zip(keys(), lrs)]
    np.testing.assert_allclose(alone, np.asarray(finite), rtol=2e-2, atol=1e-3)
    assert np.all(np.abs(alone) > 1e-3)


def test_nested_vmaps_split_the_inner_population(data, parted_chunks):
    train_fn = jaxdl.make_train(model(), data, CONFIG, parts=2)
    nested = jax.vmap(jax.vmap(train_fn, in_axes=(0, None)), in_axes=(0, None))
    state, _ = jax.jit(nested)(keys().reshape(2, 2), HPARAMS)
    flat, _ = jax.jit(
        jax.vmap(jaxdl.make_train(model(), data, CONFIG, parts=1), in_axes=(0, None))
    )(keys(), HPARAMS)
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a.reshape(MEMBERS, *a.shape[2:]), state.params),
        flat.params,
        atol=1e-6,
    )
    assert set(parted_chunks) == {2}  # scan's vmap may trace its body more than once


DENSE = {"w": jax.ShapeDtypeStruct((40, 128), jnp.float32)}
CONV = {"w": jax.ShapeDtypeStruct((3, 3, 1, 16), jnp.float32)}


@pytest.mark.parametrize(
    "params, members, steps, backend, expected",
    [
        (DENSE, 8, parts_module.CPU_PARTS_MIN_STEPS, "cpu", 4),  # pairs
        (DENSE, 64, None, "cpu", parts_module.CPU_MAX_PARTS),
        (DENSE, 3, None, "cpu", 2),
        (DENSE, 8, parts_module.CPU_PARTS_MIN_STEPS - 1, "cpu", 1),  # too short to repay
        (CONV, 8, parts_module.CPU_CONV_PARTS_MIN_STEPS, "cpu", 8),  # one member per part
        (CONV, 9, None, "cpu", 1),  # batched convolutions in parts gain nothing
        (CONV, 8, parts_module.CPU_CONV_PARTS_MIN_STEPS - 1, "cpu", 1),
        (DENSE, 1, None, "cpu", 1),
        (DENSE, 8, None, "gpu", 1),
        (CONV, 8, None, "tpu", 1),
    ],
)
def test_auto_parts(params, members, steps, backend, expected):
    assert parts_module.auto_parts(params, members, steps=steps, backend=backend) == expected


def test_auto_splits_only_long_runs(data, parted_chunks, monkeypatch):
    def trace():  # a new train each time: JAX caches a scan body's trace per function
        vmapped = jax.vmap(jaxdl.make_train(model(), data, CONFIG), in_axes=(0, None))
        jax.eval_shape(vmapped, keys(), HPARAMS)

    trace()
    assert parted_chunks == []
    monkeypatch.setattr(parts_module, "CPU_PARTS_MIN_STEPS", CONFIG.steps)
    trace()
    assert set(parted_chunks) == {2}  # scan's vmap may trace its body more than once


@pytest.mark.parametrize("parts", [0, -1, 1.5, True, "many"])
def test_make_train_refuses_bad_parts(data, parts):
    with pytest.raises(
        ValueError, match=rf"make_train: parts must be 'auto' or a positive int, got {parts!r}"
    ):
        jaxdl.make_train(model(), data, CONFIG, parts=parts)
