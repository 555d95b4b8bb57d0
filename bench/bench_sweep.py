"""Sweep benchmark: seed·steps per second of a population of K seeds of one network, trained by
`jaxdl.sweep` (strategy ``auto``, ``vmap``, ``map``) and jaxdl's whole-run scan, against
hand-written JAX and PyTorch ensembles, for an MLP 40-128-128-10 and a small 2-D ConvNet (Adam,
batch 128, every member drawing its own batches from device-resident data).

The implementations, all timed in the same interleaved repeats:

- **jaxdl auto / vmap / map**: ``jaxdl.sweep(model, data, {"seed": range(K)}, strategy=...)``.
  Each call builds and compiles its program anew (new closures), so it is timed from inside:
  ``on_chunk`` stamps the end of every chunk. The first chunk of the call (building, init,
  compiling) and every chunk that contains a test evaluation are left out; the sample is the
  median of the steady chunks' times, each divided by its seed·steps (``chunk_steps`` × the
  members in the chunk, read off the shape of its metrics, which also tells which strategy ran).
  Once enough chunks are timed, ``on_chunk`` raises to end the call, so ``map`` (members one
  after another through one compiled program, a rate that does not depend on K) is timed on its
  first member, and a chunked plan (what ``auto`` runs on CPU for a dense net whose population
  outgrows `jaxdl.sweep.CPU_STATE_BUDGET`; ``chunked(M)`` in the tables) on its first chunk of
  M members. The time to the first chunk is the compile-table entry. A persistent
  compilation cache in a temporary folder of each (network, K) (`persistent_cache`; the
  runners compile outside it) lets the repeated calls load their programs instead of compiling
  them again; the steady chunks run the same executable.
- **jaxdl whole-run scan**: ``jax.jit(jax.vmap(jaxdl.make_train(...)))`` over K keys, a whole
  run of ``2 * chunk_steps`` steps per call (init, one scan, one test evaluation), compiled
  once; its init and evaluation count against it. Its members run in the parts that
  `make_train`'s ``"auto"`` gives a run of `RUN_STEPS` steps on a CPU (`jaxdl.parts`).
- **jaxdl vmap(step) loop**: a Python loop of ``jit(vmap(step))`` of `jaxdl.make_step`, the
  loop of jitted steps the whole-run scan must not be slower than. Both jit with
  ``compiler_options=jaxdl.compiler_options(model, x)``, as jaxdl's docs tell users to (the
  sweep's programs get them from `jaxdl.sweep` itself, but for `auto`'s ConvNet pairs in parts,
  which keep XLA's defaults; the hand-written steps are compiled without).
- **hand vmap(step)**: a Python loop of ``jax.jit(jax.vmap(step), donate_argnums=0)``.
- **hand vmap(scan)**: ``jax.jit(jax.vmap(chunk), donate_argnums=0)``, ``chunk`` a ``lax.scan``
  of ``chunk_steps`` steps.
- **hand loop**: a Python loop over the K seeds of a jitted single-member step (donated).
- **torch.func**: ``stack_module_state`` + ``functional_call`` under ``torch.func.vmap``, the
  summed loss's ``backward`` and one ``torch.optim.Adam`` over the stacked tensors (Adam is
  elementwise, so it equals K optimisers).
- **torch loop**: K ``nn.Sequential`` models with an Adam each, a Python loop.

The hand-written JAX steps draw each member's batch inside the step (``jax.random.randint`` on
a key carried in the state); jaxdl draws each chunk's batches on the device with its own epoch
order (`jaxdl.data.batching`); PyTorch draws them with ``torch.randint``. The hand-written
ConvNet is what users write: ``lax.conv_general_dilated`` and ``lax.reduce_window`` max pooling
(jaxdl's layers use what their ``impl="auto"`` picks on the backend, and a reshape-max pool).
Under vmap that lax.conv becomes a grouped convolution and in a rolled scan it leaves XLA:CPU's
fast path (bench/NOTES.md section 2), so on a CPU the ConvNet's hand vmap(scan) is timed only at
K = 1 (`max_members`; on a GPU or TPU every implementation runs at every K).

K is 1, 8, 32 and 128 on a CPU, up to 1024 on an accelerator (`population_sizes`; ``--ks`` sets
it). On a CPU step counts are small (chunks of 5 to 100 steps, fewer at larger K,
`Spec.chunk_steps`) so that the benchmark takes minutes on 2 cores; on an accelerator every
chunk is `ACCELERATOR_CHUNK_STEPS` (100) steps. jaxdl pays a fixed cost per chunk (a host round
trip, drawing the chunk's batches), a larger share of a short chunk than of the default
``chunk_steps=100``: the map column, whose work per seed·step does not depend on K, shows it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.experimental.compilation_cache import compilation_cache

import jaxdl
from bench import common
from bench.bench_mlp import hand_init as mlp_hand_init
from bench.bench_mlp import hand_step
from bench.common import Table, verdict
from jaxdl.parts import auto_parts
from jaxdl.sweep import choose_strategy

NAME = "sweep"
KS = (1, 8, 32, 128)  # population sizes (seeds)
QUICK_KS = (1, 8)
ACCELERATOR_KS = (1, 8, 32, 128, 512, 1024)  # on a GPU or TPU
ACCELERATOR_CHUNK_STEPS = 100  # steps per chunk on an accelerator, at every K
BATCH = 128  # examples per step and member
NUM_TRAIN = 4000  # examples in the device-resident training set
NUM_TEST = 100  # test examples (the whole-run scan evaluates them once per run)
NUM_CLASSES = 10
LR = 1e-3
MLP_SIZES = (40, 128, 128, 10)  # MNIST-1D-shaped inputs
CONV_SIDE = 8  # ConvNet inputs [8, 8, 1], sklearn-digits-shaped
CONV_CHANNELS = (16, 32)
CONV_KERNEL = 3
TARGET_AUTO_VS_JAXDL = 0.95  # auto's seed·steps/s over the best jaxdl strategy's, at least
TARGET_SCAN_VS_LOOP = 1.0  # whole-run scan's seed·steps/s over the vmap(step) loop's, at least
HAND = ("hand_vmap_step", "hand_vmap_scan", "hand_loop")  # the hand-written JAX strategies


# ----------------------------------------------------------------------------- models


def mlp_logits(params, x):
    """Hand-written MLP: ``params`` ``[(w [in, out], b [out]), ...]``, ``x`` ``[B, 40]``."""
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b[None])  # [B, hidden]
    w, b = params[-1]
    return x @ w + b[None]  # [B, 10]


def conv_hand_init(key):
    """``[(w1 [3, 3, 1, 16], b1), (w2 [3, 3, 16, 32], b2), (w [128, 10], b)]``, he-normal."""
    he = jax.nn.initializers.he_normal()
    keys = jax.random.split(key, len(CONV_CHANNELS) + 1)
    params, c_in = [], 1
    for layer_key, c_out in zip(keys, CONV_CHANNELS, strict=False):
        w = he(layer_key, (CONV_KERNEL, CONV_KERNEL, c_in, c_out), jnp.float32)
        params.append((w, jnp.zeros((c_out,), jnp.float32)))
        c_in = c_out
    side = CONV_SIDE // 2 ** len(CONV_CHANNELS)
    w = he(keys[-1], (side * side * c_in, NUM_CLASSES), jnp.float32)
    params.append((w, jnp.zeros((NUM_CLASSES,), jnp.float32)))
    return params


def conv_logits(params, x):
    """Hand-written ConvNet: ``lax.conv`` (SAME), relu, ``reduce_window`` max 2; ``x`` ``[B, 8, 8,
    1]``."""
    for w, b in params[:-1]:
        x = lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = jax.nn.relu(x + b[None, None, None])  # [B, H, W, C]
        # A NumPy init value: a jnp constant is not concrete under jit (see jaxdl's pooling).
        x = lax.reduce_window(
            x, np.array(-np.inf, x.dtype), lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
        )  # [B, H/2, W/2, C]
    w, b = params[-1]
    return x.reshape(x.shape[0], -1) @ w + b[None]  # [B, 2 * 2 * 32] @ [128, 10] -> [B, 10]


def cross_entropy(logits_fn, params, x, y):
    """Mean softmax cross-entropy of ``logits_fn(params, x)`` ``[B, classes]`` on labels ``[B]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()


