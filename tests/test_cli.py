"""The run configuration and the ``jaxdl`` command: a tiny run's folder, one-line user errors."""

import contextlib
import dataclasses
import io
import json
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from jaxdl import cli, config
from jaxdl.train import TrainConfig

TINY = [
    "train",
    "--data",
    "digits",
    "--model",
    "mlp",
    "--hidden",
    "32",
    "--steps",
    "40",
    "--chunk-steps",
    "20",
    "--eval-every",
    "20",
    "--batch-size",
    "32",
    "--no-progress",
]


def run_main(argv):
    """``(status, stdout, stderr)`` of ``cli.main(argv)`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def read_scalars(events_path):
    """``{tag: [(step, value)]}`` from a TensorBoard events file (TFRecord framing of Events)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    with open(events_path, "rb") as f:
        while header := f.read(12):  # uint64 length, uint32 masked crc of the length
            (length,) = struct.unpack("<Q", header[:8])
            event = event_pb2.Event.FromString(f.read(length))
            f.read(4)  # crc of the data
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    status, stdout, stderr = run_main([*TINY, "--out", str(out)])
    return out, status, stdout, stderr


# --- the run folder -----------------------------------------------------------------------------


def test_tiny_run_succeeds_and_reports(tiny_run):
    out, status, stdout, stderr = tiny_run
    assert status == 0, stderr
    assert stderr == ""
    # Not a terminal: one plain line per evaluation, then the results table and the folder.
    assert "step 20/40  loss" in stdout and "step 40/40  loss" in stdout
    assert "final test accuracy" in stdout and "compile time" in stdout
    assert f"output: {out}" in stdout


def test_config_json_rebuilds_the_run_config(tiny_run):
    out = tiny_run[0]
    loaded = config.from_dict(json.loads((out / "config.json").read_text()))
    expected = config.RunConfig(
        model=config.ModelConfig(name="mlp", hidden=(32,)),
        data=config.DataConfig(name="digits"),
        train=TrainConfig(steps=40, batch_size=32, chunk_steps=20, eval_every=20),
        out=str(out),
    )
    assert loaded == expected


def test_metrics_jsonl_has_one_row_per_chunk(tiny_run):
    rows = [json.loads(line) for line in (tiny_run[0] / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [20, 40]
    for row in rows:
        keys = {"step", "loss", "train_accuracy", "test_loss", "test_accuracy", "time_s"}
        assert set(row) == keys
        assert row["loss"] > 0 and 0 <= row["train_accuracy"] <= 1
        assert 0 <= row["test_accuracy"] <= 1


def test_results_json(tiny_run):
    results = json.loads((tiny_run[0] / "results.json").read_text())
    assert set(results) == {
        "final_test_accuracy",
        "best_test_accuracy",
        "best_step",
        "final_test_loss",
        "final_loss",
        "final_train_accuracy",
        "steps",
        "wall_s",
        "compile_s",
        "run_s",
        "num_params",
        "diverged_at",
        "mesh",
        "processes",
    }
    assert results["steps"] == 40 and results["diverged_at"] is None
    assert results["mesh"] is None and results["processes"] == 1
    assert results["final_test_accuracy"] <= results["best_test_accuracy"] <= 1
    assert results["best_step"] in (20, 40)
    assert results["num_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert results["wall_s"] >= results["compile_s"] > 0


def test_curves_png_and_tensorboard_events(tiny_run):
    out = tiny_run[0]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (events,) = [p for p in out.iterdir() if p.name.startswith("events.out.tfevents")]
    scalars = read_scalars(events)
    assert {"loss", "train_accuracy", "test_accuracy"} <= set(scalars)
    assert [step for step, _ in scalars["loss"]] == [20, 40]
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


# --- the command line ---------------------------------------------------------------------------


def test_mistyped_option_is_one_error_line_in_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "jaxdl", "train", "--stpes", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unrecognized arguments: --stpes")
    assert "did you mean --steps?" in lines[0] and "--batch-size" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "0"], "lr must be > 0, got 0.0"),
        (["--lr", "-1"], "lr must be > 0, got -1.0"),
        (["--activation", "relux"], "invalid choice: 'relux' (choose from 'sigmoid', 'tanh'"),
        (["--optimizer", "adamm"], "invalid choice: 'adamm' (choose from 'sgd', 'momentum'"),
        (["--data", "nope"], "unknown data set 'nope', expected one of ['cifar10', 'digits'"),
        (["--batch-size", "5000"], "batch_size must be in [1, num_examples=1437]"),
        (["--hidden", "a,b"], "argument --hidden: expected comma-separated ints"),
        (["--steps", "0"], "TrainConfig.steps must be a positive int, got 0"),
        (["--dropout", "1.5"], "model.dropout must be in [0, 1), got 1.5"),
        (["--data", "npz", "--data-path", "/no/such/file.npz"], "no such file"),
        (["--model", "logistic", "--hidden", "16"], "model.hidden must be empty for 'logistic'"),
        (
            ["--model", "convnet", "--dropout", "0.3"],
            "model.dropout acts on dense hidden layers and model 'convnet' has none",
        ),
        (["--steps", "10", "--step", "5"], "unrecognized arguments: --step 5"),
        (
            ["--seed", str(2**64)],
            "seed must be an int in [-2**63, 2**63), got 18446744073709551616",
        ),
        (["--devices", "0"], "--devices must be in [1, "),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    out = tmp_path / "run"
    status, stdout, stderr = run_main(["train", *args, "--out", str(out), "--no-progress"])
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0]
    assert not out.exists()  # nothing written before the configuration is known to be good


