"""Checkpoints of a sweep: the stacked `TrainState` of every unit of members the strategy runs
together (a vmapped group or chunk, or one member under ``"map"``) with its history so far, and
the sweep's description, which a resume checks against the sweep being run.

The sweep's checkpoint folder ``root`` (the directory of the `Checkpointer` given to
`jaxdl.sweep`) holds::

  sweep.json                     the sweep: axes, TrainConfig, Hparams, strategy, chunk_members
  group<g>/layout.json           the strategy and members per chunk group ``g`` ran with
  group<g>/chunk<c>/<step>/      orbax checkpoints of chunk ``c``'s stacked state
  group<g>/chunk<c>/history.npz  its `History` up to its newest checkpoint

Orbax writes each step whole or not at all; the JSON and npz files are written atomically
(`jaxdl.io`), the history just before the checkpoint, so a checkpoint never lacks its history.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxdl.checkpoint import (
    SWEEP_FILE,
    Checkpointer,
    CheckpointError,
    as_read_back,
    config_differences,
    describe_data,
    read_json,
    recorded_then,
    saved_steps,
    with_new_defaults,
)
from jaxdl.distributed import is_main_process
from jaxdl.io import write_atomic, write_json_atomic
from jaxdl.program import ChunkCallback, History, Program, run_program, stack_history
from jaxdl.step import Hparams, TrainConfig, TrainState

MANIFEST = SWEEP_FILE
LAYOUT = "layout.json"
HISTORY = "history.npz"
EVAL_KEYS = ("eval_step", "test_loss", "test_accuracy")  # one entry per evaluation, not per chunk


def describe_sweep(
    axes: Mapping[str, Sequence[Any]],
    config: TrainConfig,
    hparams: Hparams,
    strategy: str,
    chunk_members: int | None,
    data: Any,
) -> dict[str, Any]:
    """What a sweep is, as JSON: saved as ``sweep.json`` and compared when the sweep resumes.

    Args:
      axes: the sweep's ``{axis: values}``.
      config: its `TrainConfig`.
      hparams: its `Hparams` for the axes not swept.
      strategy: the strategy asked for (``"auto"`` included).
      chunk_members: the members per chunk asked for, or ``None``.
      data: its `jaxdl.data.Dataset` (`jaxdl.checkpoint.describe_data`).

    Returns:
      ``{"axes", "train", "hparams", "strategy", "chunk_members", "data"}`` in plain JSON types
      (tuples as lists), equal to what reading it back from the file gives.
    """
    description = {
        "axes": {name: list(values) for name, values in axes.items()},
        "train": dataclasses.asdict(config),
        "hparams": hparams._asdict(),
        "strategy": strategy,
        "chunk_members": chunk_members,
        "data": describe_data(data),
    }
    return as_read_back(description)


@dataclasses.dataclass(frozen=True)
class GroupCheckpoints:
    """The checkpoints of one group of a sweep: its layout and one `Checkpointer` per chunk.

    Attributes:
      directory: the group's folder, ``<root>/group<g>``.
      every: save every ``every`` steps (and at the end).
      keep: checkpoints kept per chunk.
      resume: whether the sweep resumes from what the folder holds.
    """

    directory: str
    every: int
    keep: int
    resume: bool

    def layout(self) -> tuple[str, int, int] | None:
        """``(strategy, chunk_members, parts)`` the group first ran with, when resuming; else
        ``None``.

        A resumed group runs its members in the same chunks (``"chunked"`` without
        ``chunk_members`` estimates the chunk size from memory, which may differ between runs)
        and parts (`jaxdl.sweep.Plan`; 1 in folders saved before parts were recorded), so that it
        continues bit for bit as it began.
        """
        path = os.path.join(self.directory, LAYOUT)
        if not self.resume or not os.path.exists(path):
            return None
        saved = read_json(path)
        return saved["strategy"], saved["chunk_members"], saved.get("parts", 1)

    def save_layout(self, strategy: str, chunk_members: int, parts: int = 1) -> None:
        """Writes the group's ``layout.json`` (process 0 only)."""
        if is_main_process():
            os.makedirs(self.directory, exist_ok=True)
            layout = {"strategy": strategy, "chunk_members": chunk_members, "parts": parts}
            write_json_atomic(os.path.join(self.directory, LAYOUT), layout)

    def chunk(self, index: int) -> Checkpointer:
        """The `Checkpointer` of the group's chunk ``index`` (member ``index`` under ``"map"``)."""
        directory = os.path.join(self.directory, f"chunk{index}")
        return Checkpointer(directory, every=self.every, keep=self.keep)


