"""Sweeps: a population of networks (seeds x hyper-parameters) trained as compiled programs.

The population is the product of the declared axes. Axes that only change traced values (seeds,
``lr``, ``weight_decay``, ``init_scale``) are vmapped within one program; axes that change the
program itself (the model, its width or depth, the initialiser, dropout) split the population into
groups, one compiled program each. Every member runs exactly the pure functions of `jaxdl.train`,
so a member equals the same configuration trained alone with `jaxdl.train.fit`.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdl import losses, sharding
from jaxdl import parts as parts_rule
from jaxdl._checks import is_count
from jaxdl.checkpoint import Checkpointer
from jaxdl.data.dataset import Dataset
from jaxdl.data.device import example_input
from jaxdl.sweep_checkpoint import GroupCheckpoints, SweepCheckpointer, describe_sweep, run_unit
from jaxdl.sweep_result import RESULT_COLUMNS, SEED_AXES, MemberRun, MemberStates, SweepResult
from jaxdl.train import (
    ChunkCallback,
    History,
    Hparams,
    Program,
    TrainConfig,
    TrainState,
    build_program,
    check_fits,
    init_state,
    seed_array,
    seed_keys,
    to_device,
)
from jaxdl.types import Layer

TRACED_AXES = (*SEED_AXES, *Hparams._fields)
STRATEGIES = ("auto", "vmap", "map", "chunked")

__all__ = [
    "STRATEGIES",
    "MemberRun",
    "Plan",
    "SweepResult",
    "choose_strategy",
    "members_of",
    "sweep",
]


def members_of(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The population: one dict of axis values per member, the product of ``axes`` in order.

    Args:
      axes: ``{axis_name: values}``; e.g. ``{"seed": range(8), "lr": [1e-3, 1e-2]}`` (a NumPy
        array, ``np.logspace(-4, -2, 3)``, is a list of its values).

    Returns:
      ``[{axis_name: value}, ...]`` with the last axis varying fastest; a list value (a width
      list ``[64, 64]``) becomes a tuple, so that members can be grouped and summarised by it.
    """
    axes = _axis_lists(axes)
    names = list(axes)
    values = [[_hashable(v) for v in axis] for axis in axes.values()]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _axis_lists(axes: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """``axes`` checked, each axis a list of plain Python values (NumPy and JAX arrays and
    scalars converted, so that they print, compare and save to JSON as the numbers they are)."""
    if not isinstance(axes, Mapping):
        raise TypeError(f"sweep: axes must be a mapping {{axis: [values]}}, got {axes!r}")
    lists = {}
    for name, values in axes.items():
        if not isinstance(name, str):  # a model function takes the static axes as keywords
            raise TypeError(
                f"sweep axis {name!r}: expected a name (str), got {type(name).__name__} {name!r}"
            )
        if name in RESULT_COLUMNS:
            raise ValueError(
                f"sweep axis {name!r} would overwrite the result column of that name; the "
                f"columns: {', '.join(RESULT_COLUMNS)}"
            )
        if isinstance(values, np.ndarray | jax.Array) and np.ndim(values) > 0:
            values = np.asarray(values).tolist()
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | range):
            raise ValueError(f"sweep axis {name!r}: expected a list of values, got {values!r}")
        if len(values) == 0:
            raise ValueError(
                f"sweep axis {name!r} has no values: expected at least one, got {values!r}"
            )
        lists[name] = [_plain(v) for v in values]
    return lists


