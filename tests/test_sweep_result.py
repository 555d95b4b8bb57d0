"""`SweepResult` tables and summaries, and the sweep folder's summary, on a result built by hand
(no training): the statistics, the errors, the formatting."""

import csv
import json
import math
import sys
import types
from typing import NamedTuple

import numpy as np
import pytest

from jaxdl.sweep import members_of
from jaxdl.sweep_report import curve_band, with_published, write_sweep
from jaxdl.sweep_result import MemberStates, SweepResult
from jaxdl.train import Hparams, TrainConfig


def result_of(axes, accuracies, diverged_at=None):
    """A `SweepResult` of the members of ``axes`` with these final test accuracies."""
    members = members_of(axes)
    n = len(members)
    diverged = np.array([-1] * n if diverged_at is None else diverged_at)
    states = MemberStates([types.SimpleNamespace(diverged_at=diverged)], [(0, i) for i in range(n)])
    histories = [
        {
            "step": np.array([10, 20]),
            "loss": np.array([1.0, 0.5]),
            "eval_step": np.array([20]),
            "test_accuracy": np.array([a]),
        }
        for a in accuracies
    ]
    return SweepResult(
        members, dict(axes), states, histories, TrainConfig(steps=20), Hparams(), ["vmap"] * n,
        [0.5] * n,
    )  # fmt: skip


def test_summary_of_an_unknown_metric_lists_the_valid_ones():
    result = result_of({"lr": [0.1, 0.2], "seed": range(2)}, [0.5, 0.6, 0.7, 0.8])
    with pytest.raises(ValueError) as info:
        result.summary_rows(metric="test_acc")
    assert str(info.value) == (
        "summary: unknown metric 'test_acc'; valid: final_test_accuracy, best_test_accuracy, "
        "final_loss, diverged_at_step, seconds"
    )
    with pytest.raises(ValueError, match="unknown metric 'strategy'"):
        result.summary(metric="strategy")
    (row,) = result.summary_rows(by=[], metric="final_loss")
    assert (row["n"], row["mean"], row["std"]) == (4, 0.5, 0.0)


def test_summary_percentages_keep_one_decimal():
    result = result_of({"lr": [0.1, 0.2], "seed": range(2)}, [0.92, 0.92, 0.5, 0.54])
    rows = with_published(result.summary_rows(), "digits")
    assert [(r["mean_%"], r["std_%"]) for r in rows] == [("92.0", "0.0"), ("52.0", "2.8")]
    assert rows[0]["ci95_%"] == "[92.0, 92.0]"


def test_markdown_cells_escape_pipes_and_line_breaks():
    result = result_of({"model": ["a|b", "c\nd"], "seed": [0]}, [0.5, 0.6])
    lines = result.table().splitlines()
    assert len(lines) == 4  # header, rule, one line per member
    assert lines[2].startswith("| 0 | a\\|b | 0 | 0.5 |")
    assert lines[3].startswith("| 1 | c d | 0 | 0.6 |")
    # every row has as many cells as the header (an escaped pipe is no separator)
    cells = [len(line.replace("\\|", "").split("|")) for line in lines]
    assert cells == [cells[0]] * 4
    assert "a\\|b" in result.summary()  # the summary table too


def test_best_accuracy_of_a_member_without_evaluations_is_nan_without_a_warning():
    # np.nanmax warned "All-NaN slice encountered" (an error under this suite's filterwarnings)
    result = result_of({"seed": [0, 1]}, [np.nan, 0.5])
    rows = result.rows()
    assert np.isnan(rows[0]["best_test_accuracy"]) and rows[1]["best_test_accuracy"] == 0.5


