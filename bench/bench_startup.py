"""Start-up benchmark, each measurement in a fresh subprocess: ``import jaxdl`` vs ``import jax,
optax``, and the time from building the MLP to the first train step's result (jaxdl vs the
hand-written step vs PyTorch), with a breakdown by stage and the modules ``import jaxdl`` adds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench import common
from bench.common import Table, verdict

NAME = "startup"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_FIRST_STEP_S = 0.5
TARGET_IMPORT_RATIO = 1.25

IMPORT = """
import json, time
t = time.perf_counter()
import {modules}
print(json.dumps({{"s": time.perf_counter() - t}}))
"""

# Everything before ``t0`` (imports, NumPy data) is excluded: the clock starts at model building.
FIRST_STEP = {
    "jaxdl": """
import json, os, time
import numpy as np
import jax, jax.numpy as jnp
import jaxdl
if os.environ.get("BENCH_CACHE_DIR"):  # as the jaxdl command does, before any compilation
    jaxdl.enable_compilation_cache(os.environ["BENCH_CACHE_DIR"])
x = np.random.default_rng(0).standard_normal((128, 784), dtype=np.float32)
y = np.zeros(128, np.int32)
t0 = time.perf_counter()
model = jaxdl.mlp(hidden=(512, 512), activation="relu")
config = jaxdl.TrainConfig(batch_size=128)
hparams = jaxdl.Hparams(lr=1e-3).as_arrays()
xb, yb = jnp.asarray(x), jnp.asarray(y)
init_key, data_key = jax.random.split(jax.random.key(0))
state = jaxdl.init_state(model, config, hparams, xb, init_key=init_key, data_key=data_key)
jax.block_until_ready(state)
t1 = time.perf_counter()
step = jax.jit(jaxdl.make_step(model, config), donate_argnums=0)
state, metrics = step(state, hparams, xb, yb)
loss = float(metrics["loss"])
t2 = time.perf_counter()
print(json.dumps({"total": t2 - t0, "init": t1 - t0, "step": t2 - t1}))
""",
    "hand": """
import json, time
import numpy as np
import jax, jax.numpy as jnp, optax
x = np.random.default_rng(0).standard_normal((128, 784), dtype=np.float32)
y = np.zeros(128, np.int32)
t0 = time.perf_counter()
sizes = (784, 512, 512, 10)
keys = jax.random.split(jax.random.key(0), 3)
params = [(jax.nn.initializers.glorot_uniform()(k, (m, n), jnp.float32), jnp.zeros((n,)))
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]
optimizer = optax.adam(1e-3)
opt_state = optimizer.init(params)
xb, yb = jnp.asarray(x), jnp.asarray(y)
jax.block_until_ready((params, opt_state))
t1 = time.perf_counter()
def loss_fn(params, x, y):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean()
def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
params, opt_state, loss = jax.jit(step, donate_argnums=(0, 1))(params, opt_state, xb, yb)
loss = float(loss)
t2 = time.perf_counter()
print(json.dumps({"total": t2 - t0, "init": t1 - t0, "step": t2 - t1}))
""",
    "torch": """
