"""What every study shares: its output folder (written atomically through `jaxdl.io`), Markdown
tables, matplotlib figures as PNG, mean ± std across seeds, and the command line."""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxdl.io import write_atomic, write_json_atomic


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    x = np.asarray(values, np.float64)
    return float(np.mean(x)), float(np.std(x, ddof=1)) if x.size > 1 else 0.0


def pct(values: Sequence[float]) -> str:
    """Accuracies in ``[0, 1]`` as ``"93.4 ± 0.5"`` (percent, mean ± std over seeds); ``n/a``
    when one is NaN (`jaxdl.evaluate` of a diverged network whose logits are NaN)."""
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if math.isfinite(mean) else "n/a"


def geomean(values: Sequence[float]) -> float:
    """Geometric mean: the average of ratios that span orders of magnitude (NaN if any is not
    positive and finite)."""
    x = np.asarray(values, np.float64)
    if x.size == 0 or not np.all(np.isfinite(x) & (x > 0)):
        return math.nan
    return float(np.exp(np.mean(np.log(x))))


def sci(value: float) -> str:
    """A number for a table: ``1.2e-05``; ``n/a`` when not finite."""
    return f"{value:.2g}" if math.isfinite(value) else "n/a"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a Markdown table (columns: those of the first row unless given)."""
    if not rows:
        return ""
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(figure) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(figure)
    return buffer.getvalue()


def write_outputs(
    out_dir: str | os.PathLike,
    results: Mapping[str, Any],
    markdown: str,
    figures: Mapping[str, bytes],
) -> list[str]:
    """Writes a study's folder: ``results.json``, ``results.md`` and one PNG per figure, each
    atomically (`jaxdl.io.write_atomic`).

    Args:
      out_dir: the folder (created if missing).
      results: the study's results (made strict JSON by `jaxdl.io.to_jsonable`: arrays as
        lists, tuples as lists, dataclasses as dicts, NaN and inf as null).
      markdown: the tables, as Markdown text.
      figures: ``{file_name: png_bytes}``.

    Returns:
      The paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "results.json")
    write_json_atomic(json_path, results, indent=1)
    written = [json_path]
    for name, data in (("results.md", markdown.rstrip() + "\n"), *figures.items()):
        path = os.path.join(out_dir, name)
        write_atomic(path, data)
        written.append(path)
    return written


def init_key(seed: int) -> jax.Array:
    """The init key of seed ``seed`` as `jaxdl.fit` and `jaxdl.sweep` derive it, so networks
    built here start from the same weights as the sweep's members."""
    return jax.random.split(jax.random.key(seed))[0]


class Stopwatch:
    """Wall-clock seconds since creation: ``Stopwatch().seconds()``."""

    def __init__(self):
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 1)


def _parse_value(text: str, current: Any) -> Any:
    """``text`` read as the type of the field's current value (tuples: comma-separated)."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(current, tuple):
        kinds = {type(v) for v in current} or {str}
        kind = kinds.pop() if len(kinds) == 1 else str
        try:
            return tuple(kind(part) for part in text.split(",") if part)
        except ValueError:
            raise ValueError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    if current is None:
        return text
    try:
        return type(current)(text)
    except ValueError:
        raise ValueError(f"expected {type(current).__name__}, got {text!r}") from None


def check_counts(config: Any, names: Sequence[str], *, minimum: int = 1) -> None:
    """Raises a ValueError naming the key unless each named field of ``config`` (an int or a
    non-empty tuple of ints) is at least ``minimum``."""
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        # an empty tuple (``--set depths=``) would pass ``all`` and fail deep in the run
        if not values or not all(type(v) is int and v >= minimum for v in values):
            what = "ints" if isinstance(value, tuple) else "an int"
            raise ValueError(f"config key {name!r}: expected {what} >= {minimum}, got {value!r}")


def check_choices(config: Any, name: str, valid: Sequence[str]) -> None:
    """Raises a ValueError naming the key and the valid values unless each value of the field
    ``name`` (a string or a non-empty tuple of them) is one of ``valid``."""
    value = getattr(config, name)
    if value == ():
        raise ValueError(f"config key {name!r}: expected one or more of {', '.join(valid)}, got ()")
    unknown = [v for v in (value if isinstance(value, tuple) else (value,)) if v not in valid]
    if unknown:
        raise ValueError(f"config key {name!r}: unknown {unknown}; valid: {', '.join(valid)}")


def check_out_dir(out_dir: str | os.PathLike) -> None:
    """Raises a ValueError naming ``out_dir`` unless it is a folder or can be made one (its
    nearest existing ancestor is a folder): checked before a study trains, not when it writes."""
    existing = os.path.abspath(out_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"config key 'out_dir' (--out): expected a folder, got {os.fspath(out_dir)!r}, "
            f"where {existing!r} is a file"
        )


def override(config: Any, assignments: Sequence[str]) -> Any:
    """``config`` (a frozen dataclass) with ``key=value`` assignments applied.

    Args:
      config: the study's config.
      assignments: ``["steps=500", "depths=2,8"]``; values take the field's type.

    Returns:
      A new config. An unknown key, or a value the config's own checks refuse (its
      ``__post_init__``), is a ValueError naming the key.
    """
    valid = [f.name for f in dataclasses.fields(config)]
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {assignment!r}")
        if key not in valid:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
        try:
            changes[key] = _parse_value(text, getattr(config, key))
        except ValueError as error:  # name the key: the value alone does not say which one
            raise ValueError(f"config key {key!r}: {error}") from None
    return dataclasses.replace(config, **changes)


def main(
    name: str,
    config_cls: type,
    run: Callable[[Any], Mapping[str, Any]],
    argv: Sequence[str] | None = None,
) -> Mapping[str, Any]:
    """The command line of a study: parses ``--quick``, ``--out`` and ``--set``, then calls
    ``run``; the study prints its own table.

    Args:
      name: the study's module name (for the help text).
      config_cls: its frozen config dataclass (with a ``quick()`` method).
      run: its ``run(config) -> results``.
      argv: arguments (default: ``sys.argv[1:]``).

    Returns:
      The results.
    """
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}")
    parser.add_argument("--quick", action="store_true", help="the small version the tests run")
    parser.add_argument("--out", help="output folder (default: the config's out_dir)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )
    args = parser.parse_args(argv)
    config = config_cls()
    if args.quick:
        config = config.quick()
    if args.out:
        config = dataclasses.replace(config, out_dir=args.out)
    try:
        config = override(config, args.set)
        check_out_dir(config.out_dir)
    except ValueError as error:
        parser.error(str(error))
    return run(config)
