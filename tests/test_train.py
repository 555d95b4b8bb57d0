"""Tests of `jaxdl.train` and `jaxdl.optimizers`: no recompilation, learning, determinism,
`make_train` equals `fit`, divergence freezing, schedules and optimiser wiring against optax,
evaluation padding, gradient norms, batch norm, dropout keys and input checks.

Every `fit` compiles its own program (seconds on CPU), so the runs are small (a few hundred
digits, a few dozen steps); each test trains what it compares, since pytest-xdist may run tests
sharing a fixture in different processes.
"""

import dataclasses
import json
import re

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import strategies as st

import jaxdl
from jaxdl import config as run_config
from jaxdl import optimizers, train
from jaxdl.checkpoint import Checkpointer
from jaxdl.data.batching import chunk_indices
from jaxdl.program import chunks_from
from jaxdl.train import Hparams, TrainConfig

EXAMPLE = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)  # one digits image


def max_abs_diff(a, b) -> float:
    """The largest absolute difference between two pytrees of the same structure."""
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs), default=0.0)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(init_key, data_key)`` of a run, derived from its seed as `fit` documents."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_key, data_key


def run_seeds(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(init_seed, data_seed)`` of a run as a program's init takes them."""
    return train.seed_array(seed), train.seed_array(seed)


@pytest.fixture(scope="module")
def digits():
    return jaxdl.data.load("digits")


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(256, 100)


# ----------------------------------------------------------------------------- compilation


def test_program_chunk_does_not_recompile_for_new_values(small):
    model = jaxdl.mlp(hidden=(8,))
    config = TrainConfig(steps=10, batch_size=16, chunk_steps=5)
    program = train.build_program(model, config, EXAMPLE)
    data = train.to_device(small)
    hp_a = Hparams(lr=1e-3, weight_decay=1e-5).as_arrays()  # a zero decay: a program of its own
    hp_b = Hparams(lr=3e-2, weight_decay=1e-4, init_scale=0.5).as_arrays()
    chunk = program.chunks[5]
    state = program.init(*run_seeds(0), hp_a)
    state, _ = chunk(state, hp_a, data)
    state, _ = chunk(state, hp_b, data)  # new state values, a different traced lr
    assert chunk._cache_size() == 1
    assert int(state.step) == 10
    other = program.init(*run_seeds(1), hp_b)
    program.init(*run_seeds(2), hp_a)
    assert program.init._cache_size() == 1
    program.evaluate(state, data)
    program.evaluate(other, data)
    assert program.evaluate._cache_size() == 1


def test_step_traces_once_and_uses_the_traced_lr(small):
    model = jaxdl.mlp(hidden=(8,))
    config = TrainConfig(steps=10, batch_size=16, optimizer="sgd")
    step = jax.jit(chex.assert_max_traces(train.make_step(model, config), n=1))
    x, y = jnp.asarray(small.x_train[:16]), jnp.asarray(small.y_train[:16])
    init_key, data_key = run_keys(0)
    hparams = Hparams().as_arrays()
    state = train.init_state(model, config, hparams, EXAMPLE, init_key=init_key, data_key=data_key)
    small_lr, _ = step(state, Hparams(lr=1e-3).as_arrays(), x, y)
    large_lr, _ = step(state, Hparams(lr=1e-1).as_arrays(), x, y)  # would raise if retraced
    # sgd: the update is -lr * grad, so the two steps move the params 100 times further apart
    moved_small = optax.tree.norm(jax.tree.map(jnp.subtract, small_lr.params, state.params))
    moved_large = optax.tree.norm(jax.tree.map(jnp.subtract, large_lr.params, state.params))
    assert float(moved_large / moved_small) == pytest.approx(100.0, rel=1e-3)


def test_fit_compiles_only_its_programs_and_the_data_upload(small, caplog):
    """Every eager op before a run's programs compiles a program of its own (tens of ms each on
    a cold start): a fresh model's ``fit`` compiles init, chunk and evaluation, and the copies
    of the data to the device (jnp.asarray), nothing else; once per process, a scalar program
    checks that XLA accepts the init's compile options (`jaxdl.xla_options`)."""
    data = small.subset(200, 50)  # shapes no other test compiled for
    config = TrainConfig(steps=10, batch_size=16, chunk_steps=10, eval_every=10)
    with jax.log_compiles(), caplog.at_level("WARNING"):
        jaxdl.fit(jaxdl.mlp(hidden=(7,)), data, config, Hparams(lr=2e-3))
    compiled = {
        r.getMessage().split("jit(")[1].split(")")[0]
        for r in caplog.records
        if r.getMessage().startswith("Compiling jit(")
    }
    assert compiled - {"stage", "_xla_flag_probe"} == {"init", "chunk", "test_metrics"}, compiled


def test_as_arrays_gives_float32_copies_and_passes_traced_values_through():
    lr = np.array([1e-3, 1e-2])  # float64, as users write them
    hp = Hparams(lr=lr, weight_decay=1, init_scale=np.float32(2)).as_arrays()
    lr[0] = 5.0  # the arrays are copies: changing the caller's array changes nothing
    chex.assert_trees_all_equal(
        hp, Hparams(*map(jnp.asarray, ([1e-3, 1e-2], 1.0, 2.0))), strict=False
    )
    assert all(v.dtype == jnp.float32 for v in hp)
    traced = jax.jit(lambda h: h.as_arrays())(Hparams(lr=jnp.asarray(3, jnp.int32)))
    assert traced.lr.dtype == jnp.float32 and float(traced.lr) == 3.0


@pytest.mark.parametrize("zero", [0, 0.0, np.float64(0.0), np.float32(-0.0)])
def test_a_host_zero_weight_decay_becomes_none_unless_kept(zero):
    assert Hparams(weight_decay=zero).as_arrays().weight_decay is None
    kept = Hparams(weight_decay=zero).as_arrays(zero_decay_as_none=False).weight_decay
    assert kept.dtype == jnp.float32 and float(kept) == 0.0
    traced_zero = Hparams(weight_decay=jnp.float32(0)).as_arrays().weight_decay  # a JAX array
    assert isinstance(traced_zero, jax.Array) and float(traced_zero) == 0.0
    assert Hparams(weight_decay=None).as_arrays().weight_decay is None


@pytest.mark.parametrize(
    "field, value",
    [("lr", None), ("lr", "0.1"), ("init_scale", [1.0, None]), ("weight_decay", "0")],
)
def test_as_arrays_refuses_values_that_are_not_numbers(field, value):
    # NumPy would make None a NaN learning rate and parse the string without a word
    message = rf"Hparams.{field} must be a number .*got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=message):
        Hparams(**{field: value}).as_arrays()


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_no_decay_term_steps_as_a_traced_zero_does_from_the_same_state(small, optimizer):
    """A state made with one form of zero decay (None, a Python 0, a traced 0) steps with any
    other (the optimiser state has the same structure: an eager init then a jitted step used to
    fail inside optax's chain), and all three give the same params."""
    model = jaxdl.mlp(hidden=(8,))
    config = TrainConfig(batch_size=16, optimizer=optimizer)
    x, y = jnp.asarray(small.x_train[:16]), jnp.asarray(small.y_train[:16])
    init_key, data_key = run_keys(0)
    state = train.init_state(
        model, config, Hparams(), EXAMPLE, init_key=init_key, data_key=data_key
    )
    step = jax.jit(train.make_step(model, config))
    forms = (Hparams(), Hparams(weight_decay=None), Hparams(weight_decay=jnp.float32(0)))
    results = [step(state, hparams, x, y)[0] for hparams in forms]
    for result in results[1:]:
        chex.assert_trees_all_equal(result.params, results[0].params)
    decayed = step(state, Hparams(weight_decay=0.5), x, y)[0]
    assert not np.allclose(decayed.params["dense1"]["w"], results[0].params["dense1"]["w"])


def test_example_input_is_one_example_in_jax_dtype():
    example = jaxdl.data.device.example_input(np.zeros((5, 8, 8, 1), np.float64))
    assert example.shape == (1, 8, 8, 1) and example.dtype == jnp.float32


# ----------------------------------------------------------------------------- learning


def test_mlp_loss_decreases_and_reaches_90_percent_on_digits(digits):
    config = TrainConfig(steps=300, batch_size=64, chunk_steps=100, eval_every=300)
    model = jaxdl.mlp(hidden=(64,), activation="relu")
    state, history = jaxdl.fit(model, digits, config, Hparams(lr=3e-3))
    np.testing.assert_array_equal(history["step"], [100, 200, 300])
    np.testing.assert_array_equal(history["eval_step"], [300])
    loss = history["loss"]
    assert np.all(np.diff(loss) < 0), loss
    assert loss[-1] < 0.5 * loss[0]
    assert history["test_accuracy"][-1] >= 0.9
    assert int(state.diverged_at) == -1


def test_convnet_reaches_90_percent_on_digits(digits):
    config = TrainConfig(steps=200, batch_size=64, chunk_steps=100, eval_every=200)
    model = jaxdl.convnet(channels=(8,), hidden=())
    _, history = jaxdl.fit(model, digits, config, Hparams(lr=3e-3))
    assert history["loss"][-1] < history["loss"][0]
    assert history["test_accuracy"][-1] >= 0.9


# ----------------------------------------------------------------------------- determinism

SEED_CONFIG = TrainConfig(steps=20, batch_size=32, chunk_steps=10, eval_every=10)
SEED_HPARAMS = Hparams(lr=3e-3)


def seed_model():
    return jaxdl.mlp(hidden=(16,))


def test_same_seed_is_bit_identical_and_seeds_differ(small):
    runs = [jaxdl.fit(seed_model(), small, SEED_CONFIG, SEED_HPARAMS, seed=s) for s in (0, 0, 1)]
    (first, first_history), (again, again_history), (other, _) = runs
    chex.assert_trees_all_equal(first.params, again.params)  # bit-identical
    np.testing.assert_array_equal(first_history["loss"], again_history["loss"])
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(other.params), strict=True):
        assert not np.array_equal(a, b)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=st.integers(-(2**63), 2**63 - 1))
