"""Checks of a run's inputs before anything is compiled: the optimiser settings and traced
hyper-parameters, the data set's splits, the batch size against the data, and the model against
the data (its input shape and one logit per class). `jaxdl.program.check_fits` runs them for
`jaxdl.fit`, `jaxdl.sweep` and `jaxdl.make_train`; every error names the field, the expected and
the actual value.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxdl._checks import host_array as _host  # None where traced or on other processes
from jaxdl.data.batching import steps_per_epoch
from jaxdl.data.dataset import Dataset
from jaxdl.data.device import DeviceData, example_input
from jaxdl.data.validation import (
    check_same_features,
    label_range,
    validate,
    validate_on_device,
)
from jaxdl.step import SEED_RANGE, Hparams, TrainConfig
from jaxdl.sweep_result import SEED_AXES
from jaxdl.types import Layer

# The lowest value of each traced hyper-parameter and whether that value itself is allowed. A
# learning rate must be > 0 (0 would train nothing); a weight decay of 0 is no decay.
HPARAM_BOUNDS: dict[str, tuple[float, bool]] = {
    "lr": (0.0, False),
    "weight_decay": (0.0, True),
    "init_scale": (0.0, False),
}
OPTIONAL_HPARAMS = ("weight_decay",)  # None: none at all (no term in the program)
TRACED_AXES = (*SEED_AXES, *Hparams._fields)  # sweep axes that do not change the program

__all__ = [
    "HPARAM_BOUNDS",
    "check_axes",
    "check_data",
    "check_hparams",
    "check_model",
    "check_run",
    "check_train_config",
    "sweep_models",
]


def _on_device(value: Any) -> bool:
    """Whether ``value`` is a concrete jax.Array this process holds whole (not traced)."""
    return (
        isinstance(value, jax.Array)
        and not isinstance(value, jax.core.Tracer)
        and value.is_fully_addressable
    )


def _label_max(y: Any) -> int | None:
    """The largest label, reduced where ``y`` lies; ``None`` if it is traced or elsewhere."""
    if _on_device(y):
        return int(jax.device_get(label_range(y)[1]))  # check_data compiled it for this shape
    host = _host(y)
    return None if host is None else int(np.max(host))


def _is_finite_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.integer | np.floating)
        and bool(np.isfinite(value))
    )


def check_train_config(config: TrainConfig, owner: str = "TrainConfig") -> None:
    """Raises a ValueError unless the settings `TrainConfig` hands to optax unchecked are valid.

    `TrainConfig` checks its counts and names itself; these are ``grad_clip`` (> 0 or None),
    ``warmup_steps`` (an int >= 0, and `_check_warmup`) and ``momentum`` (in [0, 1)).

    Args:
      config: the run's `TrainConfig`.
      owner: what the fields are called in messages (``"train"`` in a `jaxdl.config.RunConfig`).

    Returns:
      None.
    """
    clip = config.grad_clip
    if clip is not None and not (_is_finite_number(clip) and clip > 0):
        raise ValueError(f"{owner}.grad_clip must be > 0 or None, got {clip!r}")
    warmup = config.warmup_steps
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"{owner}.warmup_steps must be an int >= 0, got {warmup!r}")
    _check_warmup(config, owner)
    momentum = config.momentum
    if not (_is_finite_number(momentum) and 0 <= momentum < 1):
        raise ValueError(f"{owner}.momentum must be in [0, 1), got {momentum!r}")


def _check_warmup(config: TrainConfig, owner: str) -> None:
    """Raises a ValueError unless a ``"warmup_cosine"`` warm-up ends before ``steps`` (else the
    peak learning rate is never reached). Other schedules ignore ``warmup_steps``, as optimizers
    other than ``"momentum"`` ignore ``momentum`` (the CLI warns about both)."""
    warmup, schedule = config.warmup_steps, config.schedule
    if schedule == "warmup_cosine" and warmup >= config.steps:
        raise ValueError(
            f"{owner}.warmup_steps must be < steps ({config.steps}) with schedule "
            f"'warmup_cosine' (the peak learning rate comes at the end of the warm-up), "
            f"got {warmup}"
        )


def _check_hparam(where: str, field: str, value: Any) -> None:
    """Raises a ValueError unless every concrete element of ``value`` is within ``field``'s
    `HPARAM_BOUNDS`; ``where`` starts the message."""
    lowest, inclusive = HPARAM_BOUNDS[field]
    expected = f"a finite number {'>=' if inclusive else '>'} {lowest:g}"
    array = _host(value)
    if array is None:
        return
    if array.dtype.kind not in "iuf":  # bools, strings, None
        raise ValueError(f"{where} must be {expected}, got {value!r}")
    flat = array.reshape(-1).astype(np.float64)
    bad = ~np.isfinite(flat) | ((flat < lowest) if inclusive else (flat <= lowest))
    if bad.any():
        index = int(np.argmax(bad))
        at = f" (element {index} of shape {array.shape})" if array.ndim else ""
        raise ValueError(f"{where} must be {expected}, got {flat[index]:g}{at}")


def check_hparams(hparams: Hparams, *, skip: Sequence[str] = ()) -> None:
    """Raises a ValueError naming the field unless every concrete value of ``hparams`` is within
    `HPARAM_BOUNDS` (traced values are skipped: they are known only inside the program).

    Args:
      hparams: the run's `Hparams` (floats, or arrays of shape ``()`` or ``[members]``).
      skip: fields not to check (a sweep's axes, which replace them).

    Returns:
      None.

    Example:
      >>> check_hparams(Hparams(lr=-0.1))
      ValueError: Hparams.lr must be a finite number > 0, got -0.1
    """
    for field in Hparams._fields:
        if field not in skip:
            value = getattr(hparams, field)
            if not (value is None and field in OPTIONAL_HPARAMS):
                _check_hparam(f"Hparams.{field}", field, value)


def check_axes(axes: Mapping[str, Sequence[Any]]) -> None:
    """Raises a ValueError naming the axis unless every value of a hyper-parameter axis is within
    `HPARAM_BOUNDS` and every value of a seed axis is an int that `jax.random.key` takes (64-bit).

    Args:
      axes: a sweep's ``{axis: values}``.

    Returns:
      None.
    """
    for name, values in axes.items():
        for value in values:
            if name in HPARAM_BOUNDS:
                if np.ndim(value) != 0:  # one number per member: a list would broadcast
                    raise ValueError(
                        f"sweep axis {name!r}: each value must be a single number, got {value!r}"
                    )
                _check_hparam(f"sweep axis {name!r}: each value", name, value)
            elif name in SEED_AXES and (
                isinstance(value, bool | np.bool_)
                or not isinstance(value, int | np.integer)
                or int(value) not in SEED_RANGE
            ):
                raise ValueError(
                    f"sweep axis {name!r}: each value must be an int in [-2**63, 2**63), "
                    f"got {value!r}"
                )


def check_data(data: Dataset | DeviceData) -> None:
    """Raises `jaxdl.data.DataError` unless both splits are well-formed (`jaxdl.data.validate`:
    lengths, non-empty, float inputs, labels in range, finite inputs) with inputs of one shape.

    A `Dataset` from `jaxdl.data.load` passed these checks when loaded; one built by hand (or a
    `DeviceData`) is checked here. A `DeviceData` has no ``num_classes``: its labels need only be
    ``>= 0``, and `check_model` compares them with the model's outputs.

    Args:
      data: a `Dataset` or a `DeviceData`.

    Returns:
      None. A TypeError if ``data`` is neither.
    """
    if not isinstance(data, Dataset | DeviceData):
        raise TypeError(
            f"data must be a jaxdl.data.Dataset, got {type(data).__name__}: load one with "
            f"jaxdl.data.load(name) or wrap arrays as jaxdl.data.Dataset(x_train, y_train, "
            f"x_test, y_test, num_classes=...)"
        )
    name = getattr(data, "name", "data")
    num_classes = getattr(data, "num_classes", None)
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if _on_device(x) and _on_device(y):  # a DeviceData: reduced where it lies
            validate_on_device(x, y, num_classes=num_classes, name=f"{name} {split}")
            continue
        x, y = _host(x), _host(y)
        if x is not None and y is not None:
            validate(x, y, num_classes=num_classes, name=f"{name} {split}")
    check_same_features(name, data.x_train.shape, data.x_test.shape)


def check_model(model: Layer, data: Dataset | DeviceData) -> None:
    """Raises unless ``model`` takes ``data``'s inputs and outputs one logit per class.

    Only ``jax.eval_shape`` of ``init`` and ``apply`` on one example runs (no compilation, no
    arithmetic): a layer refusing the input raises its `jaxdl.LayerError`, naming the layer, the
    expected and the actual shape.

    Args:
      model: the `Layer` to train.
      data: a `Dataset` or a `DeviceData`, already through `check_data`.

    Returns:
      None. Raises a ValueError unless the output is ``[batch, num_classes]``, with
      ``num_classes`` the data set's where it has one (a `Dataset`), else above every label
      (a `DeviceData`).
    """
    example = example_input(data.x_train)

    def logits_of(x):  # the key is made in the trace: an eager one would compile a program
        params, state = model.init(jax.random.key(0), x)
        return model.apply(params, state, x)[0]

    logits = jax.eval_shape(logits_of, example)
    if len(logits.shape) != 2:
        raise ValueError(
            f"model output: expected logits [batch, num_classes], got shape {logits.shape} "
            f"for inputs of shape {example.shape}"
        )
    outputs = logits.shape[1]
    name = getattr(data, "name", "the data")
    num_classes = getattr(data, "num_classes", None)
    if num_classes is not None:
        # check_data compared every label with num_classes; the model must match it too: more
        # logits train classes that never occur, fewer refuse labels the data set may hold.
        if outputs != num_classes:
            raise ValueError(
                f"model outputs {outputs} logits but the data set {name} has {num_classes} "
                f"classes: build the model with num_classes={num_classes}"
            )
        return  # the labels' largest value below is then known to be below num_classes
    tops = [_label_max(data.y_train), _label_max(data.y_test)]
    if None in tops:
        return
    top = max(tops)
    if outputs <= top:
        raise ValueError(
            f"model outputs {outputs} classes (logits [batch, {outputs}]) but the labels of "
            f"{name} go up to {top}: build it with num_classes={top + 1} or more"
        )


def sweep_models(
    model: Layer | Callable[..., Layer], axes: Mapping[str, Sequence[Any]]
) -> list[Layer]:
    """The model of every shape group of a sweep: ``model`` itself if every axis is traced,
    else ``model(**static values)`` for every combination of the axes that change the program.

    Args:
      model: a `Layer`, or ``model(**static_values) -> Layer`` (see `jaxdl.sweep`).
      axes: the sweep's ``{axis: values}`` (``{}`` for a single run).

    Returns:
      The `Layer` of each group. Raises a TypeError if a model is not a `Layer`, a ValueError if
      the model function refuses the static axes.
    """
    static = [name for name in axes if name not in TRACED_AXES]
    if not static or isinstance(model, Layer):  # `jaxdl.sweep` refuses a Layer with static axes
        if not isinstance(model, Layer) and axes:
            raise TypeError(
                f"sweep: model must be a Layer, or a function of the axes that change the "
                f"program (none of {list(axes)} does), got {model!r}"
            )
        if not isinstance(model, Layer):
            raise TypeError(
                f"model must be a Layer (init, apply, kind), got {model!r}"
                + ("; did you mean to call it?" if callable(model) else "")
            )
        return [model]
    models = []
    for values in itertools.product(*(axes[name] for name in static)):
        kwargs = dict(zip(static, values, strict=True))
        call = f"model({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        try:
            built = model(**kwargs)
        except TypeError as err:  # an axis the function does not take
            raise ValueError(f"sweep: {call} failed: {err}") from err
        if not isinstance(built, Layer):
            raise TypeError(f"sweep: {call} must return a Layer, got {built!r}")
        models.append(built)
    return models


def check_run(
    model: Layer | Callable[..., Layer] | None,
    data: Dataset | DeviceData,
    config: TrainConfig,
    hparams: Hparams | None = None,
    *,
    axes: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Every check of a run (or a sweep) that needs no compilation, cheapest first.

    The order: the types of ``config`` and ``hparams``, the optimiser settings
    (`check_train_config`), the sweep axes (`check_axes`), the hyper-parameters (`check_hparams`;
    each a single number), the data (`check_data`), the batch size against the training set,
    then each model against the data (`check_model`).

    Args:
      model: the `Layer`; in a sweep, possibly ``model(**static_values) -> Layer``; ``None``
        skips the model checks (the model is not built yet).
      data: a `Dataset` or a `DeviceData`.
      config: the run's `TrainConfig`.
      hparams: the run's `Hparams` (in a sweep, the values of the fields that are not axes);
        ``None`` skips them.
      axes: a sweep's ``{axis: values}``.

    Returns:
      None. Raises a TypeError for a ``config`` or ``hparams`` of another type, else a ValueError
      (a `jaxdl.data.DataError` for the data, a `jaxdl.LayerError` for a layer refusing its
      input) naming the field, the expected and the actual value.

    Example:
      >>> check_run(jaxdl.mlp(num_classes=5), jaxdl.data.load("digits"), TrainConfig())
      ValueError: model outputs 5 logits but the data set digits has 10 classes: build the...
    """
    axes = axes or {}
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {config!r}")
    check_train_config(config)
    check_axes(axes)
    if hparams is not None:
        if not isinstance(hparams, Hparams):
            raise TypeError(f"hparams must be an Hparams, got {hparams!r}")
        check_hparams(hparams, skip=tuple(axes))
        for field in Hparams._fields:
            shape = np.shape(getattr(hparams, field))
            if field not in axes and shape != ():  # one run's: a vector would broadcast
                raise ValueError(
                    f"Hparams.{field} must be a single number (shape ()), got shape {shape}"
                )
    check_data(data)
    steps_per_epoch(int(data.x_train.shape[0]), config.batch_size)  # DataError naming both
    if model is not None:
        for group_model in sweep_models(model, axes):
            check_model(group_model, data)
