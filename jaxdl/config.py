"""A run's whole configuration as frozen dataclasses, its JSON form, and what it builds.

`RunConfig` holds a `ModelConfig`, a `DataConfig`, a `jaxdl.train.TrainConfig` and the traced
hyper-parameters; every field is checked when the object is made. `to_dict` / `from_dict` round-trip
it through JSON (a run folder's ``config.json`` rebuilds the run), `replace` changes fields by
dotted name (``"train.steps"``), `build_model` and `load_data` make what it describes.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

from jaxdl import data as data_lib
from jaxdl import initializers, models, preflight
from jaxdl._checks import is_count, is_number
from jaxdl.layers.activations import NAMES as ACTIVATIONS
from jaxdl.step import SEED_RANGE
from jaxdl.train import Hparams, TrainConfig
from jaxdl.types import Layer

MODELS: tuple[str, ...] = ("mlp", "convnet", "logistic")
POOLS: tuple[str, ...] = ("max", "avg", "none")
NORMS: tuple[str, ...] = ("none", "layer", "batch")
# Each model's initialiser when ModelConfig.init is None: Glorot suits the dense nets, He the
# ReLU conv stacks (the recipes' own defaults in jaxdl.models).
DEFAULT_INIT = {"mlp": "glorot_uniform", "logistic": "glorot_uniform", "convnet": "he_normal"}
# Each model's hidden widths when ModelConfig.hidden is None.
DEFAULT_HIDDEN = {"mlp": (256, 256), "logistic": (), "convnet": ()}


def _choice(owner: str, field: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{owner}.{field}: unknown value {value!r}; valid: {', '.join(valid)}")


def _int_tuple(owner: str, field: str, value: Any, *, allow_empty: bool) -> tuple[int, ...]:
    """``value`` as a tuple of positive Python ints (a list from JSON, NumPy ints are accepted)."""
    ok = isinstance(value, list | tuple) and all(is_count(v) for v in value)
    if not ok or (not allow_empty and not value):
        kind = "a tuple of positive ints" + ("" if allow_empty else " (at least one)")
        raise ValueError(f"{owner}.{field} must be {kind}, got {value!r}")
    return tuple(int(v) for v in value)


def _number(name: str, value: Any) -> float:
    """``value``, a finite real number, as a Python number: a NumPy one (a grid's) would not
    survive `json.dumps`, as in `TrainConfig`."""
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value if type(value) in (int, float) else float(value)  # np.float64 too


def _set(config, field: str, value: Any) -> None:
    """Sets ``field`` of a frozen ``config`` in its ``__post_init__`` (a value made plain)."""
    object.__setattr__(config, field, value)


def hidden_of(hidden: tuple[int, ...] | None, name: str) -> tuple[int, ...]:
    """The hidden widths model ``name`` is built with: ``hidden``, or its default."""
    return hidden if hidden is not None else DEFAULT_HIDDEN[name]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network to build; `build_model` makes it. Every field is static (fixes the program)."""

    name: str = "convnet"  # one of MODELS; "logistic" is an mlp without hidden layers
    activation: str = "relu"  # after every hidden (dense or conv) layer; one of layer ACTIVATIONS
    init: str | None = None  # initialiser of every w (initializers.NAMES); None: DEFAULT_INIT
    hidden: tuple[int, ...] | None = None  # dense hidden widths; None: DEFAULT_HIDDEN of the model
    channels: tuple[int, ...] = (32, 32, 32)  # convnet: output channels of each conv block
    kernel: int = 5  # convnet: receptive field of every conv, along each spatial axis
    pool: str = "max"  # convnet: pooling by 2 after each conv block, one of POOLS
    dropout: float = 0.0  # fraction of dense hidden units zeroed in training, in [0, 1)
    norm: str = "none"  # normalisation before each hidden activation, one of NORMS

    def __post_init__(self):
        owner = "model"
        _choice(owner, "name", self.name, MODELS)
        _choice(owner, "activation", self.activation, ACTIVATIONS)
        if self.init is not None:
            _choice(owner, "init", self.init, initializers.NAMES)
        if self.hidden is not None:
            hidden = _int_tuple(owner, "hidden", self.hidden, allow_empty=True)
            object.__setattr__(self, "hidden", hidden)  # lists from JSON compare equal as tuples
            if self.name == "logistic" and hidden:
                raise ValueError(f"model.hidden must be empty for 'logistic', got {hidden}")
        channels = _int_tuple(owner, "channels", self.channels, allow_empty=False)
        object.__setattr__(self, "channels", channels)
        if not is_count(self.kernel):
            raise ValueError(f"model.kernel must be a positive int, got {self.kernel!r}")
        _set(self, "kernel", int(self.kernel))
        _choice(owner, "pool", self.pool, POOLS)
        _choice(owner, "norm", self.norm, NORMS)
        _set(self, "dropout", _number("model.dropout", self.dropout))
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        if self.dropout and not self.resolved_hidden:  # it would silently drop nothing
            raise ValueError(
                f"model.dropout acts on dense hidden layers and model {self.name!r} has none "
                f"(model.hidden {self.resolved_hidden}): give hidden widths (--hidden 128) or "
                f"leave dropout at 0, got {self.dropout!r}"
            )
        if self.norm != "none" and self.name != "convnet" and not self.resolved_hidden:
            raise ValueError(  # the recipe refuses it too: it would normalise nothing
                f"model.norm acts before dense hidden activations and model {self.name!r} has "
                f"none (model.hidden {self.resolved_hidden}): give hidden widths (--hidden 128) "
                f"or leave norm at 'none', got {self.norm!r}"
            )

    @property
    def resolved_init(self) -> str:
        """The initialiser name used: ``init``, or the model's default."""
        return self.init if self.init is not None else DEFAULT_INIT[self.name]

    @property
    def resolved_hidden(self) -> tuple[int, ...]:
        """The hidden widths used: ``hidden``, or the model's default."""
        return hidden_of(self.hidden, self.name)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data set to train on; `load_data` loads it."""

    name: str = "digits"  # a name jaxdl.data.load knows (unknown names fail there, listing them)
    path: str | None = None  # file or folder to read (mnist, cifar10, npz); None for built-in sets
    num_train: int | None = None  # keep only the first num_train training examples; None: all
    num_test: int | None = None  # keep only the first num_test test examples; None: all

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"data.name must be a non-empty string, got {self.name!r}")
        if self.path is not None and not isinstance(self.path, str):
            raise ValueError(f"data.path must be a string or None, got {self.path!r}")
        for field in ("num_train", "num_test"):
            value = getattr(self, field)
            if value is not None and not is_count(value):
                raise ValueError(f"data.{field} must be a positive int or None, got {value!r}")
            _set(self, field, None if value is None else int(value))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; ``config.json`` in a run folder is its `to_dict`."""

    model: ModelConfig = ModelConfig()  # the network
    data: DataConfig = DataConfig()  # the data set
    train: TrainConfig = TrainConfig()  # steps, batches, optimiser: what the program does
    lr: float = 1e-3  # peak learning rate (Hparams.lr)
    weight_decay: float = 0.0  # weight-decay coefficient (Hparams.weight_decay), >= 0
    init_scale: float = 1.0  # multiplies every initial weight w (Hparams.init_scale), > 0
    seed: int = 0  # split into the init key and the data-order key
    checkpoint_every: int | None = 500  # save the state every N steps and at the end; None: never
    out: str | None = None  # output folder; None: the caller picks one (the CLI: runs/<name>)

    def __post_init__(self):
        for field, kind in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            value = getattr(self, field)
            if not isinstance(value, kind):
                raise ValueError(f"{field} must be a {kind.__name__}, got {value!r}")
        for field in ("lr", "weight_decay", "init_scale"):
            _set(self, field, _number(field, getattr(self, field)))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale!r}")
        seed = self.seed
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            seed = None  # refused below; a NumPy int is taken, as `TrainConfig`'s counts are
        if seed is None or int(seed) not in SEED_RANGE:
            # checked here, not first by `fit`: a bad seed then leaves no run folder behind
            raise ValueError(f"seed must be an int in [-2**63, 2**63), got {self.seed!r}")
        _set(self, "seed", int(seed))
        every = self.checkpoint_every
        if every is not None and not is_count(every):
            raise ValueError(f"checkpoint_every must be a positive int or None, got {every!r}")
        _set(self, "checkpoint_every", None if every is None else int(every))
        if self.out is not None and not isinstance(self.out, str):
            raise ValueError(f"out must be a string or None, got {self.out!r}")
        # TrainConfig checks its counts and names; what it hands to optax unchecked (grad_clip,
        # warmup_steps, momentum) jaxdl.preflight checks, here and again in fit and sweep.
        preflight.check_train_config(self.train, owner="train")

    @property
    def hparams(self) -> Hparams:
        """The traced hyper-parameters of the run."""
        return Hparams(lr=self.lr, weight_decay=self.weight_decay, init_scale=self.init_scale)


_SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def build_model(model_cfg: ModelConfig, num_classes: int, input_ndim: int) -> Layer:
    """The `Layer` a `ModelConfig` describes.

    Args:
      model_cfg: the `ModelConfig`.
      num_classes: number of outputs (logits).
      input_ndim: axes of one input, without the batch axis (3 for ``[8, 8, 1]`` images, 2 for
        ``[40, 1]`` sequences); a convnet convolves over all but the last (channels).

    Returns:
      A `Layer` mapping ``[batch, ...features]`` to logits ``[batch, num_classes]``.

    Example:
      >>> model = build_model(ModelConfig(name="mlp", hidden=(64,)), 10, input_ndim=3)
    """
    cfg = model_cfg
    norm = None if cfg.norm == "none" else cfg.norm
    common = dict(
        num_classes=num_classes,
        activation=cfg.activation,
        init=cfg.resolved_init,
        dropout=cfg.dropout,
        norm=norm,
    )
    if cfg.name in ("mlp", "logistic"):
        return models.mlp(hidden=cfg.resolved_hidden, **common)
    if input_ndim < 2:
        raise ValueError(
            f"model 'convnet' needs inputs [batch, *spatial, channels], got inputs with "
            f"{input_ndim} axis past the batch axis; use model 'mlp'"
        )
    return models.convnet(
        channels=cfg.channels,
        kernel=cfg.kernel,
        pool=None if cfg.pool == "none" else cfg.pool,
        hidden=cfg.resolved_hidden,
        ndim=input_ndim - 1,
        **common,
    )