def test_seed_keys_are_the_halves_of_the_split_of_the_seeds_key(seed):
    init_key, data_key = jax.jit(train.seed_keys)(*run_seeds(seed))
    expected_init, expected_data = run_keys(seed)  # what fit documents, eagerly
    np.testing.assert_array_equal(jax.random.key_data(init_key), jax.random.key_data(expected_init))
    np.testing.assert_array_equal(jax.random.key_data(data_key), jax.random.key_data(expected_data))


def test_seed_array_keeps_the_low_32_bits_of_each_seed():
    assert train.seed_array(5).shape == ()
    assert train.seed_array(np.array(5)).shape == ()  # a 0-d array, as np.load gives
    np.testing.assert_array_equal(
        train.seed_array([0, -1, 2**32 + 3, np.int64(2**40 + 9)]),
        np.array([0, 2**32 - 1, 3, 9], np.uint32),
    )
    assert train.seed_array(range(3)).dtype == np.uint32
    np.testing.assert_array_equal(train.seed_array(np.arange(3)), [0, 1, 2])


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, [0, 2**64]])
def test_seed_array_refuses_seeds_jax_random_key_refuses(seed):
    with pytest.raises(ValueError, match=r"does not fit in 64 bits"):
        train.seed_array(seed)


@pytest.mark.parametrize("seed", [1.5, True, "3", np.float32(2.0), np.array(1.0), [0, 1.5]])
def test_seed_array_refuses_seeds_that_are_not_ints(seed, small, monkeypatch):
    # int() made 1.5 seed 1, True seed 1 and "3" seed 3: another run than the one asked for
    with pytest.raises(ValueError, match=r"^seed must be an int, got "):
        train.seed_array(seed)
    monkeypatch.setattr(train, "build_program", None)  # fit must refuse before building
    with pytest.raises(ValueError, match=r"^seed must be an int, got "):
        jaxdl.fit(jaxdl.mlp(hidden=(8,)), small, TrainConfig(batch_size=32), seed=seed)


