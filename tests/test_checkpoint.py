"""Checkpoints: exact resume, damaged-checkpoint fallback, mismatch errors (library level)."""

import dataclasses
import glob
import json
import os

import jax
import numpy as np
import pytest

import jaxdl
from jaxdl.checkpoint import Checkpointer, CheckpointError
from jaxdl.train import Hparams, TrainConfig, TrainState, fit

CONFIG = TrainConfig(steps=60, chunk_steps=10, batch_size=32, eval_every=30)


@pytest.fixture(scope="module")
def data():
    return jaxdl.data.load("digits").subset(256, 64)


class Interrupt(Exception):
    pass


def interrupt_at(step):
    def on_chunk(reached, report):
        if reached == step:
            raise Interrupt

    return on_chunk


def assert_params_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resumed_run_is_bit_identical_with_dropout(data, tmp_path):
    model = jaxdl.mlp(hidden=(16,), dropout=0.3)
    uninterrupted, _ = fit(model, data, CONFIG, Hparams(lr=3e-3))
    with pytest.raises(Interrupt):
        fit(
            model,
            data,
            CONFIG,
            Hparams(lr=3e-3),
            checkpointer=Checkpointer(tmp_path, every=20),
            on_chunk=interrupt_at(30),
        )
    assert Checkpointer(tmp_path).steps() == [20]
    resumed, history = fit(
        model,
        data,
        CONFIG,
        Hparams(lr=3e-3),
        checkpointer=Checkpointer(tmp_path, every=20),
        resume=True,
    )
    np.testing.assert_array_equal(history["step"], [30, 40, 50, 60])
    assert_params_equal(uninterrupted.params, resumed.params)
    assert_params_equal(uninterrupted.opt_state, resumed.opt_state)


def test_keeps_last_k_and_saves_the_end(data, tmp_path):
    fit(jaxdl.mlp(hidden=(8,)), data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20, keep=2))
    assert Checkpointer(tmp_path).steps() == [40, 60]


def test_damaged_newest_checkpoint_falls_back_with_warning(data, tmp_path):
    model = jaxdl.mlp(hidden=(8,))
    state, _ = fit(model, data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20, keep=3))
    for path in glob.glob(f"{tmp_path}/60/**/*", recursive=True):
        if os.path.isfile(path) and os.path.getsize(path) > 16:
            with open(path, "r+b") as f:
                f.truncate(8)
    with pytest.warns(RuntimeWarning, match=r"checkpoint .*60 is damaged and was skipped"):
        step, restored = Checkpointer(tmp_path).restore(state)
    assert step == 40
    assert int(restored.step) == 40
    with pytest.raises(CheckpointError, match=r"checkpoint .*60 is damaged"):
        Checkpointer(tmp_path).restore(state, step=60)


def test_checkpoint_of_another_model_names_what_differs(data, tmp_path):
    fit(jaxdl.mlp(hidden=(8,)), data, CONFIG, checkpointer=Checkpointer(tmp_path, every=60))
    other, _ = fit(
        jaxdl.mlp(hidden=(9,)), data, TrainConfig(steps=10, chunk_steps=10, batch_size=32)
    )
    with pytest.raises(
        CheckpointError,
        match=r"different model or config: .*params/dense1/w: expected \(64, 9\), found \(64, 8\)",
    ):
        Checkpointer(tmp_path).restore(other)


def test_checkpoint_of_another_dtype_is_refused_not_cast(data, tmp_path):
    """Orbax would cast float32 params into a bfloat16 template without a word."""
    state, _ = fit(
        jaxdl.mlp(hidden=(8,)), data, CONFIG, checkpointer=Checkpointer(tmp_path, every=60)
    )
    params = jax.tree.map(lambda p: p.astype(jax.numpy.bfloat16), state.params)
    with pytest.raises(
        CheckpointError,
        match=r"different model or config: dtypes differ: "
        r"params/dense1/b: expected bfloat16, found float32",
    ):
        Checkpointer(tmp_path).restore(state._replace(params=params))
    with pytest.raises(
        CheckpointError, match=r"dtypes differ: step: expected float32, found int32"
    ):
        Checkpointer(tmp_path).restore(state._replace(step=state.step.astype(np.float32)))


