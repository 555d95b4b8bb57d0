"""Bad input and failure (issue 6): each case raises before anything compiles, naming the field,
the expected and the actual value; on the command line it is one line ``error: ...`` and exit 2.

Where each case of the issue is tested (here unless another file is named):

- wrong input shape for a model: `fit`, `sweep`, `make_train` here; layer by layer in
  test_layers.py (test_init_errors, test_apply_errors, test_errors_inside_serial_name_the_layer);
  the CLI builds the model from the data, a convnet on flat data: here and
  test_cli.py::test_convnet_needs_spatial_inputs.
- wrong input dtype (integer inputs): here.
- fewer or more model outputs than the data set's classes, outputs that are not logits: here.
- labels not one per row of logits (``[N, 1]``), not integers, out of range, in the losses and
  `evaluate`: here.
- a warm-up the schedule would drop, or one as long as the run: here.
- labels out of range: here (a hand-made `Dataset`); loaders in test_data.py
  (test_label_out_of_range, test_negative_label, test_float_labels_are_refused).
- NaN/inf in data: here; loaders in test_data.py::test_nan_in_inputs.
- empty data set, x and y of different lengths: here; test_data.py (test_empty_set,
  test_mismatched_lengths).
- batch larger than the data set: test_train.py and test_sweep.py
  (test_batch_larger_than_the_data_set_raises_before_compiling), test_cli.py
  (test_user_errors_are_one_line, ``--batch-size 5000``); here through make_train and the sweep CLI.
- negative or zero learning rate, negative weight decay, zero init scale: here (`Hparams`, sweep
  axes, CLI); test_cli.py (test_user_errors_are_one_line ``--lr 0`` ``--lr -1``,
  test_replace_by_dotted_key).
- unknown optimiser or schedule: test_train.py::test_unknown_names_raise_listing_the_valid_ones,
  test_cli.py (``--optimizer adamm``, test_run_config_checks_train_fields_optax_would_take);
  here ``--schedule`` on the CLI.
- unknown activation: test_layers.py::test_unknown_activation_lists_valid_names,
  test_models.py::test_recipe_errors, test_cli.py (``--activation relux``,
  test_model_config_errors_name_field_and_valid_values).
- unknown initialiser: test_layers.py::test_unknown_initializer_lists_valid_names,
  test_initializers.py::test_unknown_name_lists_valid_names; here ``--init`` on the CLI.
- unknown data set: test_data.py::test_unknown_name_lists_the_valid_ones, test_cli.py
  (``--data nope``).
- the CLI's one line and exit code 2: test_cli.py (test_user_errors_are_one_line,
  test_mistyped_option_is_one_error_line_in_a_subprocess); here for the cases above and sweeps.
- same seed twice gives identical results: test_train.py::test_same_seed_is_bit_identical_and_
  seeds_differ (`fit`), test_resume.py (a resumed run); here for `sweep`.
"""

import contextlib
import importlib
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl
from jaxdl import cli, preflight, train
from jaxdl.data import DataError, Dataset
from jaxdl.train import Hparams, TrainConfig

sweep_module = importlib.import_module("jaxdl.sweep")  # `jaxdl.sweep` is the function

CONFIG = TrainConfig(steps=4, batch_size=8, chunk_steps=2, eval_every=4)
MLP = jaxdl.mlp(hidden=(8,))
NAN = float("nan")


def toy(**fields) -> Dataset:
    """A well-formed 10-class data set, 32 train / 16 test images ``[8, 8, 1]``; ``fields``
    replace its own."""
    rng = np.random.default_rng(0)
    data = Dataset(
        x_train=rng.normal(size=(32, 8, 8, 1)).astype(np.float32),
        y_train=np.arange(32, dtype=np.int32) % 10,  # labels 0..9
        x_test=rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
        y_test=np.arange(16, dtype=np.int32) % 10,
        num_classes=10,
        name="toy",
    )
    return data._replace(**fields)


def changed(array: np.ndarray, index, value) -> np.ndarray:
    """A copy of ``array`` with ``array[index] = value``."""
    array = array.copy()
    array[index] = value
    return array