@pytest.mark.parametrize("seed", [-3, 2**32 + 3, 5])
def test_seeds_keep_all_64_bits_under_x64_as_jax_random_key_does(seed):
    with jax.enable_x64(True):
        assert train.seed_array(seed).dtype == np.int64
        init_key, data_key = jax.jit(train.seed_keys)(*run_seeds(seed))
        expected_init, expected_data = run_keys(seed)
        np.testing.assert_array_equal(
            jax.random.key_data(init_key), jax.random.key_data(expected_init)
        )
        np.testing.assert_array_equal(
            jax.random.key_data(data_key), jax.random.key_data(expected_data)
        )


def test_make_train_equals_fit_and_vmaps_over_keys(small):
    fitted, history = jaxdl.fit(seed_model(), small, SEED_CONFIG, SEED_HPARAMS, seed=0)
    train_fn = jaxdl.make_train(seed_model(), train.to_device(small), SEED_CONFIG)
    hparams = SEED_HPARAMS.as_arrays()
    alone = jax.jit(train_fn)
    run0, metrics = alone(jax.random.key(0), hparams)
    assert max_abs_diff(run0.params, fitted.params) <= 1e-6
    np.testing.assert_allclose(metrics["loss"], history["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["test_accuracy"], history["test_accuracy"], atol=1e-6)

    run1, _ = alone(jax.random.key(1), hparams)
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    both, both_metrics = jax.jit(jax.vmap(train_fn, in_axes=(0, None)))(keys, hparams)
    assert both_metrics["loss"].shape == (2, SEED_CONFIG.steps // SEED_CONFIG.chunk_steps)
    for i, run in enumerate((run0, run1)):
        member = jax.tree.map(lambda leaf, i=i: leaf[i], both.params)
        assert max_abs_diff(member, run.params) <= 1e-5
    assert max_abs_diff(run0.params, run1.params) > 1e-3


def test_fit_resume_without_a_checkpointer_is_refused(small):
    with pytest.raises(ValueError, match="resume=True needs a checkpointer"):
        jaxdl.fit(seed_model(), small, TrainConfig(steps=10, batch_size=16), resume=True)


def test_make_train_runs_fits_chunks_when_chunk_steps_does_not_divide_steps(small):
    """25 steps in chunks of 10: two chunks in the scan and one of 5 after, as `fit` runs them;
    also 50 steps with the default chunk_steps (100): one chunk of 50."""
    for config in (
        TrainConfig(steps=25, batch_size=32, chunk_steps=10, eval_every=10),
        TrainConfig(steps=50, batch_size=32),
    ):
        fitted, history = jaxdl.fit(seed_model(), small, config, SEED_HPARAMS, seed=0)
        train_fn = jaxdl.make_train(seed_model(), train.to_device(small), config)
        state, metrics = jax.jit(train_fn)(jax.random.key(0), SEED_HPARAMS.as_arrays())
        assert int(state.step) == config.steps
        assert max_abs_diff(state.params, fitted.params) <= 1e-6
        chex.assert_shape(metrics["loss"], (len(history["loss"]),))
        np.testing.assert_allclose(metrics["loss"], history["loss"], rtol=1e-6)
        np.testing.assert_allclose(metrics["test_accuracy"], history["test_accuracy"], atol=1e-6)


# ----------------------------------------------------------------------------- divergence

DIVERGE_HPARAMS = Hparams(lr=1e4)  # a linear MLP under sgd: the loss grows ~1e9x per step


def diverging_model():
    return jaxdl.mlp(hidden=(16,), activation="identity")


def test_divergence_freezes_the_run_at_the_first_non_finite_step(small):
    steps = 12
    config = TrainConfig(steps=steps, batch_size=32, optimizer="sgd", chunk_steps=1)
    model = diverging_model()
    data = train.to_device(small)
    hparams = DIVERGE_HPARAMS.as_arrays()
    chunk = jax.jit(train.make_chunk(model, config, 1))
    init_key, data_key = run_keys(0)
    state = train.init_state(model, config, hparams, EXAMPLE, init_key=init_key, data_key=data_key)
    params_at = [state.params]  # params_at[s]: the params before step s
    losses, diverged_at = [], []
    for _ in range(steps):
        state, metrics = chunk(state, hparams, data)
        params_at.append(state.params)
        losses.append(float(metrics["loss"]))
        diverged_at.append(int(state.diverged_at))
    finite = np.isfinite(losses)
    first = int(np.argmin(finite))  # the first non-finite loss
    assert not finite[first] and np.all(finite[:first]) and 0 < first < steps - 2, losses
    np.testing.assert_array_equal(diverged_at, [-1] * first + [first] * (steps - first))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
    for later in params_at[first + 1 :]:  # frozen at the params step `first` started from
        chex.assert_trees_all_equal(later, params_at[first])
    assert max_abs_diff(params_at[first], params_at[first - 1]) > 0  # it did move until then

    # fit runs the same steps in chunks of 4 and stops after the chunk where it diverged
    chunked = TrainConfig(steps=steps, batch_size=32, optimizer="sgd", chunk_steps=4)
    fitted, history = jaxdl.fit(model, small, chunked, DIVERGE_HPARAMS)
    assert int(fitted.diverged_at) == first
    assert len(history["loss"]) == first // 4 + 1
    chex.assert_trees_all_close(fitted.params, params_at[first], rtol=1e-5)


def test_a_run_stopped_by_divergence_evaluates_its_final_state(small):
    # the run ends at the chunk where it diverged, before any evaluation was due (eval_every 500)
    config = TrainConfig(steps=12, batch_size=32, optimizer="sgd", chunk_steps=4)
    state, history = jaxdl.fit(diverging_model(), small, config, DIVERGE_HPARAMS)
    stopped = int(history["step"][-1])
    assert int(state.diverged_at) < stopped < 12
    np.testing.assert_array_equal(history["eval_step"], [stopped])
    x, y = jnp.asarray(small.x_test), jnp.asarray(small.y_test)
    test = train.evaluate(diverging_model(), state.params, state.model_state, x, y)
    # equal, NaN included: the frozen weights' logits overflow to NaN on some test inputs
    np.testing.assert_allclose(history["test_accuracy"][-1], test["accuracy"], equal_nan=True)


def is_trace(node) -> bool:
    return isinstance(node, optax.TraceState)


def test_a_skipped_step_hands_the_optimiser_zero_gradients_and_drops_its_update(small):
    """The documented cost of a guard without copies: params and model state stay, the
    optimiser state takes a zero-gradient step (heavy-ball momentum: ``trace * momentum``)."""
    config = TrainConfig(steps=12, batch_size=32, optimizer="momentum", chunk_steps=1)
    model = diverging_model()
    data = train.to_device(small)
    hparams = DIVERGE_HPARAMS.as_arrays()
    step = jax.jit(train.make_chunk(model, config, 1))
    state = train.init_state(
        model, config, hparams, EXAMPLE, init_key=run_keys(0)[0], data_key=run_keys(0)[1]
    )
    while int(state.diverged_at) < 0 and int(state.step) < config.steps:
        before = state
        state, _ = step(state, hparams, data)
    assert int(state.diverged_at) == int(before.step), "the lr must make this run diverge"
    chex.assert_trees_all_equal(state.params, before.params)
    (trace_before,), (trace_after,) = (
        [leaf for leaf in jax.tree.leaves(s.opt_state, is_leaf=is_trace) if is_trace(leaf)]
        for s in (before, state)
    )
    expected = jax.tree.map(lambda t: t * np.float32(config.momentum), trace_before.trace)
    chex.assert_trees_all_equal(trace_after.trace, expected)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(trace_after))


def test_a_skipped_step_keeps_params_and_model_state_for_good_and_reports_raw_norms(small):
    """A NaN batch freezes a batch-norm model: params and running statistics stay put then and
    on the later, finite batches; the recorded gradient norms are those of the raw gradients."""
    model = jaxdl.mlp(hidden=(16,), norm="batch")
    config = TrainConfig(batch_size=32, optimizer="adam", record_grad_norms=True)
    hparams = Hparams(lr=1e-2).as_arrays()
    x, y = jnp.asarray(small.x_train[:32]), jnp.asarray(small.y_train[:32])
    step = jax.jit(train.make_step(model, config))
    init_key, data_key = run_keys(0)
    state = train.init_state(model, config, hparams, x, init_key=init_key, data_key=data_key)
    state, _ = step(state, hparams, x, y)  # one healthy step: running stats move off init
    frozen = state
    state, metrics = step(state, hparams, x.at[0, 0, 0, 0].set(jnp.nan), y)
    assert int(state.diverged_at) == 1
    assert not np.isfinite(float(metrics["grad_norm"]["dense1"]))  # raw, not the zeros applied
    for _ in range(2):  # finite batches: the run stays frozen
        state, metrics = step(state, hparams, x, y)
        assert np.isfinite(float(metrics["loss"]))
    assert int(state.diverged_at) == 1
    chex.assert_trees_all_equal(state.params, frozen.params)
    chex.assert_trees_all_equal(state.model_state, frozen.model_state)


def test_without_skipping_the_run_goes_on_non_finite_and_still_records_the_step(small):
    """``skip_nonfinite=False``: the same first non-finite step is recorded, the update is not
    skipped (the params turn non-finite), and a healthy run is unchanged."""
    model = diverging_model()
    base = TrainConfig(steps=12, batch_size=32, optimizer="sgd", chunk_steps=12)
    unskipped = dataclasses.replace(base, skip_nonfinite=False)
    skipped_state, _ = jaxdl.fit(model, small, base, DIVERGE_HPARAMS)
    state, history = jaxdl.fit(model, small, unskipped, DIVERGE_HPARAMS)
    assert int(state.diverged_at) == int(skipped_state.diverged_at) > 0
    assert not all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
    # NaN logits all argmax to class 0: an accuracy of class 0's share would pass for a result
    assert np.isnan(history["test_loss"][-1]) and np.isnan(history["test_accuracy"][-1])

    healthy = Hparams(lr=1e-2)
    expected, _ = jaxdl.fit(model, small, base, healthy)
    state, _ = jaxdl.fit(model, small, unskipped, healthy)
    assert int(state.diverged_at) == -1
    # the guard changes no value, but the two programs may place fused multiply-adds apart
    chex.assert_trees_all_close(state.params, expected.params, atol=1e-6)


@pytest.mark.parametrize("field", ["skip_nonfinite", "record_grad_norms"])
def test_boolean_config_fields_refuse_other_values(field):
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be True or False, got 1"):
        TrainConfig(**{field: 1})


# ----------------------------------------------------------------------------- optimisers


def test_schedules_give_the_expected_lr_at_known_steps():
    lr = 0.2

    def at(name, step, steps=100, warmup=0, peak=lr):
        return float(optimizers.schedule_fn(name, peak, steps, warmup)(jnp.int32(step)))

    for step in (0, 37, 99):
        assert at("constant", step) == pytest.approx(lr)
    assert at("cosine", 0) == pytest.approx(lr)
    assert at("cosine", 50) == pytest.approx(lr / 2, rel=1e-5)
    assert at("cosine", 25) == pytest.approx(lr * (1 + np.cos(np.pi / 4)) / 2, rel=1e-5)
    assert at("cosine", 100) == pytest.approx(0.0, abs=1e-7)
    # warm-up from 0 to lr over 10 steps, then cosine over the remaining 100
    assert at("warmup_cosine", 0, 110, 10) == pytest.approx(0.0, abs=1e-7)
    assert at("warmup_cosine", 5, 110, 10) == pytest.approx(lr / 2, rel=1e-5)
    assert at("warmup_cosine", 10, 110, 10) == pytest.approx(lr, rel=1e-5)
    assert at("warmup_cosine", 60, 110, 10) == pytest.approx(lr / 2, rel=1e-5)
    assert at("warmup_cosine", 110, 110, 10) == pytest.approx(0.0, abs=1e-7)

    # a traced peak under jit (optax's own warm-up schedule refuses one: it branches on it)
    for name, steps, warmup in (("cosine", 100, 0), ("warmup_cosine", 110, 10)):
        traced = jax.jit(
            lambda peak, s, n=name, t=steps, w=warmup: optimizers.schedule_fn(n, peak, t, w)(s)
        )
        middle = jnp.int32(50 + warmup)
        assert float(traced(jnp.float32(0.4), middle)) == pytest.approx(0.2, rel=1e-5)


@pytest.mark.parametrize("schedule", optimizers.SCHEDULES)
def test_fit_and_sweep_run_every_schedule_with_a_traced_lr(small, schedule):
    config = TrainConfig(
        steps=8, batch_size=32, chunk_steps=4, eval_every=8, schedule=schedule, warmup_steps=2
    )
    _, history = jaxdl.fit(jaxdl.mlp(hidden=(8,)), small, config, Hparams(lr=1e-2))
    assert np.all(np.isfinite(history["loss"]))
    result = jaxdl.sweep(jaxdl.mlp(hidden=(8,)), small, {"lr": [1e-2, 3e-2]}, config=config)
    assert result.histories["loss"].shape == (2, 2)


def test_make_applies_the_schedule_step_by_step():
    params = {"w": jnp.ones((3,), jnp.float32)}
    grads = {"w": jnp.ones((3,), jnp.float32)}
    tx = optimizers.make("sgd", 0.5, steps=8, schedule="warmup_cosine", warmup_steps=3)
    schedule = optimizers.schedule_fn("warmup_cosine", 0.5, 8, 3)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(8):
        updates, state = update(grads, state, params)
        np.testing.assert_allclose(updates["w"], -float(schedule(jnp.int32(step))), rtol=1e-6)


def test_constant_schedule_keeps_no_step_counter():
    # The rate itself goes to optax: the state is adam's alone (one leaf less to carry each step).
    params = {"w": jnp.ones((3,), jnp.float32)}
    for name, reference in (("adam", optax.adam(0.1)), ("sgd", optax.sgd(0.1))):
        ours = optimizers.make(name, jnp.float32(0.1), steps=10).init(params)
        decay, rule = ours  # jaxdl chains its parts: the (empty) weight-decay term, the rule
        assert jax.tree.leaves(decay) == []
        assert jax.tree.structure(rule) == jax.tree.structure(reference.init(params)), name
    cosine = optimizers.make("adam", 0.1, steps=10, schedule="cosine").init(params)
    assert len(jax.tree.leaves(cosine)) == len(jax.tree.leaves(optax.adam(0.1).init(params))) + 1


def test_init_scale_multiplies_only_the_weights_and_one_is_exact(small):
    model = jaxdl.mlp(hidden=(8,))
    config = TrainConfig(batch_size=16)
    init_key, data_key = run_keys(0)
    params, _ = model.init(init_key, EXAMPLE)
    for scale in (1.0, jnp.float32(1.0), 0.5):
        state = train.init_state(
            model, config, Hparams(init_scale=scale), EXAMPLE, init_key=init_key, data_key=data_key
        )
        expected = {layer: {"w": p["w"] * float(scale), "b": p["b"]} for layer, p in params.items()}
        chex.assert_trees_all_equal(state.params, expected)
        assert int(state.step) == 0 and int(state.diverged_at) == -1


def test_grad_clip_limits_the_update_as_optax_does():
    params = {"a": jnp.zeros((4,), jnp.float32), "b": jnp.zeros((2, 2), jnp.float32)}
    big = {"a": jnp.full((4,), 3.0, jnp.float32), "b": jnp.full((2, 2), -4.0, jnp.float32)}
    small = jax.tree.map(lambda g: g / 100.0, big)  # global norm 0.1
    for name, reference in (
        ("sgd", optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(1.0))),
        ("adam", optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1.0))),
    ):
        tx = optimizers.make(name, 1.0, steps=10, grad_clip=0.5)
        for grads in (big, small):
            ours, _ = tx.update(grads, tx.init(params), params)
            with jax.numpy_dtype_promotion("standard"):  # optax itself mixes int and float
                theirs, _ = reference.update(grads, reference.init(params), params)
            chex.assert_trees_all_close(ours, theirs, rtol=1e-6)
    sgd = optimizers.make("sgd", 1.0, steps=10, grad_clip=0.5)
    clipped, _ = sgd.update(big, sgd.init(params), params)
    assert float(optax.tree.norm(clipped)) == pytest.approx(0.5, rel=1e-6)
    unclipped, _ = sgd.update(small, sgd.init(params), params)
    chex.assert_trees_all_close(unclipped, jax.tree.map(jnp.negative, small), rtol=1e-6)


