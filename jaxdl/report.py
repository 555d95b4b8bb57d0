"""A training run's output folder, and `train_and_evaluate`, which trains a `RunConfig` into one.

The folder holds ``config.json`` (the `RunConfig`, enough to rebuild the run), ``metrics.jsonl``
(one row per chunk), TensorBoard event files, ``results.json`` and ``curves.png``. Every file is
written atomically (`jaxdl.io`); tensorboardX and matplotlib are imported only when used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import distributed, sharding
from jaxdl.checkpoint import (
    CONFIG_FILE,
    SWEEP_FILE,
    Checkpointer,
    CheckpointError,
    resume_differences,
    saved_steps,
)
from jaxdl.config import RunConfig, build_model, from_dict, load_data, to_dict
from jaxdl.data.dataset import Dataset
from jaxdl.io import append_jsonl, write_atomic, write_json_atomic
from jaxdl.train import ChunkCallback, History, TrainState, check_fits, evaluate, fit, init_state

SCALARS = ("loss", "train_accuracy", "test_loss", "test_accuracy")  # metrics.jsonl, TensorBoard
# What a resumed run may change: where it writes and how often it saves, not what it computes.
RESUMABLE_FIELDS = ("out", "checkpoint_every")
# What `RunWriter` writes besides config.json (rewritten) and the TensorBoard events.
RUN_OUTPUTS = ("metrics.jsonl", "results.json", "curves.png")


class RunWriter:
    """Writes one run's folder as the run goes: config first, a metrics row per chunk, results last.

    Creating it makes ``out_dir`` (if missing), writes ``config.json`` and opens the TensorBoard
    log; `close` it (or use it as a context manager) to flush the log.

    Args:
      out_dir: the run folder.
      config: the run's `RunConfig`, written as ``config.json``; ``None`` writes none.
      resumed: the run continues from a checkpoint in the folder, so the ``metrics.jsonl`` rows
        and TensorBoard events of the run it continues are kept; otherwise what an earlier run
        wrote there (`RUN_OUTPUTS`, TensorBoard events) is removed first, so that neither its
        rows (`log` replaces only those from the step it logs on) nor, should this run stop
        early, its results sit beside this run's ``config.json``.

    Example:
      >>> with RunWriter("runs/a", config) as writer:
      ...     state, history = jaxdl.fit(model, data, config.train, on_chunk=writer.log)
      ...     writer.finish(history, summarize(history))
    """

    def __init__(
        self, out_dir: str | os.PathLike, config: RunConfig | None = None, *, resumed: bool = False
    ):
        from tensorboardX import SummaryWriter  # heavy (protobuf): only when a run writes

        self.out_dir = os.fspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        if not resumed:
            events = [n for n in os.listdir(self.out_dir) if n.startswith("events.out.tfevents.")]
            for name in (*RUN_OUTPUTS, *events):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path(name))
        if config is not None:
            write_json_atomic(self.path("config.json"), to_dict(config))
        self._started = time.perf_counter()
        self._tensorboard = SummaryWriter(logdir=self.out_dir)

    def path(self, name: str) -> str:
        """The path of file ``name`` in the run folder."""
        return os.path.join(self.out_dir, name)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends a row to ``metrics.jsonl`` and the TensorBoard scalars; a `fit` ``on_chunk``.

        Args:
          step: steps done at the end of the chunk.
          metrics: the chunk's ``loss`` and ``train_accuracy`` (``()`` each), and ``test_loss``
            and ``test_accuracy`` when it was evaluated.
        """
        row: dict[str, Any] = {"step": int(step)}
        row.update({k: float(metrics[k]) for k in SCALARS if k in metrics})
        row["time_s"] = round(time.perf_counter() - self._started, 3)
        append_jsonl(self.path("metrics.jsonl"), row, after_step="step")
        for name in SCALARS:
            if name in row and np.isfinite(row[name]):  # a diverged loss is null in the jsonl
                self._tensorboard.add_scalar(name, row[name], global_step=row["step"])

    def finish(self, history: History, results: Mapping[str, Any]) -> None:
        """Writes ``results.json`` and ``curves.png``, and closes the TensorBoard log.

        Args:
          history: the run's `History` (for the curves).
          results: the run's `summarize` dict.
        """
        write_json_atomic(self.path("results.json"), results)
        if len(history.get("step", ())):
            write_atomic(self.path("curves.png"), plot_curves(history))
        self.close()

    def close(self) -> None:
        """Flushes and closes the TensorBoard log (safe to call twice)."""
        self._tensorboard.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarize(
    history: History, *, diverged_at: int = -1, wall_s: float | None = None, num_params: int = 0
) -> dict[str, Any]:
    """The figures of a finished run, as written to ``results.json``.

    Args:
      history: the run's `History` (numpy arrays, no members axis).
      diverged_at: the state's ``diverged_at`` (``-1``: never diverged).
      wall_s: seconds from the start of training to its end, compilation included.
      num_params: number of trainable parameters.

    Returns:
      ``{"final_test_accuracy", "best_test_accuracy", "best_step", "final_test_loss",
      "final_loss", "final_train_accuracy", "steps", "wall_s", "compile_s", "run_s",
      "num_params", "diverged_at"}``; accuracies are fractions in [0, 1], ``None`` where there
      was no value; ``diverged_at`` is ``None`` for a healthy run.
    """

    def last(key):
        values = np.asarray(history.get(key, ()))
        return values[-1].item() if values.size else None

    test = np.asarray(history.get("test_accuracy", ()), dtype=np.float64)
    best = int(np.nanargmax(test)) if test.size and not np.isnan(test).all() else None
    timings = getattr(history, "timings", {})
    return {
        "final_test_accuracy": last("test_accuracy"),
        "best_test_accuracy": None if best is None else float(test[best]),
        "best_step": None if best is None else int(history["eval_step"][best]),
        "final_test_loss": last("test_loss"),
        "final_loss": last("loss"),
        "final_train_accuracy": last("train_accuracy"),
        "steps": last("step") or 0,
        "wall_s": wall_s,
        "compile_s": timings.get("compile_s"),
        "run_s": timings.get("run_s"),
        "num_params": int(num_params),
        "diverged_at": None if diverged_at < 0 else int(diverged_at),
    }


