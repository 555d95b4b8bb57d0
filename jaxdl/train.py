"""Whole runs: `fit` trains one network from the host, chunk by chunk, with progress and
checkpoints; `make_train` compiles the same pieces into one pure ``train(key, hparams)``, so a
population of runs is ``jax.vmap`` of it.

The pieces live in `jaxdl.step` (state, step, chunk), `jaxdl.evaluation` and `jaxdl.program`
(compiled programs and their host loop); their public names are re-exported here, so
``jaxdl.train.TrainConfig`` and friends keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from jaxdl import losses, sharding
from jaxdl.checkpoint import CheckpointError, describe_data
from jaxdl.data.dataset import Dataset
from jaxdl.data.device import DeviceData, example_input, to_device
from jaxdl.evaluation import evaluate, evaluate_test
from jaxdl.parts import check_parts, make_population_chunk
from jaxdl.program import (
    ChunkCallback,
    History,
    Program,
    build_program,
    check_fits,
    chunk_plan,
    eval_due,
    run_program,
    seed_array,
    seed_keys,
    stack_history,
)
from jaxdl.step import (
    Hparams,
    LossFn,
    TrainConfig,
    TrainState,
    init_state,
    layer_grad_norms,
    make_batch_step,
    make_chunk,
    make_indices,
    make_optimizer,
    make_step,
)
from jaxdl.types import Layer

__all__ = [
    "ChunkCallback",
    "DeviceData",
    "History",
    "Hparams",
    "LossFn",
    "Program",
    "TrainConfig",
    "TrainState",
    "build_program",
    "check_fits",
    "chunk_plan",
    "describe_run",
    "eval_due",
    "evaluate",
    "evaluate_test",
    "fit",
    "init_state",
    "layer_grad_norms",
    "make_batch_step",
    "make_chunk",
    "make_indices",
    "make_optimizer",
    "make_step",
    "make_train",
    "run_program",
    "seed_array",
    "seed_keys",
    "stack_history",
    "to_device",
]


def fit(
    model: Layer,
    data: Dataset,
    config: TrainConfig = TrainConfig(),
    hparams: Hparams = Hparams(),
    *,
    seed: int = 0,
    loss_fn: LossFn = losses.softmax_cross_entropy,
    on_chunk: ChunkCallback | None = None,
    mesh: Mesh | None = None,
    checkpointer=None,
    resume: bool = False,
) -> tuple[TrainState, History]:
    """Trains one network from the host, chunk by chunk.

    Args:
      model: the `Layer` to train (its output: logits ``[batch, num_classes]``).
      data: a `jaxdl.data.Dataset`.
      config: the run's `TrainConfig`.
      hparams: the run's `Hparams`.
      seed: the run's seed; its key is split into the init key and the data key.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.
      on_chunk: progress callback, see `run_program`.
      mesh: data parallelism: a `jaxdl.sharding.make_mesh` mesh with ``members=1``; each batch is
        split along ``data`` (``batch_size`` must divide evenly), params stay replicated. With
        several processes every process calls `fit` alike (see `jaxdl.distributed`).
      checkpointer: a `jaxdl.checkpoint.Checkpointer`: the state is saved at chunk ends that
        are multiples of its ``every`` and at the last step (never a diverged state), and the
        run's `describe_run` beside it as ``run.json``.
      resume: start from the checkpointer's newest valid checkpoint, if any. The run is
        deterministic (the key and the step are in the state), so a resumed run ends
        bit-identical to an uninterrupted one; its history holds only the chunks run now. A
        run whose config, hparams, seed or data (name, shapes, classes) differ from the
        ``run.json`` saved there is refused
        (`CheckpointError` naming what differs), except in its chunking, its evaluation and, on
        a constant schedule, its ``steps`` (`jaxdl.checkpoint.resume_differences`); a
        checkpoint off the new chunking's chunk ends runs a shorter first chunk to the next one.
        Without it, a checkpointer whose folder already holds checkpoints is refused (they
        would outlive this run's, and orbax's ``keep`` would delete this run's first).

    Returns:
      ``(final TrainState, History)``; ``history.timings`` gives compile and run seconds. On a
      mesh the state's arrays are replicated over it.

    Example:
      >>> state, history = jaxdl.fit(jaxdl.mlp(), jaxdl.data.load("digits"), TrainConfig(steps=500))
      >>> history["test_accuracy"][-1]
    """
    if resume and checkpointer is None:
        raise ValueError("fit: resume=True needs a checkpointer to resume from")
    check_fits(config, data, model, hparams)  # before anything compiles
    seeds = seed_array(seed)  # a ValueError unless an int
    earlier = [] if checkpointer is None or resume else checkpointer.steps()
    if earlier:
        raise CheckpointError(
            f"{checkpointer.directory} holds checkpoints of an earlier run (steps {earlier}): "
            "pass resume=True to continue it, or use a new folder"
        )
    if checkpointer is not None:  # a resumed run must be the run its checkpoints are from
        checkpointer.check_run(describe_run(config, hparams, seed, data), resume=resume)
    device_data = to_device(data, mesh)
    example = example_input(device_data.x_train)
    program = build_program(model, config, example, loss_fn=loss_fn, mesh=mesh)
    seeds, hparams = sharding.place_run((seeds, hparams.as_arrays()), mesh, population=False)
    state = program.init(seeds, seeds, hparams)
    on_state = None
    if checkpointer is not None:
        if resume and checkpointer.steps():
            _, state = checkpointer.restore(state)

        def on_state(step, state):  # a diverged state is never saved: the last finite one stays
            if int(sharding.fetch(state.diverged_at)) < 0:
                checkpointer.save(step, state, force=step == config.steps)

    state, history, timings = run_program(
        program,
        config,
        state,
        hparams,
        device_data,
        on_chunk=on_chunk,
        stop_on_divergence=True,
        on_state=on_state,
    )
    history.timings = timings
    return state, history


def describe_run(config: TrainConfig, hparams: Hparams, seed: int, data: Any) -> dict[str, Any]:
    """What `fit` records beside its checkpoints (``run.json``) and compares when it resumes.

    Args:
      config: the run's `TrainConfig`.
      hparams: its `Hparams`, single numbers (a ``None`` weight decay is recorded as 0.0: the
        same program).
      seed: its seed.
      data: its `jaxdl.data.Dataset` (`jaxdl.checkpoint.describe_data`: name, shapes, classes).

    Returns:
      ``{"train": {...}, "hparams": {"lr": ..., ...}, "seed": ..., "data": {...}}`` in plain
      Python types.
    """
    values = {name: float(value) for name, value in hparams.as_recorded()._asdict().items()}
    train = dataclasses.asdict(config)
    return {"train": train, "hparams": values, "seed": int(seed), "data": describe_data(data)}


def make_train(
    model: Layer,
    data: DeviceData,
    config: TrainConfig,
    *,
    loss_fn: LossFn = losses.softmax_cross_entropy,
    parts: int | str = "auto",
) -> Callable[[jax.Array, Hparams], tuple[TrainState, dict]]:
    """The whole run as one pure function ``train(key, hparams) -> (state, history)``.

    No host round trips: chunks are a ``lax.scan`` and the test set is evaluated after each
    chunk. A population is ``jax.jit(jax.vmap(train))(keys, hparams)``; for a net on images,
    ``compiler_options=jaxdl.compiler_options(model, data.x_train)`` gives the jit the convolution
    kernels `fit` uses on a CPU (`jaxdl.xla_options`). Vmapped on a CPU, a long run's chunks
    step its members in parts side by side on the cores, as `jaxdl.sweep` does
    (`jaxdl.parts.make_population_chunk`: 1.3x the throughput for 8 small MLPs); its gradients
    (``jax.vmap(jax.grad(...))``) are the plain run's.

    Args:
      model: the `Layer` to train.
      data: `DeviceData` (closed over).
      config: the run's `TrainConfig`; its chunks are `fit`'s, ``chunk_steps`` each and the
        last one shorter where ``chunk_steps`` does not divide ``steps``.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.
      parts: how a vmapped population's chunks split its members: ``"auto"``
        (`jaxdl.parts.auto_parts`: on a CPU, in runs of 1000 steps or more, 300 for a ConvNet),
        or at most this many parts (1: one plain vmap).

    Returns:
      ``train(key, hparams)``, returning the final `TrainState` and a dict of stacked metrics
      ``loss``, ``accuracy``, ``test_loss``, ``test_accuracy`` (each ``[chunks]``, ``chunks`` =
        ``ceil(steps / chunk_steps)``; the test set is evaluated after every chunk).
    """
    check_parts("make_train", parts)
    check_fits(config, data, model)  # hparams come with each call, usually traced
    plan = chunk_plan(config)  # chunk_steps each, as fit runs them, the last shorter if need be
    full, rest = config.steps // plan[0], config.steps % plan[0]
    chunk = make_population_chunk(model, config, plan[0], loss_fn, parts=parts)
    last = make_population_chunk(model, config, rest, loss_fn, parts=parts) if rest else None
    example = example_input(data.x_train)

    def step_and_evaluate(chunk_fn, state, hparams):
        state, metrics = chunk_fn(state, hparams, data)
        test = evaluate_test(model, config, state, data, loss_fn)
        return state, {**metrics, "test_loss": test["loss"], "test_accuracy": test["accuracy"]}

    def train(key, hparams: Hparams):
        init_key, data_key = jax.random.split(key)
        state = init_state(model, config, hparams, example, init_key=init_key, data_key=data_key)

        def body(state, _):
            return step_and_evaluate(chunk, state, hparams)

        state, metrics = lax.scan(body, state, None, length=full)  # each [full]
        if last is not None:
            state, tail = step_and_evaluate(last, state, hparams)
            metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, tail)
        return state, metrics

    return train
