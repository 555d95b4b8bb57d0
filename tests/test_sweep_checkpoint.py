"""Sweep checkpoints: a resumed sweep ends bit-identical to an uninterrupted one, curves included,
whatever unit its strategy checkpoints (vmapped chunks, single members under "map"); completed
groups are not retrained; a member saves as a single-run folder; resuming another sweep names what
differs. The CLI test kills ``jaxdl sweep`` with SIGKILL, as tests/test_resume.py kills a run.

Sweeps compile one program per group, so populations are tiny MLPs on a few hundred digits.
"""

import csv
import functools
import importlib
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _kill_and_resume import kill_after_checkpoint, start_jaxdl

import jaxdl
from jaxdl import cli, config, report
from jaxdl import parts as parts_module
from jaxdl.checkpoint import Checkpointer, CheckpointError
from jaxdl.io import write_json_atomic
from jaxdl.sweep_checkpoint import (
    GroupCheckpoints,
    concat_history,
    load_history,
    save_history,
)
from jaxdl.sweep_cli import SweepSpec, save_members, spec_to_dict
from jaxdl.train import History, TrainConfig

CONFIG = TrainConfig(steps=40, batch_size=32, chunk_steps=10, eval_every=20)
sweep_module = importlib.import_module("jaxdl.sweep")  # `jaxdl.sweep` is the function


@functools.cache
def digits():
    return jaxdl.data.load("digits").subset(256, 64)


class Interrupt(Exception):
    pass


def interrupt_after(calls: int):
    """An ``on_chunk`` raising `Interrupt` at its ``calls``-th call (after that chunk's save)."""
    seen = []

    def on_chunk(step, report):
        seen.append(step)
        if len(seen) == calls:
            raise Interrupt

    return on_chunk


def plain(state):
    """The state with its typed key as raw data, for exact comparison."""
    return state._replace(key=jax.random.key_data(state.key))


def assert_sweeps_equal(a, b):
    """Every member's final state and whole history bit-identical."""
    assert a.members == b.members
    for i, (x, y) in enumerate(zip(a.states, b.states, strict=True)):
        chex.assert_trees_all_equal(plain(x), plain(y), custom_message=f"member {i}")
    for i, (x, y) in enumerate(zip(a.member_histories, b.member_histories, strict=True)):
        assert sorted(x) == sorted(y), f"member {i}: curves {sorted(x)} != {sorted(y)}"
        jax.tree.map(np.testing.assert_array_equal, dict(x), dict(y))


def no_temporary_files(folder) -> bool:
    return not [n for _, dirs, files in os.walk(folder) for n in dirs + files if "tmp" in n]


# ----------------------------------------------------------------------------- library


def test_resumed_chunked_sweep_is_bit_identical_and_skips_completed_groups(tmp_path):
    def model(hidden):  # dropout: the keys restored must be the right ones
        return jaxdl.mlp(hidden=(hidden,), dropout=0.2)

    run = functools.partial(
        jaxdl.sweep,
        model,
        digits(),
        {"hidden": [8, 16], "seed": [0, 1, 2]},
        config=CONFIG,
        strategy="chunked",
        chunk_members=2,  # each group: members [0, 1] and [2] padded to 2
    )
    uninterrupted = run()
    # 2 groups x 2 chunks x 4 chunk ends: stop at group 1's first chunk, step 30 (saved: 20)
    with pytest.raises(Interrupt):
        run(checkpointer=Checkpointer(tmp_path, every=20), on_chunk=interrupt_after(11))
    assert Checkpointer(tmp_path / "group0" / "chunk1").steps() == [20, 40]
    assert Checkpointer(tmp_path / "group1" / "chunk0").steps() == [20]

    steps = []
    resumed = run(
        checkpointer=Checkpointer(tmp_path, every=20),
        resume=True,
        on_chunk=lambda step, _: steps.append(step),
    )
    assert steps == [30, 40, 10, 20, 30, 40]  # group 0 restored, not retrained
    assert_sweeps_equal(resumed, uninterrupted)
    np.testing.assert_array_equal(resumed.histories["step"][0], [10, 20, 30, 40])
    assert no_temporary_files(tmp_path)


