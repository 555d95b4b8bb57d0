"""`SweepResult` tables and summaries, and the sweep folder's summary, on a result built by hand
(no training): the statistics, the errors, the formatting."""

import types

import numpy as np
import pytest

from jaxdl.sweep import members_of
from jaxdl.sweep_report import with_published
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