@pytest.mark.parametrize(
    "key",
    [jax.random.key(7), jax.random.key(7, impl="rbg"), jax.random.PRNGKey(7)],
    ids=["typed", "rbg", "legacy_uint32"],
)
def test_round_trip_is_exact_in_values_dtypes_and_key_type(tmp_path, key):
    jnp = jax.numpy
    state = TrainState(
        params={
            "w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) / 7,
            "h": jnp.ones(2, "bfloat16"),
        },
        model_state={"mean": jnp.full((3,), 0.1, jnp.float32)},
        opt_state=({"count": jnp.int32(4)}, ()),
        step=jnp.int32(5),
        key=key,
        diverged_at=jnp.int32(-1),
    )
    checkpointer = Checkpointer(tmp_path, every=5)
    checkpointer.save(5, state)
    step, restored = Checkpointer(tmp_path).restore(state)
    assert step == 5
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for saved, back in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        assert back.dtype == saved.dtype and back.shape == saved.shape
        if jax.dtypes.issubdtype(saved.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(back) == jax.random.key_impl(saved)
            saved, back = jax.random.key_data(saved), jax.random.key_data(back)
        np.testing.assert_array_equal(np.asarray(back), np.asarray(saved))


def test_config_round_trip_and_missing_config(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match="has no config.json"):
        checkpointer.load_config()
    checkpointer.save_config({"model": {"name": "mlp"}, "lr": 0.001})
    assert Checkpointer(tmp_path).load_config() == {"model": {"name": "mlp"}, "lr": 0.001}
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_no_checkpoints_is_an_error(data, tmp_path):
    state, _ = fit(
        jaxdl.mlp(hidden=(8,)), data, TrainConfig(steps=10, chunk_steps=10, batch_size=32)
    )
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        Checkpointer(tmp_path).restore(state)


def damage(directory, step):
    """Truncates every file of a saved step, as a disk error would."""
    for path in glob.glob(f"{directory}/{step}/**/*", recursive=True):
        if os.path.isfile(path) and os.path.getsize(path) > 16:
            with open(path, "r+b") as f:
                f.truncate(8)


def test_restore_of_a_step_never_saved_lists_the_saved_ones(data, tmp_path):
    state, _ = fit(
        jaxdl.mlp(hidden=(8,)), data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20)
    )
    pattern = rf"^no checkpoint of step 7 in {tmp_path}, the saved steps are \[20, 40, 60\]$"
    with pytest.raises(CheckpointError, match=pattern):  # not "damaged and was skipped"
        Checkpointer(tmp_path).restore(state, step=7)


def test_resume_replaces_the_damaged_checkpoint_it_fell_back_from(data, tmp_path):
    model = jaxdl.mlp(hidden=(8,))
    state, _ = fit(model, data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20, keep=3))
    damage(tmp_path, 60)
    with pytest.warns(RuntimeWarning, match=r"checkpoint .*60 is damaged and was skipped"):
        resumed, _ = fit(
            model, data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20), resume=True
        )
    step, restored = Checkpointer(tmp_path).restore(state)  # no warning: 60 was saved anew
    assert step == 60
    assert_params_equal(restored.params, state.params)
    assert_params_equal(resumed.params, state.params)


@pytest.mark.parametrize("field", ["every", "keep"])
@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_checkpointer_refuses_a_bad_every_or_keep(tmp_path, field, value):
    with pytest.raises(
        CheckpointError, match=rf"^Checkpointer {field} must be a positive int, got {value!r} "
    ):
        Checkpointer(tmp_path, **{field: value})


def test_unreadable_config_names_the_file(tmp_path):
    Checkpointer(tmp_path).save_config({"lr": 0.1})
    (tmp_path / "config.json").write_text('{"lr": ')
    with pytest.raises(CheckpointError, match=rf"^{tmp_path}/config.json: not valid JSON \("):
        Checkpointer(tmp_path).load_config()


def test_a_fresh_run_into_a_folder_with_checkpoints_is_refused(data, tmp_path):
    model = jaxdl.mlp(hidden=(8,))
    fit(model, data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20))
    shorter = TrainConfig(steps=20, chunk_steps=10, batch_size=32, eval_every=20)
    pattern = (
        rf"^{tmp_path} holds checkpoints of an earlier run \(steps \[20, 40, 60\]\): pass "
        r"resume=True to continue it, or use a new folder$"
    )
    with pytest.raises(CheckpointError, match=pattern):
        fit(model, data, shorter, checkpointer=Checkpointer(tmp_path, every=20), seed=1)
    assert Checkpointer(tmp_path).steps() == [20, 40, 60]  # the earlier run's, untouched


def test_checkpointer_takes_numpy_integers(tmp_path):
    checkpointer = Checkpointer(tmp_path, every=np.int64(20), keep=np.int32(2))
    assert checkpointer.due(40) and not checkpointer.due(30)