def test_divergence_exits_1_with_the_step(tmp_path):
    args = ["--optimizer", "sgd", "--lr", "1e10", "--steps", "20", "--chunk-steps", "20"]
    args += ["--activation", "identity"]  # a linear net overflows for any batch order
    status, _, stderr = run_main([*TINY, *args, "--out", str(tmp_path / "run")])
    assert status == 1
    assert stderr.startswith("error: loss became non-finite at step ")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stderr.strip().endswith(f"step {results['diverged_at']}")


def test_devices_in_a_multi_process_run_must_be_all_of_them(tmp_path, monkeypatch):
    """The first N devices of a several-process run would leave a process without any."""
    from jaxdl import distributed

    monkeypatch.setattr(distributed, "initialize", lambda *args: True)  # as if joined
    monkeypatch.setattr(jax, "devices", lambda: [object(), object()])
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    out = tmp_path / "run"
    status, _, stderr = run_main([*TINY, "--devices", "1", "--out", str(out)])
    assert status == 2
    assert stderr.strip() == (
        "error: --devices 1 would leave processes out of the mesh: a run of 2 processes uses "
        "all 2 devices (leave --devices out)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "command, text, message",
    [
        ("train", "{bad", "is not a jaxdl train config: Expecting property name"),
        ("train", "[1, 2]", "is not a jaxdl train config: config must be a dict, got [1, 2]"),
        ("sweep", "{bad", "is not a jaxdl sweep config: Expecting property name"),
        ("sweep", "5", "is not a jaxdl sweep config: sweep config must be a dict, got 5"),
    ],
)
def test_resume_of_a_malformed_config_names_the_file(tmp_path, command, text, message):
    (tmp_path / "config.json").write_text(text)
    status, _, stderr = run_main([command, "--resume", str(tmp_path)])
    assert status == 2
    path = tmp_path / "config.json"
    assert stderr.startswith(f"error: --resume {tmp_path}: {path} {message}"), stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_resume_refuses_options_it_would_ignore(tmp_path, command):
    """--resume reruns the folder's config.json: an option that would change the run is an
    error naming it (before, ``--steps 600`` was silently ignored); how-to-run options pass."""
    argv = [command, "--resume", str(tmp_path), "--steps", "600", "--lr=5", "--no-progress"]
    status, _, stderr = run_main(argv)
    assert status == 2
    assert stderr.startswith(f"error: --resume {tmp_path} continues that folder's config.json"), (
        stderr
    )
    assert "so --steps, --lr would be ignored: leave them out" in stderr  # not --no-progress
    status, _, stderr = run_main([command, "--resume", str(tmp_path), "--no-progress"])
    assert status == 2 and "no config.json there" in stderr  # past the option check


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "1e-3,0.001"], "argument --lr: expected distinct values, got '1e-3,0.001' ("),
        (["--model", "mlp,mlp"], "argument --model: expected distinct values, got 'mlp,mlp' ("),
        (["--lr", "1e-3,,1e-2"], "argument --lr: expected comma-separated float values, got '1e"),
        (["--model", "mlp,"], "argument --model: expected comma-separated str values, got 'mlp,'"),
    ],
)
def test_sweep_axis_value_given_twice_or_left_empty_is_an_error(tmp_path, args, message):
    tiny = ["--seeds", "1", "--steps", "2", "--no-progress"]  # quick even if accepted
    status, _, stderr = run_main(["sweep", *args, *tiny, "--out", str(tmp_path / "s")])
    assert status == 2
    assert stderr.startswith(f"error: {message}"), stderr
    assert not (tmp_path / "s").exists()