def log_scale_if_positive(ax, values) -> None:
    """Puts ``ax`` on a log y-scale where the finite ``values`` are all > 0: with none (every
    chunk of a diverged run) matplotlib refuses a log scale, and a 0 would fall off it."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")


def plot_curves(history: History) -> bytes:
    """PNG bytes: train loss vs step (left), train and test accuracy (%) vs step (right).

    Args:
      history: a run's `History`.

    Returns:
      The PNG file's bytes.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss = np.asarray(history["loss"], dtype=np.float64)
    loss_ax.plot(history["step"], loss)
    loss_ax.set(xlabel="step", ylabel="train loss", title="loss")
    log_scale_if_positive(loss_ax, loss)
    acc_ax.plot(history["step"], 100 * np.asarray(history["train_accuracy"]), label="train")
    if len(history.get("eval_step", ())):
        test = 100 * np.asarray(history["test_accuracy"])
        acc_ax.plot(history["eval_step"], test, marker="o", label="test")
    acc_ax.set(xlabel="step", ylabel="accuracy (%)", title="accuracy")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def checkpoint_dir(out_dir: str | os.PathLike) -> str:
    """Where a run folder keeps its checkpoints: ``<out_dir>/checkpoints``."""
    return os.path.join(os.fspath(out_dir), "checkpoints")


def held_checkpoints(out_dir: str | os.PathLike) -> tuple[str, str] | None:
    """Whose checkpoints a run or sweep folder holds, or ``None`` if it holds none.

    ``jaxdl train`` saves orbax step folders in ``<out_dir>/checkpoints/`` (its ``config.json``
    and ``run.json`` beside them are written before the first step is saved: alone they hold
    nothing to resume); ``jaxdl sweep`` writes ``<out_dir>/checkpoints/sweep.json`` before its
    groups' ``group<g>/`` folders, and refuses a new sweep once it is there.

    Args:
      out_dir: the folder.

    Returns:
      ``(command, what)``: ``("train", "checkpoints of a jaxdl train run (steps [20, 40])")`` or
      ``("sweep", "a jaxdl sweep's checkpoints (<out_dir>/checkpoints/sweep.json)")``; ``None``.
    """
    folder = checkpoint_dir(out_dir)
    manifest = os.path.join(folder, SWEEP_FILE)
    if os.path.exists(manifest):
        return "sweep", f"a jaxdl sweep's checkpoints ({manifest})"
    steps = saved_steps(folder)
    if steps:
        return "train", f"checkpoints of a jaxdl train run (steps {steps})"
    return None