@pytest.fixture
def no_compiling(monkeypatch):
    """Fails a test that reaches the building of a compiled program: the check came too late."""

    def refuse(*args, **kwargs):
        raise AssertionError("a program was built: the check came too late")

    for module, name in ((train, "build_program"), (sweep_module, "build_program")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(train, "make_chunk", refuse)  # make_train's first compiled piece


# ----------------------------------------------------------------------------- fit and sweep

TOY = toy()
# (model, data, config, hparams, error type, the whole message); `fit` and `sweep` raise alike.
LIBRARY_CASES = {
    "lr-negative": (
        MLP,
        TOY,
        CONFIG,
        Hparams(lr=-0.1),
        ValueError,
        "Hparams.lr must be a finite number > 0, got -0.1",
    ),
    "lr-zero": (
        MLP,
        TOY,
        CONFIG,
        Hparams(lr=0.0),
        ValueError,
        "Hparams.lr must be a finite number > 0, got 0",
    ),
    "lr-nan": (
        MLP,
        TOY,
        CONFIG,
        Hparams(lr=NAN),
        ValueError,
        "Hparams.lr must be a finite number > 0, got nan",
    ),
    "lr-inf": (
        MLP,
        TOY,
        CONFIG,
        Hparams(lr=float("inf")),
        ValueError,
        "Hparams.lr must be a finite number > 0, got inf",
    ),
    "lr-vector": (  # broadcast into every weight: a shape error deep in the first trace
        MLP,
        TOY,
        CONFIG,
        Hparams(lr=np.array([0.1, 0.2])),
        ValueError,
        "Hparams.lr must be a single number (shape ()), got shape (2,)",
    ),
    "config-not-a-train-config": (
        MLP,
        TOY,
        {"steps": 4},
        Hparams(),
        TypeError,
        "config must be a TrainConfig, got {'steps': 4}",
    ),
    "hparams-not-hparams": (
        MLP,
        TOY,
        CONFIG,
        {"lr": 0.1},
        TypeError,
        "hparams must be an Hparams, got {'lr': 0.1}",
    ),
    "lr-string": (
        MLP,
        TOY,
        CONFIG,
        Hparams(lr="0.1"),
        ValueError,
        "Hparams.lr must be a finite number > 0, got '0.1'",
    ),
    "lr-array-element": (
        MLP,
        TOY,
        CONFIG,
        Hparams(lr=np.array([1e-3, -1.0])),
        ValueError,
        "Hparams.lr must be a finite number > 0, got -1 (element 1 of shape (2,))",
    ),
    "weight-decay-negative": (
        MLP,
        TOY,
        CONFIG,
        Hparams(weight_decay=-1e-4),
        ValueError,
        "Hparams.weight_decay must be a finite number >= 0, got -0.0001",
    ),
    "init-scale-zero": (
        MLP,
        TOY,
        CONFIG,
        Hparams(init_scale=0.0),
        ValueError,
        "Hparams.init_scale must be a finite number > 0, got 0",
    ),
    "grad-clip-zero": (
        MLP,
        TOY,
        TrainConfig(steps=4, batch_size=8, grad_clip=0.0),
        Hparams(),
        ValueError,
        "TrainConfig.grad_clip must be > 0 or None, got 0.0",
    ),
    "momentum-one": (
        MLP,
        TOY,
        TrainConfig(steps=4, batch_size=8, optimizer="momentum", momentum=1.0),
        Hparams(),
        ValueError,
        "TrainConfig.momentum must be in [0, 1), got 1.0",
    ),
    "warmup-negative": (
        MLP,
        TOY,
        TrainConfig(steps=4, batch_size=8, warmup_steps=-1),
        Hparams(),
        ValueError,
        "TrainConfig.warmup_steps must be an int >= 0, got -1",
    ),
    "warmup-as-long-as-the-run": (  # the peak learning rate was never reached
        MLP,
        TOY,
        TrainConfig(steps=4, batch_size=8, schedule="warmup_cosine", warmup_steps=4),
        Hparams(),
        ValueError,
        "TrainConfig.warmup_steps must be < steps (4) with schedule 'warmup_cosine' (the peak "
        "learning rate comes at the end of the warm-up), got 4",
    ),
    "convnet-on-flat-inputs": (
        jaxdl.convnet(channels=(4,)),
        toy(x_train=np.zeros((32, 64), np.float32), x_test=np.zeros((16, 64), np.float32)),
        CONFIG,
        Hparams(),
        jaxdl.LayerError,
        "conv 'conv1': expected input [batch, *spatial, channels], got shape (1, 64)",
    ),
    "2d-convnet-on-1d-inputs": (
        jaxdl.convnet(channels=(4,), ndim=2),
        toy(x_train=np.zeros((32, 40, 1), np.float32), x_test=np.zeros((16, 40, 1), np.float32)),
        CONFIG,
        Hparams(),
        jaxdl.LayerError,
        "conv 'conv1': expected input [batch, height, width, channels], got shape (1, 40, 1)",
    ),
    "integer-inputs": (
        MLP,
        toy(x_train=np.zeros((32, 8, 8, 1), np.uint8)),
        CONFIG,
        Hparams(),
        DataError,
        "toy train: inputs x must be floating point (float32; scale raw pixels to [0, 1]), "
        "got dtype uint8",
    ),
    "fewer-outputs-than-classes": (
        jaxdl.mlp(hidden=(8,), num_classes=5),
        TOY,
        CONFIG,
        Hparams(),
        ValueError,
        "model outputs 5 logits but the data set toy has 10 classes: "
        "build the model with num_classes=10",
    ),
    "more-outputs-than-classes": (  # trained silently with 7 logits that never occur
        MLP,
        toy(y_train=TOY.y_train % 3, y_test=TOY.y_test % 3, num_classes=3),
        CONFIG,
        Hparams(),
        ValueError,
        "model outputs 10 logits but the data set toy has 3 classes: "
        "build the model with num_classes=3",
    ),
    "fewer-outputs-than-classes-the-labels-miss": (  # trained: every present label was < 3
        jaxdl.mlp(hidden=(8,), num_classes=3),
        toy(y_train=TOY.y_train % 3, y_test=TOY.y_test % 3),
        CONFIG,
        Hparams(),
        ValueError,
        "model outputs 3 logits but the data set toy has 10 classes: "
        "build the model with num_classes=10",
    ),
    "outputs-not-logits": (
        jaxdl.dense(10),  # no flatten: one output per pixel
        TOY,
        CONFIG,
        Hparams(),
        ValueError,
        "model output: expected logits [batch, num_classes], got shape (1, 8, 8, 10) "
        "for inputs of shape (1, 8, 8, 1)",
    ),
    "label-above-num-classes": (
        MLP,
        toy(y_train=changed(TOY.y_train, 3, 12)),
        CONFIG,
        Hparams(),
        DataError,
        "toy train: 1 label(s) outside [0, 10), the first is y[3] = 12",
    ),
    "label-negative": (
        MLP,
        toy(y_test=changed(TOY.y_test, 0, -1)),
        CONFIG,
        Hparams(),
        DataError,
        "toy test: 1 negative label(s), the first is y[0] = -1",
    ),
    "nan-input": (
        MLP,
        toy(x_train=changed(TOY.x_train, (5, 0, 0, 0), NAN)),
        CONFIG,
        Hparams(),
        DataError,
        "toy train: x has 1 non-finite value(s) (NaN or inf), the first in example 5",
    ),
    "inf-input-in-test": (
        MLP,
        toy(x_test=changed(TOY.x_test, (7, 1, 2, 0), -np.inf)),
        CONFIG,
        Hparams(),
        DataError,
        "toy test: x has 1 non-finite value(s) (NaN or inf), the first in example 7",
    ),
    "empty-train": (
        MLP,
        toy(x_train=TOY.x_train[:0], y_train=TOY.y_train[:0]),
        CONFIG,
        Hparams(),
        DataError,
        "toy train: the data set is empty (x has shape (0, 8, 8, 1))",
    ),
    "empty-test": (
        MLP,
        toy(x_test=TOY.x_test[:0], y_test=TOY.y_test[:0]),
        CONFIG,
        Hparams(),
        DataError,
        "toy test: the data set is empty (x has shape (0, 8, 8, 1))",
    ),
    "lengths-differ": (
        MLP,
        toy(y_train=TOY.y_train[:31]),
        CONFIG,
        Hparams(),
        DataError,
        "toy train: x has 32 examples but y has 31",
    ),
    "train-and-test-shapes-differ": (
        MLP,
        toy(x_test=np.zeros((16, 64), np.float32)),
        CONFIG,
        Hparams(),
        DataError,
        "toy: train and test inputs must match past the batch axis, "
        "got shapes (32, 8, 8, 1) and (16, 64)",
    ),
    "batch-larger-than-data": (
        MLP,
        TOY,
        TrainConfig(steps=4, batch_size=33),
        Hparams(),
        DataError,
        "batch_size must be in [1, num_examples=32], got batch_size=33",
    ),
}


@pytest.mark.parametrize("entry", ["fit", "sweep"])
@pytest.mark.parametrize(
    "model, data, config, hparams, error, message",
    list(LIBRARY_CASES.values()),
    ids=list(LIBRARY_CASES),
)
def test_fit_and_sweep_refuse_bad_input_before_compiling(
    no_compiling, entry, model, data, config, hparams, error, message
):
    with pytest.raises(error) as raised:
        if entry == "fit":
            jaxdl.fit(model, data, config, hparams)
        else:
            jaxdl.sweep(model, data, {"seed": [0, 1]}, config=config, hparams=hparams)
    assert str(raised.value) == message


# (axes, model, error type, the whole message)
SWEEP_CASES = {
    "lr-axis-negative": (
        {"lr": [1e-3, -1.0]},
        MLP,
        ValueError,
        "sweep axis 'lr': each value must be a finite number > 0, got -1",
    ),
    "weight-decay-axis-nan": (
        {"weight_decay": [0.0, NAN]},
        MLP,
        ValueError,
        "sweep axis 'weight_decay': each value must be a finite number >= 0, got nan",
    ),
    "init-scale-axis-zero": (
        {"init_scale": [1.0, 0.0]},
        MLP,
        ValueError,
        "sweep axis 'init_scale': each value must be a finite number > 0, got 0",
    ),
    "seed-axis-float": (
        {"seed": [0, 1.5]},
        MLP,
        ValueError,
        "sweep axis 'seed': each value must be an int in [-2**63, 2**63), got 1.5",
    ),
    "seed-axis-beyond-64-bits": (
        {"init_seed": [0, 2**64]},
        MLP,
        ValueError,
        "sweep axis 'init_seed': each value must be an int in [-2**63, 2**63), "
        "got 18446744073709551616",
    ),
    "group-with-too-few-outputs": (
        {"num_classes": [10, 5]},
        lambda num_classes: jaxdl.mlp(hidden=(8,), num_classes=num_classes),
        ValueError,
        "model outputs 5 logits but the data set toy has 10 classes: "
        "build the model with num_classes=10",
    ),
    "lr-axis-value-a-list": (  # was a shape error deep in the first trace
        {"lr": [[1e-3, 1e-2]]},
        MLP,
        ValueError,
        "sweep axis 'lr': each value must be a single number, got [0.001, 0.01]",
    ),
    "misspelt-traced-axis-with-a-layer": (
        {"lrr": [1e-3]},
        MLP,
        ValueError,
        "sweep axes ['lrr'] are not among the axes a Layer takes (seed, init_seed, data_seed, "
        "lr, weight_decay, init_scale) (did you mean 'lr'?); axes that change the model need "
        "it as a function model(lrr) -> Layer",
    ),
    "width-axis-with-a-layer": (
        {"width": [8, 16]},
        MLP,
        ValueError,
        "sweep axes ['width'] are not among the axes a Layer takes (seed, init_seed, data_seed, "
        "lr, weight_decay, init_scale); axes that change the model need it as a function "
        "model(width) -> Layer",
    ),
    "axis-the-model-function-does-not-take": (
        {"widht": [8]},
        lambda hidden: jaxdl.mlp(hidden=(hidden,)),
        ValueError,
        "sweep: model(widht=8) failed: <lambda>() got an unexpected keyword argument 'widht'",
    ),
}


@pytest.mark.parametrize(
    "axes, model, error, message", list(SWEEP_CASES.values()), ids=list(SWEEP_CASES)
)
def test_sweep_refuses_bad_axes_before_compiling(no_compiling, axes, model, error, message):
    with pytest.raises(error) as raised:
        jaxdl.sweep(model, TOY, axes, config=CONFIG)
    assert str(raised.value) == message


def test_data_given_as_arrays_not_a_dataset_says_how_to_make_one(no_compiling):
    arrays = (np.zeros((8, 4), np.float32), np.zeros(8, np.int32))
    for run in (lambda: jaxdl.fit(MLP, arrays, CONFIG), lambda: jaxdl.sweep(MLP, arrays, {})):
        with pytest.raises(TypeError, match=r"data must be a jaxdl.data.Dataset, got tuple: ") as e:
            run()
        assert "jaxdl.data.Dataset(x_train, y_train, x_test, y_test, num_classes=...)" in str(e)


def test_sweep_names_unknown_config_fields_and_axes_not_given_as_a_mapping(no_compiling):
    # were a TypeError from TrainConfig.__init__ listing nothing, and an AttributeError
    with pytest.raises(
        TypeError,
        match=r"^sweep: unknown TrainConfig field\(s\) \['stepz'\]; "
        r"valid: steps, batch_size, .*skip_nonfinite$",
    ):
        jaxdl.sweep(MLP, TOY, {"seed": [0]}, config=CONFIG, stepz=4)
    with pytest.raises(TypeError, match=r"^sweep: axes must be a mapping \{axis: \[values\]\}"):
        jaxdl.sweep(MLP, TOY, [("seed", [0])], config=CONFIG)


def test_an_axis_replaces_the_base_hparams_value_it_would_check(no_compiling):
    # the base lr is never used (the axis replaces it), so the next check is the one that fails
    big_batch = TrainConfig(steps=4, batch_size=64)
    with pytest.raises(DataError, match=r"^batch_size must be in \[1, num_examples=32\]"):
        jaxdl.sweep(MLP, TOY, {"lr": [1e-3]}, config=big_batch, hparams=Hparams(lr=-1.0))


def test_a_model_that_is_not_a_layer_is_named(no_compiling):
    with pytest.raises(TypeError, match=r"^model must be a Layer .* got <function mlp .*call it"):
        jaxdl.fit(jaxdl.mlp, TOY, CONFIG)
    expected = (
        r"^sweep: model must be a Layer, or a function .* \(none of \['seed'\] does\), got <f"
    )
    with pytest.raises(TypeError, match=expected):
        jaxdl.sweep(lambda: MLP, TOY, {"seed": [0]}, config=CONFIG)


# ----------------------------------------------------------------------------- make_train

# `DeviceData` has no name and no num_classes: labels need only be >= 0 and below the outputs.
MAKE_TRAIN_CASES = {
    "convnet-on-flat-inputs": (
        jaxdl.convnet(channels=(4,)),
        toy(x_train=np.zeros((32, 64), np.float32), x_test=np.zeros((16, 64), np.float32)),
        CONFIG,
        "conv 'conv1': expected input [batch, *spatial, channels], got shape (1, 64)",
    ),
    "label-above-the-outputs": (
        MLP,
        toy(y_train=changed(TOY.y_train, 3, 12)),
        CONFIG,
        "model outputs 10 classes (logits [batch, 10]) but the labels of the data go up to 12: "
        "build it with num_classes=13 or more",
    ),
    "label-negative": (
        MLP,
        toy(y_train=changed(TOY.y_train, 2, -3)),
        CONFIG,
        "data train: 1 negative label(s), the first is y[2] = -3",
    ),
    "nan-input": (
        MLP,
        toy(x_test=changed(TOY.x_test, (1, 0, 0, 0), NAN)),
        CONFIG,
        "data test: x has 1 non-finite value(s) (NaN or inf), the first in example 1",
    ),
    "batch-larger-than-data": (
        MLP,
        TOY,
        TrainConfig(steps=4, batch_size=40, chunk_steps=4),
        "batch_size must be in [1, num_examples=32], got batch_size=40",
    ),
}


@pytest.mark.parametrize(
    "model, data, config, message", list(MAKE_TRAIN_CASES.values()), ids=list(MAKE_TRAIN_CASES)
)
def test_make_train_refuses_bad_input_before_building(no_compiling, model, data, config, message):
    with pytest.raises(ValueError) as raised:
        jaxdl.make_train(model, train.to_device(data), config)
    assert str(raised.value) == message


# ----------------------------------------------------------------------------- the checks


def test_traced_hparams_are_left_to_the_program():
    def checked(lr):
        preflight.check_hparams(Hparams(lr=lr))  # a tracer: nothing to check on the host
        return lr

    assert float(jax.jit(checked)(-1.0)) == -1.0
    preflight.check_hparams(Hparams(lr=1e-30))  # tiny but positive: allowed


def test_huge_but_finite_inputs_are_accepted():
    x = np.full((4, 3), 3e38, np.float32)  # finite, but the sum overflows float32 and float64 not
    jaxdl.data.validate(x, np.zeros(4, np.int32), num_classes=2, name="s")
    x = np.full((4, 3), 1e308)  # the float64 sum overflows: the element check clears it
    jaxdl.data.validate(x, np.zeros(4, np.int32), num_classes=2, name="s")


def test_a_warmup_works_with_every_schedule_and_only_warmup_cosine_uses_it():
    """Other schedules ignore warmup_steps, as other optimizers ignore momentum: a run folder
    saved with one still loads (the CLI warns when the option is given)."""
    for schedule in jaxdl.optimizers.SCHEDULES:
        preflight.check_train_config(TrainConfig(steps=4, schedule=schedule))
        preflight.check_train_config(TrainConfig(steps=4, schedule=schedule, warmup_steps=2))
    preflight.check_train_config(TrainConfig(steps=4, schedule="warmup_cosine", warmup_steps=3))


# ----------------------------------------------------------------------------- losses, evaluate

LOGITS = jnp.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])  # [4, 3]
LABELS = jnp.array([0, 1, 2, 1])  # [4]: 3 of 4 correct


