"""ConvNet train-step benchmark: a LeNet-style ConvNet (28×28×1 → conv 5×5 32 → max-pool 2 →
conv 5×5 64 → max-pool 2 → dense 10, relu, SAME padding), batch 128, Adam.

jaxdl's step (the backend's default conv: on CPU `canonical_conv`, lax.conv with canonical-layout
gradient convs) vs jaxdl with ``impl="xla"`` and ``impl="im2col"`` vs a hand-written step
(``lax.conv_general_dilated`` + ``lax.reduce_window``) vs PyTorch eager; the hand-written
ablations (im2col or canonical conv, reshape-max pooling) separate what each change buys; a rolled
``lax.scan`` of steps vs a loop of jitted steps (the XLA:CPU cliff of lax.conv in a scan); and a
vmapped population of ConvNets (as `jaxdl.sweep` trains one) against a loop of its members.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jaxdl
from bench import common
from bench.bench_mlp import hand_scan, hand_step, scan_indices, torch_step_runner
from bench.common import Table, ms, verdict
from jaxdl.layers.conv import canonical_conv, im2col_conv, resolve_impl

NAME = "convnet"
BATCH = 128
NUM_EXAMPLES = 1024  # device-resident data set of the scans
SCAN_STEPS = 5  # steps per scan call: the lax.conv scan takes seconds per step
CHANNELS = (32, 64)
KERNEL = 5
TARGET_VS_HAND = 1.4  # hand-written (lax.conv) / jaxdl step time, at least
TARGET_VS_TORCH = 2.0  # jaxdl / PyTorch step time, at most


def forward_flops() -> int:
    """Multiply-adds × 2 of one example's forward pass (convs and the dense read-out)."""
    h = w = 28
    c_in, flops = 1, 0
    for c_out in CHANNELS:
        flops += 2 * h * w * KERNEL * KERNEL * c_in * c_out  # SAME conv, stride 1
        h, w, c_in = h // 2, w // 2, c_out  # max-pool 2
    return flops + 2 * h * w * c_in * 10


FLOPS = 3 * forward_flops() * BATCH  # per train step: forward 1, backward 2