def test_weight_decay_is_decoupled_in_adamw_and_l2_in_adam():
    params = {"w": jnp.asarray([1.0, -2.0, 3.0], jnp.float32)}
    grads = {"w": jnp.asarray([0.1, 0.2, -0.3], jnp.float32)}
    lr, decay = 1e-2, jnp.float32(0.1)  # a traced-style (array) decay

    def first_update(tx):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(grads, tx.init(params), params)[0]["w"]

    adamw = first_update(optimizers.make("adamw", lr, steps=10, weight_decay=decay))
    adam = first_update(optimizers.make("adam", lr, steps=10, weight_decay=decay))
    plain = first_update(optimizers.make("adam", lr, steps=10))
    np.testing.assert_allclose(adamw, first_update(optax.adamw(lr, weight_decay=0.1)), rtol=1e-6)
    np.testing.assert_allclose(
        adam, first_update(optax.chain(optax.add_decayed_weights(0.1), optax.adam(lr))), rtol=1e-6
    )
    np.testing.assert_allclose(plain, first_update(optax.adam(lr)), rtol=1e-6)
    assert np.max(np.abs(adamw - adam)) > 1e-4
    # decoupled: adamw is adam's normalised step plus lr * decay * w
    np.testing.assert_allclose(adamw, plain - lr * 0.1 * params["w"], rtol=1e-5)


