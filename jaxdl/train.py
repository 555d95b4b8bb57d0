"""Training: the train state, the pure step and chunk, evaluation, and whole runs.

A run is ``init_state`` then ``run_chunk`` repeated (each a ``lax.scan`` over steps) with
``evaluate`` between chunks. `fit` drives them from the host, reporting progress between chunks;
`make_train` compiles the same pieces into one pure ``train(key, hparams)``, so a population of
runs is ``jax.vmap`` of it. `jaxdl.sweep` uses the same pieces, vmapped, so a member of a sweep
equals the run trained alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxdl import losses, optimizers, sharding
from jaxdl.data.batching import chunk_indices, steps_per_epoch
from jaxdl.data.dataset import Dataset
from jaxdl.types import Layer

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class Hparams(NamedTuple):
    """Hyper-parameters that may be traced (differ between the members of a sweep).

    Attributes:
      lr: peak learning rate, shape ``()``.
      weight_decay: weight-decay coefficient, shape ``()``.
      init_scale: multiplies every initial weight ``w`` (not biases or norm scales), shape ``()``.
    """

    lr: Any = 1e-3
    weight_decay: Any = 0.0
    init_scale: Any = 1.0

    def as_arrays(self) -> Hparams:
        """The same values as float32 arrays of shape ``()`` (or ``[members]``), for tracing."""
        return Hparams(*(jnp.asarray(v, jnp.float32) for v in self))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What a run does, besides its traced `Hparams`. Every field is static (fixes the program)."""

    steps: int = 2000  # training steps (one batch each)
    batch_size: int = 128  # examples per step
    optimizer: str = "adam"  # one of optimizers.OPTIMIZERS
    schedule: str = "constant"  # one of optimizers.SCHEDULES
    warmup_steps: int = 0  # linear warm-up length for "warmup_cosine"
    momentum: float = 0.9  # for optimizer="momentum"
    grad_clip: float | None = None  # clip gradients to this global norm; None: no clipping
    chunk_steps: int = 100  # steps per compiled chunk: metrics and progress granularity
    eval_every: int = 500  # steps between test evaluations (rounded up to whole chunks)
    eval_batch_size: int = 1000  # examples per evaluation batch (memory, not results)
    record_grad_norms: bool = False  # per-layer gradient norms in the history
    unroll: int = 1  # lax.scan unroll within a chunk

    def __post_init__(self):
        optimizers.check_names(self.optimizer, self.schedule)
        for field in ("steps", "batch_size", "chunk_steps", "eval_every", "eval_batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{field} must be a positive int, got {value!r}")


class TrainState(NamedTuple):
    """Everything a run carries from step to step; a pytree of arrays.

    Attributes:
      params: the model's trainable parameters.
      model_state: the model's non-trainable state (running statistics), ``{}`` if none.
      opt_state: the optax optimiser state.
      step: steps taken, shape ``()``, int32.
      key: the run's data key: batch order and dropout of step ``s`` derive from it and ``s``.
      diverged_at: first step whose loss or gradients were non-finite, ``-1`` if none, shape
        ``()``, int32. From that step on the run is frozen (params stop changing).
    """

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    diverged_at: jax.Array