def test_summary_by_one_name_and_the_count_of_diverged_members():
    result = result_of(
        {"lr": [0.1, 0.2], "seed": range(3)}, [0.5, 0.6, 0.7, 0.8, 0.1, 0.9],
        diverged_at=[-1, -1, -1, -1, 3, -1],
    )  # fmt: skip
    # a string was split into its letters: "summary: unknown axes ['l', 'r']"
    assert result.summary_rows(by="lr") == result.summary_rows(by=["lr"])
    rows = result.summary_rows(by="lr")
    assert [list(row) for row in rows] == [
        ["lr", "n", "diverged", "mean", "std", "ci_low", "ci_high"]
    ] * 2
    assert [(row["lr"], row["n"], row["diverged"]) for row in rows] == [(0.1, 3, 0), (0.2, 3, 1)]
    assert rows[1]["mean"] == pytest.approx(0.6)  # the diverged member counts, as documented
    with pytest.raises(ValueError, match=r"unknown axes \['seeds'\]; valid: \['lr', 'seed'\]"):
        result.summary(by="seeds")


def test_confidence_interval_by_hand_for_2_3_and_8_seeds():
    """The 95 % half-width is t(0.975, n - 1) * s / sqrt(n), t from tables (no scipy)."""
    table = {2: 12.706204736174698, 3: 4.302652729749464, 8: 2.3646242515927844}
    for n, t in table.items():
        accuracies = [0.5 + 0.01 * i * i for i in range(n)]
        (row,) = result_of({"seed": range(n)}, accuracies).summary_rows(by=[])
        mean = sum(accuracies) / n
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (n - 1))
        assert (row["n"], row["mean"], row["std"]) == (n, pytest.approx(mean), pytest.approx(std))
        half = t * std / math.sqrt(n)
        assert row["ci_low"] == pytest.approx(mean - half, rel=1e-12)
        assert row["ci_high"] == pytest.approx(mean + half, rel=1e-12)


class State(NamedTuple):
    params: np.ndarray  # [members]
    model_state: np.ndarray  # [members]
    diverged_at: np.ndarray  # [members]


def test_member_takes_negative_indices_and_refuses_non_integers():
    result = result_of({"seed": range(3)}, [0.5, 0.6, 0.7])
    stacked = State(params=np.arange(3.0), model_state=np.zeros(3), diverged_at=np.full(3, -1))
    result.states = MemberStates([stacked], [(0, i) for i in range(3)])
    last = result.member(-1)  # was an IndexError
    assert (last.config["axes"], last.params) == ({"seed": 2}, 2.0)
    assert result.member(np.int64(1)).config["axes"] == {"seed": 1}
    with pytest.raises(IndexError, match=r"member index -4 out of range: expected -3 <= index < 3"):
        result.member(-4)
    with pytest.raises(IndexError, match=r"member index 3 out of range"):
        result.member(3)
    with pytest.raises(TypeError, match="member index: expected an integer, got float 1.0"):
        result.member(1.0)  # was "list indices must be integers or slices, not float"


def test_summary_table_of_one_seed_shows_no_spread_and_diverged_only_when_some():
    one = with_published(result_of({"lr": [0.1], "seed": [0]}, [0.9]).summary_rows(), "digits")
    assert one == [{"lr": 0.1, "n": 1, "mean_%": "90.0", "std_%": "n/a", "ci95_%": "n/a"}]
    some = result_of({"lr": [0.1], "seed": range(2)}, [0.9, 0.1], diverged_at=[-1, 4])
    (row,) = with_published(some.summary_rows(), "digits")
    assert (row["diverged"], row["mean_%"], row["ci95_%"]) == (1, "50.0", "[-458.2, 558.2]")