class SweepCheckpointer:
    """A sweep's checkpoint folder: checks or writes ``sweep.json``, hands out `GroupCheckpoints`.

    Args:
      root: the `Checkpointer` given to `jaxdl.sweep`; its ``directory`` is the sweep's folder,
        its ``every`` and ``keep`` apply to every chunk.
      description: `describe_sweep` of the sweep being run.
      resume: continue from the checkpoints in the folder. A folder that already holds a
        sweep's checkpoints needs ``resume`` (nothing is overwritten), and must then hold this
        sweep's: if its ``sweep.json`` differs, the error names what differs. A folder
        holding a run's checkpoints (`jaxdl.fit`'s) is refused.
    """

    def __init__(self, root: Checkpointer, description: Mapping[str, Any], *, resume: bool):
        self.root, self.resume = root, resume
        path = os.path.join(root.directory, MANIFEST)
        run_steps = saved_steps(root.directory)
        if run_steps:
            raise CheckpointError(
                f"{root.directory} holds a run's checkpoints (steps {run_steps}), not a "
                f"sweep's: give the sweep a folder of its own"
            )
        if not os.path.exists(path):
            if is_main_process():
                write_json_atomic(path, description)
            return
        if not resume:
            raise CheckpointError(
                f"{root.directory} already holds a sweep's checkpoints: pass resume=True to "
                f"continue it, or give another folder"
            )
        saved = with_new_defaults(read_json(path))
        found = config_differences(saved, recorded_then(saved, dict(description)))
        if found:
            raise CheckpointError(
                f"sweep checkpoint {root.directory} was saved by a different sweep: "
                + "; ".join(found)
            )

    def group(self, index: int) -> GroupCheckpoints:
        """The checkpoints of group ``index`` (groups in the order `jaxdl.sweep` runs them)."""
        directory = os.path.join(self.root.directory, f"group{index}")
        return GroupCheckpoints(directory, self.root.every, self.root.keep, self.resume)


# ----------------------------------------------------------------------------- histories


def _steps_of(values: np.ndarray) -> np.ndarray:
    """The steps of a ``step`` or ``eval_step`` array, ``[chunks]`` or ``[members, chunks]``,
    as ``[chunks]`` (every member of a unit is at the same step)."""
    values = np.asarray(values)
    return values.reshape(-1, values.shape[-1])[0]


def cut_history(history: Mapping[str, Any], step: int) -> History:
    """The chunks and evaluations of ``history`` that end at or before ``step``.

    Args:
      history: a `History`, arrays ``[..., chunks]`` and ``[..., evaluations]``.
      step: the last step kept.

    Returns:
      A `History` of the same keys, each array cut along its last axis.
    """
    kept = History()
    for key, value in history.items():
        reference = "eval_step" if key in EVAL_KEYS else "step"
        mask = _steps_of(history[reference]) <= step
        kept[key] = jax.tree.map(lambda x, mask=mask: np.asarray(x)[..., mask], value)
    return kept


def concat_history(first: Mapping[str, Any], second: Mapping[str, Any]) -> History:
    """``second`` appended to ``first`` along the last (chunk or evaluation) axis.

    Args:
      first: the history of the earlier chunks (e.g. restored with a checkpoint).
      second: the history of the chunks after them; a key absent from one is taken from the other.

    Returns:
      The `History` of the whole run.
    """
    whole = History(first)
    for key, value in second.items():
        if key in whole:
            value = jax.tree.map(lambda a, b: np.concatenate([a, b], axis=-1), whole[key], value)
        whole[key] = value
    return whole


