"""A population's chunk run as independent parts (`jaxdl.step.make_parted_chunk`, what a sweep's
``auto`` runs on CPU) trains every member as the vmapped chunk does."""

import chex
import hypothesis
import jax
import numpy as np
import pytest
from hypothesis import strategies as st

import jaxdl
from jaxdl import train
from jaxdl.step import make_parted_chunk, part_bounds
from jaxdl.train import Hparams, TrainConfig

MEMBERS = 5
LRS = np.array([1e-3, 3e-3, 1e30, 1e-2, 2e-3], np.float32)  # member 2 diverges
CONFIG = TrainConfig(
    steps=6, batch_size=16, optimizer="sgd", chunk_steps=3, record_grad_norms=True, unroll=2
)


@pytest.fixture(scope="module")
def data():
    digits = jaxdl.data.load("digits").subset(64, 32)
    return train.to_device(digits)


def population(model, data):
    """``(state, hparams)`` of `MEMBERS` members, seeds 0..4, learning rates `LRS`."""
    program = train.build_program(model, CONFIG, data.x_train[:1], population=True)
    hparams = Hparams(lr=LRS, weight_decay=None, init_scale=np.ones(MEMBERS, np.float32))
    hparams = hparams.as_arrays()
    seeds = train.seed_array(range(MEMBERS))
    return program.init(seeds, seeds, hparams), hparams


MODELS = {
    # dropout (the key) in the step; vmapped parts
    "mlp": lambda: jaxdl.mlp(hidden=(16,), activation="identity", dropout=0.25),
    # parts of one member run the plain (unvmapped) step
    "convnet": lambda: jaxdl.convnet(channels=(4,), kernel=3),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("parts, jit", [(2, True), (MEMBERS, False)], ids=["2-jit", "5-eager"])
def test_parted_chunk_trains_each_member_as_the_vmapped_chunk(data, name, parts, jit):
    """Two chunks of 3 steps, in 2 uneven parts (3 + 2, jitted) or one part per member (traced
    eagerly): params, optimiser state, keys and metrics equal the vmapped chunk's; the
    diverging member is frozen at the same step and the others do not notice it."""
    model = MODELS[name]()
    vmapped = jax.jit(jax.vmap(train.make_chunk(model, CONFIG, 3), in_axes=(0, 0, None)))
    parted = make_parted_chunk(model, CONFIG, 3, parts)
    parted = jax.jit(parted) if jit else parted
    state, hparams = population(model, data)
    expected = actual = state
    for _ in range(2):
        expected, expected_metrics = vmapped(expected, hparams, data)
        actual, metrics = parted(actual, hparams, data)
        chex.assert_trees_all_close(metrics, expected_metrics, rtol=1e-5, atol=1e-6)
    raw_keys = [s._replace(key=jax.random.key_data(s.key)) for s in (actual, expected)]
    chex.assert_trees_all_close(*raw_keys, rtol=1e-5, atol=1e-6)
    chex.assert_shape([metrics["loss"], *metrics["grad_norm"].values()], (MEMBERS,))
    np.testing.assert_array_equal(actual.diverged_at, expected.diverged_at)
    np.testing.assert_array_equal(actual.diverged_at >= 0, LRS > 1)
    np.testing.assert_array_equal(actual.step, [6] * MEMBERS)


@hypothesis.given(members=st.integers(1, 40), data=st.data())
def test_parts_are_consecutive_and_near_equal(members, data):
    parts = data.draw(st.integers(1, members))
    bounds = part_bounds(members, parts)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == members
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("parts", [0, 4, 1.5, True])
def test_parts_beyond_the_members_are_refused(parts):
    with pytest.raises(ValueError, match=rf"parts must be an int in \[1, 3\].*got {parts!r}"):
        part_bounds(3, parts)


def test_build_program_refuses_parts_without_a_population_or_with_a_mesh(data):
    model = jaxdl.mlp(hidden=(4,))
    with pytest.raises(ValueError, match="parts must be a positive int, got 0"):
        train.build_program(model, CONFIG, data.x_train[:1], population=True, parts=0)
    with pytest.raises(ValueError, match="parts=2 needs a population without a mesh"):
        train.build_program(model, CONFIG, data.x_train[:1], parts=2)
    mesh = jaxdl.sharding.make_mesh({"members": 1, "data": 1})
    with pytest.raises(ValueError, match=r"parts=2 .*mesh=True"):
        train.build_program(model, CONFIG, data.x_train[:1], population=True, parts=2, mesh=mesh)


def test_hparams_not_one_per_member_are_refused(data):
    """Slices of a longer hparams axis once trained the first members silently; a shared
    (unbatched) value or state failed with an IndexError naming nothing."""
    model = jaxdl.mlp(hidden=(4,))
    state, hparams = population(model, data)
    chunk = make_parted_chunk(model, CONFIG, 3, 2)
    longer = hparams._replace(lr=np.ones(MEMBERS + 1, np.float32))
    with pytest.raises(ValueError, match=rf"hparams.lr must have shape \[members={MEMBERS}\], "):
        chunk(state, longer, data)
    with pytest.raises(ValueError, match=r"hparams.init_scale must .*, got \(\)"):
        chunk(state, hparams._replace(init_scale=np.float32(1)), data)
    one = jax.tree.map(lambda a: a[0], state)
    with pytest.raises(ValueError, match=r"state.step must have shape \[members\], got \(\)"):
        chunk(one, hparams, data)
