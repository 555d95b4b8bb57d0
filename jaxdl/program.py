"""Programs: the jitted init, chunks and evaluation of a run (or a vmapped population of runs),
and the host loop that drives them chunk by chunk, evaluating when due.

`jaxdl.train.fit` and `jaxdl.sweep` both run a `Program`, so a member of a sweep executes the
same compiled pieces as a run trained alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from jaxdl import losses, preflight, sharding
from jaxdl._checks import is_count
from jaxdl.data.dataset import Dataset
from jaxdl.data.device import DeviceData
from jaxdl.evaluation import evaluate_test
from jaxdl.step import (
    SEED_RANGE,
    Hparams,
    LossFn,
    TrainConfig,
    TrainState,
    init_state,
    make_chunk,
    make_parted_chunk,
)
from jaxdl.types import Layer
from jaxdl.xla_options import compiler_options, init_options


def check_fits(
    config: TrainConfig,
    data: Dataset | DeviceData,
    model: Layer | Callable[..., Layer] | None = None,
    hparams: Hparams | None = None,
    *,
    axes: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Raises before any compilation if the run cannot work: bad optimiser settings or
    hyper-parameters, a malformed data set, batches larger than it, a model refusing its inputs
    or with fewer outputs than classes (`jaxdl.preflight.check_run`).

    Args:
      config: the run's `TrainConfig`.
      data: a `Dataset` or a `DeviceData`.
      model: the `Layer` (in a sweep, possibly a function of the static axes); ``None`` skips
        the model checks.
      hparams: the run's `Hparams`; ``None`` skips them.
      axes: a sweep's ``{axis: values}``.

    Returns:
      None. The error names the field, the expected and the actual value.
    """
    preflight.check_run(model, data, config, hparams, axes=axes)


def chunk_plan(config: TrainConfig) -> list[int]:
    """Lengths of the chunks of a run: ``chunk_steps`` each, the last one shorter if need be."""
    size = min(config.chunk_steps, config.steps)
    full, rest = divmod(config.steps, size)
    return [size] * full + ([rest] if rest else [])


def chunks_from(config: TrainConfig, step: int) -> list[int]:
    """Lengths of the chunks that take a run from ``step`` to ``config.steps``: `chunk_plan`'s
    from there on, the first one cut short where ``step`` is not a chunk end (a checkpoint saved
    with another chunking). The batches depend on the step only, so the result does not change."""
    sizes, end = [], 0
    for size in chunk_plan(config):
        end += size
        if end > step:
            sizes.append(min(size, end - step))
    return sizes


class Chunks(dict):
    """``{num_steps: chunk}``, the jitted chunk of any other length built on first use."""

    def __init__(self, build: Callable[[int], Callable], sizes):
        super().__init__({n: build(n) for n in sizes})
        self._build = build

    def __missing__(self, num_steps: int) -> Callable:
        self[num_steps] = chunk = self._build(num_steps)
        return chunk


def eval_due(config: TrainConfig, step_before: int, step_after: int) -> bool:
    """Whether an evaluation falls in ``(step_before, step_after]`` or the run ends there."""
    return (
        step_after // config.eval_every > step_before // config.eval_every
        or step_after == config.steps
    )


class History(dict):
    """A run's metrics: ``step``, ``loss``, ``train_accuracy`` (``[chunks]``), ``eval_step``,
    ``test_loss``, ``test_accuracy`` (``[evaluations]``), ``grad_norm`` ``{layer: [chunks]}``;
    with a leading ``[members]`` axis in a sweep. Numpy arrays."""


def stack_history(chunks: list[dict], evals: list[dict]) -> History:
    """Stacks per-chunk and per-evaluation records (dicts of arrays) along a new leading axis."""

    def stack(records):
        return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs], axis=-1), *records)

    history = History()
    if chunks:
        history.update(stack(chunks))
    if evals:
        history.update(stack(evals))
    return history


