"""A sweep's output folder: results.csv, summary.md, results.json, plots; all written atomically."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxdl.io import write_atomic, write_json_atomic
from jaxdl.report import log_scale_if_positive
from jaxdl.sweep_result import SEED_AXES, SweepResult, render

# What `write_sweep` writes, and the member run folders of ``jaxdl sweep --save-members``.
SWEEP_OUTPUTS = ("results.csv", "summary.md", "results.json", "accuracy.png", "curves.png")
MEMBERS = "members"

# Test accuracy (%) reported in the MNIST-1D paper (Greydanus & Kobak, 2024, table 1).
PUBLISHED = {
    "mnist1d": {"logistic": 32.0, "mlp": 68.0, "convnet": 94.0},
    "mnist1d_shuffled": {"logistic": 32.0, "mlp": 68.0, "convnet": 56.0},
}


def config_label(member: Mapping[str, Any]) -> str:
    """A member's non-seed axis values as ``"model=mlp lr=0.001"`` (``"all"`` if none)."""
    parts = [f"{k}={v}" for k, v in member.items() if k not in SEED_AXES]
    return " ".join(parts) or "all"


def with_published(rows: list[dict[str, Any]], data_name: str) -> list[dict[str, Any]]:
    """Summary rows in percent, with the published accuracy beside our mean where one is known.

    Args:
      rows: `SweepResult.summary_rows` output (its ``model`` column is matched to the paper's).
      data_name: the data set's name.

    Returns:
      Rows of the grouping values, ``n``, ``diverged`` (only if some member diverged),
      ``mean_%``, ``std_%``, ``ci95_%`` (text with one decimal: ``"92.0"``, ``"[91.2, 92.8]"``;
      ``"n/a"`` for a group of one, whose spread one seed cannot estimate) and, for a data set
      with published figures, ``published_%``.
    """
    published = PUBLISHED.get(data_name)
    replaced = ["mean", "std", "ci_low", "ci_high"]
    if not any(row.get("diverged") for row in rows):
        replaced.append("diverged")  # a column of zeros: shown only when it says something
    out = []
    for row in rows:
        shown = {k: v for k, v in row.items() if k not in replaced}
        shown["mean_%"] = f"{100 * row['mean']:.1f}"  # text: 92.0 stays "92.0", not "92"
        if row["n"] > 1:
            shown["std_%"] = f"{100 * row['std']:.1f}"
            shown["ci95_%"] = f"[{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
        else:  # not "0.0" and "[92.0, 92.0]": one seed gives no spread, not a zero one
            shown["std_%"] = shown["ci95_%"] = "n/a"
        if published is not None:
            shown["published_%"] = published.get(row.get("model"), "")
        out.append(shown)
    return out


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _by_config(result: SweepResult) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, member in enumerate(result.members):
        groups.setdefault(config_label(member), []).append(i)
    return groups


def plot_accuracy_distribution(result: SweepResult) -> bytes:
    """PNG: final test accuracy per configuration, one dot per seed, with the mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _by_config(result)
    accuracies = [row["final_test_accuracy"] for row in result.rows()]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(groups)), 3.6))
    rng = np.random.default_rng(0)  # horizontal jitter only, so dots do not overlap
    for x, (label, members) in enumerate(groups.items()):
        values = 100 * np.array([accuracies[i] for i in members])
        ax.scatter(x + rng.uniform(-0.12, 0.12, len(values)), values, s=18, alpha=0.8)
        ax.hlines(values.mean(), x - 0.25, x + 0.25, color="black")
    ax.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("accuracy per configuration (one dot per seed)")
    ax.grid(axis="y", alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def curve_band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max across seeds of the finite values at each point.

    A diverged member's NaN/inf points are left out, so that one diverged seed does not erase
    its configuration's curve and band (a NaN mean draws nothing); a point where no seed is
    finite is NaN.

    Args:
      curves: ``[seeds, points]``.

    Returns:
      ``(mean, low, high)``, each ``[points]``.
    """
    curves = np.asarray(curves, np.float64)
    finite = np.isfinite(curves)
    count = finite.sum(0)  # [points]
    some = count > 0
    mean = np.where(finite, curves, 0.0).sum(0) / np.maximum(count, 1)
    low = np.where(finite, curves, np.inf).min(0)
    high = np.where(finite, curves, -np.inf).max(0)
    return tuple(np.where(some, x, np.nan) for x in (mean, low, high))