def test_curve_band_leaves_out_the_non_finite_points_of_diverged_seeds():
    curves = np.array([[1.0, 2.0, 3.0], [3.0, np.nan, np.inf], [2.0, 4.0, np.nan]])
    mean, low, high = curve_band(curves)
    np.testing.assert_array_equal(mean, [2.0, 3.0, 3.0])  # the mean was NaN from step 2 on
    np.testing.assert_array_equal(low, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(high, [3.0, 4.0, 3.0])
    none = curve_band(np.array([[np.nan, 1.0]]))
    assert np.isnan(none[0][0]) and np.isnan(none[1][0]) and none[2][1] == 1.0


def test_sweep_folder_of_one_seed_with_a_diverged_member(tmp_path):
    result = result_of({"hidden": [(16,), (32,)], "seed": [0]}, [0.5, 0.1], diverged_at=[-1, 3])
    result.member_histories[1]["loss"] = np.array([np.inf, np.nan])
    summary = write_sweep(result, tmp_path, data_name="digits")
    assert summary.splitlines()[0] == "| hidden | n | diverged | mean_% | std_% | ci95_% |"
    assert "| (32,) | 1 | 1 | 10.0 | n/a | n/a |" in summary
    text = (tmp_path / "summary.md").read_text()
    assert text.endswith("\n\n1 of 2 members diverged; they count with their final accuracy "
                         "(see diverged_at_step in results.csv).\n")  # fmt: skip
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["hidden"], r["final_loss"], r["diverged_at_step"]) for r in rows] == [
        ("(16,)", "0.5", "-1"),
        ("(32,)", "nan", "3"),
    ]
    assert json.loads((tmp_path / "results.json").read_text())["members"][1]["final_loss"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accuracy.png", "curves.png", "results.csv", "results.json", "summary.md",
    ]  # fmt: skip


def test_resumed_sweep_progress_counts_the_groups_restored_complete(tmp_path, monkeypatch, capsys):
    """A resumed sweep whose first group was restored complete runs no chunk of it: progress
    ended at half the population's network-steps (40/80)."""
    from jaxdl import cli, sweep_cli

    def resumed_sweep(model_for, data, axes, *, on_chunk, on_group, **kwargs):
        on_group({"model": "mlp"}, 2)  # restored complete: no chunk
        on_group({"model": "convnet"}, 2)  # one member after another, evaluated every chunk
        for _ in range(2):
            for step in (10, 20):
                on_chunk(step, {"loss": 0.5, "train_accuracy": 0.5, "test_accuracy": 0.5})
        return result_of(axes, [0.5] * 4)

    monkeypatch.setattr(sweep_cli, "sweep", resumed_sweep)
    args = [
        "sweep", "--data", "digits", "--num-train", "256", "--num-test", "64",
        "--model", "mlp,convnet", "--seeds", "2", "--steps", "20", "--chunk-steps", "10",
        "--eval-every", "10", "--batch-size", "32", "--no-progress", "--out", str(tmp_path),
    ]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    counts = [line.split()[1] for line in printed.splitlines() if line.startswith("network-")]
    assert counts == ["50/80", "60/80", "70/80", "80/80"], printed

    class Bar(sweep_cli._Progress):  # the live bar's updates, recorded
        def __enter__(self):
            self.steps = []
            bars.append(self)
            return self

        def update(self, step, metrics):
            self.steps.append(step)

        def __exit__(self, *exc):
            pass

    def first_group_only(model_for, data, axes, *, on_chunk, on_group, **kwargs):
        on_group({"model": "mlp"}, 2)  # ran on, its two members vmapped
        on_chunk(20, {k: np.full(2, 0.5) for k in ("loss", "train_accuracy", "test_accuracy")})
        on_group({"model": "convnet"}, 2)  # restored complete: reports no chunk
        return result_of(axes, [0.5] * 4)

    bars = []
    monkeypatch.setattr(sweep_cli, "_Progress", Bar)
    monkeypatch.setattr(sweep_cli, "sweep", first_group_only)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    args[args.index(str(tmp_path))] = str(tmp_path / "live")
    assert cli.main([a for a in args if a != "--no-progress"]) == 0
    assert bars[0].steps == [40, 80]  # the bar stopped at 40/80


def test_sweep_folder_where_every_member_diverged_plots_its_curves(tmp_path):
    """Every loss NaN/inf (every member diverged in its only chunk): curves.png set a log scale
    with no positive data, and matplotlib's ValueError ended `jaxdl sweep` with status 2 and
    no curves.png instead of status 1."""
    result = result_of({"seed": [0, 1]}, [0.1, 0.1], diverged_at=[2, 3])
    result.member_histories[0]["loss"] = np.array([np.nan, np.nan])
    result.member_histories[1]["loss"] = np.array([np.inf, np.nan])
    write_sweep(result, tmp_path, data_name="digits")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
