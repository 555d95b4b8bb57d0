"""MLP train-step benchmark: jaxdl's jitted step vs a hand-written pure-JAX step vs PyTorch eager,
and a rolled ``lax.scan`` of steps (jaxdl `make_chunk`, hand-written) vs a Python loop of steps.

Every step is Adam on softmax cross-entropy, float32, on a fixed batch of random inputs (the scans
gather their batches from a device-resident data set, as `make_chunk` does).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jaxdl
from bench import common
from bench.common import Table, ms, verdict

NAME = "mlp"
SCAN_STEPS = 100  # steps per scan call (one `make_chunk` chunk)


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmarked MLP."""

    label: str  # row label
    sizes: tuple[int, ...]  # (inputs, *hidden, classes)
    batch: int  # examples per step
    target: float  # the jaxdl / hand-written step-time ratio to meet
    scan: bool  # also time a rolled scan of SCAN_STEPS steps vs a loop
    quick: bool  # part of --quick

    @property
    def num_params(self) -> int:
        return sum(m * n + n for m, n in zip(self.sizes[:-1], self.sizes[1:], strict=False))

    @property
    def flops(self) -> int:
        """FLOPs per train step: 2 per parameter and example forward, 4 backward."""
        return 6 * self.num_params * self.batch


CONFIGS = (
    Config("MLP 784-512-512-10, batch 128", (784, 512, 512, 10), 128, 1.03, True, True),
    Config("MLP 784-512-512-10, batch 1024", (784, 512, 512, 10), 1024, 1.03, False, False),
    Config("small MLP 40-128-128-10, batch 128", (40, 128, 128, 10), 128, 1.05, True, True),
)


def make_data(config: Config, seed: int = 0):
    """Random inputs ``[N, in]`` float32 and labels ``[N]`` int32 (NumPy), N = max(8 B, 4096)."""
    rng = np.random.default_rng(seed)
    n = max(8 * config.batch, 4096)
    x = rng.standard_normal((n, config.sizes[0]), dtype=np.float32)
    y = rng.integers(0, config.sizes[-1], n).astype(np.int32)
    return x, y


def scan_indices(num_examples: int, steps: int, batch: int, seed: int = 1) -> jax.Array:
    """Batches of ``steps`` steps from consecutive epoch permutations, ``[steps, batch]`` int32."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch // num_examples)
    order = np.concatenate([rng.permutation(num_examples) for _ in range(epochs)])
    return jnp.asarray(order[: steps * batch].reshape(steps, batch), jnp.int32)


# ----------------------------------------------------------------------------- jaxdl


def jaxdl_runners(config: Config, x, y):
    """jaxdl's ``{"step": (runner, first_s), "chunk": ...}`` (chunk when ``config.scan``)."""
    model = jaxdl.mlp(hidden=config.sizes[1:-1], num_classes=config.sizes[-1], activation="relu")
    train_config = jaxdl.TrainConfig(batch_size=config.batch, optimizer="adam")
    hparams = jaxdl.Hparams(lr=1e-3).as_arrays()
    xb, yb = jnp.asarray(x[: config.batch]), jnp.asarray(y[: config.batch])

    def fresh_state():
        init_key, data_key = jax.random.split(jax.random.key(0))
        return jaxdl.init_state(
            model, train_config, hparams, xb, init_key=init_key, data_key=data_key
        )

    step = jax.jit(jaxdl.make_step(model, train_config), donate_argnums=0)
    runners = {"step": common.stepper(step, fresh_state(), hparams, xb, yb)}
    # The same step that never skips a non-finite update (so nothing waits for the check).
    unskipped = dataclasses.replace(train_config, skip_nonfinite=False)
    step = jax.jit(jaxdl.make_step(model, unskipped), donate_argnums=0)
    runners["step_noskip"] = common.stepper(step, fresh_state(), hparams, xb, yb)
    if config.scan:
        data = jaxdl.DeviceData(jnp.asarray(x), jnp.asarray(y), xb, yb)
        chunk = jax.jit(jaxdl.make_chunk(model, train_config, SCAN_STEPS), donate_argnums=0)
        runners["chunk"] = common.stepper(
            chunk, fresh_state(), hparams, data, steps_per_call=SCAN_STEPS
        )
        # What the chunk spends drawing its batches (the epoch permutations), timed alone.
        indices = jax.jit(jaxdl.train.make_indices(train_config, SCAN_STEPS))
        runners["indices"] = common.stepper(
            lambda state, data: (state, indices(state, data)),
            fresh_state(),
            data,
            steps_per_call=SCAN_STEPS,
        )
    return runners