def save_history(directory: str, history: Mapping[str, Any]) -> None:
    """Writes ``history`` to ``<directory>/history.npz`` atomically (``grad_norm`` layers as
    ``grad_norm/<layer>``)."""
    flat = {}
    for key, value in history.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{name}": np.asarray(v) for name, v in value.items()})
        else:
            flat[key] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    write_atomic(os.path.join(directory, HISTORY), buffer.getvalue())


def load_history(directory: str, step: int) -> History:
    """The history saved in ``directory``, cut to the chunks and evaluations up to ``step``.

    Args:
      directory: a chunk's checkpoint folder.
      step: the step of the checkpoint restored with it.

    Returns:
      The `History` of the run up to ``step``. Raises `CheckpointError` if the file is missing
      or does not reach ``step``.
    """
    path = os.path.join(directory, HISTORY)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint folder {directory} has no {HISTORY}")
    history = History()
    with np.load(path, allow_pickle=False) as saved:  # plain arrays: no code runs
        for name in saved.files:
            key, _, layer = name.partition("/")
            if layer:
                history.setdefault(key, {})[layer] = saved[name]
            else:
                history[key] = saved[name]
    history = cut_history(history, step)
    reached = int(_steps_of(history["step"])[-1]) if "step" in history else 0
    if reached != step:
        raise CheckpointError(f"{path} ends at step {reached}, its checkpoint is at step {step}")
    return history


# ----------------------------------------------------------------------------- running a unit


def run_unit(
    program: Program,
    config: TrainConfig,
    state: TrainState,
    hparams: Hparams,
    data,
    *,
    on_chunk: ChunkCallback | None = None,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
) -> tuple[TrainState, History]:
    """Runs one unit of a sweep (one run, or a vmapped chunk of members) to ``config.steps``.

    With a ``checkpointer``, its state (members stacked) and its history so far are saved at
    every chunk end that is a multiple of ``checkpointer.every`` and at the end, diverged
    members included (they are frozen, and the others must not be held back).

    Args:
      program: from `jaxdl.program.build_program`.
      config: the sweep's `TrainConfig`.
      state: the unit's initial state (also the template a checkpoint is checked against).
      hparams: the unit's `Hparams` (arrays, ``[members]`` for a chunk).
      data: the `jaxdl.data.DeviceData`.
      on_chunk: called after every chunk run, see `jaxdl.program.run_program`.
      checkpointer: where the unit's checkpoints go; ``None``: none.
      resume: start from the newest valid checkpoint, if any. Runs are deterministic, so the
        unit ends bit-identical to an uninterrupted one; a completed unit runs no chunk.

    Returns:
      ``(final state, History of the whole run)``, the restored part's history included.
    """
    if checkpointer is None:
        state, history, _ = run_program(program, config, state, hparams, data, on_chunk=on_chunk)
        return state, history
    try:
        past = History()
        if resume and checkpointer.steps():
            step, state = checkpointer.restore(state)
            past = load_history(checkpointer.directory, step)
        chunks, evals, latest = [], [], {}

        def record(step, report):  # run_program calls on_state right after, for the same step
            chunks.append({k: v for k, v in report.items() if k not in EVAL_KEYS})
            if "test_accuracy" in report:
                evals.append(
                    {
                        "eval_step": report["step"],
                        "test_loss": report["test_loss"],
                        "test_accuracy": report["test_accuracy"],
                    }
                )
            latest["report"] = report

        def on_state(step, state):  # saves before the caller's on_chunk, which may stop the sweep
            final = step == config.steps
            if checkpointer.due(step, force=final):
                if is_main_process():  # the history first: a checkpoint never lacks its history
                    so_far = concat_history(past, stack_history(chunks, evals))
                    save_history(checkpointer.directory, so_far)
                checkpointer.save(step, state, force=final)
            if on_chunk is not None:
                on_chunk(step, latest["report"])

        state, history, _ = run_program(
            program, config, state, hparams, data, on_chunk=record, on_state=on_state
        )
    finally:
        checkpointer.close()
    return state, concat_history(past, history)