def test_sweep_model_list_may_have_spaces():
    parser, _ = cli.build_parser()
    args = parser.parse_args(["sweep", "--model", "mlp, convnet", "--lr", "1e-3, 1e-2"])
    assert (args.models, args.lrs) == (["mlp", "convnet"], [1e-3, 1e-2])


SWEEP_TINY = ["--model", "logistic", "--seeds", "1", "--steps", "2", "--chunk-steps", "2"]
SWEEP_TINY += ["--eval-every", "2", "--batch-size", "32", "--no-progress"]


def sweep_checkpoints(out):
    """What a checkpointed ``jaxdl sweep`` leaves in ``out``: its manifest first."""
    (out / "checkpoints" / "group0").mkdir(parents=True)
    (out / "checkpoints" / "sweep.json").write_text("{}")
    return "sweep", f"a jaxdl sweep's checkpoints ({out / 'checkpoints' / 'sweep.json'})"


def train_checkpoints(out):
    """What a checkpointed ``jaxdl train`` leaves in ``out``: orbax step folders."""
    for step in ("20", "40"):
        (out / "checkpoints" / step).mkdir(parents=True)
    (out / "checkpoints" / "run.json").write_text("{}")
    return "train", "checkpoints of a jaxdl train run (steps [20, 40])"


@pytest.mark.parametrize("saved_by", [sweep_checkpoints, train_checkpoints])
@pytest.mark.parametrize(
    "argv",
    [["sweep", *SWEEP_TINY, "--checkpoint-every", "2"], ["sweep", *SWEEP_TINY], TINY],
    ids=["checkpointed-sweep", "sweep", "train"],
)
def test_a_new_run_or_sweep_refuses_a_folder_with_checkpoints_of_either_kind(
    tmp_path, saved_by, argv
):
    """A new run or sweep into a folder with a run's or a sweep's checkpoints would overwrite
    the config.json their --resume reads (before, the other kind's were not seen)."""
    out = tmp_path / "out"
    owner, held = saved_by(out)
    (out / "config.json").write_text('{"saved": "by the earlier one"}')
    status, _, stderr = run_main([*argv, "--out", str(out)])
    assert status == 2
    assert stderr == (
        f"error: {out} holds {held}: continue it with 'jaxdl {owner} --resume {out}', "
        f"or choose another output folder\n"
    )
    assert (out / "config.json").read_text() == '{"saved": "by the earlier one"}'


def sweep_config(**changes):
    """A resumable sweep's config.json, as `jaxdl.sweep_cli.spec_to_dict` writes it."""
    from jaxdl import sweep_cli

    run = config.RunConfig(checkpoint_every=20)
    spec = sweep_cli.SweepSpec(run, {"model": ["mlp"], "seed": [0, 1]}, "auto")
    return json.dumps({**sweep_cli.spec_to_dict(spec), **changes})


