"""What every benchmark shares: interleaved timing with medians, the machine's matmul peak,
an optional PyTorch, result tables (Markdown and JSON) and atomic writes.

Timing model: each implementation is a *runner*, ``runner(n)`` runs ``n`` steps and blocks until
the result is ready. `interleave` times all runners of a comparison in the same repeat, rotating
their order, so a burst of load from another process hits all of them alike; a ratio is the
median over repeats of the per-repeat ratio (paired), which cancels slow drifts in load.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Runner = Callable[[int], None]  # runner(n): n steps, blocking until done


# ----------------------------------------------------------------------------- timing


def block(tree: Any) -> Any:
    """Waits until every array in ``tree`` is computed; returns ``tree``."""
    return jax.block_until_ready(tree)


@dataclasses.dataclass
class Timing:
    """Seconds per step of one runner, one sample per repeat.

    Attributes:
      samples: seconds per step, one per repeat (each the mean over ``number`` steps).
      number: steps per sample.
    """

    samples: list[float]
    number: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Relative inter-quartile range of the samples (noise): ``(p75 - p25) / median``."""
        return relative_iqr(self.samples)


def relative_iqr(values: Sequence[float]) -> float:
    """``(p75 - p25) / median`` of ``values``; 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return float((p75 - p25) / p50) if p50 else 0.0


def time_once(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call of ``fn`` (which must block on its own results)."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def stepper(fn: Callable, carry: Any, *args: Any, steps_per_call: int = 1) -> tuple[Runner, float]:
    """A runner that threads ``carry`` through ``fn``, and the seconds of ``fn``'s first call.

    Args:
      fn: ``fn(carry, *args) -> (carry, out)``, jitted with ``carry`` donated; each call does
        ``steps_per_call`` train steps.
      carry: the initial carry (a train state); it is donated, so the caller must not reuse it.
      *args: the other arguments, the same on every call (hyper-parameters, a batch, data).
      steps_per_call: train steps per call (a scan's length): ``runner(n)`` makes
        ``ceil(n / steps_per_call)`` calls.

    Returns:
      ``(runner, first_call_s)``: the first call includes tracing and compilation.
    """
    holder = {}

    def first():
        holder["carry"], out = fn(carry, *args)
        block(out)

    first_call_s = time_once(first)

    def run(n: int) -> None:
        c = holder["carry"]
        for _ in range(-(-n // steps_per_call)):
            c, out = fn(c, *args)
        holder["carry"] = c
        block(out)

    return run, first_call_s


def calibrate(runner: Runner, target_s: float, max_number: int = 1000) -> int:
    """Steps per sample so one sample takes about ``target_s`` (from one timed step, warm)."""
    one = time_once(lambda: runner(1))
    return int(min(max_number, max(1, round(target_s / max(one, 1e-6)))))


def interleave(
    runners: dict[str, Runner],
    *,
    repeats: int,
    target_s: float = 0.2,
    numbers: dict[str, int] | None = None,
) -> dict[str, Timing]:
    """Times several runners in alternation, after one warm-up sample each.

    Args:
      runners: ``{name: runner}``, each already compiled (its compile time measured elsewhere).
      repeats: samples per runner.
      target_s: wall seconds per sample, used to choose each runner's steps per sample.
      numbers: steps per sample, per runner, overriding the calibration.

    Returns:
      ``{name: Timing}`` in seconds per step.
    """
    numbers = dict(numbers or {})
    for name, runner in runners.items():
        runner(1)  # warm-up: first execution (allocations, thread pools, caches)
        numbers.setdefault(name, calibrate(runner, target_s))
        runner(numbers[name])  # warm-up at the measured size
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside one sample is noise
    try:
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate the order
            for name in order:
                n = numbers[name]
                samples[name].append(time_once(lambda runner=runners[name], n=n: runner(n)) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(samples[name], numbers[name]) for name in runners}


def paired_ratio(a: Timing, b: Timing) -> tuple[float, float]:
    """Median of the per-repeat ratios ``a / b`` and their relative IQR (noise)."""
    ratios = [x / y for x, y in zip(a.samples, b.samples, strict=True)]
    return statistics.median(ratios), relative_iqr(ratios)


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median of ``values``: the order statistics
    ``k`` and ``n + 1 - k`` (1-based) with the largest ``k`` for which a Binomial(n, 1/2) count
    falls below ``k`` with probability at most ``(1 - confidence) / 2``; the whole range when
    there are too few values for that (fewer than 6 at 95 %).

    Args:
      values: independent samples (e.g. per-repeat ratios).
      confidence: the interval's coverage.

    Returns:
      ``(low, high)``; ``(nan, nan)`` without values.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan, math.nan
    tail, below, k = (1 - confidence) / 2, 0.0, 1  # below: P(count < k)
    while k < n / 2:
        below += math.comb(n, k - 1) / 2**n
        if below > tail:
            break
        k += 1
    k = max(1, k - 1)  # the last k whose lower tail stayed within ``tail``
    return ordered[k - 1], ordered[n - k]


def paired_ratio_ci(a: Timing, b: Timing, confidence: float = 0.95) -> tuple[float, float]:
    """`median_ci` of the per-repeat ratios ``a / b``."""
    ratios = [x / y for x, y in zip(a.samples, b.samples, strict=True)]
    return median_ci(ratios, confidence)


def best_ratio(a: Timing, b: Timing) -> float:
    """``min(a) / min(b)``: the ratio of the least disturbed samples."""
    return min(a.samples) / min(b.samples)


# ----------------------------------------------------------------------------- peak


def on_accelerator() -> bool:
    """Whether JAX runs on a GPU or TPU: the peak matmul and the sweeps then grow larger (the
    PyTorch peers follow JAX onto a GPU only: `torch_device`)."""
    return jax.default_backend() != "cpu"


def peak_size() -> int:
    """Side of the matmul that measures the peak: 2048 on a CPU; 8192 on an accelerator, whose
    throughput a 2048 product does not reach."""
    return 8192 if on_accelerator() else 2048


def matmul_runner(size: int | None = None) -> tuple[Runner, int]:
    """A runner of jitted float32 ``[size, size] @ [size, size]`` products, and their FLOPs.

    Interleaved with a benchmark's runners it gives the matmul throughput under the same load,
    so "fraction of peak" is a paired ratio rather than a comparison across moments. ``size``
    defaults to `peak_size`. On a GPU, float32 products use JAX's default precision (TF32 on
    cards that have it), as the benchmarked steps do.
    """
    size = size or peak_size()
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)

    def run(n: int) -> None:
        for _ in range(n):
            out = matmul(a, b)
        block(out)

    run(1)
    return run, 2 * size**3


def fraction_of_peak(flops: int, timing: Timing, peak_flops: int, peak: Timing) -> float:
    """Median over repeats of (achieved FLOP/s) / (matmul FLOP/s in the same repeat)."""
    return statistics.median(
        (flops / t) / (peak_flops / p) for t, p in zip(timing.samples, peak.samples, strict=True)
    )


@functools.cache
def matmul_peak(size: int | None = None, repeats: int = 9) -> dict[str, float]:
    """The machine's float32 matmul throughput with ``jnp`` (and PyTorch, if installed), on the
    device JAX runs on (PyTorch: `torch_device`).

    Args:
      size: the matrices are ``[size, size]``; ``2 * size**3`` FLOPs per product; default
        `peak_size`.
      repeats: samples; the reported figure is the median (and the best, as a bound).

    Returns:
      ``{"jax_gflops": median, "jax_best_gflops": best, "torch_gflops": ... (if torch)}``.
    """
    size = size or peak_size()
    run, flops = matmul_runner(size)
    jax_times = [time_once(lambda: run(1)) for _ in range(repeats)]
    a, b = (jax.random.normal(jax.random.key(i), (size, size), jnp.float32) for i in (0, 1))
    result = {
        "jax_gflops": flops / statistics.median(jax_times) / 1e9,
        "jax_best_gflops": flops / min(jax_times) / 1e9,
    }
    torch = import_torch()
    if torch is not None:
        device = torch_device(torch)
        ta, tb = (torch.from_numpy(np.array(m)).to(device) for m in (a, b))

        def product():
            torch.matmul(ta, tb)
            torch_sync(torch)

        product()
        torch_times = [time_once(product) for _ in range(repeats)]
        result["torch_gflops"] = flops / statistics.median(torch_times) / 1e9
    return result


# ----------------------------------------------------------------------------- torch


TORCH_MISSING = "PyTorch is not installed: its columns are empty (pip install -e '.[bench]')."
TORCH_NOTE = (
    "PyTorch runs with OMP_WAIT_POLICY=PASSIVE (set by the benchmark unless already set): with "
    "OpenMP's default spin-waiting its threads fight XLA's and other processes' threads for the "
    "cores (see bench/NOTES.md)."
)


@functools.cache
def import_torch():
    """The ``torch`` module, or ``None`` when it is not installed (its columns are then empty).

    Sets ``OMP_WAIT_POLICY=PASSIVE`` first (unless set): OpenMP threads that spin while idle
    slow down both PyTorch and XLA when they share a few cores, several-fold on a loaded machine.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    if torch_device(torch) == "cuda":
        # JAX's default float32 matmul precision on a GPU uses TF32 where the card has it;
        # PyTorch's matmuls default to full float32 (its cuDNN convs already allow TF32), so
        # without this the peers would compare different arithmetic.
        torch.backends.cuda.matmul.allow_tf32 = True
    return torch