def test_unknown_names_raise_listing_the_valid_ones():
    with pytest.raises(ValueError, match="adagrad") as raised:
        TrainConfig(optimizer="adagrad")
    for name in optimizers.OPTIMIZERS:
        assert name in str(raised.value)
    with pytest.raises(ValueError, match="linear") as raised:
        TrainConfig(schedule="linear")
    for name in optimizers.SCHEDULES:
        assert name in str(raised.value)
    with pytest.raises(ValueError, match="sgd, momentum, adam, adamw"):
        optimizers.make("lion", 1e-3, steps=10)


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", -5),
        ("batch_size", 0),
        ("batch_size", -1),
        ("steps", 2.5),
        ("steps", True),  # a bool is an int to isinstance: it trained 1 step
        ("unroll", 0),  # lax.scan took it silently
        ("unroll", 2.5),
        ("unroll", "2"),  # was a TypeError naming no field, at the first chunk
    ],
)
def test_train_config_rejects_non_positive_sizes(field, value):
    with pytest.raises(ValueError, match=f"^TrainConfig.{field} must be a positive int, got"):
        TrainConfig(**{field: value})


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("batch_size", [7, 100, 1000])  # N = 100
def test_evaluate_equals_a_full_batch_computation(small, batch_size):
    model = jaxdl.mlp(hidden=(16,))
    params, model_state = model.init(jax.random.key(3), EXAMPLE)
    x, y = jnp.asarray(small.x_test), jnp.asarray(small.y_test)  # N = 100
    logits, _ = model.apply(params, model_state, x)
    result = jaxdl.evaluate(model, params, model_state, x, y, batch_size=batch_size)
    np.testing.assert_allclose(result["loss"], jaxdl.softmax_cross_entropy(logits, y), rtol=1e-5)
    assert float(result["accuracy"]) == pytest.approx(float(jaxdl.accuracy(logits, y)))