def check_out_dir(out_dir: str | os.PathLike, command: str, *, resume: bool) -> None:
    """Refuses to write a run or sweep into a folder holding checkpoints it must not touch: any
    checkpoints for a new (not resumed) one, and another command's for a resumed one.

    Args:
      out_dir: the folder the run or sweep writes.
      command: ``"train"`` or ``"sweep"``: what is about to write there.
      resume: whether it continues the checkpoints in the folder.

    Returns:
      None; a `CheckpointError` names the folder, what it holds and how to continue it.
    """
    held = held_checkpoints(out_dir)
    if held is None or (resume and held[0] == command):
        return
    owner, what = held
    raise CheckpointError(
        f"{os.fspath(out_dir)} holds {what}: continue it with 'jaxdl {owner} --resume "
        f"{os.fspath(out_dir)}', or choose another output folder"
    )


def default_out_dir(cfg: RunConfig, root: str = "runs") -> str:
    """A fresh run folder name for ``cfg``, from its data set, model and the local time.

    Args:
      cfg: the `RunConfig`.
      root: the folder holding the runs.

    Returns:
      ``"<root>/<data>-<model>-<YYYYmmdd-HHMMSS>"``, with ``-2``, ``-3``... if that exists.
    """
    stem = os.path.join(root, f"{cfg.data.name}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out, n = stem, 1
    while os.path.exists(out):
        n += 1
        out = f"{stem}-{n}"
    return out


class RunOutcome(NamedTuple):
    """What `train_and_evaluate` returns.

    Attributes:
      state: the final `TrainState`.
      history: the run's `History`.
      results: the `summarize` dict, as in ``results.json``.
      out_dir: the run folder.
    """

    state: TrainState
    history: History
    results: dict[str, Any]
    out_dir: str


def train_and_evaluate(
    cfg: RunConfig,
    *,
    data: Dataset | None = None,
    on_chunk: ChunkCallback | None = None,
    resume: bool = False,
    mesh=None,
) -> RunOutcome:
    """Trains the run ``cfg`` describes and writes its folder (``cfg.out``, or `default_out_dir`).

    The data set, the batch size, the hyper-parameters and the model against the data are
    checked before the folder is made (`check_fits`), so a bad configuration leaves nothing
    behind.

    Args:
      cfg: the `RunConfig`.
      data: the data set if already loaded (``load_data(cfg.data)``); ``None`` loads it.
      on_chunk: also called after every chunk, after the row is written (progress bars).
      resume: continue from the newest valid checkpoint in ``<out>/checkpoints`` (bit-identical
        to an uninterrupted run); metrics rows past it are replaced, and the results and curves
        cover the whole run (the rows before it read back from ``metrics.jsonl``; the wall and
        compile times are this session's). A folder holding checkpoints is refused
        (`CheckpointError`, see `check_out_dir`) unless they are a run's and ``resume`` is set;
        with it, so are a ``cfg`` that saves none
        (``checkpoint_every=None``) and checkpoints saved under a config that differs from
        ``cfg`` in more than ``out``, ``checkpoint_every`` and what
        `jaxdl.checkpoint.resume_differences` leaves out (chunking, evaluation, and on a
        constant schedule ``train.steps``).
      mesh: a `jaxdl.sharding.make_mesh` mesh for data-parallel training; with several processes
        only process 0 writes the folder's files (every process takes part in checkpoints).

    Returns:
      A `RunOutcome`. A diverged run returns normally: see ``results["diverged_at"]``.

    Example:
      >>> outcome = train_and_evaluate(replace(RunConfig(), {"train.steps": 500}))
      >>> outcome.results["final_test_accuracy"]
    """
    data = load_data(cfg.data) if data is None else data
    model = build_model(cfg.model, data.num_classes, len(data.input_shape))
    check_fits(cfg.train, data, model, cfg.hparams)  # as `fit` will, but before the folder
    out_dir = cfg.out if cfg.out is not None else default_out_dir(cfg)
    cfg = dataclasses.replace(cfg, out=out_dir)  # config.json names its own folder

    # a new run's checkpoints would sit beside another run's (under its config) or a sweep's
    check_out_dir(out_dir, "train", resume=resume)
    saved = saved_steps(checkpoint_dir(out_dir))
    if saved:
        _check_resumable(out_dir, cfg, saved)  # before config.json is rewritten
    main_process = distributed.is_main_process()
    writer = RunWriter(out_dir, cfg, resumed=bool(saved)) if main_process else None
    try:

        def log(step, metrics):
            if writer is not None:
                writer.log(step, metrics)
            if on_chunk is not None:
                on_chunk(step, metrics)

        checkpointer = None
        if cfg.checkpoint_every is not None:
            checkpointer = Checkpointer(checkpoint_dir(out_dir), every=cfg.checkpoint_every)
            if main_process:
                checkpointer.save_config(to_dict(cfg))
        started = time.perf_counter()
        state, history = fit(
            model,
            data,
            cfg.train,
            cfg.hparams,
            seed=cfg.seed,
            on_chunk=log,
            checkpointer=checkpointer,
            resume=resume,
            mesh=mesh,
        )
        wall_s = time.perf_counter() - started
        if resume and writer is not None:  # fit's history starts at the restored checkpoint
            history = _with_logged_past(history, writer.path("metrics.jsonl"))
        num_params = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(state.params))
        results = summarize(
            history,
            diverged_at=int(sharding.fetch(state.diverged_at)),
            wall_s=wall_s,
            num_params=num_params,
        )
        results["mesh"] = sharding.mesh_spec(mesh) if mesh is not None else None
        results["processes"] = jax.process_count()
        if writer is not None:
            writer.finish(history, results)
    finally:
        if writer is not None:
            writer.close()
    return RunOutcome(state, history, results, out_dir)


