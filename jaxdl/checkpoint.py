"""Checkpoints of a run's `TrainState`, through orbax's ``CheckpointManager``.

A checkpoint folder holds orbax step folders (``<dir>/<step>/``) and, beside them, ``config.json``:
the run's configuration, enough to rebuild its model and optimiser without the original script.
Orbax writes each step to a temporary folder and renames it when complete, so a killed run leaves
only whole checkpoints; a damaged one (truncated files) is detected at restore, reported by name,
and skipped for the newest valid one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxdl._checks import is_count
from jaxdl.distributed import is_main_process
from jaxdl.io import to_jsonable, write_json_atomic
from jaxdl.step import TrainConfig, TrainState

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"  # what `fit` ran: its TrainConfig, Hparams and seed
SWEEP_FILE = "sweep.json"  # what `jaxdl.sweep` ran (`jaxdl.sweep_checkpoint`)


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: damaged, missing, or of another model/config."""


def _to_saveable(state: TrainState) -> dict[str, Any]:
    """The state as a dict of plain arrays (the typed PRNG key as its raw uint32 data)."""
    fields = state._asdict()
    fields["key"] = jax.random.key_data(state.key)
    return fields


def _from_saved(fields: Mapping[str, Any], template: TrainState) -> TrainState:
    """The state `_to_saveable` saved, its key typed again if ``template``'s is typed (a legacy
    uint32 ``PRNGKey`` comes back as one)."""
    fields = dict(fields)
    if jax.dtypes.issubdtype(template.key.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(template.key)
        fields["key"] = jax.random.wrap_key_data(fields["key"], impl=impl)
    return TrainState(**fields)


def _leaves(tree) -> dict[str, Any]:
    """``{"params/dense1/w": leaf, ...}`` for every leaf."""

    def name(entry):  # dict key, attribute name (NamedTuple fields) or sequence index
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(name(p) for p in path): leaf for path, leaf in flat}


def _leaf_shapes(tree) -> dict[str, tuple]:
    """``{"params/dense1/w": (64, 10), ...}`` for every leaf."""
    return {path: tuple(np.shape(leaf)) for path, leaf in _leaves(tree).items()}


def _leaf_dtypes(tree) -> dict[str, str]:
    """``{"params/dense1/w": "float32", ...}`` for every leaf that has a dtype."""
    dtypes = {path: getattr(leaf, "dtype", None) for path, leaf in _leaves(tree).items()}
    return {path: np.dtype(dtype).name for path, dtype in dtypes.items() if dtype is not None}


def describe_dtype_mismatch(expected: dict[str, str], found: dict[str, str]) -> str:
    """What differs between two ``{path: dtype}`` maps, in one line (empty if nothing).

    Orbax casts a restored array to the template's dtype without a word, so a float32
    checkpoint restored into a bfloat16 state would come back rounded: a different run.
    """
    params_first = sorted(set(expected) & set(found), key=lambda k: (not k.startswith("params"), k))
    retyped = [
        f"{k}: expected {expected[k]}, found {found[k]}"
        for k in params_first
        if expected[k] != found[k]
    ]
    return "dtypes differ: " + "; ".join(retyped[:5]) if retyped else ""


def describe_mismatch(expected: dict[str, tuple], found: dict[str, tuple]) -> str:
    """What differs between two ``{path: shape}`` maps, in one line (empty if nothing)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    params_first = sorted(set(expected) & set(found), key=lambda k: (not k.startswith("params"), k))
    reshaped = [
        f"{k}: expected {expected[k]}, found {found[k]}"
        for k in params_first
        if tuple(expected[k]) != tuple(found[k])
    ]
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if reshaped:
        parts.append("shapes differ: " + "; ".join(reshaped[:5]))
    return "; ".join(parts)


def read_json(path: str) -> Any:
    """The JSON in ``path``; malformed JSON is a `CheckpointError` naming the file."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path}: not valid JSON ({error})") from error


def as_read_back(value: Any) -> Any:
    """``value`` in plain JSON types, as reading it back from a JSON file gives it."""
    return json.loads(json.dumps(to_jsonable(value)))


