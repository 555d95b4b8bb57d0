"""The train step: traced hyper-parameters, the static config, the state a run carries, and the
pure step and scanned chunk that advance it.

``step(state, hparams, x, y)`` is one optimiser update; ``chunk(state, hparams, data)`` is a
``lax.scan`` of steps over batches drawn on the device. Everything here is a pure function of its
arguments, so a population of runs is its ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxdl import losses, optimizers, sharding, xla_options
from jaxdl._checks import is_count, is_number
from jaxdl.data.batching import chunk_indices
from jaxdl.data.device import DeviceData
from jaxdl.types import Layer

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

SEED_RANGE = range(-(2**63), 2**63)  # the ints `jax.random.key` takes as a seed


class Hparams(NamedTuple):
    """Hyper-parameters that may be traced (differ between the members of a sweep).

    Attributes:
      lr: peak learning rate, shape ``()``.
      weight_decay: weight-decay coefficient, shape ``()``; ``None``: none, with no decay term in
        the program (what `as_arrays` makes of a 0 given on the host).
      init_scale: multiplies every initial weight ``w`` (not biases or norm scales), shape ``()``.
    """

    lr: Any = 1e-3
    weight_decay: Any = 0.0
    init_scale: Any = 1.0

    def as_arrays(self, *, zero_decay_as_none: bool = True) -> Hparams:
        """The same values as float32 arrays of shape ``()`` (or ``[members]``), for tracing.

        Args:
          zero_decay_as_none: a weight decay of 0 given on the host (not a JAX array) becomes
            ``None``, so the program computes no decay term: a traced zero still reads every
            parameter each step (2-3 % of an MLP's step on CPU). False keeps it a traced zero,
            for members of one program whose other members decay (the same program for all).

        Returns:
          An `Hparams` of float32 arrays (``weight_decay`` possibly ``None``).
        """
        lr, weight_decay, init_scale = self
        if weight_decay is None or (zero_decay_as_none and _is_host_zero(weight_decay)):
            weight_decay = None
        else:
            weight_decay = _float32_array("weight_decay", weight_decay)
        return Hparams(
            _float32_array("lr", lr), weight_decay, _float32_array("init_scale", init_scale)
        )

    def as_recorded(self) -> Hparams:
        """The same values, a ``None`` weight decay as 0.0: the same program, recorded (in
        configs, tables and checkpoint descriptions) as a number."""
        return self if self.weight_decay is not None else self._replace(weight_decay=0.0)


def _is_host_zero(value) -> bool:
    """Whether ``value`` is a single 0 on the host (a Python or NumPy number, not a JAX array)."""
    return not isinstance(value, jax.Array) and np.ndim(value) == 0 and value == 0


def _float32_array(field: str, value) -> jax.Array:
    """``value`` (the `Hparams` field ``field``) as a float32 JAX array. Host values go through
    NumPy and `jax.device_put`: ``jnp.asarray(0.001, jnp.float32)`` would compile a conversion
    program first."""
    if isinstance(value, jax.Array):  # a device array or a tracer
        return jnp.asarray(value, jnp.float32)
    # checked first: NumPy casts None to NaN and parses the string "0.1" without a word
    if np.asarray(value).dtype.kind not in "iuf":
        raise ValueError(f"Hparams.{field} must be a number or an array of numbers, got {value!r}")
    return jax.device_put(np.array(value, np.float32))  # a copy: the caller keeps its own


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What a run does, besides its traced `Hparams`. Every field is static (fixes the program)."""

    steps: int = 2000  # training steps (one batch each)
    batch_size: int = 128  # examples per step
    optimizer: str = "adam"  # one of optimizers.OPTIMIZERS
    schedule: str = "constant"  # one of optimizers.SCHEDULES
    warmup_steps: int = 0  # linear warm-up length for "warmup_cosine" (< steps); others ignore it
    momentum: float = 0.9  # for optimizer="momentum"
    grad_clip: float | None = None  # clip gradients to this global norm; None: no clipping
    chunk_steps: int = 100  # steps per compiled chunk: metrics and progress granularity
    eval_every: int = 500  # steps between test evaluations (rounded up to whole chunks)
    eval_batch_size: int = 1000  # examples per evaluation batch (memory, not results)
    record_grad_norms: bool = False  # per-layer gradient norms in the history
    unroll: int = 1  # lax.scan unroll within a chunk
    skip_nonfinite: bool = True  # freeze the run at its first NaN/inf loss or gradient
    # False: the update never waits for that check (about 10 % of an overhead-bound step on CPU);
    # diverged_at still records the first such step, but the params take the NaN/inf (`fit`
    # still stops after that chunk; a sweep member trains on with them).

    def __post_init__(self):
        optimizers.check_names(self.optimizer, self.schedule)
        counts = ("steps", "batch_size", "chunk_steps", "eval_every", "eval_batch_size", "unroll")
        for field in counts:
            value = getattr(self, field)
            if not is_count(value):
                raise ValueError(f"TrainConfig.{field} must be a positive int, got {value!r}")
            object.__setattr__(self, field, int(value))  # a NumPy int, too, becomes a Python int
        if self.steps >= 2**31:  # TrainState.step would wrap to negative: diverged_at's "none"
            raise ValueError(f"TrainConfig.steps must be < 2**31 (int32 steps), got {self.steps}")
        # What preflight checks, made plain Python numbers here too: a NumPy warmup_steps would
        # be refused there, a NumPy momentum or grad_clip would not survive `json.dumps`.
        if is_count(self.warmup_steps, minimum=0):
            object.__setattr__(self, "warmup_steps", int(self.warmup_steps))
        for field in ("momentum", "grad_clip"):
            value = getattr(self, field)
            if is_number(value) and not isinstance(value, int | float):  # a NumPy number
                object.__setattr__(self, field, float(value))
        for field in ("record_grad_norms", "skip_nonfinite"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(
                    f"TrainConfig.{field} must be True or False, got {getattr(self, field)!r}"
                )


class TrainState(NamedTuple):
    """Everything a run carries from step to step; a pytree of arrays.

    Attributes:
      params: the model's trainable parameters.
      model_state: the model's non-trainable state (running statistics), ``{}`` if none.
      opt_state: the optax optimiser state.
      step: steps taken, shape ``()``, int32.
      key: the run's data key: batch order and dropout of step ``s`` derive from it and ``s``.
      diverged_at: first step whose loss or gradients were non-finite, ``-1`` if none, shape
        ``()``, int32. From that step on the run is frozen (params stop changing), unless
        ``TrainConfig.skip_nonfinite`` is False.
    """

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    diverged_at: jax.Array


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
    if not isinstance(scale, jax.core.Tracer) and np.all(np.asarray(scale) == 1):
        return params  # exact (w * 1 == w); eagerly, it spares one dispatched multiply per weight

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

    Called outside any trace (``jit``, ``vmap``...), it runs as one jitted program, compiled as
    `fit`'s init is (`jaxdl.xla_options.init_options`: on a CPU, for compile time), so the state
    equals `fit`'s bit for bit and costs one compile instead of one per eager operation (an MLP
    784-512-512-10 in a fresh process: 0.5 s instead of 1.5-2.0 s, bench/NOTES.md section 19).
    Traced, it is traced.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      hparams: the run's `Hparams` (``init_scale`` scales the initial weights).
      example: an example input ``[batch, ...features]`` (array or ``jax.ShapeDtypeStruct``),
        read in JAX's dtype for it (float64 is float32 unless ``jax_enable_x64``).
      init_key: key of the initial parameters.
      data_key: key of the batch order and dropout.

    Returns:
      A `TrainState` at step 0.
    """
    # Keys that are not JAX arrays (an int seed) go the eager way, where the layers name the
    # mistake; traced, a seed would pass for a key until JAX's own error.
    keys_are_arrays = isinstance(init_key, jax.Array) and isinstance(data_key, jax.Array)
    leaves = jax.tree.leaves((hparams, init_key, data_key))
    if keys_are_arrays and not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        try:
            dtype = jax.dtypes.canonicalize_dtype(example.dtype)  # float64 is float32 without x64
            jitted = _jitted_init(model, config, tuple(example.shape), dtype)
        except TypeError:  # a model or config that cannot be hashed: run it eagerly
            pass
        else:
            return jitted(hparams, init_key, data_key)
    return _init_state(model, config, hparams, example, init_key, data_key)


def _init_state(model, config, hparams, example, init_key, data_key) -> TrainState:
    """`init_state`'s computation, traced or eager."""
    # A NumPy float64 example with x64 off, read as JAX holds it (float32): as given, the layers
    # asked for float64 weights, which JAX truncates with a warning.
    dtype = jax.dtypes.canonicalize_dtype(example.dtype)
    if dtype != example.dtype:
        example = jax.ShapeDtypeStruct(example.shape, dtype)
    params, model_state = model.init(init_key, example)
    params = _scale_weights(params, hparams.init_scale)
    opt_state = make_optimizer(config, hparams).init(params)
    step = jnp.asarray(np.int32(0))  # from NumPy: no program to compile when called eagerly
    return TrainState(params, model_state, opt_state, step, data_key, jnp.asarray(np.int32(-1)))


@functools.lru_cache(maxsize=32)
def _jitted_init(model: Layer, config: TrainConfig, shape: tuple[int, ...], dtype) -> Callable:
    """``init(hparams, init_key, data_key) -> TrainState``, jitted as `fit`'s init program."""
    example = jax.ShapeDtypeStruct(shape, dtype)

    def init(hparams, init_key, data_key):
        return _init_state(model, config, hparams, example, init_key, data_key)

    return jax.jit(init, compiler_options=xla_options.init_options())


def layer_grad_norms(grads) -> dict[str, jax.Array]:
    """The L2 norm of each top-level layer's gradients.

    Args:
      grads: gradients with the structure of a `serial` model's params.

    Returns:
      ``{layer_name: norm}``, each of shape ``()``.
    """
    return {name: optax.tree.norm(g) for name, g in grads.items()}


def _keep_if(keep: jax.Array, new, old):
    """``new`` where ``keep`` (shape ``()``) is true, else ``old``, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)


def make_step(model: Layer, config: TrainConfig, loss_fn: LossFn = losses.softmax_cross_entropy):
    """The pure train step ``step(state, hparams, x, y) -> (state, metrics)``.

    Jit it with ``compiler_options=jaxdl.compiler_options(model, x)``: on a CPU they put a 2-D
    ConvNet's convolutions on every core, as `fit` compiles them.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.

    Returns:
      ``step`` taking a `TrainState`, `Hparams`, inputs ``x`` ``[batch, ...]`` and labels ``y``
      ``[batch]``; it returns the new state and ``{"loss": (), "accuracy": ()}`` (plus
      ``"grad_norm": {layer: ()}`` when ``config.record_grad_norms``). A step whose loss or
      gradients are non-finite (or whose gradients' global norm overflows float32, beyond about
      1.8e19) sets ``diverged_at`` and (unless ``config.skip_nonfinite`` is
      False) leaves the params and the model state unchanged; so do all later steps. The
      optimiser of a skipped step gets zero gradients (Adam's moments decay) and its update is
      dropped.
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
        # the global norm non-finite; so does a norm past float32's range, about 1.8e19).
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        if config.skip_nonfinite:
            # A skipped step: zero gradients into the optimiser, the old params kept. Both are
            # selects XLA fuses into the update's own loops, in place; a cond (or a select of
            # the whole state) made every healthy step wait or copy (bench/NOTES.md section 12).
            healthy = finite & (state.diverged_at < 0)
            applied = _keep_if(healthy, grads, jax.tree.map(jnp.zeros_like, grads))
        else:  # nothing waits for the check: it only sets diverged_at
            applied = grads
        optimizer = make_optimizer(config, hparams)
        updates, opt_state = optimizer.update(applied, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if config.skip_nonfinite:
            params = _keep_if(healthy, params, state.params)
            model_state = _keep_if(healthy, model_state, state.model_state)
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
    training examples at ``batch_indices`` (``[batch]`` int32, each in ``[0, num_train)``: out
    of range ones are clamped) of a `DeviceData`; with a ``mesh``, the batch is split along its
    ``data`` axis."""
    step = make_step(model, config, loss_fn)

    def batch_step(state: TrainState, hparams: Hparams, data: DeviceData, batch_indices):
        # The indices are in range by construction; "clip" is XLA's own gather, while take's
        # default ("fill") would mask every gathered value with a select.
        x = jnp.take(data.x_train, batch_indices, axis=0, mode="clip")  # [B, ...features]
        y = jnp.take(data.y_train, batch_indices, axis=0, mode="clip")  # [B]
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


def part_bounds(num_members: int, parts: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: ``parts`` consecutive ranges of members, sizes differing by at
    most one (larger first), covering ``range(num_members)``."""
    if not is_count(parts) or parts > num_members:
        raise ValueError(f"parts must be an int in [1, {num_members}] (members), got {parts!r}")
    sizes = [len(a) for a in np.array_split(np.arange(num_members), parts)]
    stops = np.cumsum(sizes).tolist()
    return list(zip([0, *stops[:-1]], stops, strict=True))


def _population_size(state: TrainState, hparams: Hparams) -> int:
    """The members of a population's ``state`` (``step``: ``[members]``), after checking that
    every field of ``hparams`` has that leading axis: slices of a longer one would go unnoticed."""
    if jnp.ndim(state.step) != 1:
        raise ValueError(
            f"make_parted_chunk: state.step must have shape [members], got {jnp.shape(state.step)}"
        )
    members = state.step.shape[0]
    for field, value in hparams._asdict().items():
        if value is not None and jnp.shape(value)[:1] != (members,):
            raise ValueError(
                f"make_parted_chunk: hparams.{field} must have shape [members={members}], "
                f"got {jnp.shape(value)}"
            )
    return members


def make_parted_chunk(
    model: Layer,
    config: TrainConfig,
    num_steps: int,
    parts: int,
    loss_fn: LossFn = losses.softmax_cross_entropy,
):
    """A population's chunk whose step runs its members as ``parts`` independent vmapped parts.

    The vmap of `make_chunk` is one chain of batched kernels per step, which XLA:CPU runs one
    after another; split into parts inside the scan's body, the parts' kernels do not depend on
    each other, so XLA:CPU runs them side by side on its cores (a 40-128-128-10 MLP at 8
    members in 4 parts: 1.5x the throughput, bench/NOTES.md section 17). Each member's values are
    those of `make_chunk`'s vmap to rounding (a member alone in its part runs the plain step).

    Args:
      model: the `Layer` to train.
      config: the members' `TrainConfig`.
      num_steps: steps in the chunk (static).
      parts: how many parts the members are split into (consecutive, near-equal: `part_bounds`).
      loss_fn: ``loss_fn(logits, labels) -> scalar``.

    Returns:
      ``chunk(state, hparams, data) -> (state, metrics)`` over a population: state and hparams
      with a leading ``[members]`` axis, the `DeviceData` shared; each metric ``[members]``, the
      member's mean over the chunk.
    """
    batch_step = make_batch_step(model, config, loss_fn)
    vmapped_step = jax.vmap(batch_step, in_axes=(0, 0, None, 0))
    member_indices = jax.vmap(make_indices(config, num_steps), in_axes=(0, None))

    def part_step(state, hparams, data, batch_indices):  # batch_indices: [part members, batch]
        if batch_indices.shape[0] > 1:
            return vmapped_step(state, hparams, data, batch_indices)
        # One member runs the plain step, without the batching a vmap of one adds.
        first = (jax.tree.map(lambda a: a[0], tree) for tree in (state, hparams, batch_indices))
        state, hparams, batch_indices = first
        stepped = batch_step(state, hparams, data, batch_indices)
        return jax.tree.map(lambda a: a[None], stepped)

    def chunk(state: TrainState, hparams: Hparams, data: DeviceData):
        bounds = part_bounds(_population_size(state, hparams), parts)

        def split(tree):
            return tuple(jax.tree.map(lambda a, i=i, j=j: a[i:j], tree) for i, j in bounds)

        def join(trees):
            return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)

        hparam_parts = split(hparams)

        def body(states, batch_indices):  # batch_indices: [members, batch]
            stepped = [
                part_step(part, part_hparams, data, part_indices)
                for part, part_hparams, part_indices in zip(
                    states, hparam_parts, split(batch_indices), strict=True
                )
            ]
            return tuple(s for s, _ in stepped), join([m for _, m in stepped])

        indices = jnp.swapaxes(member_indices(state, data), 0, 1)  # [num_steps, members, batch]
        states, metrics = lax.scan(
            body, split(state), indices, unroll=min(config.unroll, num_steps)
        )
        return join(states), jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)  # [members]

    return chunk