def test_resumed_auto_sweep_keeps_its_parts_and_is_bit_identical(tmp_path, monkeypatch):
    """`auto` on CPU runs 3 ConvNets as pairs in parts (one member each, the plain step): the
    group's layout records the parts, and the resumed sweep runs with them, bit for bit."""
    monkeypatch.setattr(parts_module, "CPU_CONV_PARTS_MIN_STEPS", CONFIG.steps)  # for 40 steps
    run = functools.partial(
        jaxdl.sweep, jaxdl.convnet(channels=(4,), kernel=3), digits(), {"seed": [0, 1, 2]},
        config=CONFIG,
    )  # fmt: skip
    uninterrupted = run()
    with pytest.raises(Interrupt):  # 2 chunks x 4 chunk ends: stop at chunk 1's step 10
        run(checkpointer=Checkpointer(tmp_path, every=20), on_chunk=interrupt_after(5))
    layout = json.loads((tmp_path / "group0" / "layout.json").read_text())
    assert layout == {"strategy": "chunked", "chunk_members": 2, "parts": 2}
    resumed = run(checkpointer=Checkpointer(tmp_path, every=20), resume=True)
    assert_sweeps_equal(resumed, uninterrupted)


def test_a_layout_saved_before_parts_were_recorded_resumes_with_one_part(tmp_path):
    group = GroupCheckpoints(str(tmp_path), every=10, keep=1, resume=True)
    write_json_atomic(str(tmp_path / "layout.json"), {"strategy": "chunked", "chunk_members": 4})
    assert group.layout() == ("chunked", 4, 1)


def test_resumed_map_sweep_saves_and_restores_a_diverged_member(tmp_path):
    # a linear MLP under sgd: lr 1e4 makes member 0's loss non-finite at step 5, lr 1e-2 does not
    model = jaxdl.mlp(hidden=(16,), activation="identity")
    diverge = TrainConfig(steps=12, batch_size=32, chunk_steps=4, eval_every=8, optimizer="sgd")
    run = functools.partial(
        jaxdl.sweep, model, digits(), {"lr": [1e4, 1e-2]}, config=diverge, strategy="map"
    )
    uninterrupted = run()
    assert uninterrupted.rows()[0]["diverged_at_step"] >= 0
    # member 0 runs steps 4, 8, 12, member 1 steps 4, 8: interrupted there
    with pytest.raises(Interrupt):
        run(checkpointer=Checkpointer(tmp_path, every=4), on_chunk=interrupt_after(5))
    assert Checkpointer(tmp_path / "group0" / "chunk0").steps() == [4, 8, 12]  # diverged: saved
    assert Checkpointer(tmp_path / "group0" / "chunk1").steps() == [4, 8]

    resumed = run(checkpointer=Checkpointer(tmp_path, every=4), resume=True)
    assert_sweeps_equal(resumed, uninterrupted)
    np.testing.assert_array_equal(resumed.member_histories[1]["eval_step"], [8, 12])


def test_history_is_cut_to_the_checkpoint_it_goes_with(tmp_path):
    def curves(steps):
        n = len(steps)
        return {
            "step": np.array([steps, steps]),  # [members, chunks]
            "loss": np.arange(2.0 * n).reshape(2, n),
            "grad_norm": {"dense1": np.arange(2.0 * n).reshape(2, n) + 0.5},
        }

    evals = {"eval_step": np.array([[20]] * 2), "test_accuracy": np.array([[0.5], [0.25]])}
    whole = History(**curves([10, 20, 30]), **evals)
    # the history is written just before its checkpoint: a kill between them leaves it ahead
    save_history(str(tmp_path), whole)
    cut = load_history(str(tmp_path), 20)
    np.testing.assert_array_equal(cut["step"], [[10, 20]] * 2)
    np.testing.assert_array_equal(cut["grad_norm"]["dense1"], [[0.5, 1.5], [3.5, 4.5]])
    np.testing.assert_array_equal(cut["eval_step"], [[20]] * 2)
    rest = History(
        step=np.array([[30]] * 2), loss=whole["loss"][:, 2:], grad_norm={"dense1": [[2.5], [5.5]]}
    )
    jax.tree.map(np.testing.assert_array_equal, dict(concat_history(cut, rest)), dict(whole))
    with pytest.raises(CheckpointError, match="ends at step 30, its checkpoint is at step 40"):
        load_history(str(tmp_path), 40)
    with pytest.raises(CheckpointError, match="has no history.npz"):
        load_history(str(tmp_path / "elsewhere"), 20)