def _check_resumable(out_dir: str, cfg: RunConfig, saved: list[int]) -> None:
    """Refuses to resume the checkpoints in ``out_dir`` (at steps ``saved``) under ``cfg`` unless
    ``cfg`` saves checkpoints (else it would train afresh) and differs from the config saved
    beside them only in `RESUMABLE_FIELDS` and in what `resume_differences` leaves out (else
    the run would end as neither config's)."""
    if cfg.checkpoint_every is None:
        raise CheckpointError(
            f"resuming {out_dir} (checkpoints at steps {saved}) needs checkpoint_every, got None"
        )
    path = os.path.join(checkpoint_dir(out_dir), CONFIG_FILE)
    if not os.path.exists(path):  # saved by `fit` itself: `Checkpointer.restore` checks shapes
        return
    try:
        with open(path, encoding="utf-8") as f:
            then = to_dict(from_dict(json.load(f)))  # fields added since take their defaults
    except ValueError as error:  # json.JSONDecodeError is one
        raise CheckpointError(f"{path} is not a jaxdl train config: {error}") from None
    now = to_dict(cfg)
    for field in RESUMABLE_FIELDS:
        then.pop(field), now.pop(field)
    found = resume_differences(then, now)
    if found:
        raise CheckpointError(
            f"the checkpoints in {out_dir} were saved under another config ({'; '.join(found)}): "
            f"resume with the config they were saved with (jaxdl train --resume {out_dir} reads "
            "it) or choose a new output folder"
        )