SWEEP_OUTPUTS = ("results.csv", "summary.md", "results.json", "accuracy.png", "curves.png")


def earlier_sweep(out):
    """A folder as an earlier ``jaxdl sweep --save-members`` of an mlp left it (no checkpoints)."""
    for i in ("0", "1"):
        (out / "members" / i).mkdir(parents=True)
        (out / "members" / i / "config.json").write_text('{"model": {"name": "mlp"}}')
    for name in SWEEP_OUTPUTS:
        (out / name).write_text("by the earlier sweep")


def interrupted_sweep(monkeypatch):
    """Makes `jaxdl.sweep_cli.sweep` stop at once, as a Ctrl-C would, after the folder is set."""
    from jaxdl import sweep_cli

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_cli, "sweep", interrupt)


def test_a_new_sweep_writes_its_own_members_not_the_earlier_sweeps(tmp_path):
    out = tmp_path / "s"
    earlier_sweep(out)
    status, _, stderr = run_main(["sweep", *SWEEP_TINY, "--save-members", "--out", str(out)])
    assert status == 0, stderr
    assert os.listdir(out / "members") == ["0"]  # one member now
    saved = json.loads((out / "members" / "0" / "config.json").read_text())
    assert saved["model"]["name"] == "logistic"
    assert (out / "results.csv").read_text().startswith("member,")


def test_a_stopped_new_sweep_leaves_no_results_of_the_earlier_one(tmp_path, monkeypatch):
    out = tmp_path / "s"
    earlier_sweep(out)
    interrupted_sweep(monkeypatch)
    status, _, _ = run_main(["sweep", *SWEEP_TINY, "--out", str(out)])
    assert status == 130
    assert os.listdir(out) == ["config.json"]
    assert json.loads((out / "config.json").read_text())["axes"]["model"] == ["logistic"]


def test_a_resumed_sweep_keeps_its_results_and_members(tmp_path, monkeypatch):
    out = tmp_path / "s"
    earlier_sweep(out)
    (out / "config.json").write_text(sweep_config())
    interrupted_sweep(monkeypatch)
    status, _, _ = run_main(["sweep", "--resume", str(out), "--no-progress"])
    assert status == 130
    assert {"config.json", "members", *SWEEP_OUTPUTS} <= set(os.listdir(out))
    assert sorted(os.listdir(out / "members")) == ["0", "1"]


def test_a_relative_data_path_is_saved_absolute(tmp_path, monkeypatch):
    """config.json is read from other folders (eval, --resume): its data path must not depend
    on the folder the run was started from."""
    from jaxdl import sweep_cli

    monkeypatch.chdir(tmp_path)
    parser, _ = cli.build_parser()
    data = ["--data", "npz", "--data-path", "data/set.npz"]
    args = parser.parse_args(["train", *data])
    assert cli.config_overrides(args)["data.path"] == str(tmp_path / "data" / "set.npz")
    spec = sweep_cli.spec_from_args(parser.parse_args(["sweep", *data]))
    assert spec.run.data.path == str(tmp_path / "data" / "set.npz")
    assert cli.config_overrides(parser.parse_args(["train"]))["data.path"] is None


@pytest.mark.parametrize("argv", [[], ["--version"]])
def test_version_and_commands(argv):
    status, stdout, _ = run_main(argv)
    assert status == 0
    assert stdout.startswith("jaxdl 0.") and "train" in stdout


def test_cli_defaults_are_the_config_defaults():
    parser, _ = cli.build_parser()
    args = parser.parse_args(["train"])
    assert config.replace(config.RunConfig(), cli.config_overrides(args)) == config.RunConfig()


# --- the configuration --------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json():
    cfg = config.RunConfig(
        model=config.ModelConfig(
            name="convnet", activation="tanh", init="he_uniform", hidden=(64,), channels=(8, 16)
        ),
        data=config.DataConfig(name="mnist1d", num_train=100),
        train=TrainConfig(steps=30, grad_clip=1.0, schedule="cosine"),
        lr=3e-3,
        seed=7,
        out="runs/x",
    )
    assert config.from_dict(json.loads(json.dumps(config.to_dict(cfg)))) == cfg
    assert config.from_dict({}) == config.RunConfig()


