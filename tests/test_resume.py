"""The real kill test: SIGKILL `jaxdl train` after its first checkpoint, resume, compare bits."""

import functools
import json
import os

import jax
import numpy as np
from _kill_and_resume import kill_after_checkpoint, start_jaxdl

from jaxdl import report

ARGS = [
    "--data", "digits", "--model", "mlp", "--hidden", "32", "--dropout", "0.2",
    "--num-train", "512", "--num-test", "128", "--batch-size", "32",
    "--steps", "600", "--chunk-steps", "20", "--eval-every", "100",
    "--checkpoint-every", "40", "--no-progress",
]  # fmt: skip


def jaxdl_train(log_path, *args):
    """Starts ``python -m jaxdl train ARGS`` writing its output to ``log_path``."""
    return start_jaxdl(log_path, "train", *args)


def has_checkpoint(run_dir) -> bool:
    checkpoints = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))


def test_killed_run_resumes_bit_identical(tmp_path):
    killed_dir, full_dir = str(tmp_path / "killed"), str(tmp_path / "full")
    uninterrupted = jaxdl_train(tmp_path / "full.log", *ARGS, "--out", full_dir)
    killed = jaxdl_train(tmp_path / "killed.log", *ARGS, "--out", killed_dir)
    saved = functools.partial(has_checkpoint, killed_dir)
    kill_after_checkpoint(saved, killed, uninterrupted, tmp_path / "full.log")
    steps_before = sorted(int(n) for n in os.listdir(f"{killed_dir}/checkpoints") if n.isdigit())
    assert steps_before and steps_before[-1] < 600

    resumed = jaxdl_train(tmp_path / "resumed.log", "--resume", killed_dir)
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()

    a, b = report.restore_run(killed_dir), report.restore_run(full_dir)
    assert a.step == b.step == 600
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(f"{killed_dir}/metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == list(range(20, 601, 20))  # no step logged twice, none missing