@pytest.mark.parametrize("metric", [jaxdl.accuracy, jaxdl.softmax_cross_entropy])
def test_losses_refuse_labels_not_one_per_row(metric):
    # [4, 1] labels broadcast against [4] predictions to [4, 4]: accuracy 0.3125, not 0.75
    name = metric.__name__
    message = (
        rf"^{name}: expected labels of shape \(4,\) \(one per row of logits \(4, 3\)\), "
        rf"got labels of shape \(4, 1\)"  # no $: under jit, JAX adds a note on tracebacks
    )
    with pytest.raises(ValueError, match=message):
        metric(LOGITS, LABELS[:, None])
    with pytest.raises(ValueError, match=message):
        jax.jit(metric)(LOGITS, LABELS[:, None])  # at trace time
    with pytest.raises(ValueError, match=rf"^{name}: labels must be integer .* got dtype float32$"):
        metric(LOGITS, LABELS.astype(jnp.float32))
    assert float(jaxdl.accuracy(LOGITS, LABELS)) == 0.75


@pytest.mark.parametrize("metric", [jaxdl.accuracy, jaxdl.softmax_cross_entropy])
@pytest.mark.parametrize("label, host", [(-2, False), (3, False), (3, True)])
def test_losses_refuse_concrete_labels_out_of_range(metric, label, host):
    labels = changed(np.asarray(LABELS), 2, label)
    labels = labels if host else jnp.asarray(labels)
    with pytest.raises(
        ValueError,
        match=rf"^{metric.__name__}: labels must lie in \[0, 3\) for 3 classes, got 1 outside, "
        rf"the first labels\[2\] = {label}$",
    ):
        metric(LOGITS, labels)
    jax.jit(metric)(LOGITS, labels)  # traced: not checked (documented), no cost per step