def torch_device(torch) -> str:
    """Where the PyTorch peers run: ``"cuda"`` when JAX runs on a GPU and PyTorch sees one (a
    CPU build of PyTorch does not), else ``"cpu"``."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_sync(torch) -> None:
    """Waits for PyTorch's queued GPU work (its CUDA calls return before the kernels finish);
    nothing on a CPU."""
    if torch_device(torch) == "cuda":
        torch.cuda.synchronize()


def parse_ks(text: str) -> tuple[int, ...]:
    """Population sizes from ``"512,1024"``: positive ints, duplicates dropped, in order.

    Raises:
      ValueError: an entry that is not a positive integer.
    """
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated positive integers, got {text!r}") from None
    if any(k < 1 for k in ks):
        raise ValueError(f"population sizes must be positive, got {text!r}")
    return tuple(dict.fromkeys(ks))


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass
class Table:
    """One result table: rows of a configuration each, cells numbers, strings or ``None``.

    Attributes:
      key: a stable identifier (``"mlp.step"``), the table's key in the JSON file.
      title: the Markdown heading.
      columns: column headers.
      rows: one list of cells per row (``None``: not measured).
      notes: lines printed under the table (what was measured, noise, skipped columns).
    """

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = dataclasses.field(default_factory=list)

    def markdown(self) -> str:
        """The table as GitHub Markdown, with its title and notes."""
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(format_cell(c) for c in row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def jsonable(self) -> dict[str, Any]:
        """The table as plain JSON values (non-finite floats become ``None``)."""
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [[json_cell(c) for c in row] for row in self.rows],
            "notes": self.notes,
        }


def format_cell(value: Any) -> str:
    """A cell for Markdown: ``None`` as an em dash, floats to about three significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, float | int | np.floating):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def json_cell(value: Any) -> Any:
    if isinstance(value, np.floating | np.integer):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def verdict(value: float | None, target: float, *, at_most: bool = True) -> str:
    """``"met"``/``"MISSED"`` for ``value`` against ``target`` (``≤`` by default, else ``≥``)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    ok = value <= target if at_most else value >= target
    return f"{'met' if ok else 'MISSED'} ({'≤' if at_most else '≥'} {target:g})"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


# ----------------------------------------------------------------------------- machine, files


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU, core count, load, JAX's device, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    torch = import_torch()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "torch": None if torch is None else torch.__version__,
        "torch_device": None if torch is None else torch_device(torch),
        "torch_tf32_matmul": None if torch is None else torch.backends.cuda.matmul.allow_tf32,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    return info