def test_resuming_another_sweep_names_what_differs(tmp_path):
    model = jaxdl.mlp(hidden=(8,))
    axes = {"seed": [0, 1], "lr": [1e-3, 3e-3]}

    def stop(static, count):  # before any training: only sweep.json is written
        raise Interrupt

    with pytest.raises(Interrupt):
        jaxdl.sweep(
            model, digits(), axes, config=CONFIG, checkpointer=Checkpointer(tmp_path), on_group=stop
        )
    with pytest.raises(
        CheckpointError,
        match=r"different sweep: axes.lr: saved \[0.001, 0.003\], now \[0.001\]; "
        r"train.steps: saved 40, now 60$",
    ):
        jaxdl.sweep(
            model,
            digits(),
            {"seed": [0, 1], "lr": [1e-3]},
            config=CONFIG,
            steps=60,
            checkpointer=Checkpointer(tmp_path),
            resume=True,
        )
    with pytest.raises(
        CheckpointError, match=r"different sweep: data.x_train: saved \[256, 8, 8, 1\], now \[200,"
    ):
        jaxdl.sweep(
            model, digits().subset(200, 64), axes, config=CONFIG,
            checkpointer=Checkpointer(tmp_path), resume=True,
        )  # fmt: skip
    with pytest.raises(CheckpointError, match="already holds a sweep's checkpoints: pass resume"):
        jaxdl.sweep(model, digits(), axes, config=CONFIG, checkpointer=Checkpointer(tmp_path))
    with pytest.raises(ValueError, match="resume=True needs a checkpointer"):
        jaxdl.sweep(model, digits(), axes, config=CONFIG, resume=True)


def test_a_sweep_saved_before_a_new_config_field_resumes_while_it_keeps_its_default(tmp_path):
    """A ``sweep.json`` written before ``TrainConfig.skip_nonfinite`` existed resumes with the
    field at its default; set otherwise, the difference is named."""
    model, axes = jaxdl.mlp(hidden=(8,)), {"seed": [0]}

    def stop(static, count):
        raise Interrupt

    with pytest.raises(Interrupt):
        jaxdl.sweep(
            model, digits(), axes, config=CONFIG, checkpointer=Checkpointer(tmp_path), on_group=stop
        )
    manifest = tmp_path / "sweep.json"
    saved = json.loads(manifest.read_text())
    del saved["train"]["skip_nonfinite"]  # as an older jaxdl wrote it
    write_json_atomic(manifest, saved)
    with pytest.raises(Interrupt):  # the same sweep: resumes (and is stopped again)
        jaxdl.sweep(
            model, digits(), axes, config=CONFIG, on_group=stop,
            checkpointer=Checkpointer(tmp_path), resume=True,
        )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"train.skip_nonfinite: saved True, now False$"):
        jaxdl.sweep(
            model, digits(), axes, config=CONFIG, skip_nonfinite=False,
            checkpointer=Checkpointer(tmp_path), resume=True,
        )  # fmt: skip


def test_a_member_saves_as_a_single_run_checkpoint(tmp_path):
    short = TrainConfig(steps=10, batch_size=32, chunk_steps=10, eval_every=10)
    result = jaxdl.sweep(jaxdl.mlp(hidden=(8,)), digits(), {"seed": [0, 1]}, config=short)
    result.save_member(1, tmp_path / "m1")

    checkpointer = Checkpointer(report.checkpoint_dir(tmp_path / "m1"))
    step, restored = checkpointer.restore(result.member(0).state)  # any member's shapes
    assert step == 10
    chex.assert_trees_all_equal(plain(restored), plain(result.member(1).state))
    assert checkpointer.load_config() == result.member(1).config

    with pytest.raises(FileExistsError, match="m1 exists"):
        result.save_member(0, tmp_path / "m1")
    wrong = config.RunConfig(train=short, lr=1e-2, seed=0)
    with pytest.raises(ValueError, match=r"member 0: .* lr: member 0.001, run_config 0.01"):
        result.save_member(0, tmp_path / "m0", run_config=wrong)
    assert sorted(os.listdir(tmp_path)) == ["m1"]  # nothing half-written
    assert no_temporary_files(tmp_path)


# ----------------------------------------------------------------------------- command line

ARGS = [
    "--data", "digits", "--num-train", "256", "--num-test", "64",
    "--model", "mlp", "--hidden", "16", "--dropout", "0.2", "--seeds", "2", "--lr", "1e-3,3e-3",
    "--batch-size", "32", "--steps", "400", "--chunk-steps", "20", "--eval-every", "100",
    "--checkpoint-every", "40", "--no-progress",
]  # fmt: skip
MEMBERS, STEPS = 4, 400


def jaxdl_sweep(log_path, *args):
    """Starts ``python -m jaxdl sweep ARGS`` writing its output to ``log_path``."""
    return start_jaxdl(log_path, "sweep", *args)


def saved_steps(sweep_dir) -> list[int]:
    folder = os.path.join(sweep_dir, "checkpoints", "group0", "chunk0")
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def final_states(sweep_dir, template):
    """The stacked final state of a one-group ``jaxdl sweep``, from its checkpoint."""
    folder = os.path.join(sweep_dir, "checkpoints", "group0", "chunk0")
    step, state = Checkpointer(folder).restore(template)
    assert step == STEPS
    return state