def make_data(seed: int = 0):
    """Random images ``[N, 28, 28, 1]`` float32 and labels ``[N]`` int32 (NumPy)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((NUM_EXAMPLES, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, NUM_EXAMPLES).astype(np.int32)
    return x, y


# ----------------------------------------------------------------------------- jaxdl


def auto_conv() -> str:
    """What ``impl="auto"`` runs for the ConvNet's 2-D convs on JAX's backend, by the names of
    the tables: ``"canonical_conv"`` on a CPU, ``"lax.conv"`` on a GPU or TPU."""
    names = {"canonical": "canonical_conv", "xla": "lax.conv", "im2col": "im2col"}
    return names[resolve_impl("auto", 2)]


def jaxdl_model(impl: str) -> jaxdl.Layer:
    """The ConvNet: ``jaxdl.convnet`` for the default impl (``"auto"``), else the same layers
    with ``conv2d(..., impl=impl)``."""
    if impl == "auto":
        return jaxdl.convnet(channels=CHANNELS, kernel=KERNEL, pool="max", activation="relu")
    entries = []
    for i, width in enumerate(CHANNELS, start=1):
        entries += [
            (f"conv{i}", jaxdl.conv2d(width, KERNEL, impl=impl)),
            (f"act{i}", jaxdl.relu),
            (f"pool{i}", jaxdl.max_pool(2)),
        ]
    entries += [("flatten", jaxdl.flatten), ("dense1", jaxdl.dense(10, w_init="he_normal"))]
    return jaxdl.serial(*entries)


def jaxdl_runners(impl: str, x, y, *, scan: bool, xla_defaults: bool = False):
    """jaxdl's ``{"step": (runner, first_s), "chunk": ...}`` with convs of ``impl``, compiled
    with `jaxdl.compiler_options` as `fit` compiles them (``xla_defaults``: without)."""
    model = jaxdl_model(impl)
    config = jaxdl.TrainConfig(batch_size=BATCH, optimizer="adam")
    hparams = jaxdl.Hparams(lr=1e-3).as_arrays()
    xb, yb = jnp.asarray(x[:BATCH]), jnp.asarray(y[:BATCH])
    options = None if xla_defaults else jaxdl.compiler_options(model, xb)

    def fresh_state():
        init_key, data_key = jax.random.split(jax.random.key(0))
        return jaxdl.init_state(model, config, hparams, xb, init_key=init_key, data_key=data_key)

    step = jax.jit(jaxdl.make_step(model, config), donate_argnums=0, compiler_options=options)
    runners = {"step": common.stepper(step, fresh_state(), hparams, xb, yb)}
    if scan:
        data = jaxdl.DeviceData(jnp.asarray(x), jnp.asarray(y), xb, yb)
        chunk = jax.jit(
            jaxdl.make_chunk(model, config, SCAN_STEPS), donate_argnums=0, compiler_options=options
        )
        runners["chunk"] = common.stepper(
            chunk, fresh_state(), hparams, data, steps_per_call=SCAN_STEPS
        )
    return runners


# ----------------------------------------------------------------------------- hand-written


def hand_init(key):
    """``[(w1 [5,5,1,32], b1), (w2 [5,5,32,64], b2), (w [3136, 10], b)]``, he-normal weights."""
    he = jax.nn.initializers.he_normal()
    keys = jax.random.split(key, len(CHANNELS) + 1)
    params, c_in = [], 1
    for k, c_out in zip(keys, CHANNELS, strict=False):
        params.append((he(k, (KERNEL, KERNEL, c_in, c_out), jnp.float32), jnp.zeros((c_out,))))
        c_in = c_out
    side = 28 // 2 ** len(CHANNELS)
    params.append((he(keys[-1], (side * side * c_in, 10), jnp.float32), jnp.zeros((10,))))
    return params


DIMS = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DIMS)  # [B, H, W, O]


def im2col(x, w):
    return im2col_conv(x, w, (1, 1), "SAME", (1, 1))  # [B, H, W, O]


def canonical(x, w):
    return canonical_conv(x, w, (1, 1), "SAME", (1, 1))  # [B, H, W, O]


def reduce_window_max(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def reshape_max(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))  # [B, H/2, W/2, C]


CONVS = {"lax.conv": lax_conv, "im2col": im2col, "canonical_conv": canonical}
POOLS = {"reduce_window": reduce_window_max, "reshape-max": reshape_max}


def hand_loss(conv, pool, params, x, y):
    for w, b in params[:-1]:
        x = pool(jax.nn.relu(conv(x, w) + b))  # [B, H/2, W/2, C]
    w, b = params[-1]
    logits = x.reshape(x.shape[0], -1) @ w + b  # [B, 10]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def hand_runners(conv: str, pool: str, x, y, *, scan: bool):
    """The hand-written ``{"step": (runner, first_s), "scan": ...}`` with the named conv/pool."""
    optimizer = optax.adam(1e-3)
    loss_fn = functools.partial(hand_loss, CONVS[conv], POOLS[pool])
    step = functools.partial(hand_step, optimizer, loss_fn)
    xb, yb = jnp.asarray(x[:BATCH]), jnp.asarray(y[:BATCH])

    def fresh_carry():
        params = hand_init(jax.random.key(0))
        return params, optimizer.init(params)

    runners = {"step": common.stepper(jax.jit(step, donate_argnums=0), fresh_carry(), xb, yb)}
    if scan:
        indices = scan_indices(len(x), SCAN_STEPS, BATCH)
        scan_fn = jax.jit(functools.partial(hand_scan, step), donate_argnums=0)
        runners["scan"] = common.stepper(
            scan_fn,
            fresh_carry(),
            jnp.asarray(x),
            jnp.asarray(y),
            indices,
            steps_per_call=SCAN_STEPS,
        )
    return runners


# ----------------------------------------------------------------------------- PyTorch


def torch_runner(x, y):
    """PyTorch's ``(runner, first_s)`` (NCHW, ``nn.Sequential``), or ``None`` without it."""
    torch = common.import_torch()
    if torch is None:
        return None
    torch.manual_seed(0)
    nn = torch.nn
    layers, c_in = [], 1
    for c_out in CHANNELS:
        layers += [nn.Conv2d(c_in, c_out, KERNEL, padding=KERNEL // 2), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c_out
    side = 28 // 2 ** len(CHANNELS)
    device = common.torch_device(torch)
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(side * side * c_in, 10)).to(device)
    xb = torch.from_numpy(np.ascontiguousarray(x[:BATCH].transpose(0, 3, 1, 2)))  # [B, 1, H, W]
    yb = torch.from_numpy(y[:BATCH].astype(np.int64))
    return torch_step_runner(torch, model, xb.to(device), yb.to(device))


# ----------------------------------------------------------------------------- the scan cliff

CLIFF_BATCH = 32  # the cliff is measured on the second conv layer alone, batch 32
CLIFF_STEPS = 2  # steps per rolled scan: lax.conv takes 0.25-0.7 s per step in one


def layer_step(conv, carry):
    """A gradient step on the conv's input and kernel: ``((w, x)) -> ((w, x), out)``."""
    w, x = carry  # [5, 5, 32, 64], [B, 14, 14, 32]
    grad_w, grad_x = jax.grad(lambda w, x: jnp.mean(conv(x, w) ** 2), argnums=(0, 1))(w, x)
    return (w - 1e-3 * grad_w, x - 1e-3 * grad_x), jnp.sum(grad_w)


CLIFF_MEMBERS = 4  # a population of this many layers under jax.vmap (as a sweep trains)
VMAPPED = ("im2col", "canonical_conv")  # lax.conv vmapped in a scan: seconds per step


def layer_runners(conv, members: int | None):
    """``{"loop": (runner, first_s), "scan": ...}`` of `layer_step`, vmapped over ``members``."""
    lead = () if members is None else (members,)

    def carry():
        w = jax.random.normal(jax.random.key(1), (*lead, KERNEL, KERNEL, 32, 64)) * 0.05
        return w, jax.random.normal(jax.random.key(0), (*lead, CLIFF_BATCH, 14, 14, 32))

    step = functools.partial(layer_step, conv)
    if members is not None:
        step = jax.vmap(step)

    def scan(carry):
        carry, outs = lax.scan(lambda c, _: step(c), carry, None, length=CLIFF_STEPS)
        return carry, outs[-1]

    return {
        "loop": common.stepper(jax.jit(step, donate_argnums=0), carry()),
        "scan": common.stepper(
            jax.jit(scan, donate_argnums=0), carry(), steps_per_call=CLIFF_STEPS
        ),
    }


def cliff_table(repeats: int) -> Table:
    """Loop vs rolled scan of one conv layer's forward and backward, for each conv formulation,
    alone and as a vmapped population."""
    cases = [(name, None) for name in CONVS] + [(name, CLIFF_MEMBERS) for name in VMAPPED]
    pairs = {case: layer_runners(CONVS[case[0]], case[1]) for case in cases}
    runners = {(*case, part): pair[part][0] for case, pair in pairs.items() for part in pair}
    t = common.interleave(runners, repeats=repeats, numbers=dict.fromkeys(runners, CLIFF_STEPS))
    rows = [
        [
            name if members is None else f"{name}, vmap over {members} members",
            ms(t[name, members, "loop"].median),
            ms(t[name, members, "scan"].median),
            common.paired_ratio(t[name, members, "scan"], t[name, members, "loop"])[0],
            pairs[name, members]["loop"][1],
            pairs[name, members]["scan"][1],
        ]
        for name, members in cases
    ]
    return Table(
        "convnet.cliff",
        f"The scan cliff: one conv layer (5×5, 32→64 channels, 14×14, batch {CLIFF_BATCH}), "
        "forward + both gradients, ms/step (medians)",
        [
            "conv",
            "loop of jitted steps",
            f"rolled scan ({CLIFF_STEPS} steps)",
            "scan / loop",
            "first call loop s",
            "first call scan s",
        ],
        rows,
        [
            "lax.conv: autodiff's weight-gradient conv has dimension numbers "
            "[f,0,1,b]x[i,0,1,o]->[0,1,b,f], which XLA:CPU runs on a slow generic path inside a "
            "while loop (jax-ml/jax#12868). canonical_conv (`jaxdl.layers.conv.canonical_conv`, "
            "jaxdl's conv on CPU): the same lax.conv with a custom VJP whose two backward convs "
            "are NHWC/HWIO after explicit transposes, and a custom vmap rule.",
            f"vmap rows: {CLIFF_MEMBERS} members with their own kernels and inputs, as "
            "`jaxdl.sweep` trains a population (per step of the whole population). Vmapped, "
            "lax.conv becomes a grouped conv; lax.conv's vmapped scan is left out (seconds per "
            "step); canonical_conv runs the members' convolutions one by one (unrolled up to 8 "
            "members, else in a `lax.map`).",
            f"{repeats} interleaved repeats of {CLIFF_STEPS} steps. The whole ConvNet with "
            "lax.conv in a rolled scan: `python -m bench.bench_convnet --full-scan` (slow).",
        ],
    )


# ----------------------------------------------------------------------------- population

POP_MEMBERS = 8  # ConvNets trained together under jax.vmap, as `jaxdl.sweep` trains a population
POP_BATCH = 32  # examples per member and step


def population_runners(impl: str, x, y):
    """``{"vmap": (runner, first_s), "loop": ...}`` for ``POP_MEMBERS`` ConvNets of ``impl``.

    vmap: one ``jit(vmap(step))`` over the members' states and batches; loop: a single member's
    jitted step run ``POP_MEMBERS`` times. ``runner(n)`` runs ``n`` population steps either way.
    """
    model = jaxdl_model(impl)
    config = jaxdl.TrainConfig(batch_size=POP_BATCH, optimizer="adam")
    hparams = jaxdl.Hparams(lr=1e-3).as_arrays()
    size = POP_MEMBERS * POP_BATCH
    xs = jnp.asarray(x[:size].reshape(POP_MEMBERS, POP_BATCH, *x.shape[1:]))  # [M, B, 28, 28, 1]
    ys = jnp.asarray(y[:size].reshape(POP_MEMBERS, POP_BATCH))  # [M, B]

    def fresh_state(key):
        return jaxdl.init_state(model, config, hparams, xs[0], init_key=key, data_key=key)

    keys = jax.random.split(jax.random.key(0), POP_MEMBERS)
    step = jaxdl.make_step(model, config)
    jit = functools.partial(
        jax.jit, donate_argnums=0, compiler_options=jaxdl.compiler_options(model, xs[0])
    )
    vmapped = jit(jax.vmap(step, in_axes=(0, None, 0, 0)))
    loop, loop_first = common.stepper(jit(step), fresh_state(keys[0]), hparams, xs[0], ys[0])
    return {
        "vmap": common.stepper(vmapped, jax.vmap(fresh_state)(keys), hparams, xs, ys),
        "loop": (lambda n: loop(n * POP_MEMBERS), loop_first),
    }


def population_table(x, y, repeats: int) -> Table:
    """A vmapped population of ConvNets per implementation, against a loop of its members."""
    impls = {"auto": f"jaxdl impl=auto ({auto_conv()})", "im2col": "jaxdl impl=im2col"}
    impls["xla"] = "jaxdl impl=xla (grouped conv under vmap)"
    pairs = {impl: population_runners(impl, x, y) for impl in impls}
    runners = {(impl, part): pair[part][0] for impl, pair in pairs.items() for part in pair}
    t = common.interleave(runners, repeats=repeats, numbers=dict.fromkeys(runners, 1))
    rows = [
        [
            label,
            ms(t[impl, "vmap"].median),
            ms(t[impl, "vmap"].median) / POP_MEMBERS,
            ms(t[impl, "loop"].median),
            common.paired_ratio(t[impl, "vmap"], t[impl, "loop"])[0],
            common.paired_ratio(t[impl, "vmap"], t["auto", "vmap"])[0],
            pairs[impl]["vmap"][1],
        ]
        for impl, label in impls.items()
    ]
    return Table(
        "convnet.population",
        f"A population of {POP_MEMBERS} ConvNets under `jax.vmap` (batch {POP_BATCH} each), "
        "ms per population step (medians)",
        [
            "conv",
            "vmap(step)",
            "per member",
            "loop of members",
            "vmap / loop",
            "vmap / auto's vmap",
            "first call vmap s",
        ],
        rows,
        [
            "vmap(step): `jax.jit(jax.vmap(jaxdl.make_step(model, config)))` over the members' "
            "states and batches, as `jaxdl.sweep` trains a population; loop of members: one "
            f"member's jitted step, {POP_MEMBERS} times; both compiled with "
            "`jaxdl.compiler_options(model, x)`.",
            "Under vmap canonical_conv runs each conv member by member (unrolled up to 8 "
            "members, else in a `lax.map`), im2col is a "
            "batched matmul, lax.conv a grouped convolution.",
            f"{repeats} interleaved repeats of one population step each.",
        ],
    )


# ----------------------------------------------------------------------------- run


def run(quick: bool = False) -> list[Table]:
    """Times the ConvNet steps; returns the step, variant, scan and cliff tables."""
    repeats = 3 if quick else 5
    target_s = 0.2 if quick else 0.4
    x, y = make_data()
    runners, first = {}, {}
    matmul, matmul_flops = common.matmul_runner()
    runners["matmul"], first["matmul"] = matmul, None

    def add(name, pair):
        runners[name], first[name] = pair

    dl = jaxdl_runners("auto", x, y, scan=not quick)
    add("jaxdl", dl["step"])
    if not quick:
        add("jaxdl_xla", jaxdl_runners("xla", x, y, scan=False)["step"])
        add("jaxdl_im2col", jaxdl_runners("im2col", x, y, scan=False)["step"])
        if not common.on_accelerator():  # elsewhere `compiler_options` is None: the same step
            defaults = jaxdl_runners("auto", x, y, scan=False, xla_defaults=True)
            add("jaxdl_defaults", defaults["step"])
    add("hand", hand_runners("lax.conv", "reduce_window", x, y, scan=False)["step"])
    torch_run = torch_runner(x, y)
    if torch_run is not None:
        add("torch", torch_run)
    ablations = (
        []
        if quick
        else [
            ("lax.conv", "reshape-max"),
            ("im2col", "reduce_window"),
            ("im2col", "reshape-max"),
            ("canonical_conv", "reshape-max"),
        ]
    )
    canonical_run = None
    for conv, pool in ablations:
        pair = hand_runners(conv, pool, x, y, scan=conv.startswith("canonical"))
        add(f"hand {conv} + {pool}", pair["step"])
        canonical_run = pair if conv.startswith("canonical") else canonical_run
    t = common.interleave(runners, repeats=repeats, target_s=target_s)
    med = {name: timing.median for name, timing in t.items()}
    spreads = [timing.spread for timing in t.values()]

    hand_over_dl, noise = common.paired_ratio(t["hand"], t["jaxdl"])
    dl_torch = common.paired_ratio(t["jaxdl"], t["torch"])[0] if "torch" in t else None
    torch_notes = [common.TORCH_NOTE] if common.import_torch() else [common.TORCH_MISSING]
    tables = [
        Table(
            "convnet.step",
            "ConvNet train step (Adam, batch 128), ms/step (median)",
            [
                "config",
                "jaxdl impl=auto",
                "jaxdl impl=xla",
                "jaxdl impl=im2col",
                "hand-written lax.conv",
                "PyTorch eager",
                "hand / jaxdl",
                "target",
                "jaxdl / PyTorch",
                "target",
                "noise",
            ],
            [
                [
                    "LeNet-style ConvNet, batch 128",
                    ms(med["jaxdl"]),
                    ms(med.get("jaxdl_xla")),
                    ms(med.get("jaxdl_im2col")),
                    ms(med["hand"]),
                    ms(med.get("torch")),
                    hand_over_dl,
                    verdict(hand_over_dl, TARGET_VS_HAND, at_most=False),
                    dl_torch,
                    verdict(dl_torch, TARGET_VS_TORCH),
                    f"±{noise / 2:.0%}",
                ]
            ],
            [
                "28×28×1 → conv 5×5 32 → relu → max-pool 2 → conv 5×5 64 → relu → max-pool 2 → "
                "dense 10; SAME padding. Loops of jitted steps (donated state), one fixed batch.",
                "jaxdl: `jaxdl.convnet(channels=(32, 64), kernel=5)` (`impl='auto'`: "
                "`canonical_conv` on CPU); impl=xla / im2col (the CPU default before): the same "
                "layers via `jaxdl.serial` and `conv2d(..., impl=...)`; jaxdl's steps are "
                "compiled with `jaxdl.compiler_options(model, x)` (see the variants); "
                "hand-written: `lax.conv_general_dilated` + `lax.reduce_window` max; PyTorch: "
                "`nn.Conv2d`/`nn.MaxPool2d`, NCHW.",
                "hand / jaxdl > 1: jaxdl faster (median of per-repeat ratios); noise: ± half "
                f"their relative IQR. {repeats} interleaved repeats of about {target_s:g} s; "
                f"relative IQR of the samples: median {np.median(spreads):.0%}, "
                f"max {np.max(spreads):.0%}.",
                *torch_notes,
            ],
        )
    ]
    variants = [
        (f"jaxdl impl=auto ({auto_conv()}, reshape-max pool)", "jaxdl"),
        ("jaxdl impl=xla (lax.conv, reshape-max pool)", "jaxdl_xla"),
        ("jaxdl impl=im2col (reshape-max pool)", "jaxdl_im2col"),
        ("jaxdl impl=auto, XLA's default options (2-D convs on YNNPACK)", "jaxdl_defaults"),
        ("hand lax.conv + reduce_window", "hand"),
        *((f"hand {c} + {p}", f"hand {c} + {p}") for c, p in ablations),
        ("PyTorch eager", "torch"),
    ]
    rows = [
        [
            label,
            ms(med[name]),
            common.paired_ratio(t[name], t["hand"])[0],
            BATCH / med[name],
            FLOPS / med[name] / 1e9,
            common.fraction_of_peak(FLOPS, t[name], matmul_flops, t["matmul"]),
            first[name],
        ]
        for label, name in variants
        if name in t
    ]
    tables.append(
        Table(
            "convnet.variants",
            "ConvNet variants (loop of jitted steps): what each conv and pooling buys",
            [
                "variant",
                "ms/step",
                "/ hand lax.conv",
                "ex/s",
                "GFLOP/s",
                "/ matmul",
                "first call s",
            ],
            rows,
            [
                f"FLOPs per step: 3 × forward ({forward_flops() / 1e6:.1f} MFLOP/example) × "
                f"{BATCH}. / matmul: achieved FLOP/s over a {common.peak_size()}² "
                "`jnp.matmul`'s in the same interleaved repeats "
                f"({matmul_flops / med['matmul'] / 1e9:.0f} GFLOP/s median).",
                "First call: trace + compile + first run, in the warm benchmark process.",
                "canonical_conv: jaxdl's conv on CPU (lax.conv with canonical-layout gradient "
                "convs, see the cliff table). jaxdl's rows are compiled with "
                "`jaxdl.compiler_options(model, x)`, as `fit` compiles its programs: on CPU, 2-D "
                "convolutions run on XLA's own multi-threaded kernels instead of YNNPACK's "
                "single-threaded ones (NOTES.md section 18); the hand-written rows and the row "
                "with XLA's default options are compiled without, so the hand canonical_conv "
                "row against that one shows jaxdl's own overhead.",
            ],
        )
    )
    if not quick:
        scan_runners = {
            "jaxdl": dl["step"][0],
            "jaxdl_chunk": dl["chunk"][0],
            "canonical": canonical_run["step"][0],
            "canonical_scan": canonical_run["scan"][0],
        }
        s = common.interleave(scan_runners, repeats=3, numbers=dict.fromkeys(scan_runners, 5))
        scan_rows = [
            [
                label,
                ms(s[loop].median),
                ms(s[rolled].median),
                common.paired_ratio(s[rolled], s[loop])[0],
                first_loop,
                first_rolled,
            ]
            for label, loop, rolled, first_loop, first_rolled in [
                (
                    "jaxdl impl=auto, `make_chunk`",
                    "jaxdl",
                    "jaxdl_chunk",
                    dl["step"][1],
                    dl["chunk"][1],
                ),
                (
                    "hand canonical_conv + reshape-max",
                    "canonical",
                    "canonical_scan",
                    canonical_run["step"][1],
                    canonical_run["scan"][1],
                ),
            ]
        ]
        tables.append(
            Table(
                "convnet.scan",
                f"ConvNet: rolled scan of {SCAN_STEPS} steps vs a loop of jitted steps, "
                "ms/step (medians)",
                [
                    "variant",
                    "loop",
                    "rolled scan",
                    "scan / loop",
                    "first call loop s",
                    "first call scan s",
                ],
                scan_rows,
                [
                    "jaxdl: `make_chunk` (batches drawn on the device); hand: `lax.scan` over "
                    f"precomputed batch indices; 3 interleaved repeats of {SCAN_STEPS} steps.",
                    (
                        "lax.conv (jaxdl impl=xla or hand-written) is not in this table: in a "
                        "rolled scan the whole ConvNet takes seconds per step on XLA:CPU and "
                        "tens of seconds to compile; see the cliff table and NOTES.md."
                        if auto_conv() != "lax.conv"
                        else "jaxdl impl=auto runs lax.conv on this backend."
                    ),
                ],
            )
        )
        tables.append(cliff_table(repeats=3))
        tables.append(population_table(x, y, repeats=3))
    return tables


def full_scan(steps: int = 2) -> None:
    """Prints the whole ConvNet's lax.conv step in a loop vs a rolled scan (minutes)."""
    x, y = make_data()
    rows = {}
    for conv in ("lax.conv", "canonical_conv"):
        pair = hand_runners(conv, "reshape-max", x, y, scan=True)
        print(f"{conv}: first call step {pair['step'][1]:.1f} s, scan {pair['scan'][1]:.1f} s")
        rows[conv], rows[conv + " scan"] = pair["step"][0], pair["scan"][0]
    t = common.interleave(rows, repeats=2, numbers=dict.fromkeys(rows, steps))
    for name, timing in t.items():
        print(f"{name}: {ms(timing.median):.0f} ms/step")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="ConvNet benchmark tables.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--full-scan", action="store_true", help="the whole-model lax.conv scan")
    args = parser.parse_args()
    if args.full_scan:
        full_scan()
    else:
        for table in run(args.quick):
            print(table.markdown())