class DeviceData(NamedTuple):
    """A data set's arrays on the device.

    Attributes:
      x_train: ``[N, ...features]`` float32.
      y_train: ``[N]`` int32.
      x_test: ``[M, ...features]`` float32.
      y_test: ``[M]`` int32.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def to_device(data: Dataset, mesh: Mesh | None = None) -> DeviceData:
    """Moves a `Dataset`'s arrays to the default device, or replicates them over a mesh.

    Args:
      data: a `jaxdl.data.Dataset`.
      mesh: a `jaxdl.sharding.make_mesh` mesh: every device gets the whole data set.

    Returns:
      A `DeviceData` with the same arrays.
    """
    arrays = (data.x_train, data.y_train, data.x_test, data.y_test)
    if mesh is not None:
        return DeviceData(*sharding.place_shared(arrays, mesh))
    return DeviceData(*(jnp.asarray(a) for a in arrays))


def make_optimizer(config: TrainConfig, hparams: Hparams) -> optax.GradientTransformation:
    """The optax optimiser of a run (built inside the trace so ``hparams`` may be traced).

    Args:
      config: the run's `TrainConfig`.
      hparams: the run's `Hparams`.

    Returns:
      An ``optax.GradientTransformation``.
    """
    return optimizers.make(
        config.optimizer,
        hparams.lr,
        steps=config.steps,
        schedule=config.schedule,
        warmup_steps=config.warmup_steps,
        weight_decay=hparams.weight_decay,
        momentum=config.momentum,
        grad_clip=config.grad_clip,
    )


def _scale_weights(params, scale):
    """Multiplies every leaf named ``w`` by ``scale``; other leaves (biases, norms) unchanged."""

    def scaled(path, leaf):
        is_weight = getattr(path[-1], "key", None) == "w"
        return leaf * jnp.asarray(scale, leaf.dtype) if is_weight else leaf

    return jax.tree_util.tree_map_with_path(scaled, params)


def init_state(
    model: Layer,
    config: TrainConfig,
    hparams: Hparams,
    example: Any,
    *,
    init_key: jax.Array,
    data_key: jax.Array,
) -> TrainState:
    """The state of a run before its first step.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      hparams: the run's `Hparams` (``init_scale`` scales the initial weights).
      example: an example input ``[batch, ...features]`` (array or ``jax.ShapeDtypeStruct``).
      init_key: key of the initial parameters.
      data_key: key of the batch order and dropout.

    Returns:
      A `TrainState` at step 0.
    """
    params, model_state = model.init(init_key, example)
    params = _scale_weights(params, hparams.init_scale)
    opt_state = make_optimizer(config, hparams).init(params)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(params, model_state, opt_state, zero, data_key, zero - 1)


def layer_grad_norms(grads) -> dict[str, jax.Array]:
    """The L2 norm of each top-level layer's gradients.

    Args:
      grads: gradients with the structure of a `serial` model's params.

    Returns:
      ``{layer_name: norm}``, each of shape ``()``.
    """
    return {name: optax.tree.norm(g) for name, g in grads.items()}


def make_step(model: Layer, config: TrainConfig, loss_fn: LossFn = losses.softmax_cross_entropy):
    """The pure train step ``step(state, hparams, x, y) -> (state, metrics)``.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.

    Returns:
      ``step`` taking a `TrainState`, `Hparams`, inputs ``x`` ``[batch, ...]`` and labels ``y``
      ``[batch]``; it returns the new state and ``{"loss": (), "accuracy": ()}`` (plus
      ``"grad_norm": {layer: ()}`` when ``config.record_grad_norms``). A step whose loss or
      gradients are non-finite leaves params and optimiser state unchanged and sets
      ``diverged_at``; so do all later steps.
    """

    def objective(params, model_state, x, y, key):
        logits, model_state = model.apply(params, model_state, x, key=key, train=True)
        return loss_fn(logits, y), (logits, model_state)

    def step(state: TrainState, hparams: Hparams, x, y):
        dropout_key = jax.random.fold_in(jax.random.split(state.key)[1], state.step)
        (loss, (logits, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, state.model_state, x, y, dropout_key
        )
        # One reduction detects NaN/inf anywhere in the gradients (a NaN or an overflow makes
        # the global norm non-finite); a cond skips the update, so a healthy step pays for no
        # copy of the params (under vmap the cond becomes a select, member by member).
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        healthy = finite & (state.diverged_at < 0)

        def update(_):
            optimizer = make_optimizer(config, hparams)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), model_state, opt_state

        params, model_state, opt_state = lax.cond(healthy, update, lambda _: state[:3], None)
        diverged_at = jnp.where((state.diverged_at < 0) & ~finite, state.step, state.diverged_at)
        metrics = {"loss": loss, "accuracy": losses.accuracy(logits, y)}
        if config.record_grad_norms:
            metrics["grad_norm"] = layer_grad_norms(grads)
        new_state = TrainState(
            params, model_state, opt_state, state.step + 1, state.key, diverged_at
        )
        return new_state, metrics

    return step


def make_batch_step(
    model: Layer,
    config: TrainConfig,
    loss_fn: LossFn = losses.softmax_cross_entropy,
    *,
    mesh: Mesh | None = None,
):
    """``batch_step(state, hparams, data, batch_indices) -> (state, metrics)``: one step on the
    training examples at ``batch_indices`` (``[batch]`` int32) of a `DeviceData`; with a
    ``mesh``, the batch is split along its ``data`` axis."""
    step = make_step(model, config, loss_fn)

    def batch_step(state: TrainState, hparams: Hparams, data: DeviceData, batch_indices):
        x = jnp.take(data.x_train, batch_indices, axis=0)  # [B, ...features]
        y = jnp.take(data.y_train, batch_indices, axis=0)  # [B]
        if mesh is not None:  # each device takes B / data rows; XLA all-reduces the gradients
            x, y = sharding.shard_batch((x, y), mesh)
        return step(state, hparams, x, y)

    return batch_step


def make_indices(config: TrainConfig, num_steps: int):
    """``indices(state, data) -> [num_steps, batch]``: the batches of the next ``num_steps``."""

    def indices(state: TrainState, data: DeviceData):
        perm_key = jax.random.split(state.key)[0]
        num_examples = data.x_train.shape[0]
        return chunk_indices(perm_key, state.step, num_steps, num_examples, config.batch_size)

    return indices


def make_chunk(
    model: Layer,
    config: TrainConfig,
    num_steps: int,
    loss_fn: LossFn = losses.softmax_cross_entropy,
    *,
    mesh: Mesh | None = None,
):
    """The pure ``chunk(state, hparams, data) -> (state, metrics)``: ``num_steps`` steps in a scan.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      num_steps: steps in the chunk (static).
      loss_fn: ``loss_fn(logits, labels) -> scalar``.
      mesh: split each batch along this mesh's ``data`` axis (see `jaxdl.sharding`).

    Returns:
      ``chunk`` taking a `TrainState`, `Hparams` and `DeviceData`; its metrics are the step
      metrics averaged over the chunk (each of shape ``()``).
    """
    batch_step = make_batch_step(model, config, loss_fn, mesh=mesh)
    indices_fn = make_indices(config, num_steps)

    def chunk(state: TrainState, hparams: Hparams, data: DeviceData):
        def body(state, batch_indices):
            return batch_step(state, hparams, data, batch_indices)

        indices = indices_fn(state, data)  # [num_steps, batch]
        state, metrics = lax.scan(body, state, indices, unroll=min(config.unroll, num_steps))
        return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)  # each ()

    return chunk


def evaluate(
    model: Layer,
    params,
    model_state,
    x: jax.Array,
    y: jax.Array,
    *,
    batch_size: int = 1000,
    loss_fn: LossFn = losses.softmax_cross_entropy,
) -> dict[str, jax.Array]:
    """Mean loss and accuracy of a model on a data set, in batches, under ``lax.map``.

    Args:
      model: the `Layer`.
      params: its params.
      model_state: its state (running statistics are used, ``train=False``).
      x: inputs ``[N, ...features]``.
      y: labels ``[N]``.
      batch_size: examples per batch; the last batch is padded and the padding masked out.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` (mean over a batch).

    Returns:
      ``{"loss": (), "accuracy": ()}`` averaged over the ``N`` examples.
    """
    n = x.shape[0]
    batch_size = min(batch_size, n)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    xb = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(
        num_batches, batch_size, *x.shape[1:]
    )
    yb = jnp.pad(y, (0, pad)).reshape(num_batches, batch_size)
    mask = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

    def batch_sums(args):
        xi, yi, mi = args  # [B, ...], [B], [B]
        logits, _ = model.apply(params, model_state, xi)
        per_example = jax.vmap(loss_fn)(logits[:, None], yi[:, None])  # [B]
        correct = (jnp.argmax(logits, axis=-1) == yi).astype(jnp.float32)
        weights = mi.astype(jnp.float32)
        return jnp.sum(per_example * weights), jnp.sum(correct * weights)

    loss_sums, correct_sums = lax.map(batch_sums, (xb, yb, mask))
    return {"loss": jnp.sum(loss_sums) / n, "accuracy": jnp.sum(correct_sums) / n}


def evaluate_test(
    model: Layer,
    config: TrainConfig,
    state: TrainState,
    data: DeviceData,
    loss_fn: LossFn = losses.softmax_cross_entropy,
) -> dict[str, jax.Array]:
    """`evaluate` of a run's state on the test split, in ``config.eval_batch_size`` batches.

    Args:
      model: the `Layer`.
      config: the run's `TrainConfig`.
      state: the run's `TrainState`.
      data: the `DeviceData`.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.

    Returns:
      ``{"loss": (), "accuracy": ()}``.
    """
    return evaluate(
        model,
        state.params,
        state.model_state,
        data.x_test,
        data.y_test,
        batch_size=config.eval_batch_size,
        loss_fn=loss_fn,
    )


def check_fits(config: TrainConfig, data: Dataset | DeviceData) -> None:
    """Raises before any compilation if the data set cannot feed ``config``'s batches."""
    num_train = data.x_train.shape[0]
    steps_per_epoch(num_train, config.batch_size)  # raises DataError naming both numbers


def chunk_plan(config: TrainConfig) -> list[int]:
    """Lengths of the chunks of a run: ``chunk_steps`` each, the last one shorter if need be."""
    size = min(config.chunk_steps, config.steps)
    full, rest = divmod(config.steps, size)
    return [size] * full + ([rest] if rest else [])


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


class Program(NamedTuple):
    """The compiled pieces of a run, possibly vmapped over a population of members.

    Attributes:
      init: ``init(init_key, data_key, hparams) -> TrainState``.
      chunks: ``{num_steps: chunk(state, hparams, data) -> (state, metrics)}``.
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
    mesh: Mesh | None = None,
) -> Program:
    """Jitted init, chunk and evaluation functions of one run, or of a population of runs.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      example: an example input ``[batch, ...features]`` (shape and dtype only).
      loss_fn: ``loss_fn(logits, labels) -> scalar``.
      population: vmap every function over a leading ``[members]`` axis of keys, hparams and
        state (the data is shared).
      mesh: a `jaxdl.sharding.make_mesh` mesh to run on: batches split along ``data``, members
        along ``members``; the functions then expect inputs placed as `jaxdl.sharding` says
        (`to_device` with the mesh, `jaxdl.sharding.place_run`). ``None``: the default device.

    Returns:
      A `Program`.
    """
    if mesh is not None:
        sharding.check_program(mesh, batch_size=config.batch_size, population=population)

    def init(init_key, data_key, hparams):
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

    chunks = {
        n: jitted(
            make_chunk(model, config, n, loss_fn, mesh=mesh),
            (0, 0, None),
            (run, shared),
            donate_argnums=0,
        )
        for n in set(chunk_plan(config))
    }
    return Program(
        jitted(init, (0, 0, 0), run),
        chunks,
        jitted(test_metrics, (0, None), shared),
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
      state: the state to start from (step 0, or a restored checkpoint).
      hparams: the run's `Hparams` (arrays).
      data: the `DeviceData`.
      on_chunk: called after every chunk with the step reached and that chunk's metrics (plus
        ``test_accuracy`` when an evaluation ran); for progress bars and logs.
      stop_on_divergence: stop after the chunk in which every member diverged.
      on_state: called after every chunk with the step reached and the state (checkpointing).

    Returns:
      ``(final state, History, timings)`` where timings holds ``compile_s`` (first chunk, which
      includes compilation) and ``run_s`` (the rest), in seconds.
    """
    chunks, evals = [], []
    timings = {"compile_s": 0.0, "run_s": 0.0}
    step = int(np.min(sharding.fetch(state.step)))
    plan = chunk_plan(config)
    done = 0
    for size in plan:
        if done + size <= step:  # a restored state is already past this chunk
            done += size
            continue
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
        if eval_due(config, before, done):
            test = jax.device_get(program.evaluate(state, data))
            evals.append(
                {
                    "eval_step": at,
                    "test_loss": test["loss"],
                    "test_accuracy": test["accuracy"],
                }
            )
            report["test_accuracy"] = test["accuracy"]
        if on_state is not None:
            on_state(done, state)
        if on_chunk is not None:
            on_chunk(done, report)
        if stop_on_divergence and np.all(sharding.fetch(state.diverged_at) >= 0):
            break
    return state, stack_history(chunks, evals), timings


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
        are multiples of its ``every`` and at the last step (never a diverged state).
      resume: start from the checkpointer's newest valid checkpoint, if any. The run is
        deterministic (the key and the step are in the state), so a resumed run ends
        bit-identical to an uninterrupted one; its history holds only the chunks run now.

    Returns:
      ``(final TrainState, History)``; ``history.timings`` gives compile and run seconds. On a
      mesh the state's arrays are replicated over it.

    Example:
      >>> state, history = jaxdl.fit(jaxdl.mlp(), jaxdl.data.load("digits"), TrainConfig(steps=500))
      >>> history["test_accuracy"][-1]
    """
    check_fits(config, data)
    device_data = to_device(data, mesh)
    program = build_program(model, config, device_data.x_train[:1], loss_fn=loss_fn, mesh=mesh)
    init_key, data_key = jax.random.split(jax.random.key(seed))
    hparams = hparams.as_arrays()
    init_key, data_key, hparams = sharding.place_run(
        (init_key, data_key, hparams), mesh, population=False
    )
    state = program.init(init_key, data_key, hparams)
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


def make_train(
    model: Layer,
    data: DeviceData,
    config: TrainConfig,
    *,
    loss_fn: LossFn = losses.softmax_cross_entropy,
) -> Callable[[jax.Array, Hparams], tuple[TrainState, dict]]:
    """The whole run as one pure function ``train(key, hparams) -> (state, history)``.

    No host round trips: chunks are a ``lax.scan`` and the test set is evaluated after each
    chunk. A population is ``jax.jit(jax.vmap(train))(keys, hparams)``.

    Args:
      model: the `Layer` to train.
      data: `DeviceData` (closed over).
      config: the run's `TrainConfig`; ``steps`` must be a multiple of ``chunk_steps``.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.

    Returns:
      ``train(key, hparams)``, returning the final `TrainState` and a dict of stacked metrics
      ``loss``, ``accuracy``, ``test_loss``, ``test_accuracy`` (each ``[steps // chunk_steps]``).
    """
    if config.steps % config.chunk_steps:
        raise ValueError(
            f"make_train: steps ({config.steps}) must be a multiple of "
            f"chunk_steps ({config.chunk_steps})"
        )
    chunk = make_chunk(model, config, config.chunk_steps, loss_fn)
    example = jax.ShapeDtypeStruct((1, *data.x_train.shape[1:]), data.x_train.dtype)

    def train(key, hparams: Hparams):
        init_key, data_key = jax.random.split(key)
        state = init_state(model, config, hparams, example, init_key=init_key, data_key=data_key)

        def body(state, _):
            state, metrics = chunk(state, hparams, data)
            test = evaluate_test(model, config, state, data, loss_fn)
            metrics = {**metrics, "test_loss": test["loss"], "test_accuracy": test["accuracy"]}
            return state, metrics

        return lax.scan(body, state, None, length=config.steps // config.chunk_steps)

    return train