def _plain(value):
    """``value`` with NumPy and JAX scalars and arrays in it made Python numbers and lists."""
    if isinstance(value, np.generic | np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _hashable(value):
    """``value`` with every list in it turned into a tuple (members are grouped by value)."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


def _member_seeds(member: Mapping[str, Any]) -> tuple[int, int]:
    """``(init_seed, data_seed)``: both ``seed`` as in `fit`, overridden by ``init_seed`` and
    ``data_seed`` (their keys: `jaxdl.program.seed_keys`)."""
    seed = int(member.get("seed", 0))
    return int(member.get("init_seed", seed)), int(member.get("data_seed", seed))


def _member_hparams(member: Mapping[str, Any], base: Hparams) -> Hparams:
    return base._replace(**{k: v for k, v in member.items() if k in Hparams._fields})


def _stack_hparams(members: Sequence[Hparams], *, decay: bool) -> Hparams:
    """The members' `Hparams` as ``[K]`` float32 arrays on the host; the weight decay ``None``
    (no decay term in the program) unless ``decay``."""
    lr, weight_decay, init_scale = zip(*members)
    weight_decay = np.asarray(weight_decay, np.float32) if decay else None
    return Hparams(np.asarray(lr, np.float32), weight_decay, np.asarray(init_scale, np.float32))


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _take(tree, index):
    return jax.tree.map(lambda x: x[index], tree)


# On XLA:CPU a vmapped population pays only while its stacked train state stays small: a dense
# net's members run fastest vmapped in chunks whose state totals about 4 MiB (an MLP 40-128-128
# peaks at 8-16 members, one with 267k params runs best alone; bench/NOTES.md section 10).
CPU_STATE_BUDGET = 4 << 20  # bytes of stacked TrainState per vmapped program run, dense nets
# Vmapped ConvNets ran no faster than one member after another (sections 9-10); one per part,
# in pairs, they run 1.1-1.3x faster (section 17; 4 parts: 1.0-1.4x).
CPU_CONV_CHUNK = 2


class Plan(NamedTuple):
    """How a group of members runs.

    Attributes:
      strategy: ``"vmap"``, ``"map"`` or ``"chunked"``.
      chunk_members: members per vmapped program run: all under ``"vmap"``, 1 under ``"map"``.
      parts: independent vmapped parts each program run splits its members into, run side by
        side (`jaxdl.step.make_parted_chunk`); 1: one vmap.
    """

    strategy: str
    chunk_members: int
    parts: int = 1


def _nbytes(state_shape) -> int:
    """Bytes of a pytree of arrays or shapes (typed PRNG keys left out: a few bytes each)."""
    return sum(
        int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree.leaves(state_shape)
        if hasattr(leaf, "shape") and not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
    )


def _even_chunks(num_members: int, most: int) -> int:
    """Members per chunk when at most ``most`` fit: as many chunks as needed, evenly filled (so
    the last chunk pads as few copies as it can)."""
    num_chunks = -(-num_members // most)
    return -(-num_members // num_chunks)


def choose_strategy(
    member_state_shape,
    num_members: int,
    backend: str | None = None,
    *,
    members_axis: int = 1,
    parts: bool = True,
    steps: int | None = None,
) -> Plan:
    """The ``"auto"`` plan, by backend, model and population size (see `bench.bench_sweep`).

    A single member runs plainly (``"map"``), but for a ConvNet on CPU as a population of one
    (``"vmap"``, measured faster). On GPU/TPU every population is vmapped whole, and so is one
    whose members a mesh splits over devices (``members_axis > 1``). On CPU a dense net's
    population is vmapped in chunks of as many members as keep their stacked train state within
    `CPU_STATE_BUDGET` (evenly filled; ``"map"`` when one member exceeds it, ``"vmap"`` when all
    fit), each program run split into parts (`jaxdl.parts.cpu_parts`: pairs, at most
    `jaxdl.parts.CPU_MAX_PARTS`); a ConvNet population (any leaf of rank 3 or more) runs in
    chunks of `CPU_CONV_CHUNK` members, one per part, or, without parts (on a mesh, in a short
    run), one member after another.

    Args:
      member_state_shape: the `TrainState` (or just the params), arrays or
        ``jax.ShapeDtypeStruct``, of one member.
      num_members: members in the group.
      backend: ``jax.default_backend()`` if ``None``.
      members_axis: devices along the mesh's ``members`` axis (1 without a mesh).
      parts: whether a program may split its members into parts (not on a mesh).
      steps: the run's steps: parts only in a run long enough to repay their compile
        (`jaxdl.parts.long_enough`); ``None``: any length.

    Returns:
      A `Plan`.
    """
    on_cpu = (backend or jax.default_backend()) == "cpu"
    if members_axis > 1:
        return Plan("vmap", num_members)
    if num_members == 1:
        # On CPU a ConvNet's chunk ran 3-5 % faster as a population of one than plainly in a
        # direct probe (within bench_sweep's noise; bench/NOTES.md section 12); a dense net's
        # 10-15 % slower.
        return (
            Plan("vmap", 1)
            if on_cpu and parts_rule.has_conv(member_state_shape)
            else Plan("map", 1)
        )
    if not on_cpu:
        return Plan("vmap", num_members)
    conv = parts_rule.has_conv(member_state_shape)
    parts = parts and parts_rule.long_enough(steps, conv=conv)
    if conv and not parts:
        return Plan("map", 1)
    most = CPU_CONV_CHUNK if conv else CPU_STATE_BUDGET // max(_nbytes(member_state_shape), 1)
    if most <= 1:
        return Plan("map", 1)
    chunk_members = _even_chunks(num_members, most)
    strategy = "vmap" if chunk_members == num_members else "chunked"
    return Plan(
        strategy, chunk_members, parts_rule.cpu_parts(chunk_members, conv=conv) if parts else 1
    )


def _memory_budget() -> int:
    """Bytes a chunk of members may use: half the device's memory (host RAM on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def members_per_chunk(
    program_for: Callable[[int], Program], args_for, budget: int, unit: int = 1
) -> int:
    """How many members fit the memory ``budget``, from the compiled chunk's memory analysis of
    a population of two (its per-member cost is the difference from one). On a mesh, ``unit`` is
    its ``members`` size: populations of ``unit`` and ``2 * unit`` are measured (per device),
    and the count returned is a multiple of ``unit``."""
    sizes = []
    for k in (unit, 2 * unit):
        program = program_for(k)
        size = min(program.chunks)
        compiled = program.chunks[size].lower(*args_for(k)).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            return 1 << 30
        sizes.append(
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
        )
    per_unit = max(sizes[1] - sizes[0], 1)
    return unit * max(1, (budget - sizes[0]) // per_unit + 1)


@dataclasses.dataclass
class _Group:
    """Members sharing one program: their indices in the population and the static values."""

    static: tuple[tuple[str, Any], ...]
    indices: list[int]


def _groups(members: list[dict[str, Any]]) -> list[_Group]:
    groups: dict[tuple, _Group] = {}
    for i, member in enumerate(members):
        static = tuple((k, v) for k, v in member.items() if k not in TRACED_AXES)
        groups.setdefault(static, _Group(static, [])).indices.append(i)
    return list(groups.values())


def _member_state_shape(model: Layer, config: TrainConfig, hparams: Hparams, example, *, decay):
    """One member's `TrainState` as ``jax.ShapeDtypeStruct``s (traced only: nothing compiles)."""

    def member_init(hp):
        init_key, data_key = seed_keys(*seed_array([0, 0]))
        return init_state(model, config, hp, example, init_key=init_key, data_key=data_key)

    return jax.eval_shape(member_init, hparams.as_arrays(zero_decay_as_none=not decay))


def _run_population(
    model: Layer,
    config: TrainConfig,
    data,
    members: list[dict[str, Any]],
    base: Hparams,
    strategy: str,
    loss_fn,
    on_chunk: ChunkCallback | None,
    chunk_members: int | None,
    mesh: Mesh | None = None,
    checkpoints: GroupCheckpoints | None = None,
) -> tuple[TrainState, Any, str]:
    """Trains one group; returns the stacked final states, the stacked histories, the strategy.
    With ``checkpoints``, each chunk of members (each member under "map") is checkpointed."""
    example = example_input(data.x_train)
    seeds = [_member_seeds(m) for m in members]
    hparams = [_member_hparams(m, base) for m in members]
    # A weight decay no member has is left out of the program; else every member's is traced,
    # zeros included, so that one program serves them all.
    decay = any(hp.weight_decay != 0 for hp in hparams)  # `sweep` made a None 0.0
    unit = 1 if mesh is None else mesh.shape[sharding.MEMBERS]  # chunks split evenly on members

    saved = None if checkpoints is None else checkpoints.layout()
    parts = 1
    if saved is not None:  # a resumed group runs as it was checkpointed
        strategy, chunk_members, parts = saved
    elif strategy == "auto":
        state_shape = _member_state_shape(model, config, hparams[0], example, decay=decay)
        strategy, chunk_members, parts = choose_strategy(
            state_shape,
            len(members),
            sharding.platform(mesh),
            members_axis=unit,
            parts=mesh is None,
            steps=config.steps,
        )
    if mesh is not None:  # parted programs run on one device (a resume onto a mesh drops them)
        parts = 1

    def run(program, state, hp, chunk, kept=None):
        """Runs one unit; ``kept``: its real members, the rest pad it (left out of on_chunk)."""
        checkpointer = None if checkpoints is None else checkpoints.chunk(chunk)
        resume = checkpoints is not None and checkpoints.resume
        report = on_chunk
        if on_chunk is not None and kept is not None:

            def report(step, metrics):
                on_chunk(step, _take(metrics, slice(0, kept)))

        return run_unit(
            program,
            config,
            state,
            hp,
            data,
            on_chunk=report,
            checkpointer=checkpointer,
            resume=resume,
        )

    if strategy == "map":
        if checkpoints is not None:
            checkpoints.save_layout(strategy, 1)
        program = build_program(model, config, example, loss_fn=loss_fn, mesh=mesh)
        states, histories = [], []
        for index, ((init_seed, data_seed), hp) in enumerate(zip(seeds, hparams, strict=True)):
            init_seed, data_seed, hp = sharding.place_run(
                (
                    seed_array(init_seed),
                    seed_array(data_seed),
                    hp.as_arrays(zero_decay_as_none=not decay),
                ),
                mesh,
                population=False,
            )
            state, history = run(program, program.init(init_seed, data_seed, hp), hp, index)
            states.append(state)
            histories.append(dict(history))  # a plain dict: `History` is a pytree leaf
        return _stack(states), jax.tree.map(lambda *xs: np.stack(xs), *histories), strategy

    def population_args(indices):
        """Seeds and hparams of the members at ``indices``, stacked on the host (`jnp.stack`
        of K arrays compiles a K-operand concatenation: 1.6 s for 1024 members)."""
        init_seeds = seed_array([seeds[i][0] for i in indices])  # [K]
        data_seeds = seed_array([seeds[i][1] for i in indices])  # [K]
        hp = _stack_hparams([hparams[i] for i in indices], decay=decay)  # [K] each
        return sharding.place_run((init_seeds, data_seeds, hp), mesh, population=True)

    programs: dict[int, Program] = {}

    def program_for(k):
        if k not in programs:
            programs[k] = build_program(
                model,
                config,
                example,
                loss_fn=loss_fn,
                population=True,
                parts=parts,
                mesh=mesh,
            )
        return programs[k]

    count = len(members)
    if strategy == "chunked":
        if chunk_members is None:

            def args_for(k):
                init_seeds, data_seeds, hp = population_args([0] * k)
                return program_for(k).init(init_seeds, data_seeds, hp), hp, data

            chunk_members = members_per_chunk(program_for, args_for, _memory_budget(), unit)
        elif chunk_members % unit:
            raise ValueError(
                f"chunk_members={chunk_members} does not split along the mesh's members axis "
                f"({unit} devices): use a multiple of {unit}"
            )
        chunk_members = min(chunk_members, count)
    else:
        chunk_members = count
    chunk_members = -(-chunk_members // unit) * unit  # padding members repeat the last one
    if checkpoints is not None:
        checkpoints.save_layout(strategy, chunk_members, parts)

    states, histories = [], []
    for index, start in enumerate(range(0, count, chunk_members)):
        indices = list(range(start, min(start + chunk_members, count)))
        padded = indices + [indices[-1]] * (chunk_members - len(indices))  # one compiled size
        program = program_for(chunk_members)
        init_seeds, data_seeds, hp = population_args(padded)
        kept = len(indices)
        state, history = run(program, program.init(init_seeds, data_seeds, hp), hp, index, kept)
        states.append(_take(state, slice(0, kept)))
        histories.append(_take(dict(history), slice(0, kept)))
    state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *states)
    history = jax.tree.map(lambda *xs: np.concatenate(xs), *histories)
    if mesh is not None:  # members were split over devices (and processes): every one reads all
        state = sharding.gather(state, mesh)
    return state, history, strategy


def sweep(
    model: Layer | Callable[..., Layer],
    data: Dataset,
    axes: Mapping[str, Sequence[Any]],
    *,
    config: TrainConfig | None = None,
    hparams: Hparams = Hparams(),
    strategy: str = "auto",
    chunk_members: int | None = None,
    loss_fn=losses.softmax_cross_entropy,
    on_chunk: ChunkCallback | None = None,
    on_group: Callable[[dict[str, Any], int], None] | None = None,
    mesh: Mesh | None = None,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
    **config_overrides,
) -> SweepResult:
    """Trains every member of the product of ``axes``; one compiled program per shape group.

    Args:
      model: a `Layer`, or ``model(**static_values) -> Layer`` when ``axes`` holds axes that
        change the program (any axis other than ``seed``, ``init_seed``, ``data_seed``, ``lr``,
        ``weight_decay``, ``init_scale``), e.g. ``lambda init, dropout: jaxdl.mlp(init=init,
        dropout=dropout)``. An axis named after a `TrainConfig` field is refused: every
        member shares ``config``.
      data: a `jaxdl.data.Dataset`.
      axes: ``{axis: values}``; the population is their product.
      config: the shared `TrainConfig`; ``config_overrides`` (``steps=6000``, ``batch_size=100``,
        ``optimizer="adam"``...) replace its fields.
      hparams: values of the traced hyper-parameters that are not axes.
      strategy: ``"vmap"`` (one ``jit(vmap(...))`` per group), ``"map"`` (members one after
        another through one compiled program), ``"chunked"`` (vmap over as many members as fit
        half the device memory, estimated from the compiled program's memory analysis, or
        ``chunk_members``), or ``"auto"`` (`choose_strategy`: on GPU/TPU vmap; on CPU a dense
        net's members vmapped in chunks whose stacked state fits 4 MiB, ConvNets in pairs (a
        single one as a population of one), each program's members split into parts that run
        side by side, `jaxdl.step.make_parted_chunk`).
      chunk_members: members per vmapped chunk for ``"chunked"`` (an error with any other
        strategy); ``None`` estimates it.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.
      on_chunk: called after every chunk of every unit the strategy runs with ``(step,
        metrics)``: a vmapped group or chunk of members gives metrics ``[members in it]``,
        ``"map"`` one member's scalars, and the step starts anew with each unit.
      on_group: called before each group with its static values and its number of members.
      mesh: a `jaxdl.sharding.make_mesh` mesh: members split along ``members`` (a group whose
        size does not divide evenly is padded with copies of its last member, then dropped),
        each batch along ``data``; strategy ``"map"`` needs ``members=1``. With several
        processes every process calls `sweep` alike (see `jaxdl.distributed`).
      checkpointer: a `jaxdl.checkpoint.Checkpointer` whose folder receives the sweep's
        checkpoints: the stacked state of each unit the strategy runs (a vmapped group or chunk
        of members, or one member under ``"map"``) every ``checkpointer.every`` steps (at chunk
        ends) and at the end, diverged members included, with its history so far; and
        ``sweep.json``, what the sweep is (see `jaxdl.sweep_checkpoint`). The folder must not
        hold another sweep's checkpoints.
      resume: continue from ``checkpointer``'s folder: completed units are restored, not
        retrained; the others continue from their newest valid checkpoint. Runs are
        deterministic, so every member ends bit-identical to an uninterrupted sweep, with its
        whole history. A folder saved by a sweep of other axes, config, hparams, strategy or
        data (name, shapes, classes) is a `jaxdl.checkpoint.CheckpointError` naming what
        differs.
      **config_overrides: fields of `TrainConfig`.

    Returns:
      A `SweepResult`, members in the order of `members_of` ``(axes)``.

    Example:
      >>> result = jaxdl.sweep(jaxdl.mlp(), data, axes={"seed": range(16), "lr": [1e-3, 1e-2]},
      ...                      steps=6000, batch_size=100, optimizer="adam")
      >>> print(result.summary(by=["lr"]))
      >>> from jaxdl.checkpoint import Checkpointer  # saved every 500 steps; rerun to resume
      >>> result = jaxdl.sweep(model, data, axes, steps=6000, resume=True,
      ...                      checkpointer=Checkpointer("runs/sweep/checkpoints", every=500))
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if chunk_members is not None and not is_count(chunk_members):
        raise ValueError(f"sweep: chunk_members must be a positive int, got {chunk_members!r}")
    if chunk_members is not None and strategy != "chunked":
        raise ValueError(
            f'sweep: chunk_members={chunk_members} needs strategy="chunked", got {strategy!r}'
        )
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {config!r}")
    fields = [field.name for field in dataclasses.fields(TrainConfig)]
    unknown = [name for name in config_overrides if name not in fields]
    if unknown:
        raise TypeError(
            f"sweep: unknown TrainConfig field(s) {unknown}; valid: {', '.join(fields)}"
        )
    config = dataclasses.replace(config or TrainConfig(), **config_overrides)
    axes = _axis_lists(axes)
    shared = [name for name in axes if name in fields]
    if shared:  # a model(**static) would take them and every member train the same config
        raise ValueError(
            f"sweep: axes {shared} are TrainConfig fields, which every member of a sweep "
            f"shares: run one sweep per value (config=TrainConfig({shared[0]}=...)); the axes "
            f"a sweep varies are {', '.join(TRACED_AXES)} and the model function's arguments"
        )
    members = members_of(axes)
    groups = _groups(members)
    if any(group.static for group in groups) and isinstance(model, Layer):
        static_axes = [name for name, _ in groups[0].static]
        close = [m for a in static_axes for m in difflib.get_close_matches(a, TRACED_AXES, n=1)]
        raise ValueError(
            f"sweep axes {static_axes} are not among the axes a Layer takes "
            f"({', '.join(TRACED_AXES)})"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            + f"; axes that change the model need it as a function "
            f"model({', '.join(static_axes)}) -> Layer"
        )
    check_fits(config, data, model, hparams, axes=axes)
    hparams = hparams.as_recorded()  # no decay (None): the same program as 0, the same records
    device_data = to_device(data, mesh)
    checkpoints = None
    if checkpointer is not None:
        description = describe_sweep(axes, config, hparams, strategy, chunk_members, data)
        checkpoints = SweepCheckpointer(checkpointer, description, resume=resume)
    elif resume:
        raise ValueError("sweep: resume=True needs a checkpointer to resume from")
    stacked: list[TrainState] = []  # each group's, [members in the group, ...] leaves
    where: list[Any] = [None] * len(members)  # member -> (group, position in it)
    histories: list[Any] = [None] * len(members)
    strategies, seconds = [None] * len(members), [0.0] * len(members)
    for group_index, group in enumerate(groups):
        static = dict(group.static)
        group_model = model(**static) if static else model
        if on_group is not None:
            on_group(static, len(group.indices))
        started = time.perf_counter()
        state, history, used = _run_population(
            group_model,
            config,
            device_data,
            [members[i] for i in group.indices],
            hparams,
            strategy,
            loss_fn,
            on_chunk,
            chunk_members,
            mesh,
            None if checkpoints is None else checkpoints.group(group_index),
        )
        share = (time.perf_counter() - started) / len(group.indices)
        stacked.append(state)
        for j, i in enumerate(group.indices):
            where[i] = (group_index, j)
            histories[i] = jax.tree.map(lambda h, j=j: h[j], history)
            strategies[i], seconds[i] = used, share
    return SweepResult(
        members=members,
        axes=axes,
        states=MemberStates(stacked, where),
        member_histories=[History(h) for h in histories],
        config=config,
        hparams=hparams,
        strategies=strategies,
        seconds=seconds,
    )