def _with_logged_past(history: History, metrics_path: str) -> History:
    """A resumed run's ``history`` with the chunks before it prepended from ``metrics.jsonl``.

    The rows before the first resumed step were logged by the interrupted run (the resumed one
    replaced the rest), so the results and curves cover the whole run, as an unbroken run's do;
    the timings stay this session's. Rows logged without ``test_loss`` (by an earlier jaxdl) read
    it back as NaN, and so do the per-layer ``grad_norm`` of the logged chunks (not logged).
    """
    if not os.path.exists(metrics_path):
        return history
    first = int(history["step"][0]) if len(history.get("step", ())) else None
    with open(metrics_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    past = [row for row in rows if first is None or row["step"] < first]
    evals = [row for row in past if "test_accuracy" in row]

    def column(records, key):  # null (a non-finite value) reads back as NaN
        values = [np.nan if row.get(key) is None else row[key] for row in records]
        return np.asarray(values, np.float64)

    whole = History(history)
    logged = {
        "step": np.asarray([row["step"] for row in past], np.int64),
        "loss": column(past, "loss"),
        "train_accuracy": column(past, "train_accuracy"),
        "eval_step": np.asarray([row["step"] for row in evals], np.int64),
        "test_loss": column(evals, "test_loss"),
        "test_accuracy": column(evals, "test_accuracy"),
    }
    for key, value in logged.items():
        resumed = np.asarray(history.get(key, ()), value.dtype)
        whole[key] = np.concatenate([value, resumed])
    if "grad_norm" in history:  # [chunks] per layer, as "step"
        whole["grad_norm"] = {
            layer: np.concatenate([np.full(len(past), np.nan), np.asarray(norms, np.float64)])
            for layer, norms in history["grad_norm"].items()
        }
    whole.timings = getattr(history, "timings", {})
    return whole


class RestoredRun(NamedTuple):
    """A run rebuilt from its folder: config, model, data, and the checkpointed state.

    Attributes:
      config: the `RunConfig` from ``config.json``.
      model: the `Layer` it describes.
      data: its data set.
      step: the step of the restored checkpoint.
      state: the restored `TrainState`.
    """

    config: RunConfig
    model: Any
    data: Dataset
    step: int
    state: TrainState


def read_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The `RunConfig` in ``<run_dir>/config.json``; a missing, malformed or invalid file, or a
    sweep's, is a ValueError naming the file and what is wrong.

    Args:
      run_dir: a ``jaxdl train`` run folder.

    Returns:
      The `RunConfig` it was trained with.
    """
    path = os.path.join(os.fspath(run_dir), "config.json")
    if not os.path.exists(path):
        raise ValueError(f"{run_dir}: no config.json (not a jaxdl train folder)")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if not (isinstance(saved, dict) and {"run", "axes"} <= saved.keys()):  # a sweep's
            return from_dict(saved)
    except ValueError as error:  # json.JSONDecodeError is one
        raise ValueError(f"{path} is not a jaxdl train config: {error}") from None
    raise ValueError(
        f"{run_dir} is a jaxdl sweep folder, not a run: give one member's run folder, "
        f"{os.path.join(os.fspath(run_dir), 'members', '<i>')} (i as in results.csv; "
        f"written by jaxdl sweep --save-members)"
    )


def restore_run(run_dir: str | os.PathLike, step: int | None = None) -> RestoredRun:
    """Rebuilds a run's model and optimiser from ``<run_dir>/config.json`` alone and restores its
    newest valid checkpoint (or ``step``), without the script that trained it.

    Args:
      run_dir: a ``jaxdl train`` run folder.
      step: a saved step; ``None`` takes the newest valid one.

    Returns:
      A `RestoredRun`.
    """
    cfg = read_run_config(run_dir)
    folder = checkpoint_dir(run_dir)
    if not saved_steps(folder):  # before orbax, which would create the folder
        raise CheckpointError(
            f"no checkpoints in {folder} (a run saves them every --checkpoint-every N steps)"
        )
    data = load_data(cfg.data)
    model = build_model(cfg.model, data.num_classes, len(data.input_shape))
    example = jax.ShapeDtypeStruct((1, *data.input_shape), jnp.float32)
    template = init_state(
        model,
        cfg.train,
        cfg.hparams.as_arrays(),
        example,
        init_key=jax.random.key(0),
        data_key=jax.random.key(0),
    )
    saved_step, state = Checkpointer(folder).restore(template, step)
    return RestoredRun(cfg, model, data, saved_step, state)


def evaluate_run(run_dir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """Test loss and accuracy of a run folder's checkpoint (newest valid, or ``step``).

    Args:
      run_dir: a ``jaxdl train`` run folder.
      step: a saved step; ``None`` takes the newest valid one.

    Returns:
      ``{"step", "test_loss", "test_accuracy", "num_test"}``.
    """
    run = restore_run(run_dir, step)
    metrics = evaluate(
        run.model,
        run.state.params,
        run.state.model_state,
        jnp.asarray(run.data.x_test),
        jnp.asarray(run.data.y_test),
        batch_size=run.config.train.eval_batch_size,
    )
    return {
        "step": run.step,
        "test_loss": float(metrics["loss"]),
        "test_accuracy": float(metrics["accuracy"]),
        "num_test": run.data.num_test,
    }