def seed_array(seed: int | Sequence[int]) -> np.ndarray:
    """Seeds as the array a program's init takes, each read as `jax.random.key` reads a Python
    int: its low 32 bits (``-1`` and ``2**32 - 1`` give the same key), or with
    ``jax_enable_x64`` all 64.

    Args:
      seed: an int (a NumPy or 0-d array integer too), or a sequence or 1-D array of ints (one
        per member); each in ``[-2**63, 2**63)``, as `jax.random.key` accepts.

    Returns:
      ``uint32`` (``int64`` with x64) array of shape ``()`` or ``[members]``.

    Raises:
      ValueError: a seed that is not an int (``1.5``, ``True``, ``"3"``: `int` would silently
        turn each into another seed), or one outside the 64-bit range.
    """
    scalar = np.ndim(seed) == 0
    values = list(np.ravel(seed) if scalar else seed)
    for value in values:
        # an int, a NumPy int or an integer 0-d array (JAX's too); bool is not an integer dtype
        integer = isinstance(value, int) or np.issubdtype(np.asarray(value).dtype, np.integer)
        if isinstance(value, bool) or not integer:
            raise ValueError(f"seed must be an int, got {seed if scalar else value!r}")
        if np.ndim(value) != 0:
            raise ValueError(f"seeds must be ints (one per member), got {value!r}")
        if int(value) not in SEED_RANGE:
            raise ValueError(f"seed {value} does not fit in 64 bits ([-2**63, 2**63))")
    values = [int(value) for value in values]
    if jax.config.jax_enable_x64:
        seeds = np.asarray(values, dtype=np.int64)
    else:
        seeds = np.asarray([value % 2**32 for value in values], dtype=np.uint32)
    return seeds.reshape(()) if scalar else seeds