def with_new_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the `TrainConfig` fields added since it was written set to their defaults,
    so a run or sweep saved before a field existed resumes when the field keeps its default."""
    if not isinstance(saved.get("train"), dict):
        return saved
    defaults = as_read_back(dataclasses.asdict(TrainConfig()))
    return {**saved, "train": {**defaults, **saved["train"]}}


def describe_data(data) -> dict[str, Any]:
    """What a resume compares of a run's data: the name, the shapes of both splits' inputs and
    the number of classes (a `jaxdl.data.DeviceData` has no name or class count: ``None``)."""
    return {
        "name": getattr(data, "name", None),
        "x_train": list(data.x_train.shape),
        "x_test": list(data.x_test.shape),
        "num_classes": getattr(data, "num_classes", None),
    }


LATER_ENTRIES = ("data",)  # recorded in run.json and sweep.json since the eighth session


def recorded_then(saved: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, Any]:
    """``now`` without the entries (`LATER_ENTRIES`) that ``saved``, written by an earlier
    jaxdl, did not record: those folders resume as they did."""
    return {k: v for k, v in now.items() if k in saved or k not in LATER_ENTRIES}


def resume_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """`config_differences` of two run descriptions (each with a ``"train"`` dict of
    `TrainConfig` fields) in what a resumed run may not change: it may change how it is chunked
    and evaluated, and, where both schedules are constant (the length then changes nothing
    else), how long it runs."""
    constant = saved.get("train", {}).get("schedule") == "constant"
    constant = constant and now.get("train", {}).get("schedule") == "constant"
    ignored = ("chunk_steps", "eval_every", "eval_batch_size", *(("steps",) if constant else ()))

    def comparable(description):
        train = {k: v for k, v in description.get("train", {}).items() if k not in ignored}
        return {**description, "train": train}

    return config_differences(comparable(saved), comparable(now))


def config_differences(saved: Any, now: Any, path: str = "") -> list[str]:
    """Where two JSON configurations differ, one entry per differing leaf: what a resume checks
    between the configuration saved beside the checkpoints and the one it runs under.

    Args:
      saved: the configuration read from the checkpoint folder.
      now: the configuration of the run or sweep being run.
      path: the dotted name of ``saved`` within its parent (``""`` at the top).

    Returns:
      ``["train.steps: saved 40, now 60", "axes.lr: saved [0.001, 0.003], now [0.001]"]``;
      empty if they are equal.
    """
    if isinstance(saved, dict) and isinstance(now, dict):
        found = []
        for key in [*saved, *(k for k in now if k not in saved)]:
            name = f"{path}.{key}" if path else key
            if key not in now:
                found.append(f"{name}: saved {saved[key]!r}, now absent")
            elif key not in saved:
                found.append(f"{name}: absent when saved, now {now[key]!r}")
            else:
                found += config_differences(saved[key], now[key], name)
        return found
    return [] if saved == now else [f"{path}: saved {saved!r}, now {now!r}"]


def saved_steps(directory: str | os.PathLike) -> list[int]:
    """The steps saved in a checkpoint folder (its step-named subfolders), without opening it
    with orbax: none if the folder does not exist.

    Args:
      directory: a `Checkpointer`'s folder.

    Returns:
      The steps, ascending.
    """
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


class Checkpointer:
    """Saves a run's state every ``every`` steps and at the end, keeping the newest ``keep``.

    Args:
      directory: the checkpoint folder (created if missing).
      every: save when the step reached is a multiple of ``every`` (and at the end: ``force``).
      keep: number of newest checkpoints kept.
    """

    def __init__(self, directory: str | os.PathLike, *, every: int = 500, keep: int = 3):
        for field, value in (("every", every), ("keep", keep)):
            if not is_count(value):
                raise CheckpointError(
                    f"Checkpointer {field} must be a positive int, got {value!r} ({directory})"
                )
        import orbax.checkpoint as ocp  # heavy: imported only when checkpointing

        self._ocp = ocp
        self._written: set[int] = set()  # steps this Checkpointer saved
        self.directory = os.path.abspath(directory)
        self.every = every
        self.keep = keep
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def save_config(self, config: Mapping[str, Any]) -> None:
        """Writes ``config.json`` beside the checkpoints, atomically.

        Args:
          config: a JSON-compatible dict describing the run.

        Returns:
          None.
        """
        write_json_atomic(os.path.join(self.directory, CONFIG_FILE), config)

    def load_config(self) -> dict[str, Any]:
        """The ``config.json`` saved beside the checkpoints.

        Returns:
          The dict given to `save_config`.
        """
        path = os.path.join(self.directory, CONFIG_FILE)
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint folder {self.directory} has no {CONFIG_FILE}")
        return read_json(path)

    def check_run(self, description: Mapping[str, Any], *, resume: bool) -> None:
        """Records what the run saving here is (``run.json``); a run resuming from checkpoints
        here must be the same one: otherwise a `CheckpointError` names what differs.

        Args:
          description: the run as JSON-compatible values (`jaxdl.fit`: its ``TrainConfig``,
            ``Hparams``, seed and data, `jaxdl.train.describe_run`).
          resume: whether the run resumes from the checkpoints in the folder.

        Returns:
          None. Process 0 writes ``run.json`` (atomically) unless a resumed run's is there. A
          folder holding a sweep's checkpoints is refused.
        """
        if os.path.exists(os.path.join(self.directory, SWEEP_FILE)):
            raise CheckpointError(
                f"{self.directory} holds a sweep's checkpoints ({SWEEP_FILE}), not a run's: "
                "give the run a folder of its own"
            )
        path = os.path.join(self.directory, RUN_FILE)
        description = as_read_back(description)
        if resume and self.steps() and os.path.exists(path):
            saved = read_json(path)
            if not isinstance(saved, dict):
                raise CheckpointError(
                    f"{path}: expected a JSON object (a run description), got {saved!r:.80}"
                )
            found = resume_differences(with_new_defaults(saved), recorded_then(saved, description))
            if found:
                raise CheckpointError(
                    f"the checkpoints in {self.directory} were saved by another run: "
                    + "; ".join(found)
                )
        elif is_main_process():
            write_json_atomic(path, description)

    def due(self, step: int, *, force: bool = False) -> bool:
        """Whether `save` at ``step`` would be due: ``force``, or ``step`` a multiple of ``every``.

        Args:
          step: the step the state has reached.
          force: a save at the end of a run.

        Returns:
          ``force or step % every == 0``.
        """
        return force or step % self.every == 0

    def save(self, step: int, state: TrainState, *, force: bool = False) -> bool:
        """Saves ``state`` as step ``step`` if it is due (a multiple of ``every``) or ``force``.

        A step this `Checkpointer` already saved is not saved again; a step already on disk from
        before (the damaged checkpoint a resumed run fell back from) is replaced.

        Args:
          step: the step the state has reached.
          state: the `TrainState` (or a stacked population of them).
          force: save even if ``step`` is not a multiple of ``every``.

        Returns:
          Whether a checkpoint was written.
        """
        if not self.due(step, force=force):
            return False
        if step in self._written:
            return False
        if step in self._manager.all_steps():
            self._manager.delete(step)
        saved = self._manager.save(
            step, args=self._ocp.args.StandardSave(_to_saveable(state)), force=True
        )
        self._manager.wait_until_finished()
        if saved:
            self._written.add(step)
        return saved

    def steps(self) -> list[int]:
        """The saved steps, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore(self, template: TrainState, step: int | None = None) -> tuple[int, TrainState]:
        """The newest checkpoint that restores cleanly (or ``step``), checked against ``template``.

        A damaged newest checkpoint is reported by a warning naming it, and the next older one is
        tried. A checkpoint whose names, shapes or dtypes differ from ``template`` raises at once,
        saying what differs: it belongs to another model or config (orbax would cast a dtype).

        Args:
          template: a `TrainState` of the run being resumed (e.g. its initial state).
          step: restore exactly this step instead of the newest valid one.

        Returns:
          ``(step, state)``.
        """
        saved = self.steps()
        if not saved:
            raise CheckpointError(f"no checkpoints in {self.directory}")
        if step is not None and step not in saved:
            raise CheckpointError(
                f"no checkpoint of step {step} in {self.directory}, the saved steps are {saved}"
            )
        steps = saved if step is None else [step]
        expected = _to_saveable(template)
        expected_shapes, expected_dtypes = _leaf_shapes(expected), _leaf_dtypes(expected)
        for candidate in reversed(steps):
            path = os.path.join(self.directory, str(candidate))
            found = self._saved_leaves(candidate)
            if found is not None:
                differences = (
                    describe_mismatch(expected_shapes, _leaf_shapes(found)),
                    describe_dtype_mismatch(expected_dtypes, _leaf_dtypes(found)),
                )
                difference = "; ".join(d for d in differences if d)
                if difference:
                    raise CheckpointError(
                        f"checkpoint {path} is from a different model or config: {difference}"
                    )
            try:
                restored = self._manager.restore(
                    candidate, args=self._ocp.args.StandardRestore(expected)
                )
            except Exception as error:  # orbax raises many types for damaged files
                reason = f"{type(error).__name__}: {error}"
                message = f"checkpoint {path} is damaged and was skipped ({reason})"
                if step is not None:
                    raise CheckpointError(message) from error
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                continue
            return candidate, _from_saved(restored, template)
        raise CheckpointError(
            f"no valid checkpoint in {self.directory}: all of {steps} are damaged"
        )

    def _saved_leaves(self, step: int) -> Any:
        """The tree of leaf metadata (orbax's, with ``shape`` and ``dtype``) recorded in a
        checkpoint, or None if unreadable."""
        try:
            metadata = self._manager.item_metadata(step)
        except Exception:
            return None
        return getattr(metadata, "tree", metadata)

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