@dataclasses.dataclass(frozen=True)
class Spec:
    """One benchmarked network and how long its chunks are."""

    key: str  # table key
    label: str  # table title
    input_shape: tuple[int, ...]  # one example's shape
    target: float  # auto's seed·steps/s over the best hand-written strategy's, at least
    chunk_steps: dict[int, int]  # K -> steps per chunk on a CPU (sweep, hand scan); a run: twice
    max_members: dict[str, int]  # implementation -> largest K it is timed at on a CPU
    jaxdl_model: Callable[[], jaxdl.Layer]
    hand_init: Callable  # hand_init(key) -> params
    hand_logits: Callable  # hand_logits(params, x [B, ...]) -> [B, classes]
    torch_model: Callable  # torch_model(torch) -> nn.Module on NCHW / [B, features] inputs


def torch_mlp(torch):
    """The MLP in PyTorch: ``nn.Sequential`` of Linear and ReLU, on ``[B, 40]``."""
    nn = torch.nn
    layers = []
    for m, n in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=False):
        layers += [nn.Linear(m, n), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the output layer


def torch_convnet(torch):
    """The ConvNet in PyTorch (NCHW): Conv2d, ReLU, MaxPool2d twice, Flatten, Linear."""
    nn = torch.nn
    layers, c_in = [], 1
    for c_out in CONV_CHANNELS:
        pad = CONV_KERNEL // 2
        layers += [nn.Conv2d(c_in, c_out, CONV_KERNEL, padding=pad), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c_out
    side = CONV_SIDE // 2 ** len(CONV_CHANNELS)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(side * side * c_in, NUM_CLASSES))


SPECS = (
    Spec(
        "mlp",
        "MLP 40-128-128-10",
        (MLP_SIZES[0],),
        1.0,
        {1: 100, 8: 100, 32: 50, 128: 25},
        {},
        lambda: jaxdl.mlp(hidden=MLP_SIZES[1:-1], num_classes=NUM_CLASSES, activation="relu"),
        lambda key: mlp_hand_init(key, MLP_SIZES),
        mlp_logits,
        torch_mlp,
    ),
    Spec(
        "convnet",
        "ConvNet 8×8×1 → conv 3×3 16 → max-pool 2 → conv 3×3 32 → max-pool 2 → dense 10",
        (CONV_SIDE, CONV_SIDE, 1),
        0.95,
        {1: 20, 8: 10, 32: 5, 128: 5},
        # lax.conv under vmap is a grouped conv, and in a rolled scan it falls off XLA:CPU's
        # fast path (NOTES.md section 2): 17 seed·steps/s at K = 8 (hand loop: 208), 8 at
        # K = 32 after 37 s of compiling (load 5 to 9).
        {"hand_vmap_scan": 1},
        lambda: jaxdl.convnet(
            channels=CONV_CHANNELS, kernel=CONV_KERNEL, pool="max", activation="relu"
        ),
        conv_hand_init,
        conv_logits,
        torch_convnet,
    ),
)


def chunk_steps_for(spec: Spec, num_members: int) -> int:
    """Steps per chunk at K = ``num_members``: on a CPU, ``spec.chunk_steps`` at the largest
    listed K not above it (short chunks keep large populations to minutes on 2 cores); on an
    accelerator, `ACCELERATOR_CHUNK_STEPS`."""
    if common.on_accelerator():
        return ACCELERATOR_CHUNK_STEPS
    listed = sorted(spec.chunk_steps.items())
    below = [steps for k, steps in listed if k <= num_members]
    return below[-1] if below else listed[0][1]


def max_members(spec: Spec) -> dict[str, int]:
    """``{implementation: largest K}`` for the implementations too slow to time beyond it:
    ``spec.max_members`` on a CPU (XLA:CPU's conv cliffs), none on an accelerator."""
    return {} if common.on_accelerator() else spec.max_members


def make_data(spec: Spec, seed: int = 0) -> jaxdl.data.Dataset:
    """Standard-normal inputs and random labels: `NUM_TRAIN` train, `NUM_TEST` test examples."""
    rng = np.random.default_rng(seed)
    shape = spec.input_shape
    x = rng.standard_normal((NUM_TRAIN + NUM_TEST, *shape), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, NUM_TRAIN + NUM_TEST).astype(np.int32)
    return jaxdl.data.Dataset(
        x[:NUM_TRAIN], y[:NUM_TRAIN], x[NUM_TRAIN:], y[NUM_TRAIN:], NUM_CLASSES, spec.key
    )


# ----------------------------------------------------------------------------- jaxdl


class _Timed(Exception):
    """Raised from ``on_chunk`` once enough chunks are timed: ends the sweep call early."""


@dataclasses.dataclass
class SweepSample:
    """One timed `jaxdl.sweep` call.

    Attributes:
      seed_step_s: seconds per seed·step, the median over the steady chunks.
      first_chunk_s: from the call to the end of its first chunk (build, init, compile, run).
      strategy: what ran, from the metrics' shape: ``"map"``, ``"vmap"`` or ``"chunked(M)"``.
    """

    seed_step_s: float
    first_chunk_s: float
    strategy: str


# Steps of a timed sweep run (each call is stopped long before): a long run, which is what
# `auto` plans for (no parts below `jaxdl.sweep.CPU_PARTS_MIN_STEPS`); every chunk size divides it.
RUN_STEPS = 5000


def sweep_config(chunk_steps: int) -> jaxdl.TrainConfig:
    """A run of `RUN_STEPS` steps in chunks of ``chunk_steps``, its test evaluation at the end.

    The timed calls are stopped well before the end; ``steps`` changes nothing in the compiled
    chunk (a constant learning rate), so every call compiles, or loads, the same program.
    """
    steps = RUN_STEPS
    return jaxdl.TrainConfig(
        steps=steps,
        batch_size=BATCH,
        optimizer="adam",
        chunk_steps=chunk_steps,
        eval_every=steps,
        eval_batch_size=NUM_TEST,
    )


def time_sweep(
    model: jaxdl.Layer,
    data: jaxdl.data.Dataset,
    num_members: int,
    strategy: str,
    config: jaxdl.TrainConfig,
    *,
    min_chunks: int,
    min_s: float,
) -> SweepSample:
    """Times one ``jaxdl.sweep`` call over ``num_members`` seeds between its ``on_chunk`` calls.

    A chunk is steady when the previous callback was the previous chunk of the same run (so
    neither building, init nor compiling falls between them) and it ends before the run's last
    step (so no test evaluation falls in it). The call is ended, by raising from ``on_chunk``,
    once ``min_chunks`` steady chunks took ``min_s`` seconds together (or at its end).
    """
    stamps = []  # (seconds, step reached, shape of the chunk's loss)
    steady = []  # (seconds, seed·steps) of each steady chunk

    def on_chunk(step, metrics):
        now = time.perf_counter()
        shape = np.shape(metrics["loss"])  # () for map, [members] for a population
        if stamps and step == stamps[-1][1] + config.chunk_steps and step < config.steps:
            steady.append((now - stamps[-1][0], config.chunk_steps * int(np.prod(shape))))
        stamps.append((now, step, shape))
        if len(steady) >= min_chunks and sum(s for s, _ in steady) >= min_s:
            raise _Timed

    started = time.perf_counter()
    try:
        jaxdl.sweep(
            model,
            data,
            {"seed": range(num_members)},
            config=config,
            strategy=strategy,
            on_chunk=on_chunk,
        )
    except _Timed:
        pass
    if len(steady) < min_chunks:
        raise RuntimeError(f"sweep {strategy}: {len(steady)} steady chunks, {min_chunks} needed")
    shape = stamps[0][2]
    ran = ran_label("map" if shape == () else "vmap", shape[0] if shape else 1, num_members)
    per_seed_step = statistics.median(seconds / seed_steps for seconds, seed_steps in steady)
    return SweepSample(per_seed_step, stamps[0][0] - started, ran)


def ran_label(strategy: str, chunk_members: int, num_members: int) -> str:
    """What a sweep of ``num_members`` ran, as `time_sweep` reads it off the metrics' shape:
    ``"map"``, ``"vmap"`` or ``"chunked(M)"``."""
    if strategy == "map":
        return "map"
    return "vmap" if chunk_members == num_members else f"chunked({chunk_members})"


def auto_parts_of(
    model: jaxdl.Layer, data: jaxdl.data.Dataset, num_members: int, config: jaxdl.TrainConfig
) -> tuple[str, int]:
    """``(what auto runs, its parts)``: `jaxdl.sweep.choose_strategy`'s plan for one member's
    `TrainState` (as `jaxdl.sweep` makes it), labelled as `ran_label`. With parts > 1 auto's
    program is not the program of the strategy it names (``"vmap"`` in 4 parts is not strategy
    ``"vmap"``), so its choice cannot stand in for its own samples."""
    example = jax.ShapeDtypeStruct((1, *data.x_train.shape[1:]), data.x_train.dtype)
    hparams = jaxdl.Hparams(lr=LR).as_arrays()  # no decay: none in the program

    def member():
        key = jax.random.key(0)
        return jaxdl.init_state(model, config, hparams, example, init_key=key, data_key=key)

    plan = choose_strategy(jax.eval_shape(member), num_members, steps=config.steps)
    return ran_label(plan.strategy, plan.chunk_members, num_members), plan.parts


def population_hparams(num_members: int) -> jaxdl.Hparams:
    """`Hparams` of ``num_members`` members, ``[K]`` float32 each, with no weight decay (``None``):
    what `jaxdl.sweep` traces when no member decays. A traced zero would add a decay term that
    reads every parameter each step, which the sweep columns and the hand-written steps skip."""
    full = functools.partial(jnp.full, (num_members,), dtype=jnp.float32)  # [K]
    return jaxdl.Hparams(lr=full(LR), weight_decay=None, init_scale=full(1.0))


def whole_run_parts(model: jaxdl.Layer, data: jaxdl.data.Dataset, num_members: int) -> int:
    """The parts `jaxdl.make_train`'s ``"auto"`` splits ``num_members`` into in a run of
    `RUN_STEPS` steps (`jaxdl.parts.auto_parts`; 1 on an accelerator)."""
    example = jax.ShapeDtypeStruct((1, *data.x_train.shape[1:]), data.x_train.dtype)
    params = jax.eval_shape(lambda key: model.init(key, example)[0], jax.random.key(0))
    return auto_parts(params, num_members, steps=RUN_STEPS)


def whole_run_runner(spec: Spec, data: jaxdl.data.Dataset, num_members: int, steps: int):
    """``(runner, first_s)`` of ``jit(vmap(make_train))`` with one chunk per run (init, a scan of
    ``steps`` steps, one test evaluation): ``runner(n)`` runs ``ceil(n / steps)`` whole runs.
    The timed runs are short, so their members are split into the parts ``"auto"`` gives a
    long run (`whole_run_parts`)."""
    config = jaxdl.TrainConfig(
        steps=steps, batch_size=BATCH, chunk_steps=steps, eval_batch_size=NUM_TEST
    )
    model = spec.jaxdl_model()
    parts = whole_run_parts(model, data, num_members)
    train = jaxdl.make_train(model, jaxdl.train.to_device(data), config, parts=parts)
    options = jaxdl.compiler_options(model, data.x_train)
    population = jax.jit(jax.vmap(train), compiler_options=options)
    keys = jax.random.split(jax.random.key(0), num_members)  # [K]
    hparams = population_hparams(num_members)

    def run(n: int) -> None:
        for _ in range(-(-n // steps)):
            out = population(keys, hparams)
        common.block(out)

    return run, common.time_once(lambda: run(1))


def jaxdl_loop_runner(spec: Spec, data: jaxdl.data.Dataset, num_members: int):
    """``(runner, first_s)`` of a Python loop of ``jit(vmap(step))`` with jaxdl's own step
    (`jaxdl.make_step`), each member's batch drawn in the step as the hand-written steps draw
    theirs: the loop of jitted steps the whole-run scan is compared with."""
    model = spec.jaxdl_model()
    config = jaxdl.TrainConfig(batch_size=BATCH, optimizer="adam")
    step = jaxdl.make_step(model, config)

    def drawn_step(state, hparams, x_all, y_all):
        batch_key = jax.random.fold_in(state.key, state.step)
        idx = jax.random.randint(batch_key, (BATCH,), 0, x_all.shape[0])  # [B]
        return step(state, hparams, x_all[idx], y_all[idx])

    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    program = jaxdl.train.build_program(model, config, x_all[:1], population=True)
    seeds = jaxdl.train.seed_array(range(num_members))  # [K]
    hparams = population_hparams(num_members)
    state = program.init(seeds, seeds, hparams)
    loop_step = jax.jit(
        jax.vmap(drawn_step, in_axes=(0, 0, None, None)),
        donate_argnums=0,
        compiler_options=jaxdl.compiler_options(model, x_all),
    )
    return common.stepper(loop_step, state, hparams, x_all, y_all)


# ----------------------------------------------------------------------------- hand-written


def member_step(optimizer, loss_fn, carry, x_all, y_all):
    """One Adam step of one member on a batch drawn at random from the whole training set.

    Args:
      optimizer: the optax optimiser.
      loss_fn: ``loss_fn(params, x, y) -> ()``.
      carry: ``(params, opt_state, key)``.
      x_all: training inputs ``[N, ...]``.
      y_all: training labels ``[N]``.

    Returns:
      ``((params, opt_state, key), loss)``.
    """
    params, opt_state, key = carry
    key, batch_key = jax.random.split(key)
    idx = jax.random.randint(batch_key, (BATCH,), 0, x_all.shape[0])  # [B]
    (params, opt_state), loss = hand_step(
        optimizer, loss_fn, (params, opt_state), x_all[idx], y_all[idx]
    )
    return (params, opt_state, key), loss


def member_chunk(step, num_steps, carry, x_all, y_all):
    """``num_steps`` steps of ``step`` in a rolled ``lax.scan``; the mean loss."""

    def body(carry, _):
        return step(carry, x_all, y_all)

    carry, losses = lax.scan(body, carry, None, length=num_steps)
    return carry, losses.mean()


def hand_parts(spec: Spec):
    """``(step, init)``: the single-member step of `member_step` and ``init(key) -> carry``."""
    optimizer = optax.adam(LR)
    loss_fn = functools.partial(cross_entropy, spec.hand_logits)
    step = functools.partial(member_step, optimizer, loss_fn)

    def init(key):
        init_key, data_key = jax.random.split(key)
        params = spec.hand_init(init_key)
        return params, optimizer.init(params), data_key

    return step, init


def hand_runners(
    spec: Spec, data: jaxdl.data.Dataset, num_members: int, chunk_steps: int, names=HAND
):
    """``{name: (runner, first_s)}`` for the ``names`` among ``"hand_vmap_step"``,
    ``"hand_vmap_scan"``, ``"hand_loop"``; a runner's ``n`` counts population steps (each member
    takes one)."""
    step, init = hand_parts(spec)
    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    keys = jax.random.split(jax.random.key(0), num_members)  # [K]
    population = jax.jit(jax.vmap(init))  # [K, ...] carries

    runners = {}
    if "hand_vmap_step" in names:
        vmap_step = jax.jit(jax.vmap(step, in_axes=(0, None, None)), donate_argnums=0)
        runners["hand_vmap_step"] = common.stepper(vmap_step, population(keys), x_all, y_all)
    if "hand_vmap_scan" in names:
        chunk = functools.partial(member_chunk, step, chunk_steps)
        vmap_scan = jax.jit(jax.vmap(chunk, in_axes=(0, None, None)), donate_argnums=0)
        runners["hand_vmap_scan"] = common.stepper(
            vmap_scan, population(keys), x_all, y_all, steps_per_call=chunk_steps
        )
    if "hand_loop" not in names:
        return runners
    single = jax.jit(step, donate_argnums=0)
    spare = jax.tree.map(lambda leaf: leaf[0], population(keys))
    first_s = common.time_once(lambda: common.block(single(spare, x_all, y_all)))
    stacked = population(keys)
    carries = [jax.tree.map(lambda leaf, k=k: leaf[k], stacked) for k in range(num_members)]

    def loop(n: int) -> None:
        for _ in range(n):
            for k in range(num_members):
                carries[k], loss = single(carries[k], x_all, y_all)
        common.block(loss)

    runners["hand_loop"] = loop, first_s
    return runners


# ----------------------------------------------------------------------------- PyTorch


def torch_runners(spec: Spec, data: jaxdl.data.Dataset, num_members: int):
    """``{"torch_func" | "torch_loop": (runner, first_s)}``, or ``{}`` without PyTorch."""
    torch = common.import_torch()
    if torch is None:
        return {}
    torch.manual_seed(0)
    device = common.torch_device(torch)
    x = data.x_train
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
    x_all = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    y_all = torch.from_numpy(data.y_train.astype(np.int64)).to(device)
    cross_entropy_t = torch.nn.functional.cross_entropy
    n = x_all.shape[0]

    models = [spec.torch_model(torch).to(device) for _ in range(num_members)]
    params, buffers = torch.func.stack_module_state(models)  # {name: [K, ...]}
    base = copy.deepcopy(models[0]).to("meta")

    def member_loss(p, b, xb, yb):
        return cross_entropy_t(torch.func.functional_call(base, (p, b), (xb,)), yb)

    ensemble_loss = torch.func.vmap(member_loss)  # [K] losses
    ensemble_opt = torch.optim.Adam(list(params.values()), lr=LR)

    def ensemble(steps: int) -> None:
        for _ in range(steps):
            idx = torch.randint(n, (num_members, BATCH), device=device)  # [K, B]
            loss = ensemble_loss(params, buffers, x_all[idx], y_all[idx])  # [K]
            ensemble_opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # members are independent: each gets its own gradient
            ensemble_opt.step()
        common.torch_sync(torch)

    optimizers = [torch.optim.Adam(m.parameters(), lr=LR) for m in models]

    def loop(steps: int) -> None:
        for _ in range(steps):
            for model, opt in zip(models, optimizers, strict=True):
                idx = torch.randint(n, (BATCH,), device=device)
                opt.zero_grad(set_to_none=True)
                cross_entropy_t(model(x_all[idx]), y_all[idx]).backward()
                opt.step()
        common.torch_sync(torch)

    return {
        "torch_func": (ensemble, common.time_once(lambda: ensemble(1))),
        "torch_loop": (loop, common.time_once(lambda: loop(1))),
    }


# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long the measurements run."""

    ks: tuple[int, ...]  # population sizes
    repeats: int  # interleaved samples of every implementation
    target_s: float  # seconds per sample of a runner (hand-written, PyTorch, whole run)
    min_chunks: int  # steady chunks timed per jaxdl.sweep call (one sample), at least
    whole_run: bool  # also time jaxdl's whole-run scan (5-15 s to compile) and step loop


FULL = Settings(ks=KS, repeats=4, target_s=0.25, min_chunks=1, whole_run=True)
QUICK = Settings(ks=QUICK_KS, repeats=2, target_s=0.15, min_chunks=1, whole_run=False)

JAXDL_STRATEGIES = ("auto", "vmap", "map")  # timed with jaxdl.sweep
COLUMNS = {  # implementation -> column header
    "auto": "jaxdl auto",
    "vmap": "jaxdl vmap",
    "map": "jaxdl map",
    "whole_run": "jaxdl whole-run scan",
    "jaxdl_loop": "jaxdl vmap(step) loop",
    "hand_vmap_step": "hand vmap(step)",
    "hand_vmap_scan": "hand vmap(scan)",
    "hand_loop": "hand loop",
    "torch_func": "torch.func",
    "torch_loop": "torch loop",
}

FIRST_CALLS = (*JAXDL_STRATEGIES, "whole_run", "jaxdl_loop", *HAND)  # the compile table


@dataclasses.dataclass
class Measured:
    """Every implementation of one (network, K).

    Attributes:
      timings: ``{implementation: Timing}`` in seconds per seed·step, one sample per repeat.
      first_s: ``{implementation: seconds}``: first call (runners) or time to the first chunk
        of the first call (sweeps; auto's is timed first).
      strategy: what ``auto`` ran.
      chunk_steps: steps per chunk.
      parts: the parts auto's program split its members into (`auto_parts_of`); ``None``
        when auto did not run what `choose_strategy` planned (then unknown).
    """

    timings: dict[str, common.Timing]
    first_s: dict[str, float]
    strategy: str
    chunk_steps: int
    parts: int | None = 1


def runner_sampler(runner: common.Runner, number: int, members: int) -> Callable[[], float]:
    """A sampler of ``runner``: seconds per seed·step of ``number`` population steps."""
    return lambda: common.time_once(lambda: runner(number)) / (number * members)


def sample_steps(runner: common.Runner, target_s: float, per_call: int) -> int:
    """Population steps per sample of ``runner``, whole calls of ``per_call`` steps, so that a
    sample takes about ``target_s``. `common.calibrate` times ``runner(1)``, which runs one whole
    call (``per_call`` steps), so its count is of calls. The first call ran once already;
    calibrating runs once more, warm."""
    return common.calibrate(runner, target_s) * per_call


def measure(spec: Spec, num_members: int, settings: Settings, *, torch: bool = True) -> Measured:
    """Times every implementation of ``spec`` with ``num_members`` seeds, interleaved."""
    data = make_data(spec)
    chunk_steps = chunk_steps_for(spec, num_members)
    limits = max_members(spec)
    timed = [n for n in HAND if num_members <= limits.get(n, num_members)]
    pairs = hand_runners(spec, data, num_members, chunk_steps, timed)
    if settings.whole_run:
        pairs["whole_run"] = whole_run_runner(spec, data, num_members, 2 * chunk_steps)
        pairs["jaxdl_loop"] = jaxdl_loop_runner(spec, data, num_members)
    if torch:
        pairs.update(torch_runners(spec, data, num_members))
    samplers: dict[str, Callable[[], float]] = {}
    for name, (runner, _) in pairs.items():
        per_call = {"hand_vmap_scan": chunk_steps, "whole_run": 2 * chunk_steps}.get(name, 1)
        number = sample_steps(runner, settings.target_s, per_call)
        if number > per_call:
            runner(number)  # warm-up at the measured size
        samplers[name] = runner_sampler(runner, number, num_members)
    first_s = {name: pair[1] for name, pair in pairs.items()}

    model = spec.jaxdl_model()
    config = sweep_config(chunk_steps)
    time_call = functools.partial(time_sweep, model, data, num_members, config=config)
    ran = set()
    for strategy in JAXDL_STRATEGIES:

        def sample(strategy=strategy):
            timed = time_call(strategy, min_chunks=settings.min_chunks, min_s=settings.target_s)
            first_s.setdefault(strategy, timed.first_chunk_s)  # the first call's
            if strategy == "auto":
                ran.add(timed.strategy)
            return timed.seed_step_s

        samplers[strategy] = sample

    # auto first: its first call compiles, the strategy it runs then loads that program. The
    # cache is this (network, K)'s alone and holds no runner: the compile table's entries are
    # compiles, but for a strategy whose program auto compiled just before.
    with persistent_cache():
        timings = interleave_samples(samplers, settings.repeats, first="auto")
    strategy = "/".join(sorted(ran))
    planned, parts = auto_parts_of(model, data, num_members, config)
    return Measured(timings, first_s, strategy, chunk_steps, parts if planned == strategy else None)


@contextlib.contextmanager
def persistent_cache():
    """A persistent compilation cache in a temporary folder, for the duration of the block.

    Every `jaxdl.sweep` call compiles its programs anew; with the cache, a call after the first
    of the same (network, K, strategy) loads them instead (about 1 s rather than 3 to 20 s on 2
    busy cores). What is timed, the steady chunks, runs the same executable either way. The
    previous settings are restored afterwards. `measure` opens one around its samples only, so
    no compile-table entry loads a program compiled at another K (map's, the hand loop's
    single-member step are the same at every K), nor a runner's.
    """
    before = {
        name: getattr(jax.config, name)
        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    }
    with tempfile.TemporaryDirectory(prefix="jaxdl-bench-sweep-") as folder:
        compilation_cache.reset_cache()  # the cache is set up once, on the next compilation
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        try:
            yield
        finally:
            for name, value in before.items():
                jax.config.update(name, value)
            compilation_cache.reset_cache()


def interleave_samples(
    samplers: dict[str, Callable[[], float]],
    repeats: int,
    *,
    first: str | None = None,
    seed: int = 0,
) -> dict[str, common.Timing]:
    """`common.interleave` for samplers that time themselves: each repeat takes one sample of
    every sampler, in a random order (seeded; ``first`` leads the first repeat). Not rotated:
    in a rotation every sampler follows the same one in every repeat, and what runs just before
    a sample (PyTorch's threads, a flushed cache) slows it a little."""
    samples: dict[str, list[float]] = {name: [] for name in samplers}
    names = list(samplers)
    rng = np.random.default_rng(seed)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside one sample is noise
    try:
        for r in range(repeats):
            order = [names[i] for i in rng.permutation(len(names))]
            if r == 0 and first is not None:
                order.remove(first)
                order.insert(0, first)
            for name in order:
                samples[name].append(samplers[name]())
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: common.Timing(values, 1) for name, values in samples.items()}


# ----------------------------------------------------------------------------- tables


def rate(measured: Measured, name: str) -> float | None:
    """Median seed·steps per second of ``name``, ``None`` if it was not timed."""
    timing = measured.timings.get(name)
    return None if timing is None else 1.0 / timing.median


def best_of(measured: Measured, names) -> str:
    """The name among ``names`` with the highest median seed·steps/s."""
    timed = [name for name in names if name in measured.timings]
    return min(timed, key=lambda name: measured.timings[name].median)


def over(measured: Measured, a: str, b: str) -> tuple[float | None, float]:
    """``a``'s seed·steps/s over ``b``'s: the median of the per-repeat ratios, and their noise
    (``None`` and 0 if either was not timed)."""
    if a not in measured.timings or b not in measured.timings:
        return None, 0.0
    return common.paired_ratio(measured.timings[b], measured.timings[a])


def auto_ran(measured: Measured) -> str:
    """The "auto ran" cell: the strategy, and its parts when more than one."""
    parts = measured.parts
    return measured.strategy + (f", {parts} parts" if parts is not None and parts > 1 else "")


def tables(results: dict[str, dict[int, Measured]], settings: Settings) -> list[Table]:
    """The throughput table of each network, the targets table and the compile table."""
    specs = {spec.key: spec for spec in SPECS}
    out = []
    target_rows, first_rows = [], []
    for key, by_k in results.items():
        spec = specs[key]
        rows = []
        for k, m in by_k.items():
            rows.append([k, auto_ran(m), *(rate(m, name) for name in COLUMNS), m.chunk_steps])
            hand = best_of(m, HAND)
            own = best_of(m, ("vmap", "map"))
            auto_hand, noise = over(m, "auto", hand)
            auto_own, own_noise = over(m, "auto", own)
            # auto runs the program of the strategy it chose, unless in parts or chunks: then
            # (or when its plan is unknown) auto's own samples are judged.
            same = m.strategy in ("vmap", "map") and m.parts == 1
            chosen = over(m, m.strategy, own)[0] if same else auto_own
            scan_loop = over(m, "whole_run", "jaxdl_loop")[0]
            target_rows.append(
                [
                    spec.key,
                    k,
                    auto_ran(m),
                    auto_hand,
                    COLUMNS[hand],
                    verdict(auto_hand, spec.target, at_most=False),
                    auto_own,
                    chosen,
                    COLUMNS[own],
                    verdict(chosen, TARGET_AUTO_VS_JAXDL, at_most=False),
                    scan_loop,
                    verdict(scan_loop, TARGET_SCAN_VS_LOOP, at_most=False),
                    over(m, "hand_vmap_scan", "hand_vmap_step")[0],
                    f"±{noise / 2:.0%} / ±{own_noise / 2:.0%}",
                ]
            )
            first_rows.append([spec.key, k] + [m.first_s.get(name) for name in FIRST_CALLS])
        spreads = [t.spread for m in by_k.values() for t in m.timings.values()]
        out.append(
            Table(
                f"sweep.{key}",
                f"Sweep of K seeds, {spec.label}, Adam, batch {BATCH}: seed·steps/s (median)",
                ["K", "auto ran", *COLUMNS.values(), "chunk steps"],
                rows,
                [
                    "jaxdl auto/vmap/map: `jaxdl.sweep(model, data, {'seed': range(K)}, "
                    "strategy=...)`, timed between `on_chunk` callbacks (steady chunks only: "
                    "no compile, no evaluation; see the module docstring); map runs members one "
                    "after another, so it is timed on the first. Whole-run scan: "
                    "`jit(vmap(make_train))` of runs of 2 × `chunk steps` steps (init and one "
                    "test evaluation included), members in the parts `make_train` gives a long "
                    "run (`jaxdl.parts.auto_parts`); jaxdl vmap(step) loop: a Python loop of "
                    "`jit(vmap(make_step))`, batches drawn in the step.",
                    "hand vmap(step): a Python loop of `jit(vmap(step))`; hand vmap(scan): "
                    "`jit(vmap(lax.scan of chunk steps))`; hand loop: a Python loop over seeds "
                    "of a jitted single-member step; all donated, batches drawn in the step.",
                    f"{settings.repeats} interleaved repeats; relative IQR of the samples: median "
                    f"{np.median(spreads):.0%}, max {np.max(spreads):.0%}.",
                    *(
                        f"{COLUMNS[name]}: not timed for K > {k} (seconds per step and tens of "
                        "seconds to compile; see `SPECS`)."
                        for name, k in max_members(spec).items()
                    ),
                    *([common.TORCH_NOTE] if common.import_torch() else [common.TORCH_MISSING]),
                ],
            )
        )
    out.append(
        Table(
            "sweep.targets",
            "Sweep targets: ratios of seed·steps/s (medians of per-repeat ratios)",
            [
                "network",
                "K",
                "auto ran",
                "auto / best hand",
                "best hand",
                "target",
                "auto / best jaxdl",
                "auto's choice / best jaxdl",
                "best jaxdl",
                "target",
                "whole-run scan / jaxdl vmap(step) loop",
                "target",
                "hand vmap(scan) / vmap(step)",
                "noise",
            ],
            target_rows,
            [
                "best hand: the fastest (median) of hand vmap(step), vmap(scan) and loop; best "
                "jaxdl: the faster of strategy vmap and map (chunked equals vmap when memory "
                "suffices). Targets: auto ≥ 1.0× the best hand-written for the MLP, ≥ 0.95× "
                "for the ConvNet; auto ≥ 0.95× the best jaxdl strategy; the whole-run scan "
                "never slower than a Python loop of jitted (vmapped) steps, jaxdl's own step "
                "(`make_step`) with batches drawn by `jax.random.randint`.",
                "When auto ran plain vmap or map (auto ran, no parts), it runs that strategy's "
                "program, so auto / best jaxdl differs from auto's choice / best jaxdl (that "
                "strategy's own samples over the best's; 1 when auto chose the best) only by "
                "noise, and the target is judged on the latter. When auto ran a chunked plan "
                "(chunked(M): M members vmapped per program run) or split its program into "
                "parts (`jaxdl.sweep.choose_strategy`; on a CPU only), its program is neither "
                "strategy's: auto's choice / best jaxdl is then auto / best jaxdl, auto's own "
                "samples. Noise: ± half the relative IQR of the per-repeat ratios auto / best "
                "hand and auto / best jaxdl.",
            ],
        )
    )
    out.append(
        Table(
            "sweep.first_call",
            "Sweep compile: time to the first chunk of the first call (jaxdl.sweep) or first "
            "call (runners), s",
            ["network", "K", *(COLUMNS[n] for n in FIRST_CALLS)],
            first_rows,
            [
                "jaxdl.sweep: from the call to the first `on_chunk` (data to device, build, "
                "init, compile, first chunk) of its first call. The benchmark keeps a "
                "persistent compilation cache for each (network, K), so a strategy running the "
                "program auto compiled before it at that K loads it: that entry is a sweep call "
                "without compiling. Runners: trace + compile + first call, in the warm "
                "benchmark process, without the cache.",
            ],
        )
    )
    return out


def population_sizes(quick: bool = False) -> tuple[int, ...]:
    """The K timed by default: `QUICK_KS` with ``quick``, else `KS` on a CPU and
    `ACCELERATOR_KS` (up to 1024) on a GPU or TPU."""
    if quick:
        return QUICK_KS
    return ACCELERATOR_KS if common.on_accelerator() else KS


def run(quick: bool = False, ks: tuple[int, ...] | None = None) -> list[Table]:
    """Times every network at every K (``ks``, default `population_sizes`); returns the
    throughput, targets and compile tables."""
    settings = QUICK if quick else FULL
    settings = dataclasses.replace(settings, ks=tuple(ks or population_sizes(quick)))
    results = {spec.key: {k: measure(spec, k, settings) for k in settings.ks} for spec in SPECS}
    return tables(results, settings)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K in (1, 8), fewer repeats")
    parser.add_argument("--ks", default="", help="population sizes, e.g. 512,1024")
    args = parser.parse_args()
    try:
        ks = common.parse_ks(args.ks) or None
    except ValueError as error:
        parser.error(f"--ks: {error}")
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    for table in run(args.quick, ks):
        print(table.markdown(), flush=True)
    print(
        f"{time.perf_counter() - started:.0f} s; 1-min load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end; {os.cpu_count()} cores."
    )