import json, os, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np
import torch
x = torch.from_numpy(np.random.default_rng(0).standard_normal((128, 784), dtype=np.float32))
y = torch.zeros(128, dtype=torch.int64)
t0 = time.perf_counter()
nn = torch.nn
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                      nn.Linear(512, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
t1 = time.perf_counter()
optimizer.zero_grad()
loss = nn.functional.cross_entropy(model(x), y)
loss.backward()
optimizer.step()
loss = float(loss)
t2 = time.perf_counter()
print(json.dumps({"total": t2 - t0, "init": t1 - t0, "step": t2 - t1}))
""",
}


# The same, with the init program `fit` and `jaxdl train` run: `build_program`'s jitted init
# (one program, compiled for compile time on CPU, `jaxdl.xla_options.init_options`, deriving the
# keys from the seed inside it) instead of eager key splitting and `init_state` (which, called
# outside a trace, runs the same init as its own jitted program).
FIRST_STEP["jaxdl_program"] = (
    FIRST_STEP["jaxdl"]
    .replace(
        "init_key, data_key = jax.random.split(jax.random.key(0))",
        "seeds = jaxdl.train.seed_array(0)",
    )
    .replace(
        "state = jaxdl.init_state(model, config, hparams, xb, init_key=init_key, "
        "data_key=data_key)",
        "example = jaxdl.data.device.example_input(xb)\n"
        "program = jaxdl.train.build_program(model, config, example)\n"
        "state = program.init(seeds, seeds, hparams)",
    )
)
assert "program.init(seeds" in FIRST_STEP["jaxdl_program"]
assert "random.split" not in FIRST_STEP["jaxdl_program"]


def fresh_env(cache_dir: str | None = None) -> dict[str, str]:
    """This process's environment, with no persistent compilation cache (a cold start) or with
    ``BENCH_CACHE_DIR`` telling the jaxdl script to call `jaxdl.enable_compilation_cache` on
    ``cache_dir``, as the ``jaxdl`` command does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.pop("JAXDL_CACHE_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    # On a GPU this process already holds JAX's preallocated 75 % of the memory; a child that
    # tried to preallocate as much again would fail.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if cache_dir is None:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    else:
        env["BENCH_CACHE_DIR"] = cache_dir
    return env


def run_script(code: str, *args: str, cache_dir: str | None = None) -> dict:
    """Runs ``code`` in a fresh interpreter; its last stdout line is a JSON object."""
    done = subprocess.run(
        [sys.executable, *args, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=fresh_env(cache_dir),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"startup script failed:\n{done.stderr[-2000:]}")
    return {"result": json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def import_report(top: int = 8) -> tuple[list[list], float]:
    """The modules ``import jaxdl`` adds to ``import jax, optax``, heaviest first (``-X
    importtime``, one run each), and the total self time they add, in ms."""

    def parse(stderr: str) -> dict[str, tuple[int, int]]:
        times = {}
        for line in stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
                times[name.strip()] = (int(self_us), int(cumulative_us))
        return times

    base = parse(run_script(IMPORT.format(modules="jax, optax"), "-X", "importtime")["stderr"])
    full = parse(run_script(IMPORT.format(modules="jaxdl"), "-X", "importtime")["stderr"])
    extra = {name: t for name, t in full.items() if name not in base}
    heaviest = sorted(extra.items(), key=lambda item: -item[1][0])[:top]
    rows = [[name, s / 1e3, c / 1e3] for name, (s, c) in heaviest]
    return rows, sum(s for s, _ in extra.values()) / 1e3


def run(quick: bool = False) -> list[Table]:
    """Times imports and the first step in fresh subprocesses; returns the start-up tables."""
    import_repeats = 3 if quick else 5
    step_repeats = 1 if quick else 3
    # --quick: jaxdl alone (each fresh process takes seconds on a busy machine)
    kinds = ["jaxdl"] if quick else ["jaxdl", "jaxdl_program", "hand"]
    kinds += ["torch"] if not quick and common.import_torch() else []

    def rotated(names: list[str], r: int) -> list[str]:  # who goes first changes every repeat
        return names[r % len(names) :] + names[: r % len(names)]

    imports = {"jaxdl": [], "jax, optax": []}
    for r in range(import_repeats):  # interleaved and rotated, as the in-process timings
        for modules in rotated(list(imports), r):
            imports[modules].append(run_script(IMPORT.format(modules=modules))["result"]["s"])
    firsts = {kind: [] for kind in kinds}
    for r in range(step_repeats):
        for kind in rotated(kinds, r):
            firsts[kind].append(run_script(FIRST_STEP[kind])["result"])
    if not quick:  # the jaxdl script with the compilation cache: first empty, then warm
        firsts["empty_cache"], firsts["cached"] = [], []
        for _ in range(step_repeats):
            with tempfile.TemporaryDirectory(prefix="jaxdl-bench-cache-") as cache_dir:
                for kind in ("empty_cache", "cached"):
                    firsts[kind].append(
                        run_script(FIRST_STEP["jaxdl_program"], cache_dir=cache_dir)["result"]
                    )

    ratios = [a / b for a, b in zip(imports["jaxdl"], imports["jax, optax"], strict=True)]
    import_ratio = statistics.median(ratios)
    import_rows = [
        [
            "import time, s",
            statistics.median(imports["jaxdl"]),
            statistics.median(imports["jax, optax"]),
            import_ratio,
            verdict(import_ratio, TARGET_IMPORT_RATIO),
            f"±{common.relative_iqr(ratios) / 2:.0%}",
        ]
    ]

    def median_of(kind, key):
        return statistics.median(r[key] for r in firsts[kind]) if kind in firsts else None

    stages = [
        ("build model → first step result, s", "total"),
        ("  of which init (params, optimiser state), s", "init"),
        ("  of which first step (trace, compile, run), s", "step"),
    ]
    step_rows = [
        [
            label,
            median_of("jaxdl", key),
            median_of("jaxdl_program", key),
            median_of("empty_cache", key),
            median_of("cached", key),
            median_of("hand", key),
            median_of("torch", key),
            common.ratio(median_of("jaxdl", key), median_of("hand", key)),
            common.ratio(median_of("jaxdl_program", key), median_of("hand", key)),
            verdict(median_of("jaxdl", key), TARGET_FIRST_STEP_S) if key == "total" else "",
            verdict(median_of("jaxdl_program", key), TARGET_FIRST_STEP_S) if key == "total" else "",
            verdict(median_of("cached", key), TARGET_FIRST_STEP_S) if key == "total" else "",
        ]
        for label, key in stages
    ]
    module_tables = []
    if not quick:
        module_rows, extra_ms = import_report()
        module_tables.append(
            Table(
                "startup.modules",
                "Heaviest modules `import jaxdl` adds to `import jax, optax` (-X importtime)",
                ["module", "self ms", "cumulative ms"],
                module_rows,
                [
                    f"All modules jaxdl adds: {extra_ms:.0f} ms of self time (one run each). "
                    "Cumulative time includes what a module imports first: the first jaxdl "
                    "module to import jax carries jax's whole import.",
                ],
            )
        )
    skipped = "Empty columns: --quick runs jaxdl alone; without torch, no PyTorch column."
    torch_note = [] if "torch" in kinds else [skipped]
    return [
        Table(
            "startup.import",
            "Import time (fresh interpreter each, median)",
            ["measure", "import jaxdl", "import jax, optax", "ratio", "target", "noise"],
            import_rows,
            [
                f"{import_repeats} interleaved subprocesses each (which goes first "
                "alternates); the clock covers the import statement only (not interpreter "
                "start-up). ratio: median of per-pair ratios; "
                "noise: ± half their relative IQR.",
            ],
        ),
        Table(
            "startup.first_step",
            "Time to first step, MLP 784-512-512-10, batch 128, Adam (fresh process, median)",
            [
                "measure",
                "jaxdl",
                "jaxdl, jitted init (as fit)",
                "jaxdl, empty cache",
                "jaxdl, warm cache",
                "hand-written JAX",
                "PyTorch eager",
                "jaxdl / hand",
                "jitted init / hand",
                "target (jaxdl)",
                "target (jitted init)",
                "target (warm cache)",
            ],
            step_rows,
            [
                f"{step_repeats} subprocess(es) each, no persistent compilation cache unless "
                "named; imports are done before the clock starts. jaxdl: `mlp` → keys split "
                "eagerly → `init_state` called outside a trace (one jitted program, compiled "
                "as `fit`'s init) → "
                "`jax.jit(make_step)` → first step → `float(loss)`. The init stage includes "
                "JAX's first use of the CPU backend, paid by any JAX program. Jitted init: "
                "the init program `fit` and `jaxdl train` run, `build_program(...).init`, one "
                "program compiled for compile time on CPU (it runs once): without XLA's backend "
                "optimisations and, in jaxlib 0.10, with its elemental loop emitters "
                "(`jaxdl.xla_options.init_options`).",
                "Cache columns: the jitted-init script (the programs `jaxdl train` runs) "
                "calling `jaxdl.enable_compilation_cache(dir)` before the clock starts, as the "
                "`jaxdl` command does (every program saved, however quick to compile). Empty: a "
                "fresh folder (the run compiles and writes the cache); warm: the same script "
                "again on that folder, what a second `jaxdl train` of the same model pays. "
                "Each repeat uses a new folder.",
                *torch_note,
            ],
        ),
        *module_tables,
    ]


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv):
        print(table.markdown())