def test_evaluate_under_jit_takes_out_of_range_labels_as_documented():
    """Its docstring said a traced label out of range gave a NaN loss; a negative one wraps."""
    model = jaxdl.mlp(hidden=(), num_classes=3, init="zeros")
    params, model_state = model.init(jax.random.key(0), jnp.zeros((1, 2)))
    params["dense1"]["b"] = jnp.asarray([0.0, 1.0, 2.0])
    x = jnp.zeros((2, 2))
    result = jax.jit(lambda y: jaxdl.evaluate(model, params, model_state, x, y, batch_size=1))
    wrapped, last = result(jnp.asarray([-1, -1])), result(jnp.asarray([2, 2]))
    np.testing.assert_allclose(wrapped["loss"], last["loss"], rtol=1e-6)  # finite, class 2's
    assert float(wrapped["accuracy"]) == 0.0 and float(last["accuracy"]) == 1.0
    assert np.isnan(float(result(jnp.asarray([3, 0]))["loss"]))


def test_evaluate_refuses_an_empty_set_or_labels_not_one_per_input():
    model = jaxdl.mlp(hidden=(), num_classes=3, init="zeros")
    params, model_state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    for x, y in [(jnp.zeros((0, 4)), jnp.zeros(0, int)), (jnp.zeros((10, 4)), jnp.zeros(9, int))]:
        with pytest.raises(ValueError, match=rf"evaluate: .*got x \({x.shape[0]}, 4\) and y"):
            jaxdl.evaluate(model, params, model_state, x, y, batch_size=3)


# ----------------------------------------------------------------------------- gradient norms


def test_recorded_grad_norms_equal_direct_gradients(small):
    lr = 0.1
    config = TrainConfig(
        steps=2, batch_size=32, optimizer="sgd", chunk_steps=1, record_grad_norms=True
    )
    model = jaxdl.mlp(hidden=(16,))
    _, history = jaxdl.fit(model, small, config, Hparams(lr=lr), seed=4)
    norms = history["grad_norm"]
    assert set(norms) == {"dense1", "dense2"}
    for layer in norms.values():
        assert layer.shape == (2,) and np.all(layer > 0)

    init_key, data_key = run_keys(4)
    params, model_state = model.init(init_key, EXAMPLE)
    batches = chunk_indices(
        jax.random.split(data_key)[0], 0, 2, small.num_train, config.batch_size
    )  # [2, 32]: the documented batch order of steps 0 and 1

    def loss(params, idx):
        logits, _ = model.apply(params, model_state, jnp.asarray(small.x_train)[idx])
        return jaxdl.softmax_cross_entropy(logits, jnp.asarray(small.y_train)[idx])

    for step in range(2):
        grads = jax.grad(loss)(params, batches[step])
        for name, recorded in norms.items():
            direct = float(optax.tree.norm(grads[name]))
            assert recorded[step] == pytest.approx(direct, rel=1e-5)
        params = jax.tree.map(lambda p, g: p - lr * g, params, grads)  # sgd


# ----------------------------------------------------------------------------- batch norm, dropout


def test_batch_norm_model_trains_and_evaluates_with_running_stats(small):
    model = jaxdl.mlp(hidden=(16,), norm="batch")
    config = TrainConfig(steps=30, batch_size=32, chunk_steps=10, eval_every=30)
    state, history = jaxdl.fit(model, small, config, Hparams(lr=1e-2), seed=0)
    _, initial_state = model.init(run_keys(0)[0], EXAMPLE)
    assert history["loss"][-1] < history["loss"][0]
    assert max_abs_diff(state.model_state, initial_state) > 1e-3  # running stats moved
    assert float(jnp.max(jnp.abs(state.model_state["norm1"]["mean"]))) > 0

    x, y = jnp.asarray(small.x_test), jnp.asarray(small.y_test)
    with_running = jaxdl.evaluate(model, state.params, state.model_state, x, y)
    logits, _ = model.apply(state.params, state.model_state, x, train=False)
    np.testing.assert_allclose(
        with_running["loss"], jaxdl.softmax_cross_entropy(logits, y), rtol=1e-5
    )
    np.testing.assert_allclose(history["test_loss"][-1], with_running["loss"], rtol=1e-5)
    with_initial = jaxdl.evaluate(model, state.params, initial_state, x, y)
    assert abs(float(with_initial["loss"]) - float(with_running["loss"])) > 1e-3