def test_from_dict_unknown_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) model.widht; valid: model.name"):
        config.from_dict({"model": {"widht": 3}})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) learning_rate; valid: model,"):
        config.from_dict({"learning_rate": 1.0})


def test_replace_by_dotted_key():
    cfg = config.replace(config.RunConfig(), {"train.steps": 7, "model.name": "mlp", "lr": 0.1})
    assert (cfg.train.steps, cfg.model.name, cfg.lr) == (7, "mlp", 0.1)
    assert cfg.train.batch_size == TrainConfig().batch_size
    with pytest.raises(
        ValueError, match=r"unknown config key\(s\) train.stepz; valid: .*train.steps"
    ):
        config.replace(cfg, {"train.stepz": 1})
    with pytest.raises(ValueError, match="lr must be > 0, got -1.0"):
        config.replace(cfg, {"lr": -1.0})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet"}, "model.name: unknown value 'resnet'; valid: mlp, convnet, logistic"),
        ({"activation": "swish"}, "model.activation: unknown value 'swish'; valid: sigmoid"),
        ({"init": "orthogonal"}, "model.init: unknown value 'orthogonal'; valid: classic"),
        ({"pool": "min"}, "model.pool: unknown value 'min'; valid: max, avg, none"),
        ({"channels": ()}, "model.channels must be a tuple of positive ints (at least one)"),
        ({"hidden": (0,)}, "model.hidden must be a tuple of positive ints, got (0,)"),
    ],
)
def test_model_config_errors_name_field_and_valid_values(kwargs, message):
    with pytest.raises(ValueError) as info:
        config.ModelConfig(**kwargs)
    assert message in str(info.value)


def test_run_config_checks_train_fields_optax_would_take():
    with pytest.raises(ValueError, match="train.grad_clip must be > 0 or None, got -1.0"):
        config.RunConfig(train=TrainConfig(grad_clip=-1.0))
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'; valid: sgd"):
        dataclasses.replace(TrainConfig(), optimizer="adamm")


@pytest.mark.parametrize(
    "name, input_shape, params",
    [
        ("logistic", (8, 8, 1), {"dense1"}),
        ("mlp", (40, 1), {"dense1", "dense2", "dense3"}),
        ("convnet", (40, 1), {"conv1", "conv2", "dense1"}),
        ("convnet", (8, 8, 1), {"conv1", "conv2", "dense1"}),
    ],
)
def test_build_model_init_and_apply_agree(name, input_shape, params):
    cfg = config.ModelConfig(name=name, hidden=None, channels=(4, 4))
    model = config.build_model(cfg, num_classes=3, input_ndim=len(input_shape))
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    p, state = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: no compilation
    assert set(p) == params
    logits, _ = jax.eval_shape(model.apply, p, state, x)
    assert logits.shape == (2, 3)


def test_convnet_needs_spatial_inputs():
    with pytest.raises(ValueError, match="model 'convnet' needs inputs"):
        config.build_model(config.ModelConfig(name="convnet"), 10, input_ndim=1)


def test_sweep_progress_is_not_printed_by_other_processes(tmp_path, monkeypatch):
    from jaxdl import distributed

    args = ["sweep", "--model", "mlp", "--hidden", "8", "--seeds", "2", "--steps", "20"]
    args += ["--chunk-steps", "10", "--eval-every", "10", "--batch-size", "32", "--no-progress"]
    status, stdout, _ = run_main([*args, "--model", "mlp", "--seeds", "1", "--out", str(tmp_path)])
    assert status == 0
    assert "training model=mlp: 1 network\n" in stdout and "network-steps 20/20" in stdout
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)  # process 1 of 2, say
    status, stdout, _ = run_main([*args, "--out", str(tmp_path / "other")])
    assert status == 0
    assert stdout.startswith("sweep of 2 networks (model: 1, seed: 2) on digits")
    assert "training " not in stdout and "network-steps" not in stdout
    assert not (tmp_path / "other").exists()