def plot_learning_curves(result: SweepResult) -> bytes:
    """PNG: train loss (log scale where every finite value is > 0) and test accuracy vs step per
    configuration, mean with a min-max band across seeds (`curve_band`: non-finite points of
    diverged members left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    lower_losses = []  # each configuration's lower band of the loss
    for label, members in _by_config(result).items():
        histories = [result.member_histories[i] for i in members]
        for ax, step_key, key, scale in (
            (loss_ax, "step", "loss", 1.0),
            (acc_ax, "eval_step", "test_accuracy", 100.0),
        ):
            steps = np.asarray(histories[0][step_key])
            curves = scale * np.stack([np.asarray(h[key]) for h in histories])  # [seeds, points]
            mean, low, high = curve_band(curves)
            if key == "loss":
                lower_losses.append(low)
            (line,) = ax.plot(steps, mean, label=label)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    loss_ax.set(xlabel="step", ylabel="train loss", title="loss (band: min-max)")
    log_scale_if_positive(loss_ax, np.concatenate(lower_losses))
    acc_ax.set(xlabel="step", ylabel="test accuracy (%)", title="test accuracy (band: min-max)")
    acc_ax.legend(fontsize=7)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def clear_sweep_outputs(out_dir: str | os.PathLike) -> None:
    """Removes what an earlier sweep wrote in ``out_dir`` (`SWEEP_OUTPUTS` and ``members/``),
    so that a new sweep there, should it stop early, leaves none of it beside its own
    ``config.json``, and writes its own members rather than keeping the earlier ones.

    Args:
      out_dir: the sweep folder; missing files (or a missing folder) are fine.

    Returns:
      None.
    """
    for name in SWEEP_OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))
    members = os.path.join(out_dir, MEMBERS)
    if os.path.isdir(members):
        shutil.rmtree(members)


def write_sweep(
    result: SweepResult,
    out_dir: str | os.PathLike,
    *,
    data_name: str = "",
    by: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Writes a sweep's output folder and returns the summary table (Markdown).

    Files: ``results.csv`` (one row per member), ``summary.md`` (mean, std, 95 % CI across seeds
    per configuration, beside published figures where known; diverged members count with their
    final values, and how many there are is shown), ``results.json`` (both tables and ``extra``),
    ``accuracy.png`` (one dot per seed) and ``curves.png`` (bands across seeds).

    Args:
      result: the `SweepResult`.
      out_dir: the folder (created if missing).
      data_name: the data set's name, to find published figures.
      by: summary grouping axes (default: every non-seed axis).
      extra: more JSON-compatible entries for results.json (config, wall time).

    Returns:
      The summary as a Markdown table.
    """
    os.makedirs(out_dir, exist_ok=True)
    rows = result.rows()
    summary_rows = result.summary_rows(by)
    summary = render(with_published(summary_rows, data_name), "markdown")
    write_atomic(os.path.join(out_dir, "results.csv"), render(rows, "csv"))
    title = f"# Sweep summary{f' on {data_name}' if data_name else ''}\n\n"
    diverged = sum(row["diverged_at_step"] >= 0 for row in rows)
    note = (
        f"\n\n{diverged} of {len(rows)} members diverged; they count with their final "
        f"accuracy (see diverged_at_step in results.csv)."
        if diverged
        else ""
    )
    write_atomic(os.path.join(out_dir, "summary.md"), title + summary + note + "\n")
    write_json_atomic(
        os.path.join(out_dir, "results.json"),
        {"members": rows, "summary": summary_rows, **(extra or {})},
    )
    write_atomic(os.path.join(out_dir, "accuracy.png"), plot_accuracy_distribution(result))
    write_atomic(os.path.join(out_dir, "curves.png"), plot_learning_curves(result))
    return summary