def test_dropout_model_trains_and_keys_give_different_masks(small):
    model = jaxdl.mlp(hidden=(32,), dropout=0.5)
    config = TrainConfig(steps=40, batch_size=32, chunk_steps=20, eval_every=40)
    state, history = jaxdl.fit(model, small, config, Hparams(lr=1e-2), seed=0)
    assert history["loss"][-1] < history["loss"][0]
    assert history["test_accuracy"][-1] > 0.3  # well above chance (0.1)

    step = jax.jit(train.make_step(model, config))
    hparams = Hparams(lr=1e-2).as_arrays()
    x, y = jnp.asarray(small.x_train[:32]), jnp.asarray(small.y_train[:32])
    run0 = state._replace(key=run_keys(0)[1])
    run1 = state._replace(key=run_keys(1)[1])  # the same params, another run's data key
    loss0 = float(step(run0, hparams, x, y)[1]["loss"])
    assert float(step(run0, hparams, x, y)[1]["loss"]) == loss0  # same key, same mask
    assert float(step(run1, hparams, x, y)[1]["loss"]) != loss0  # another seed's mask
    later = run0._replace(step=run0.step + 1)
    assert float(step(later, hparams, x, y)[1]["loss"]) != loss0  # a fresh mask every step


# ----------------------------------------------------------------------------- input checks


def test_batch_larger_than_the_data_set_raises_before_compiling(small, monkeypatch):
    def no_compiling(*args, **kwargs):
        raise AssertionError("build_program was reached: the check came too late")

    monkeypatch.setattr(train, "build_program", no_compiling)
    tiny = small.subset(20, 10)
    with pytest.raises(jaxdl.data.DataError, match="num_examples=20.*batch_size=32"):
        jaxdl.fit(jaxdl.mlp(hidden=(8,)), tiny, TrainConfig(steps=5, batch_size=32))


def test_run_program_logs_a_chunk_before_checkpointing_it(small):
    # a run killed between the two resumes from the previous checkpoint and logs the chunk again;
    # the other order would leave a checkpoint whose chunk was never logged
    config = TrainConfig(steps=4, batch_size=32, chunk_steps=2, eval_every=4)
    data = train.to_device(small)
    program = train.build_program(jaxdl.mlp(hidden=(8,)), config, data.x_train[:1])
    hparams = Hparams().as_arrays()
    calls = []
    train.run_program(
        program,
        config,
        program.init(*run_seeds(0), hparams),
        hparams,
        data,
        on_chunk=lambda step, _: calls.append(("log", step)),
        on_state=lambda step, _: calls.append(("checkpoint", step)),
    )
    assert calls == [("log", 2), ("checkpoint", 2), ("log", 4), ("checkpoint", 4)]


def test_a_checkpoint_off_this_runs_chunk_ends_resumes_with_a_shorter_first_chunk(small, tmp_path):
    # saved at step 7 with chunk_steps=7, resumed with chunk_steps=5: a chunk of 3 to step 10,
    # then 5 to 15 (a plain chunk of 5 from step 7 would overrun to 17 and call it step 15)
    model = jaxdl.mlp(hidden=(8,))
    saved = TrainConfig(steps=7, batch_size=32, chunk_steps=7, eval_every=7)
    jaxdl.fit(model, small, saved, checkpointer=Checkpointer(tmp_path, every=7))
    config = TrainConfig(steps=15, batch_size=32, chunk_steps=5, eval_every=5)
    state, history = jaxdl.fit(
        model, small, config, checkpointer=Checkpointer(tmp_path), resume=True
    )
    np.testing.assert_array_equal(history["step"], [10, 15])
    np.testing.assert_array_equal(history["eval_step"], [10, 15])
    alone, _ = jaxdl.fit(model, small, config)  # batches depend on the step, not the chunking
    assert int(state.step) == 15
    chex.assert_trees_all_equal(state.params, alone.params)
    chex.assert_trees_all_equal(state.opt_state, alone.opt_state)
    # a state past the end is refused, not run
    shorter = TrainConfig(steps=5, batch_size=32, chunk_steps=5)
    with pytest.raises(ValueError, match=r"state is at step 15, past the end of this run"):
        jaxdl.fit(model, small, shorter, checkpointer=Checkpointer(tmp_path), resume=True)


def test_chunks_from_a_step_end_on_the_plans_chunk_ends():
    config = TrainConfig(steps=23, chunk_steps=5)
    assert chunks_from(config, 0) == [5, 5, 5, 5, 3]
    assert chunks_from(config, 7) == [3, 5, 5, 3]
    assert chunks_from(config, 10) == [5, 5, 3]
    assert chunks_from(config, 21) == [2]
    assert chunks_from(config, 23) == []


def test_integer_arguments_may_be_numpy_or_jax_integers():
    np.testing.assert_array_equal(train.seed_array(jnp.arange(3)), [0, 1, 2])
    np.testing.assert_array_equal(train.seed_array([np.int64(4), jnp.uint32(5)]), [4, 5])
    config = TrainConfig(steps=np.int64(20), batch_size=np.int32(16))
    assert type(config.steps) is int and type(config.batch_size) is int  # JSON-ready
    assert jaxdl.data.steps_per_epoch(np.int64(10), np.int32(3)) == 3
    assert type(jaxdl.data.steps_per_epoch(np.int64(10), np.int32(3))) is int


def test_numpy_warmup_momentum_and_clip_become_python_numbers():
    config = TrainConfig(
        warmup_steps=np.int64(2), momentum=np.float32(0.5), grad_clip=np.float32(1)
    )
    assert type(config.warmup_steps) is int and type(config.momentum) is float
    assert type(config.grad_clip) is float  # JSON-ready, as the counts are
    run = run_config.RunConfig(train=config)  # preflight accepts them
    assert run_config.from_dict(json.loads(json.dumps(run_config.to_dict(run)))) == run