def seed_keys(init_seed: jax.Array, data_seed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A run's ``(init_key, data_key)``: the first half of the split of ``key(init_seed)`` and
    the second half of the split of ``key(data_seed)``; with one seed for both, the two halves of
    ``jax.random.split(jax.random.key(seed))``, as `jaxdl.fit` documents.

    Args:
      init_seed: from `seed_array`, shape ``()``; may be traced.
      data_seed: from `seed_array`, shape ``()``; may be traced.

    Returns:
      Two typed keys, each of shape ``()``.
    """
    init_key = jax.random.split(jax.random.key(init_seed))[0]
    data_key = jax.random.split(jax.random.key(data_seed))[1]
    return init_key, data_key


class Program(NamedTuple):
    """The compiled pieces of a run, possibly vmapped over a population of members.

    Attributes:
      init: ``init(init_seed, data_seed, hparams) -> TrainState``, seeds from `seed_array`:
        the keys are derived inside the program (`seed_keys`), so starting a run compiles no
        eager key programs.
      chunks: ``{num_steps: chunk(state, hparams, data) -> (state, metrics)}``, one per length
        of `chunk_plan`; another length is built (and compiled) on first use.
      evaluate: ``evaluate(state, data) -> {"loss", "accuracy"}`` on the test split.
    """

    init: Callable
    chunks: dict[int, Callable]
    evaluate: Callable


def build_program(
    model: Layer,
    config: TrainConfig,
    example: Any,
    *,
    loss_fn: LossFn = losses.softmax_cross_entropy,
    population: bool = False,
    parts: int = 1,
    mesh: Mesh | None = None,
) -> Program:
    """Jitted init, chunk and evaluation functions of one run, or of a population of runs.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      example: an example input ``[batch, ...features]`` (shape and dtype only).
      loss_fn: ``loss_fn(logits, labels) -> scalar``.
      population: vmap every function over a leading ``[members]`` axis of seeds, hparams and
        state (the data is shared).
      parts: a population's chunks run its members as this many independent vmapped parts,
        side by side on a CPU's cores (`jaxdl.step.make_parted_chunk`); 1: one vmap.
      mesh: a `jaxdl.sharding.make_mesh` mesh to run on: batches split along ``data``, members
        along ``members``; the functions then expect inputs placed as `jaxdl.sharding` says
        (`to_device` with the mesh, `jaxdl.sharding.place_run`). ``None``: the default device.

    Returns:
      A `Program`.
    """
    if mesh is not None:
        sharding.check_program(mesh, batch_size=config.batch_size, population=population)
    if not is_count(parts):
        raise ValueError(f"build_program: parts must be a positive int, got {parts!r}")
    if parts != 1 and (not population or mesh is not None):
        raise ValueError(
            f"build_program: parts={parts!r} needs a population without a mesh "
            f"(population={population}, mesh={mesh is not None})"
        )

    def init(init_seed, data_seed, hparams):
        init_key, data_key = seed_keys(init_seed, data_seed)
        return init_state(model, config, hparams, example, init_key=init_key, data_key=data_key)

    def test_metrics(state, data):
        return evaluate_test(model, config, state, data, loss_fn)

    run = shared = None
    if mesh is not None:
        run = sharding.run_sharding(mesh, population=population)
        shared = sharding.shared_sharding(mesh)

    def jitted(fn, in_axes, out_shardings, **jit_kwargs):
        """jit of ``fn`` (vmapped in a population); on a mesh, per-run arguments (``in_axes`` 0)
        go on `run`, shared ones (the data) on `shared`."""
        if population:
            spmd_axis = None if mesh is None else sharding.MEMBERS
            fn = jax.vmap(fn, in_axes=in_axes, spmd_axis_name=spmd_axis)
        if mesh is not None:
            jit_kwargs["in_shardings"] = tuple(run if a == 0 else shared for a in in_axes)
            jit_kwargs["out_shardings"] = out_shardings
        return jax.jit(fn, **jit_kwargs)

    platform = sharding.platform(mesh)
    # Parts (or several local devices) already run side by side on the cores, so they keep XLA's
    # single-threaded YNNPACK convolutions (a ConvNet pair: 0.91x with the options, NOTES.md 18).
    side_by_side = parts > 1 or (mesh is not None and len(mesh.local_devices) > 1)
    options = None if side_by_side else compiler_options(model, example, backend=platform)

    def compiled_chunk(num_steps):
        jit_options = {"donate_argnums": 0, "compiler_options": options}
        if parts > 1:  # vmapped part by part inside the chunk
            chunk = make_parted_chunk(model, config, num_steps, parts, loss_fn)
            return jax.jit(chunk, **jit_options)
        chunk = make_chunk(model, config, num_steps, loss_fn, mesh=mesh)
        return jitted(chunk, (0, 0, None), (run, shared), **jit_options)

    chunks = Chunks(compiled_chunk, sorted(set(chunk_plan(config))))
    return Program(
        jitted(init, (0, 0, 0), run, compiler_options=init_options(platform)),
        chunks,
        jitted(test_metrics, (0, None), shared, compiler_options=options),
    )


ChunkCallback = Callable[[int, dict[str, Any]], None]


def run_program(
    program: Program,
    config: TrainConfig,
    state: TrainState,
    hparams: Hparams,
    data: DeviceData,
    *,
    on_chunk: ChunkCallback | None = None,
    stop_on_divergence: bool = False,
    on_state: Callable[[int, TrainState], None] | None = None,
) -> tuple[TrainState, History, dict[str, float]]:
    """Runs a program's chunks from ``state`` to ``config.steps``, evaluating when due.

    Args:
      program: from `build_program`.
      config: the run's `TrainConfig`.
      state: the state to start from: step 0, or a restored checkpoint at any step up to
        ``config.steps`` (one saved with another chunking runs a shorter first chunk, to this
        ``config``'s next chunk end; a later step is a ValueError).
      hparams: the run's `Hparams` (arrays).
      data: the `DeviceData`.
      on_chunk: called after every chunk with the step reached and that chunk's metrics (plus
        ``test_accuracy`` and ``test_loss`` when an evaluation ran); for progress bars, logs and
        sweep checkpoints (which keep the history so far).
      stop_on_divergence: stop after the chunk in which every member diverged, evaluating it.
      on_state: called after every chunk, after ``on_chunk``, with the step reached and the
        state (checkpointing: a checkpoint at step ``s`` comes after the logs up to ``s``).

    Returns:
      ``(final state, History, timings)`` where timings holds ``compile_s`` (first chunk, which
      includes compilation) and ``run_s`` (the rest), in seconds.
    """
    chunks, evals = [], []
    timings = {"compile_s": 0.0, "run_s": 0.0}
    step = int(np.min(sharding.fetch(state.step)))
    if step > config.steps:
        raise ValueError(
            f"run_program: the state is at step {step}, past the end of this run "
            f"(steps={config.steps}); resume a checkpoint with at least the steps it has run"
        )
    done = step
    for size in chunks_from(config, step):
        started = time.perf_counter()
        state, metrics = program.chunks[size](state, hparams, data)
        metrics = jax.device_get(metrics)
        timings["compile_s" if not chunks else "run_s"] += time.perf_counter() - started
        before, done = done, done + size
        at = np.full(np.shape(metrics["loss"]), done)  # () for a run, [members] for a population
        record = {
            "step": at,
            "loss": metrics["loss"],
            "train_accuracy": metrics["accuracy"],
        }
        if "grad_norm" in metrics:
            record["grad_norm"] = metrics["grad_norm"]
        chunks.append(record)
        report = dict(record)
        # A run stopped here ends here: its last evaluation is of its final (frozen) state.
        stop = stop_on_divergence and np.all(sharding.fetch(state.diverged_at) >= 0)
        if stop or eval_due(config, before, done):
            test = jax.device_get(program.evaluate(state, data))
            evals.append(
                {
                    "eval_step": at,
                    "test_loss": test["loss"],
                    "test_accuracy": test["accuracy"],
                }
            )
            report["test_accuracy"] = test["accuracy"]
            report["test_loss"] = test["loss"]
        # Logs first, then the checkpoint: a run killed in between resumes from the previous
        # checkpoint and rewrites this chunk's rows, while the other order would lose them.
        if on_chunk is not None:
            on_chunk(done, report)
        if on_state is not None:
            on_state(done, state)
        if stop:
            break
    return state, stack_history(chunks, evals), timings