def test_saved_steps_lists_step_folders_without_orbax(data, tmp_path):
    from jaxdl.checkpoint import saved_steps

    assert saved_steps(tmp_path / "missing") == []
    fit(jaxdl.mlp(hidden=(8,)), data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20))
    (tmp_path / "80.orbax-checkpoint-tmp-1").mkdir()  # an unfinished save is not a step
    assert saved_steps(tmp_path) == Checkpointer(tmp_path).steps() == [20, 40, 60]


def test_fit_resumed_under_another_config_hparams_or_seed_is_refused(data, tmp_path):
    model = jaxdl.mlp(hidden=(16,))
    with pytest.raises(Interrupt):
        fit(
            model, data, CONFIG, Hparams(lr=3e-3), checkpointer=Checkpointer(tmp_path, every=20),
            on_chunk=interrupt_at(30),
        )  # fmt: skip
    recorded = (tmp_path / "run.json").read_text()
    others = [
        (dataclasses.replace(CONFIG, optimizer="sgd"), Hparams(lr=3e-3), 0,
         r"train\.optimizer: saved 'adam', now 'sgd'$"),
        (dataclasses.replace(CONFIG, steps=80, schedule="cosine"), Hparams(lr=3e-3), 0,
         r"train\.steps: saved 60, now 80; train\.schedule: saved 'constant', now 'cosine'$"),
        (CONFIG, Hparams(lr=1e-2, weight_decay=0.1), 0,
         r"hparams\.lr: saved 0\.003, now 0\.01; hparams\.weight_decay: saved 0\.0, now 0\.1$"),
        (CONFIG, Hparams(lr=3e-3), 1, r"seed: saved 0, now 1$"),
    ]  # fmt: skip
    for config, hparams, seed, message in others:
        checkpointer = Checkpointer(tmp_path, every=20)
        with pytest.raises(
            CheckpointError, match=rf"^the checkpoints in .* another run: {message}"
        ):
            fit(model, data, config, hparams, seed=seed, checkpointer=checkpointer, resume=True)
    fewer = jaxdl.data.load("digits").subset(200, 64)  # the same set cut otherwise
    with pytest.raises(
        CheckpointError, match=r"another run: data\.x_train: saved \[256, 8, 8, 1\], now \[200,"
    ):
        fit(
            model, fewer, CONFIG, Hparams(lr=3e-3), checkpointer=Checkpointer(tmp_path), resume=True
        )
    assert (tmp_path / "run.json").read_text() == recorded  # nothing was overwritten
    # The same run resumes (a None weight decay is the 0.0 it was saved with), also evaluated
    # differently and longer: on a constant schedule the length changes nothing else.
    same = Hparams(lr=3e-3, weight_decay=None)
    longer = dataclasses.replace(CONFIG, steps=70, eval_every=10)
    state, _ = fit(model, data, longer, same, checkpointer=Checkpointer(tmp_path), resume=True)
    assert int(state.step) == 70


def test_a_run_json_written_before_data_was_recorded_still_resumes(data, tmp_path):
    model = jaxdl.mlp(hidden=(8,))
    with pytest.raises(Interrupt):
        fit(model, data, CONFIG, checkpointer=Checkpointer(tmp_path, every=20),
            on_chunk=interrupt_at(30))  # fmt: skip
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert recorded["data"] == {
        "name": "digits", "x_train": [256, 8, 8, 1], "x_test": [64, 8, 8, 1], "num_classes": 10,
    }  # fmt: skip
    del recorded["data"]  # as an earlier jaxdl wrote it
    (tmp_path / "run.json").write_text(json.dumps(recorded))
    state, _ = fit(model, data, CONFIG, checkpointer=Checkpointer(tmp_path), resume=True)
    assert int(state.step) == 60


@pytest.mark.parametrize(
    "text, message", [('{"train": ', "not valid JSON"), ("[1, 2]", "expected a JSON object")]
)
def test_an_unreadable_run_json_names_the_file(data, tmp_path, text, message):
    model, config = jaxdl.mlp(hidden=(8,)), TrainConfig(steps=10, chunk_steps=10, batch_size=32)
    fit(model, data, config, checkpointer=Checkpointer(tmp_path, every=10))
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(CheckpointError, match=rf"^{tmp_path}/run.json: {message}"):
        fit(model, data, config, checkpointer=Checkpointer(tmp_path), resume=True)
