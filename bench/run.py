"""Runs the benchmarks and writes their tables: ``python -m bench.run [--quick] [--only a,b]``,
to ``bench/results/<backend>.md`` and ``.json`` (``cpu``, or ``gpu`` on a GPU machine);
``--ks 512,1024`` sets the sweep's population sizes. A ``--quick``, ``--only`` or ``--ks`` run
writes ``<backend>-quick``, ``-<names>``, ``-k<ks>`` files beside them instead
(``gpu-sweep-k512-1024.md``), never over the full results.

Each benchmark is a module exposing ``run(quick: bool) -> list[bench.common.Table]``, listed in
`BENCHMARKS` by name. A listed module that is not there is skipped with a note, so adding a
benchmark is one file plus, at most, one line here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

from bench import common
from jaxdl.io import write_atomic

BENCHMARKS: dict[str, str] = {  # name (for --only) -> module exposing run(quick) -> [Table]
    "mlp": "bench.bench_mlp",
    "convnet": "bench.bench_convnet",
    "startup": "bench.bench_startup",
    "sweep": "bench.bench_sweep",
}

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def register(name: str, module: str) -> None:
    """Adds (or replaces) a benchmark: ``module`` must expose ``run(quick: bool) -> [Table]``."""
    BENCHMARKS[name] = module


def load(name: str):
    """The benchmark module called ``name``, or ``None`` if its file does not exist."""
    module = BENCHMARKS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name == module:  # the module itself is missing, not one of its imports
            return None
        raise


def machine_table(info: dict, peak: dict) -> common.Table:
    if info["torch"] is None:
        torch_cell = "not installed"
    else:
        tf32 = ", TF32 matmuls" if info["torch_tf32_matmul"] else ""
        torch_cell = f"{info['torch']} ({info['torch_threads']}, {info['torch_device']}{tf32})"
    rows = [
        ["CPU", info["cpu"]],
        ["cores (os.cpu_count)", info["cores"]],
        ["1-min load average at start", info["load_avg_1m"]],
        ["JAX / backend / device", f"{info['jax']} / {info['backend']} / {info['device']}"],
        ["PyTorch (threads, device)", torch_cell],
    ]
    size = common.peak_size()
    rows += [
        [f"float32 matmul {size}², jnp (GFLOP/s, median)", peak["jax_gflops"]],
        [f"float32 matmul {size}², jnp (GFLOP/s, best)", peak["jax_best_gflops"]],
        [f"float32 matmul {size}², torch (GFLOP/s, median)", peak.get("torch_gflops")],
    ]
    return common.Table("machine", "Machine", ["what", "value"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and configs (about 3 minutes)"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--out",
        default=RESULTS,
        help="folder of <backend>.md and <backend>.json (default bench/results)",
    )
    parser.add_argument(
        "--ks",
        default="",
        help="population sizes of the sweep benchmark, e.g. 512,1024 (default: 1,8,32,128 on a "
        "CPU, up to 1024 on an accelerator)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARKS)}")
    try:
        ks = common.parse_ks(args.ks)
    except ValueError as error:
        parser.error(f"--ks: {error}")
    if ks and "sweep" not in names:
        parser.error("--ks sets the sweep benchmark's population sizes: add sweep to --only")

    started = time.perf_counter()
    info = common.machine()
    peak = common.matmul_peak(repeats=5 if args.quick else 9)
    tables = [machine_table(info, peak)]
    print(tables[0].markdown(), flush=True)
    skipped, seconds = [], {}
    for name in names:
        module = load(name)
        if module is None:
            skipped.append(name)
            print(f"({name}: {BENCHMARKS[name]} not present, skipped)\n", flush=True)
            continue
        t0 = time.perf_counter()
        kwargs = {"ks": ks} if name == "sweep" and ks else {}
        for table in module.run(args.quick, **kwargs):
            tables.append(table)
            print(table.markdown(), flush=True)
        seconds[name] = time.perf_counter() - t0
    total = time.perf_counter() - started
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    footer = (
        f"Total {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
        f"{'--quick; ' if args.quick else ''}1-min load average {info['load_avg_1m']:.1f} at "
        f"start, {load_end:.1f} at end."
    )
    print(footer)

    backend = info["backend"]
    suffix = "-quick" if args.quick else ""
    title = f"# jaxdl benchmarks ({backend.upper()}, {info['device']})"
    report = "\n".join(
        [f"{title}{' — quick' if args.quick else ''}", "", footer, ""]
        + [t.markdown() for t in tables]
    )
    record = {
        "quick": args.quick,
        "machine": {**info, "load_avg_1m_end": load_end, **peak},
        "seconds": {**seconds, "total": total},
        "skipped": skipped,
        "tables": {t.key: t.jsonable() for t in tables},
    }
    if args.only or ks:  # a partial run does not overwrite the full results
        suffix += "-" + "-".join(names)
    if ks:
        suffix += "-k" + "-".join(map(str, ks))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{backend}{suffix}")
    write_atomic(path + ".md", report)
    write_atomic(path + ".json", json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