def test_eval_of_a_sweep_folder_points_to_its_members(tmp_path):
    sweep = {"run": {}, "axes": {"seed": [0]}, "strategy": "auto", "save_members": False}
    (tmp_path / "config.json").write_text(json.dumps(sweep))
    status, _, stderr = run_main(["eval", "--checkpoint", str(tmp_path)])
    assert status == 2
    members = tmp_path / "members" / "<i>"
    assert stderr == (
        f"error: {tmp_path} is a jaxdl sweep folder, not a run: give one member's run folder, "
        f"{members} (i as in results.csv; written by jaxdl sweep --save-members)\n"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("{bad", "is not a jaxdl train config: Expecting property name"),
        ('{"lr": -1}', "is not a jaxdl train config: lr must be > 0, got -1"),
    ],
)
def test_eval_of_a_malformed_config_names_the_file(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    status, _, stderr = run_main(["eval", "--checkpoint", str(tmp_path)])
    assert status == 2
    assert stderr.startswith(f"error: {tmp_path / 'config.json'} {message}"), stderr
    assert len(stderr.strip().splitlines()) == 1


def test_eval_of_a_run_without_checkpoints_leaves_nothing_behind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict(config.RunConfig())))
    status, _, stderr = run_main(["eval", "--checkpoint", str(tmp_path)])
    assert status == 2
    folder = tmp_path / "checkpoints"
    assert stderr.startswith(f"error: no checkpoints in {folder} ("), stderr
    assert os.listdir(tmp_path) == ["config.json"]  # orbax would have made checkpoints/


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"axes": [1]}, "axes: expected a dict of axis: [values], got [1]"),
        ({"axes": {"seed": [5]}}, "axes: unknown [], missing ['model']; expected model, seed"),
        ({"axes": {"model": ["mlp"], "seed": 5}}, "axes.seed: expected a non-empty list of int"),
        ({"axes": {"model": [], "seed": [0]}}, "axes.model: expected a non-empty list of str"),
        ({"axes": {"model": ["mlp"], "seed": [0], "lrr": [1]}}, "axes: unknown ['lrr'], missing"),
        ({"strategy": "fast"}, "strategy: expected one of auto, vmap, map, chunked, got 'fast'"),
        ({"save_members": "yes"}, "save_members: expected true or false, got 'yes'"),
    ],
)
def test_sweep_resume_of_a_damaged_config_names_the_file(tmp_path, changes, message):
    (tmp_path / "config.json").write_text(sweep_config(**changes))
    status, _, stderr = run_main(["sweep", "--resume", str(tmp_path)])
    assert status == 2
    path = tmp_path / "config.json"
    expected = f"error: --resume {tmp_path}: {path} is not a jaxdl sweep config: {message}"
    assert stderr.startswith(expected), stderr
    assert len(stderr.strip().splitlines()) == 1


def test_options_the_run_does_not_use_are_warned_about(tmp_path):
    argv = [*TINY, "--channels", "8", "--momentum", "0.5"]  # an mlp, trained by adam
    status, _, stderr = run_main([*argv, "--out", str(tmp_path / "run")])
    assert status == 0
    assert stderr.splitlines() == [
        "warning: --channels acts only with --model convnet; ignored here",
        "warning: --momentum acts only with --optimizer momentum; ignored here",
    ]
    argv = ["sweep", "--data", "digits", "--model", "mlp,convnet", "--channels", "4", "--seeds"]
    tiny = ["1", "--steps", "2", "--chunk-steps", "2", "--eval-every", "2", "--no-progress"]
    status, _, stderr = run_main([*argv, *tiny, "--out", str(tmp_path / "s")])
    assert status == 0 and "warning" not in stderr  # the ConvNet uses it