def test_run_config_takes_numpy_numbers_as_python_ones():
    """A NumPy ``lr`` (a grid from ``np.geomspace``) was refused as "not a finite number"; every
    number of a `RunConfig` becomes a Python one, as `TrainConfig`'s do (JSON-ready)."""
    model = run_config.ModelConfig(
        name="convnet",
        hidden=(np.int64(8),),
        channels=[np.int32(4)],
        kernel=np.int64(3),
        dropout=np.float32(0.25),
    )
    data = run_config.DataConfig(num_train=np.int64(64), num_test=np.int32(32))
    run = run_config.RunConfig(
        model=model,
        data=data,
        lr=np.float32(0.5),
        weight_decay=np.float64(0.0),
        init_scale=np.float32(2),
        seed=np.int64(3),
        checkpoint_every=np.int32(10),
    )
    numbers = [
        model.hidden[0], model.channels[0], model.kernel, model.dropout, data.num_train,
        data.num_test, run.lr, run.weight_decay, run.init_scale, run.seed, run.checkpoint_every,
    ]  # fmt: skip
    assert [type(n) for n in numbers] == [int] * 3 + [float] + [int] * 2 + [float] * 3 + [int] * 2
    assert (run.lr, model.dropout, run.seed) == (0.5, 0.25, 3)
    assert run_config.from_dict(json.loads(json.dumps(run_config.to_dict(run)))) == run
    with pytest.raises(ValueError, match=r"^lr must be a finite number, got np.float32\(nan\)"):
        run_config.RunConfig(lr=np.float32("nan"))
    with pytest.raises(ValueError, match=r"^model.kernel must be a positive int, got np.True_"):
        run_config.ModelConfig(kernel=np.True_)


def test_an_eager_init_state_is_one_program_with_fit_s_values(caplog):
    """Called eagerly, `init_state` compiles one program (not one per eager operation), compiled
    as `fit`'s init is, so its state equals `fit`'s bit for bit (a normal sampler included,
    whose last bit depends on how its program is built)."""
    model = jaxdl.serial(
        ("dense1", jaxdl.dense(13, w_init="he_normal")), ("dense2", jaxdl.dense(10))
    )
    config = TrainConfig(batch_size=16)
    example = jax.ShapeDtypeStruct((1, 11), jnp.float32)  # shapes no other test compiled for
    seeds = train.seed_array(5)
    hparams = Hparams(lr=1e-3, init_scale=1.3).as_arrays()
    init_key, data_key = train.seed_keys(seeds, seeds)
    with jax.log_compiles(), caplog.at_level("WARNING"):
        state = train.init_state(
            model, config, hparams, example, init_key=init_key, data_key=data_key
        )
    compiled = [
        r.getMessage().split("jit(")[1].split(")")[0]
        for r in caplog.records
        if r.getMessage().startswith("Compiling jit(")
    ]
    assert [name for name in compiled if name != "_xla_flag_probe"] == ["init"], compiled
    fit_state = train.build_program(model, config, example).init(seeds, seeds, hparams)
    chex.assert_trees_all_equal(state, fit_state)


def test_init_state_of_an_unhashable_model_runs_eagerly():
    """A model `init_state` cannot cache a program for (an unhashable callable in it) is
    initialised eagerly, with the values of the jitted path."""

    class Apply:  # defines __eq__ without __hash__: unhashable
        def __init__(self, layer):
            self.layer = layer

        def __eq__(self, other):
            return isinstance(other, Apply) and other.layer is self.layer

        def __call__(self, *args, **kwargs):
            return self.layer.apply(*args, **kwargs)

    layer = jaxdl.dense(10)
    unhashable = jaxdl.Layer(layer.init, Apply(layer), "dense")
    config = TrainConfig(batch_size=16)
    example = jax.ShapeDtypeStruct((1, 7), jnp.float32)
    init_key, data_key = run_keys(3)
    eager = train.init_state(
        unhashable, config, Hparams(), example, init_key=init_key, data_key=data_key
    )
    jitted = train.init_state(
        layer, config, Hparams(), example, init_key=init_key, data_key=data_key
    )
    chex.assert_trees_all_close(eager.params, jitted.params, rtol=1e-6)
    chex.assert_trees_all_equal_structs(eager, jitted)


def test_init_state_with_an_int_seed_for_a_key_names_the_mistake():
    model = jaxdl.mlp(hidden=(4,))
    with pytest.raises(jaxdl.LayerError, match=re.escape("e.g. jax.random.key(0), got 0")):
        train.init_state(
            model, TrainConfig(), Hparams(), EXAMPLE, init_key=0, data_key=jax.random.key(1)
        )


def test_a_float64_example_initialises_as_jax_holds_it():
    """A NumPy float64 example with x64 off is read as float32, eagerly and traced: the conv
    layer asked for float64 weights, which JAX truncated with a warning (an error here)."""
    model = jaxdl.convnet(channels=(4,), kernel=3)
    config = TrainConfig(batch_size=16)
    example = np.zeros((1, 8, 8, 1))  # float64
    init_key, data_key = run_keys(0)
    state = train.init_state(
        model, config, Hparams(), example, init_key=init_key, data_key=data_key
    )
    expected = train.init_state(
        model, config, Hparams(), EXAMPLE, init_key=init_key, data_key=data_key
    )
    chex.assert_trees_all_equal(state.params, expected.params)  # float32, the same values
    program = train.build_program(model, config, example)
    traced = program.init(*run_seeds(0), Hparams().as_arrays())
    chex.assert_trees_all_equal(traced.params, expected.params)


def test_train_config_refuses_steps_past_the_int32_step_counter():
    TrainConfig(steps=2**31 - 1)
    with pytest.raises(ValueError, match=r"^TrainConfig.steps must be < 2\*\*31"):
        TrainConfig(steps=2**31)


def test_batches_of_a_long_run_do_not_overflow_step_times_batch_size():
    """Step 20 million at batch 128 is past 2**31 examples seen: each batch is still its slice
    of its epoch's permutation (the offset is taken within the epoch before scaling)."""
    key = jax.random.key(0)
    spe = 60_000 // 128
    start = 20_000_000
    indices = np.asarray(chunk_indices(key, start, 3, 60_000, 128))  # [3, 128]
    for i, row in enumerate(indices):
        epoch, offset = divmod(start + i, spe)
        perm = np.asarray(jaxdl.data.batching.epoch_permutation(key, epoch, 60_000))
        np.testing.assert_array_equal(row, perm[offset * 128 : (offset + 1) * 128])