def results(sweep_dir) -> list[dict]:
    """results.csv without the wall-time column."""
    with open(os.path.join(sweep_dir, "results.csv")) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_killed_sweep_resumes_bit_identical_and_members_evaluate(tmp_path, capsys):
    killed_dir, full_dir = str(tmp_path / "killed"), str(tmp_path / "full")
    uninterrupted = jaxdl_sweep(tmp_path / "full.log", *ARGS, "--out", full_dir)
    killed = jaxdl_sweep(tmp_path / "killed.log", *ARGS, "--save-members", "--out", killed_dir)
    saved = functools.partial(saved_steps, killed_dir)
    kill_after_checkpoint(saved, killed, uninterrupted, tmp_path / "full.log")
    assert saved_steps(killed_dir)[-1] < STEPS
    assert not os.path.exists(os.path.join(killed_dir, "results.csv"))

    resumed = jaxdl_sweep(tmp_path / "resumed.log", "--resume", killed_dir, "--no-progress")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()
    assert saved_steps(killed_dir)[-1] == STEPS
    rows = results(killed_dir)
    assert rows == results(full_dir) and len(rows) == MEMBERS

    member = report.restore_run(os.path.join(killed_dir, "members", "3"))  # remembered option
    assert member.step == STEPS
    assert (member.config.seed, member.config.lr) == (int(rows[3]["seed"]), float(rows[3]["lr"]))
    template = jax.tree.map(lambda x: jnp.stack([x] * MEMBERS), member.state)
    resumed_states = final_states(killed_dir, template)
    chex.assert_trees_all_equal(plain(resumed_states), plain(final_states(full_dir, template)))
    chex.assert_trees_all_equal(
        plain(member.state), plain(jax.tree.map(lambda x: x[3], resumed_states))
    )

    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", os.path.join(killed_dir, "members", "3")]) == 0
    accuracy = 100 * float(rows[3]["final_test_accuracy"])
    assert f"step {STEPS}: test accuracy {accuracy:.2f} %" in capsys.readouterr().out


def test_resume_of_a_sweep_without_checkpoints_is_a_usage_error(tmp_path, capsys):
    spec = SweepSpec(
        config.RunConfig(checkpoint_every=None), {"model": ["mlp"], "seed": [0]}, "auto"
    )
    write_json_atomic(tmp_path / "config.json", spec_to_dict(spec))
    assert cli.main(["sweep", "--resume", str(tmp_path)]) == cli.USAGE_STATUS
    assert "that sweep saved no checkpoints (run it with --checkpoint-every N" in (
        capsys.readouterr().err
    )


def test_saving_members_again_removes_what_a_killed_save_left(tmp_path):
    """A kill inside `SweepResult.save_member` leaves its staging folder ``.<i>.<hex>.tmp``
    beside the members; the resumed sweep's save removes it (it was kept, a partial checkpoint)."""
    folder = tmp_path / "members"
    (folder / "0").mkdir(parents=True)  # saved whole before the kill: kept
    (folder / ".1.5f3a.tmp" / "checkpoints").mkdir(parents=True)  # killed while saving 1
    saved = []

    class Result:
        members = [{"model": "mlp", "seed": 0}, {"model": "mlp", "seed": 1}]

        def save_member(self, index, run_dir, *, run_config):
            assert run_config.seed == index
            saved.append(index)
            os.makedirs(run_dir)

    assert save_members(Result(), config.RunConfig(), str(tmp_path)) == str(folder)
    assert saved == [1]
    assert sorted(os.listdir(folder)) == ["0", "1"]


def test_a_run_and_a_sweep_refuse_each_others_checkpoint_folders(tmp_path):
    model = jaxdl.mlp(hidden=(8,))
    axes = {"seed": [0, 1]}
    sweep_dir, run_dir = tmp_path / "sweep", tmp_path / "run"

    def stop(static, count):  # before any training: only sweep.json is written
        raise Interrupt

    with pytest.raises(Interrupt):
        jaxdl.sweep(
            model, digits(), axes, config=CONFIG, on_group=stop,
            checkpointer=Checkpointer(sweep_dir),
        )  # fmt: skip
    for resume in (False, True):
        with pytest.raises(CheckpointError, match=r"holds a sweep's checkpoints \(sweep.json\)"):
            jaxdl.fit(model, digits(), CONFIG, checkpointer=Checkpointer(sweep_dir), resume=resume)
    assert not (sweep_dir / "run.json").exists()
    os.makedirs(run_dir / "20")  # a run's step folder
    with pytest.raises(CheckpointError, match=r"holds a run's checkpoints \(steps \[20\]\)"):
        jaxdl.sweep(
            model, digits(), axes, config=CONFIG, checkpointer=Checkpointer(run_dir), resume=True
        )
    assert not (run_dir / "sweep.json").exists()