def test_label_checks_leave_the_compiled_program_unchanged():
    def program(logits, labels):  # the checks' shapes are known when traced: nothing computed
        return jaxdl.softmax_cross_entropy(logits, labels), jaxdl.accuracy(logits, labels)

    checked = jax.jit(jax.value_and_grad(program, has_aux=True)).lower(LOGITS, LABELS).as_text()

    def program(logits, labels):  # the same name, so the same module name in the text
        loss = jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))
        return loss, jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))

    plain = jax.jit(jax.value_and_grad(program, has_aux=True)).lower(LOGITS, LABELS).as_text()
    assert checked == plain


EVAL_MODEL = jaxdl.mlp(hidden=(), num_classes=3)
EVAL_X = np.random.default_rng(0).normal(size=(23, 5)).astype(np.float32)
EVAL_Y = np.arange(23, dtype=np.int32) % 3


@pytest.mark.parametrize(
    "y, message",
    [
        (  # was a reshape TypeError, and only when the last batch needed padding
            EVAL_Y[:, None],
            r"^evaluate: expected at least one input and one label per input \(y \[23\]\), "
            r"got x \(23, 5\) and y \(23, 1\)$",
        ),
        (  # was a TypeError deep inside optax
            EVAL_Y.astype(np.float32),
            r"^evaluate: labels y must be integer class indices, got dtype float32$",
        ),
        (  # was {"loss": nan, "accuracy": 0.0}
            changed(EVAL_Y, 4, 3),
            r"^evaluate: y must lie in \[0, 3\) for 3 classes, got 1 outside, the first "
            r"y\[4\] = 3$",
        ),
        (
            changed(EVAL_Y, 0, -1),
            r"^evaluate: y must lie in \[0, 3\) .* the first y\[0\] = -1$",
        ),
    ],
    ids=["labels-n-by-1", "float-labels", "label-too-large", "label-negative"],
)
def test_evaluate_refuses_bad_labels(y, message):
    params, model_state = EVAL_MODEL.init(jax.random.key(0), EVAL_X[:1])
    for labels in (y, jnp.asarray(y)):
        with pytest.raises(ValueError, match=message):
            jaxdl.evaluate(EVAL_MODEL, params, model_state, EVAL_X, labels, batch_size=10)


