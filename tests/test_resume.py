"""The real kill test: SIGKILL `jaxdl train` after its first checkpoint, resume, compare bits."""

import dataclasses
import functools
import json
import os

import jax
import numpy as np
import pytest
from _kill_and_resume import kill_after_checkpoint, start_jaxdl

from jaxdl import report
from jaxdl.checkpoint import CheckpointError
from jaxdl.config import DataConfig, ModelConfig, RunConfig
from jaxdl.step import TrainConfig

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
    assert "\nresuming mlp on digits" in "\n" + (tmp_path / "resumed.log").read_text()

    a, b = report.restore_run(killed_dir), report.restore_run(full_dir)
    assert a.step == b.step == 600
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(f"{killed_dir}/metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == list(range(20, 601, 20))  # no step logged twice, none missing


# The library-level resume: results and curves of a resumed run cover the whole run.

CONFIG = dict(  # lr 0.3: the test accuracy peaks early (step 20), before the resume point
    data=DataConfig(num_train=256, num_test=64),
    train=TrainConfig(steps=60, chunk_steps=10, batch_size=32, eval_every=10),
    lr=0.3,
    checkpoint_every=20,
)
SAME_RESULTS = (
    "final_test_accuracy",
    "best_test_accuracy",
    "best_step",
    "final_loss",
    "final_train_accuracy",
    "steps",
)


class Stop(Exception):
    pass


def stop_at(step):
    def on_chunk(reached, metrics):
        if reached == step:
            raise Stop  # before the checkpoint of that step, as a kill there would

    return on_chunk


def test_resumed_results_equal_the_uninterrupted_ones(tmp_path, monkeypatch):
    full = report.train_and_evaluate(RunConfig(**CONFIG, out=str(tmp_path / "full")))
    assert full.results["best_step"] == 20
    out = str(tmp_path / "killed")
    with pytest.raises(Stop):
        report.train_and_evaluate(RunConfig(**CONFIG, out=out), on_chunk=stop_at(50))
    resumed = report.train_and_evaluate(RunConfig(**CONFIG, out=out), resume=True)  # from 40
    with open(os.path.join(out, "results.json")) as f:
        written = json.load(f)
    for key in SAME_RESULTS:
        assert resumed.results[key] == written[key] == full.results[key], key
    assert written["final_test_loss"] == full.results["final_test_loss"]
    for key in ("step", "loss", "eval_step", "test_loss", "test_accuracy"):
        np.testing.assert_allclose(resumed.history[key], full.history[key], rtol=1e-6, err_msg=key)

    # Killed after its last checkpoint, before results.json: a resume runs nothing.
    os.remove(os.path.join(out, "results.json"))
    os.remove(os.path.join(out, "curves.png"))
    again = report.train_and_evaluate(RunConfig(**CONFIG, out=out), resume=True)
    for key in (*SAME_RESULTS, "final_test_loss"):  # the loss from metrics.jsonl: 1e-6 apart
        assert again.results[key] == pytest.approx(full.results[key], rel=1e-6), key
    assert os.path.exists(os.path.join(out, "curves.png"))


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(tmp_path):
    out = str(tmp_path / "run")
    config = dict(CONFIG, train=TrainConfig(steps=20, chunk_steps=10, batch_size=32))
    report.train_and_evaluate(RunConfig(**config, out=out))
    config_path = tmp_path / "run" / "config.json"
    before = config_path.read_text()
    pattern = (
        rf"^{out} holds checkpoints of a jaxdl train run \(steps \[20\]\): continue it with "
        rf"'jaxdl train --resume {out}', or choose another output folder$"
    )
    with pytest.raises(CheckpointError, match=pattern):
        report.train_and_evaluate(RunConfig(**config, seed=1, out=out))
    assert config_path.read_text() == before  # nothing was overwritten


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_into_a_sweeps_checkpoint_folder_is_refused(tmp_path, resume):
    """A sweep's checkpoints sit in ``checkpoints/group<g>/`` with its manifest, not in step
    folders: a run there, new or resumed, must still see them and leave its config.json."""
    out = tmp_path / "sweep"
    (out / "checkpoints" / "group0" / "chunk0" / "20").mkdir(parents=True)
    (out / "checkpoints" / "sweep.json").write_text("{}")
    (out / "config.json").write_text('{"saved": "by the sweep"}')
    manifest = out / "checkpoints" / "sweep.json"
    pattern = (
        rf"^{out} holds a jaxdl sweep's checkpoints \({manifest}\): continue it with "
        rf"'jaxdl sweep --resume {out}', or choose another output folder$"
    )
    with pytest.raises(CheckpointError, match=pattern):
        report.train_and_evaluate(RunConfig(**CONFIG, out=str(out)), resume=resume)
    assert (out / "config.json").read_text() == '{"saved": "by the sweep"}'


def interrupted_run(out: str) -> str:
    """A run of `CONFIG` into ``out`` stopped at step 50, after its checkpoint at step 40."""
    with pytest.raises(Stop):
        report.train_and_evaluate(RunConfig(**CONFIG, out=out), on_chunk=stop_at(50))
    return out


def test_resume_under_another_config_is_refused_and_names_what_differs(tmp_path):
    out = interrupted_run(str(tmp_path / "run"))
    config_path = tmp_path / "run" / "config.json"
    before = config_path.read_text()
    train = dataclasses.replace(CONFIG["train"], batch_size=16)
    other = dict(CONFIG, lr=0.1, train=train)
    pattern = (
        rf"^the checkpoints in {out} were saved under another config \("
        r"train\.batch_size: saved 32, now 16; lr: saved 0\.3, now 0\.1\): resume with the config "
        rf"they were saved with \(jaxdl train --resume {out} reads it\)"
    )
    with pytest.raises(CheckpointError, match=pattern):
        report.train_and_evaluate(RunConfig(**other, out=out), resume=True)
    assert config_path.read_text() == before  # nothing was overwritten


def test_resume_may_move_the_folder_and_change_how_often_it_saves(tmp_path):
    moved = str(tmp_path / "moved")
    os.rename(interrupted_run(str(tmp_path / "run")), moved)
    config = dict(CONFIG, checkpoint_every=10)
    resumed = report.train_and_evaluate(RunConfig(**config, out=moved), resume=True)
    full = report.train_and_evaluate(RunConfig(**CONFIG, out=str(tmp_path / "full")))
    assert resumed.results["final_loss"] == full.results["final_loss"]
    assert sorted(int(n) for n in os.listdir(f"{moved}/checkpoints") if n.isdigit())[-1] == 60


def test_resume_without_checkpointing_is_refused(tmp_path):
    out = interrupted_run(str(tmp_path / "run"))
    config = dict(CONFIG, checkpoint_every=None)
    with pytest.raises(CheckpointError, match=r"needs checkpoint_every, got None$"):
        report.train_and_evaluate(RunConfig(**config, out=out), resume=True)


def test_a_run_from_step_0_drops_the_metrics_rows_of_an_earlier_run_in_its_folder(tmp_path):
    # killed before its first checkpoint: nothing to resume, so the run (another lr) starts
    # afresh; its first row is at step 20, and the earlier run's row at step 10 must not stay
    out, model = str(tmp_path / "run"), ModelConfig(name="logistic")
    with pytest.raises(Stop):
        report.train_and_evaluate(RunConfig(**CONFIG, model=model, out=out), on_chunk=stop_at(10))
    train = TrainConfig(steps=20, chunk_steps=20, batch_size=32, eval_every=20)
    outcome = report.train_and_evaluate(
        RunConfig(**dict(CONFIG, lr=0.1, train=train), model=model, out=out), resume=True
    )
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [20]
    np.testing.assert_array_equal(outcome.history["step"], [20])


def test_a_fresh_run_leaves_no_results_of_the_run_before_it_in_its_folder(tmp_path):
    """A run into the folder of a finished one (no checkpoints) that stops early must not leave
    the old results, curves and TensorBoard events beside its own config.json."""
    out, model = str(tmp_path / "run"), ModelConfig(name="logistic")
    config = dict(CONFIG, checkpoint_every=None, model=model, out=out)
    report.train_and_evaluate(RunConfig(**config))
    assert {"results.json", "curves.png"} <= set(os.listdir(out))
    with pytest.raises(Stop):
        report.train_and_evaluate(RunConfig(**dict(config, lr=0.1)), on_chunk=stop_at(20))
    files = os.listdir(out)
    assert "results.json" not in files and "curves.png" not in files
    assert len([n for n in files if n.startswith("events.out.tfevents.")]) == 1
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["lr"] == 0.1