# ----------------------------------------------------------------------------- hand-written


def hand_init(key, sizes):
    """``[(w [in, out], b [out]), ...]``: glorot-uniform weights and zero biases, as jaxdl's."""
    params = []
    for layer_key, (m, n) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        w = jax.nn.initializers.glorot_uniform()(layer_key, (m, n), jnp.float32)
        params.append((w, jnp.zeros((n,), jnp.float32)))
    return params


def hand_loss(params, x, y):
    h = x  # [B, in]
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)  # [B, hidden]
    w, b = params[-1]
    logits = h @ w + b  # [B, classes]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def hand_step(optimizer, loss_fn, carry, x, y):
    """One Adam step: ``((params, opt_state), x, y) -> ((params, opt_state), loss)``."""
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


def all_finite(tree) -> jax.Array:
    """Whether every element of every leaf is finite, shape ``()``."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return functools.reduce(jnp.logical_and, leaves)


GUARDS = ("where", "cond", "gate")


def guarded_step(optimizer, loss_fn, guard, carry, x, y):
    """`hand_step` that keeps the params when the loss or a gradient is not finite, as jaxdl's
    step does. ``guard``: ``"where"`` selects every leaf of params and optimiser state between
    the new and the old value after the update; ``"cond"`` puts the update in a ``lax.cond``
    (jaxdl's step until the fourth session); ``"gate"`` hands the optimiser zero gradients and
    selects the old params (`jaxdl.make_step` now; its optimiser state takes the zero step)."""
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    finite = jnp.isfinite(loss) & all_finite(grads)

    def update(carry, grads=grads):
        params, opt_state = carry
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    if guard == "cond":
        return lax.cond(finite, update, lambda carry: carry, carry), loss
    if guard == "gate":
        zeros = jax.tree.map(jnp.zeros_like, grads)
        new_params, opt_state = update(
            carry, jax.tree.map(lambda g, z: jnp.where(finite, g, z), grads, zeros)
        )
        return (
            jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_params, params),
            opt_state,
        ), loss
    new = update(carry)
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, carry), loss


def count_copies(jitted, *args) -> int:
    """Copy instructions XLA inserted in the compiled program (each a pass over an array)."""
    return jitted.lower(*args).compile().as_text().count(" copy(")


def hand_scan(step, carry, x_all, y_all, indices):
    """``indices.shape[0]`` steps of ``step`` in a rolled ``lax.scan``; the mean loss."""

    def body(carry, idx):  # idx: [B]
        return step(carry, x_all[idx], y_all[idx])

    carry, losses = lax.scan(body, carry, indices)
    return carry, losses.mean()


def hand_runners(config: Config, x, y, *, guards: bool = False):
    """The hand-written ``{"step": (runner, first_s), "scan": ...}`` and, when ``guards``, one
    entry per `GUARDS` variant of `guarded_step` (scan when ``config.scan``)."""
    optimizer = optax.adam(1e-3)
    xb, yb = jnp.asarray(x[: config.batch]), jnp.asarray(y[: config.batch])

    def fresh_carry():
        params = hand_init(jax.random.key(0), config.sizes)
        return params, optimizer.init(params)

    step = functools.partial(hand_step, optimizer, hand_loss)
    jit_step = jax.jit(step, donate_argnums=0)
    runners = {"step": common.stepper(jit_step, fresh_carry(), xb, yb)}
    if guards:
        for guard in GUARDS:
            guarded = functools.partial(guarded_step, optimizer, hand_loss, guard)
            jit_guarded = jax.jit(guarded, donate_argnums=0)
            runners[guard] = common.stepper(jit_guarded, fresh_carry(), xb, yb)
    if config.scan:
        indices = scan_indices(len(x), SCAN_STEPS, config.batch)
        scan = jax.jit(functools.partial(hand_scan, step), donate_argnums=0)
        runners["scan"] = common.stepper(
            scan, fresh_carry(), jnp.asarray(x), jnp.asarray(y), indices, steps_per_call=SCAN_STEPS
        )
    return runners


def copy_counts(config: Config, x, y) -> dict[str, int]:
    """XLA copies in the compiled step of jaxdl and of the hand-written variants."""
    xb, yb = jnp.asarray(x[: config.batch]), jnp.asarray(y[: config.batch])
    model = jaxdl.mlp(hidden=config.sizes[1:-1], num_classes=config.sizes[-1], activation="relu")
    train_config = jaxdl.TrainConfig(batch_size=config.batch)
    hparams = jaxdl.Hparams().as_arrays()
    state = jaxdl.init_state(
        model, train_config, hparams, xb, init_key=jax.random.key(0), data_key=jax.random.key(1)
    )
    step = jax.jit(jaxdl.make_step(model, train_config), donate_argnums=0)
    counts = {"jaxdl": count_copies(step, state, hparams, xb, yb)}
    optimizer = optax.adam(1e-3)
    params = hand_init(jax.random.key(0), config.sizes)
    carry = params, optimizer.init(params)
    counts["hand"] = count_copies(
        jax.jit(functools.partial(hand_step, optimizer, hand_loss), donate_argnums=0), carry, xb, yb
    )
    for guard in GUARDS:
        guarded = functools.partial(guarded_step, optimizer, hand_loss, guard)
        counts[guard] = count_copies(jax.jit(guarded, donate_argnums=0), carry, xb, yb)
    return counts


# ----------------------------------------------------------------------------- PyTorch


def torch_step_runner(torch, model, x, y):
    """``(runner, first_s)`` of PyTorch eager steps (Adam, cross-entropy) on one batch; the
    runner ends on ``loss.item()``, which waits for a GPU's queued work."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        loss.item()

    return run, common.time_once(lambda: run(1))


def torch_runner(config: Config, x, y):
    """PyTorch's ``(runner, first_s)``, or ``None`` without PyTorch."""
    torch = common.import_torch()
    if torch is None:
        return None
    torch.manual_seed(0)
    layers = []
    for i, (m, n) in enumerate(zip(config.sizes[:-1], config.sizes[1:], strict=False)):
        layers.append(torch.nn.Linear(m, n))
        if i < len(config.sizes) - 2:
            layers.append(torch.nn.ReLU())
    device = common.torch_device(torch)
    xb = torch.from_numpy(x[: config.batch].copy()).to(device)
    yb = torch.from_numpy(y[: config.batch].astype(np.int64)).to(device)
    return torch_step_runner(torch, torch.nn.Sequential(*layers).to(device), xb, yb)


# ----------------------------------------------------------------------------- run


def run(quick: bool = False) -> list[Table]:
    """Times every `CONFIGS` entry; returns the step, throughput, scan and first-call tables."""
    repeats = 4 if quick else 15  # 15 paired ratios: a 95 % interval of their 4th-12th
    target_s = 0.08 if quick else 0.15
    matmul, matmul_flops = common.matmul_runner()
    step_rows, throughput_rows, scan_rows, first_rows, guard_rows, spreads = [], [], [], [], [], []
    for config in CONFIGS:
        if quick and not config.quick:
            continue
        x, y = make_data(config)
        # --quick: scans only where 100 steps take well under a second, no guard variants
        scan = config.scan and not (quick and config.flops > 1e8)
        config = dataclasses.replace(config, scan=scan)
        guards = config.scan and not quick
        jaxdl_run = jaxdl_runners(config, x, y)
        hand_run = hand_runners(config, x, y, guards=guards)
        torch_run = torch_runner(config, x, y)
        runners = {
            "jaxdl": jaxdl_run["step"][0],
            "jaxdl_noskip": jaxdl_run["step_noskip"][0],
            "hand": hand_run["step"][0],
            "matmul": matmul,
        }
        numbers = {}
        if torch_run is not None:
            runners["torch"] = torch_run[0]
        if guards:
            runners.update({f"hand_{guard}": hand_run[guard][0] for guard in GUARDS})
        if config.scan:
            runners["jaxdl_chunk"] = jaxdl_run["chunk"][0]
            runners["hand_scan"] = hand_run["scan"][0]
            runners["indices"] = jaxdl_run["indices"][0]
            numbers = dict.fromkeys(["jaxdl_chunk", "hand_scan", "indices"], SCAN_STEPS)
        t = common.interleave(runners, repeats=repeats, target_s=target_s, numbers=numbers)
        med = {name: timing.median for name, timing in t.items()}
        spreads += [timing.spread for timing in t.values()]
        dl_hand = common.paired_ratio(t["jaxdl"], t["hand"])[0]
        low, high = common.paired_ratio_ci(t["jaxdl"], t["hand"])
        step_rows.append(
            [
                config.label,
                ms(med["jaxdl"]),
                ms(med["hand"]),
                ms(med.get("torch")),
                dl_hand,
                common.best_ratio(t["jaxdl"], t["hand"]),
                verdict(dl_hand, config.target),
                common.paired_ratio(t["jaxdl"], t["torch"])[0] if "torch" in t else None,
                f"{low:.2f}-{high:.2f}",
                ms(med["jaxdl_noskip"]),
                common.paired_ratio(t["jaxdl_noskip"], t["hand"])[0],
            ]
        )
        gflops = {
            name: config.flops / med[name] / 1e9
            for name in ("jaxdl", "hand", "torch")
            if name in med
        }
        throughput_rows.append(
            [
                config.label,
                config.num_params,
                config.batch / med["jaxdl"],
                config.batch / med["hand"],
                config.batch / med["torch"] if "torch" in med else None,
                gflops["jaxdl"],
                gflops["hand"],
                gflops["torch"] if "torch" in med else None,
                common.fraction_of_peak(config.flops, t["jaxdl"], matmul_flops, t["matmul"]),
                matmul_flops / med["matmul"] / 1e9,
            ]
        )
        if config.scan:
            scan_rows.append(
                [
                    config.label,
                    ms(med["jaxdl"]),
                    ms(med["jaxdl_chunk"]),
                    common.paired_ratio(t["jaxdl_chunk"], t["jaxdl"])[0],
                    ms(med["hand"]),
                    ms(med["hand_scan"]),
                    common.paired_ratio(t["hand_scan"], t["hand"])[0],
                    common.paired_ratio(t["jaxdl_chunk"], t["hand_scan"])[0],
                    med["indices"] * 1e6,
                ]
            )
        if guards:
            guard_rows.append(
                [
                    config.label,
                    ms(med["hand"]),
                    *(ms(med[f"hand_{guard}"]) for guard in GUARDS),
                    ms(med["jaxdl"]),
                    *(common.paired_ratio(t[f"hand_{guard}"], t["hand"])[0] for guard in GUARDS),
                    dl_hand,
                    hand_run["step"][1],
                    *(hand_run[guard][1] for guard in GUARDS),
                    jaxdl_run["step"][1],
                ]
            )
        first_rows.append(
            [
                config.label,
                jaxdl_run["step"][1],
                hand_run["step"][1],
                torch_run[1] if torch_run is not None else None,
                jaxdl_run["chunk"][1] if config.scan else None,
                hand_run["scan"][1] if config.scan else None,
            ]
        )
    torch_notes = [common.TORCH_NOTE] if common.import_torch() else [common.TORCH_MISSING]
    noise = (
        f"{repeats} interleaved repeats of about {target_s:g} s per runner; relative IQR of the "
        f"samples: median {np.median(spreads):.0%}, max {np.max(spreads):.0%}."
    )
    tables = [
        Table(
            "mlp.step",
            "MLP train step (Adam), ms/step (median)",
            [
                "config",
                "jaxdl",
                "hand-written JAX",
                "PyTorch eager",
                "jaxdl / hand",
                "jaxdl / hand (best)",
                "target",
                "jaxdl / PyTorch",
                "95% CI",
                "jaxdl, skip_nonfinite=False",
                "its / hand",
            ],
            step_rows,
            [
                "jaxdl: `jax.jit(make_step(...), donate_argnums=0)` with "
                "`Hparams(...).as_arrays()`; hand-written: params as a list of (w, b), "
                "`value_and_grad` + `optax.adam`, jit with donation; PyTorch: `nn.Sequential` + "
                "`torch.optim.Adam`, default threads.",
                "jaxdl / hand: median of the per-repeat ratios (runners interleaved); (best): "
                "ratio of the fastest samples, the least disturbed by other processes; < 1: "
                "jaxdl faster. 95% CI: a distribution-free confidence interval of that median "
                "(order statistics of the per-repeat ratios, `bench.common.median_ci`); a "
                "target inside it is within this run's noise."
                + (
                    f" With {repeats} repeats (--quick) it is the whole range of the ratios, "
                    f"which covers the median with probability {1 - 2 / 2**repeats:.1%} only."
                    if repeats < 6
                    else ""
                ),
                "skip_nonfinite=False: jaxdl's step with `TrainConfig(skip_nonfinite=False)`, "
                "which still records the first non-finite step but never skips an update, so "
                "the update does not wait for the check: the cost of the guard is the "
                "difference between the two jaxdl columns.",
                noise,
                *torch_notes,
            ],
        ),
        Table(
            "mlp.throughput",
            "MLP throughput: examples/s and achieved GFLOP/s (medians)",
            [
                "config",
                "params",
                "jaxdl ex/s",
                "hand ex/s",
                "PyTorch ex/s",
                "jaxdl GFLOP/s",
                "hand GFLOP/s",
                "PyTorch GFLOP/s",
                "jaxdl / matmul",
                "matmul GFLOP/s",
            ],
            throughput_rows,
            [
                "FLOPs per step: 6 × params × batch (forward 2, backward 4; the first layer's "
                "unneeded input gradient is counted too, as is usual).",
                f"matmul: a jitted float32 {common.peak_size()}² `jnp.matmul` timed in the same "
                "interleaved repeats (the machine's peak under the same load); jaxdl / matmul: "
                "median of the per-repeat ratios of achieved FLOP/s. Small matmuls can beat "
                "that figure on a busy machine, so the ratio can exceed 1.",
            ],
        ),
    ]
    if scan_rows:
        tables.append(
            Table(
                "mlp.scan",
                f"MLP: rolled scan of {SCAN_STEPS} steps vs a Python loop of jitted steps, "
                "ms/step (medians)",
                [
                    "config",
                    "jaxdl loop",
                    "jaxdl chunk (scan)",
                    "chunk / loop",
                    "hand loop",
                    "hand scan",
                    "scan / loop",
                    "jaxdl chunk / hand scan",
                    "chunk's batch indices, µs/step",
                ],
                scan_rows,
                [
                    f"jaxdl chunk: `jax.jit(make_chunk(model, config, {SCAN_STEPS}), "
                    "donate_argnums=0)`, which draws its batches on the device (a keyed "
                    "shuffle of epoch positions, `jaxdl.data.chunk_indices`, and a gather) from "
                    "max(8 × batch, 4096) examples; the hand scan gathers precomputed indices "
                    "from the same data; the loops reuse one batch.",
                    "chunk's batch indices: `jaxdl.train.make_indices` (the examples of the "
                    "chunk's 100 steps) jitted and timed alone, per step. Until the shuffle "
                    "replaced them, sorts of whole epoch permutations took 70-80 µs per step "
                    "here (bench/NOTES.md).",
                ],
            )
        )
    if guard_rows:
        copies = copy_counts(CONFIGS[0], *make_data(CONFIGS[0]))
        tables.append(
            Table(
                "mlp.guard",
                "The non-finite guard: selects after the update, a lax.cond, or gated gradients, "
                "ms/step (medians)",
                [
                    "config",
                    "hand",
                    "hand + where guard",
                    "hand + cond guard",
                    "hand + gate guard",
                    "jaxdl",
                    "where / hand",
                    "cond / hand",
                    "gate / hand",
                    "jaxdl / hand",
                    "first call hand s",
                    "where s",
                    "cond s",
                    "gate s",
                    "jaxdl s",
                ],
                guard_rows,
                [
                    "Each keeps the params when the loss or a gradient is not finite. where "
                    "guard: after the Adam update, `jnp.where(finite, new, old)` on every leaf of "
                    "params and optimiser state; cond guard: the update inside "
                    "`lax.cond(finite, update, identity, ...)` (jaxdl's step until the fourth "
                    "session); gate guard: zero gradients into the optimiser and "
                    "`jnp.where(finite, new, old)` on the params only (what `jaxdl.make_step` "
                    "does: the optimiser state takes the zero-gradient step).",
                    "XLA copy instructions in the compiled step (a pass over the array each, "
                    "because the old value must outlive the in-place update): "
                    f"jaxdl {copies['jaxdl']}, hand {copies['hand']}, where guard "
                    f"{copies['where']}, cond guard {copies['cond']}, gate guard {copies['gate']}.",
                ],
            )
        )
    tables.append(
        Table(
            "mlp.first_call",
            "MLP first call (trace + compile + first run), s",
            ["config", "jaxdl step", "hand step", "PyTorch step", "jaxdl chunk", "hand scan"],
            first_rows,
            ["In the benchmark process (JAX already warm); a fresh process: see startup."],
        )
    )
    return tables