def test_evaluation_inside_training_copies_no_labels_to_the_host(monkeypatch):
    """`evaluate` checks the range of concrete labels; the programs of `fit`, `sweep` and
    `make_train` (which closes over its data) leave it to `check_fits`, before compiling."""
    copied = []
    host = jaxdl.losses.host_labels

    def watched(labels):
        array = host(labels)
        if array is not None and isinstance(labels, jax.Array):  # copied from a device
            copied.append(array.shape)
        return array

    monkeypatch.setattr(jaxdl.losses, "host_labels", watched)
    train_fn = jaxdl.make_train(MLP, train.to_device(TOY), CONFIG, parts=1)
    jax.eval_shape(train_fn, jax.random.key(0), Hparams().as_arrays())  # traced, not compiled
    assert copied == []
    params, model_state = EVAL_MODEL.init(jax.random.key(0), EVAL_X[:1])
    jaxdl.evaluate(EVAL_MODEL, params, model_state, EVAL_X, jnp.asarray(EVAL_Y))
    assert copied == [(23,)]  # the public entry point checks once


# ----------------------------------------------------------------------------- command line


def run_main(argv):
    """``(status, stdout, stderr)`` of ``cli.main(argv)`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def save_npz(path, x, y):
    np.savez(path, x=x, y=y)
    return str(path)


FLAT = (np.random.default_rng(0).random((50, 6), np.float32), np.arange(50) % 3)
TRAIN = ["--model", "mlp", "--hidden", "8", "--steps", "2", "--chunk-steps", "2"]
# (arguments after ``train``, the message after ``error: ``); "{tmp}" is the test's folder
TRAIN_CLI_CASES = {
    "lr-nan": (["--lr", "nan"], "lr must be a finite number, got nan"),
    "lr-inf": (["--lr", "inf"], "lr must be a finite number, got inf"),
    "weight-decay-negative": (["--weight-decay", "-1"], "weight_decay must be >= 0, got -1.0"),
    "init-scale-zero": (["--init-scale", "0"], "init_scale must be > 0, got 0.0"),
    "momentum-nan": (["--momentum", "nan"], "train.momentum must be in [0, 1), got nan"),
    "momentum-one": (["--momentum", "1"], "train.momentum must be in [0, 1), got 1.0"),
    "unknown-initialiser": (
        ["--init", "xavier"],
        "argument --init: invalid choice: 'xavier' (choose from 'classic', 'normal',",
    ),
    "unknown-schedule": (
        ["--schedule", "lin"],
        "argument --schedule: invalid choice: 'lin' (choose from 'constant', 'cosine',",
    ),
    "num-train-larger-than-data": (
        ["--num-train", "99999"],
        "digits: subset asked for num_train=99999 but the split has 1437",
    ),
    "convnet-on-flat-data": (
        [
            "--data",
            "npz",
            "--data-path",
            "{tmp}/flat.npz",
            "--model",
            "convnet",
            "--batch-size",
            "8",
        ],
        "model 'convnet' needs inputs [batch, *spatial, channels], got inputs with 1 axis past "
        "the batch axis; use model 'mlp'",
    ),
    "nan-in-data": (
        ["--data", "npz", "--data-path", "{tmp}/nan.npz"],
        "npz train: x has 1 non-finite value(s) (NaN or inf), the first in example 4",
    ),
    "empty-data": (
        ["--data", "npz", "--data-path", "{tmp}/empty.npz"],
        "npz train: the data set is empty (x has shape (0, 6))",
    ),
}
SWEEP = ["--model", "mlp", "--hidden", "8", "--seeds", "1", "--steps", "2", "--chunk-steps", "2"]
SWEEP_CLI_CASES = {
    "lr-zero": (["--lr", "0,1e-3"], "lr must be > 0, got 0.0"),
    "lr-empty-list": (["--lr", ","], "argument --lr: expected comma-separated float values"),
    "weight-decay-negative": (
        ["--weight-decay", "0,-1"],
        "sweep axis 'weight_decay': each value must be a finite number >= 0, got -1",
    ),
    "weight-decay-nan": (
        ["--weight-decay", "0,nan"],
        "sweep axis 'weight_decay': each value must be a finite number >= 0, got nan",
    ),
    "init-scale-zero": (
        ["--init-scale", "1,0"],
        "sweep axis 'init_scale': each value must be a finite number > 0, got 0",
    ),
    "momentum-negative": (["--momentum", "-0.5"], "train.momentum must be in [0, 1), got -0.5"),
    "batch-larger-than-data": (
        ["--batch-size", "99999"],
        "batch_size must be in [1, num_examples=1437], got batch_size=99999",
    ),
}


@pytest.mark.parametrize(
    "command, args, message",
    [("train", *case) for case in TRAIN_CLI_CASES.values()]
    + [("sweep", *case) for case in SWEEP_CLI_CASES.values()],
    ids=[f"train-{name}" for name in TRAIN_CLI_CASES]
    + [f"sweep-{name}" for name in SWEEP_CLI_CASES],
)
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, no_compiling, command, args, message):
    save_npz(tmp_path / "flat.npz", *FLAT)
    save_npz(tmp_path / "nan.npz", changed(FLAT[0], (4, 2), NAN), FLAT[1])
    save_npz(tmp_path / "empty.npz", FLAT[0][:0], FLAT[1][:0])
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    common = TRAIN if command == "train" else SWEEP
    out = tmp_path / "out"
    argv = [command, *common, *args, "--out", str(out), "--no-progress"]
    status, _, stderr = run_main(argv)
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert lines[0].startswith(f"error: {message}"), lines[0]
    assert not out.exists()  # nothing written before the configuration is known to be good


# ----------------------------------------------------------------------------- determinism


def test_same_sweep_twice_is_bit_identical():
    axes = {"seed": [0, 1], "lr": [1e-3, 1e-2]}
    first, again = (jaxdl.sweep(MLP, TOY, axes, config=CONFIG) for _ in range(2))
    assert first.members == again.members
    for a, b in zip(first.states, again.states, strict=True):
        chex.assert_trees_all_equal(a.params, b.params)  # bit-identical
    for curve in ("loss", "test_accuracy"):
        np.testing.assert_array_equal(first.histories[curve], again.histories[curve])
    assert not np.array_equal(  # and seeds differ
        first.states[0].params["dense1"]["w"], first.states[2].params["dense1"]["w"]
    )


def test_device_data_is_checked_on_the_device(monkeypatch):
    """A clean `DeviceData` passes without its arrays being copied to the host (the host path,
    `preflight._host`, never sees them; on CPU a transfer guard cannot tell); bad ones, on the
    device too, still get the host check's messages."""
    copied = []
    host = preflight._host

    def watched(value):
        if isinstance(value, jax.Array):
            copied.append(value.shape)
        return host(value)

    monkeypatch.setattr(preflight, "_host", watched)
    device_data = train.to_device(TOY)
    preflight.check_data(device_data)
    preflight.check_model(MLP, device_data)
    assert copied == []

    bad_x = train.to_device(toy(x_train=changed(TOY.x_train, (3, 0, 0, 0), NAN)))
    with pytest.raises(jaxdl.data.DataError, match=r"^data train: x has 1 non-finite value\(s\)"):
        preflight.check_data(bad_x)
    negative = train.to_device(toy(y_test=changed(TOY.y_test, 4, -1)))
    with pytest.raises(jaxdl.data.DataError, match=r"^data test: 1 negative label\(s\), .* = -1$"):
        preflight.check_data(negative)
    above = TOY._replace(  # a Dataset holding jax arrays: checked on the device
        x_train=jax.numpy.asarray(TOY.x_train),
        y_train=jax.numpy.asarray(changed(TOY.y_train, 5, 10)),
    )
    with pytest.raises(jaxdl.data.DataError, match=r"label\(s\) outside \[0, 10\), .*y\[5\] = 10"):
        preflight.check_data(above)