def load_data(data_cfg: DataConfig) -> data_lib.Dataset:
    """Loads the data set a `DataConfig` describes, cut to ``num_train`` / ``num_test``.

    Args:
      data_cfg: the `DataConfig`.

    Returns:
      A `jaxdl.data.Dataset`. Raises `jaxdl.data.DataError` for unknown names and bad files.
    """
    data = data_lib.load(data_cfg.name, path=data_cfg.path)
    if data_cfg.num_train is None and data_cfg.num_test is None:
        return data
    return data.subset(data_cfg.num_train, data_cfg.num_test)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """A `RunConfig` as a JSON-compatible dict (tuples become lists); `from_dict` inverts it.

    Args:
      cfg: the `RunConfig`.

    Returns:
      ``{"model": {...}, "data": {...}, "train": {...}, "lr": ..., ...}``.
    """

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def _make(kind: type, values: Mapping[str, Any], where: str):
    """``kind(**values)``, an unknown key being an error that lists the valid ones."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where or 'config'} must be a dict, got {values!r}")
    valid = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid: {', '.join(prefix + k for k in valid)}"
        )
    return kind(**values)


def from_dict(d: Mapping[str, Any]) -> RunConfig:
    """The `RunConfig` of a dict from `to_dict` (or ``config.json``); missing keys take defaults.

    Args:
      d: ``{"model": {...}, "data": {...}, "train": {...}, "lr": ..., ...}``; any subset.

    Returns:
      A `RunConfig`. Raises ValueError on an unknown key (listing the valid ones) or a bad value.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"config must be a dict, got {d!r}")
    values = dict(d)
    for section, kind in _SECTIONS.items():
        if section in values and not isinstance(values[section], kind):
            values[section] = _make(kind, values[section], section)
    return _make(RunConfig, values, "")


def valid_keys() -> list[str]:
    """Every key `replace` accepts.

    Returns:
      The top-level fields, the sections and their fields, in order: ``["model", "model.name",
      ..., "train.steps", ..., "lr", ...]``.
    """
    keys = []
    for field in dataclasses.fields(RunConfig):
        keys.append(field.name)
        if field.name in _SECTIONS:
            keys += [f"{field.name}.{f.name}" for f in dataclasses.fields(_SECTIONS[field.name])]
    return keys


def replace(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with fields changed by dotted key; the result is validated anew.

    Args:
      cfg: the `RunConfig`.
      overrides: ``{"train.steps": 500, "model.hidden": (64, 64), "lr": 3e-3}``; a section name
        (``"model"``) takes a whole `ModelConfig`.

    Returns:
      A new `RunConfig`. Raises ValueError on an unknown key, listing the valid ones.

    Example:
      >>> replace(RunConfig(), {"train.steps": 500, "model.name": "mlp"}).train.steps
      500
    """
    valid = valid_keys()
    unknown = [key for key in overrides if key not in valid]
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    top = {k: v for k, v in overrides.items() if "." not in k}
    sections = {}
    for section in _SECTIONS:
        prefix = section + "."
        fields = {k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)}
        if fields:
            base = top.get(section, getattr(cfg, section))
            sections[section] = dataclasses.replace(base, **fields)
    return dataclasses.replace(cfg, **{**top, **sections})