def test_a_sweep_checks_the_model_options_against_the_models_it_trains(tmp_path):
    """--dropout acts on dense hidden layers: a sweep of MLPs takes it (it was refused as if the
    sweep trained the RunConfig's default convnet), a sweep with a ConvNet refuses it, as
    jaxdl train does."""
    from jaxdl import sweep_cli

    parser, _ = cli.build_parser()
    args = parser.parse_args(["sweep", "--model", "mlp", "--dropout", "0.3"])
    spec = sweep_cli.spec_from_args(args)
    assert (spec.run.model.name, spec.run.model.dropout) == ("mlp", 0.3)
    out = tmp_path / "s"
    argv = ["sweep", "--model", "mlp,convnet", "--dropout", "0.3", "--seeds", "1"]
    status, _, stderr = run_main([*argv, "--no-progress", "--out", str(out)])
    assert status == 2
    assert stderr.startswith("error: model.dropout acts on dense hidden layers and model 'convnet'")
    assert not out.exists()


class GoneReader(io.StringIO):
    """A stdout whose reader has gone, as a pipe's after ``| head -1``."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("stdout", [GoneReader(), None], ids=["reader-gone", "closed"])
def test_a_run_goes_on_when_its_output_cannot_be_written(tmp_path, stdout):
    """The run is its folder: a reader that left (an error, exit 2, half a folder) or a closed
    stdout (a traceback) must not stop it."""
    err = io.StringIO()
    argv = [*TINY[:-1], "--out", str(tmp_path / "run")]  # without --no-progress: isatty asked
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    assert (status, err.getvalue()) == (0, "")
    assert (tmp_path / "run" / "results.json").exists()


def test_a_run_piped_to_a_reader_that_leaves_ends_quietly(tmp_path):
    """``jaxdl train ... | head -1``: nothing on stderr, not even Python's failed flush at exit."""
    env = {**os.environ, "JAXDL_CACHE_DIR": "off"}
    command = [sys.executable, "-m", "jaxdl", *TINY, "--out", str(tmp_path / "run")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        proc.stdout.close()  # the reader leaves before the first line
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0, stderr
    assert stderr == ""
    assert (tmp_path / "run" / "results.json").exists()


def test_an_activation_without_hidden_layers_is_warned_about(tmp_path):
    """A dense net without hidden layers has nowhere to apply --activation, which changed
    nothing silently; a sweep warns only if none of its models has hidden layers."""
    warning = "warning: --activation acts after hidden layers and model logistic has none; "
    argv = [*TINY[:4], "logistic", *TINY[7:], "--activation", "tanh"]  # no --hidden 32
    status, _, stderr = run_main([*argv, "--out", str(tmp_path / "run")])
    assert status == 0
    assert stderr.splitlines() == [warning + "ignored here"]
    sweep = ["sweep", "--data", "digits", "--seeds", "1", "--steps", "2", "--chunk-steps", "2"]
    sweep += ["--eval-every", "2", "--no-progress", "--activation", "tanh", "--hidden", "none"]
    status, _, stderr = run_main([*sweep, "--model", "mlp,logistic", "--out", str(tmp_path / "s")])
    assert status == 0
    assert stderr.splitlines() == [
        "warning: --activation acts after hidden layers and models mlp, logistic have none; "
        "ignored here"
    ]
    status, _, stderr = run_main(
        [*sweep, "--model", "logistic,convnet", "--out", str(tmp_path / "c")]
    )
    assert status == 0 and "warning" not in stderr  # the ConvNet uses it


def test_a_model_refusing_the_data_leaves_no_run_folder(tmp_path):
    """The model was checked against the data only inside `fit`, after config.json,
    checkpoints/ and the TensorBoard log were written."""
    out = tmp_path / "run"
    args = ["--model", "convnet", "--channels", "8,8,8,8", "--checkpoint-every", "10"]
    status, _, stderr = run_main([*TINY, *args, "--out", str(out)])  # a 4th pool of 1x1 inputs
    assert status == 2
    assert stderr.startswith("error: max_pool 'pool4': window (2, 2)"), stderr
    assert not out.exists()
