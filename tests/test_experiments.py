"""The studies in `experiments/`: each quick run reproduces its headline result and writes its
folder; the shared helpers (atomic writes, JSON, config overrides, CLI) behave.

Each study runs once, in one test, so that pytest-xdist never runs it twice.
"""

import dataclasses
import json
import math
import os

import jax
import numpy as np
import pytest

import jaxdl
from experiments import common, feature_maps, mlp_vs_convnet, translation, vanishing_gradients


def run_quick(module, tmp_path):
    config = dataclasses.replace(module.Config().quick(), out_dir=str(tmp_path))
    return config, module.run(config)


def _refuse_constant(name):
    raise AssertionError(f"results.json holds {name}: not strict JSON")


def assert_written(folder, figures):
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f, parse_constant=_refuse_constant)  # strict JSON: no NaN, Infinity
    with open(os.path.join(folder, "results.md")) as f:
        assert f.read().startswith("# ")
    for name in figures:
        with open(os.path.join(folder, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no temp file left
    return results


def test_vanishing_gradients_quick(tmp_path):
    config, results = run_quick(vanishing_gradients, tmp_path)
    by = {(r["depth"], r["activation"], r["init"]): r for r in results["records"]}
    sigmoid, relu = by[(8, "sigmoid", "classic")], by[(8, "relu", "he_normal")]
    # The headline: the first layer of a deep sigmoid net gets a vanishing share of the gradient,
    # while He-initialised ReLU layers all get about the same.
    assert sigmoid["ratio_init"] < 1e-2, sigmoid["ratio_init"]
    assert 0.1 <= relu["ratio_init"] <= 10, relu["ratio_init"]
    norms = np.asarray(sigmoid["grad_norm_init"])  # [seeds, layers]
    assert np.all(np.diff(np.log(norms), axis=1) > 0), "sigmoid grads should grow toward output"
    # ... and so the deep sigmoid net does not learn in the budget, the ReLU net does.
    assert np.mean(sigmoid["test_accuracy"]) < 0.2
    assert np.mean(relu["test_accuracy"]) > 0.8
    # Deeper is worse for sigmoid/classic.
    assert by[(2, "sigmoid", "classic")]["ratio_init"] > 100 * sigmoid["ratio_init"]
    figures = ["grad_norms_init.png", "grad_norms_training.png", "backprop_init.png"]
    written = assert_written(config.out_dir, [*figures, "accuracy_vs_depth.png", "saturation.png"])
    assert len(written["records"]) == len(config.depths) * len(config.inits) * len(
        config.activations
    )


def test_vanishing_gradients_member_equals_fit():
    """A member of a vmapped (depth, activation) group is the network `jaxdl.fit` trains alone."""
    config = dataclasses.replace(
        vanishing_gradients.Config(),
        inits=("classic", "he_normal"),
        seeds=2,
        steps=50,
        chunk_steps=50,
    )
    data = jaxdl.data.load("digits")
    group = vanishing_gradients.train_group(
        config, data, jaxdl.train.to_device(data), depth=1, activation="tanh"
    )
    train_config = jaxdl.TrainConfig(
        steps=50, batch_size=config.batch_size, optimizer="sgd", chunk_steps=50
    )
    model = jaxdl.mlp((config.width,), 10, "tanh", "he_normal")
    state, _ = jaxdl.fit(model, data, train_config, jaxdl.Hparams(lr=config.lr), seed=1)
    index = group["members"].index(("he_normal", 1))
    member = jax.tree.map(lambda p: p[index], group["final_params"])
    for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mlp_vs_convnet_quick(tmp_path):
    config, results = run_quick(mlp_vs_convnet, tmp_path)
    acc = {(r["data"], r["model"]): np.mean(r["test_accuracy"]) for r in results["records"]}
    # Local, shared features win where the information is local ...
    assert acc[("mnist1d", "convnet")] > acc[("mnist1d", "mlp")] + 0.1, acc
    # ... and loses most of that edge when a fixed permutation scrambles locality.
    assert acc[("mnist1d", "convnet")] > acc[("mnist1d_shuffled", "convnet")] + 0.1, acc
    written = assert_written(config.out_dir, ["accuracy.png"])
    assert written["reproduced"] is False  # the quick budget is too short to count
    published = {(r["data"], r["model"]): r["published"] for r in written["records"]}
    assert published[("mnist1d", "convnet")] == 94.0


def test_translation_quick(tmp_path):
    config, results = run_quick(translation, tmp_path)
    for row in results["equivariance"]:
        if row["stride"] == 1 or row["shift"] % 2 == 0:
            assert row["max_abs_error"] < 1e-5, row  # equivariant away from the borders
        else:
            assert row["relative_error"] > 0.1, row  # stride 2 and an odd shift: not
    changes = {
        (r["pool"], r["window"], r["shift"]): r["relative_change"] for r in results["invariance"]
    }
    for kind in ("max", "avg"):
        assert changes[(kind, 2, 1)] < changes[(kind, 1, 1)]  # pooling reduces the change
        assert changes[(kind, 24, 3)] < 1e-5  # global pooling: invariant
    acc = {label: np.asarray(a) for label, a in results["accuracy"].items()}  # [seeds, shifts]
    mlp, convnet = acc["mlp"].mean(0), acc["convnet (max pool)"].mean(0)
    assert mlp[0] > 0.9 and convnet[0] > 0.9  # both learn the centred digits
    assert np.all(convnet[1:] > mlp[1:] + 0.05), (convnet, mlp)  # the ConvNet degrades less
    assert_written(config.out_dir, ["translation.png"])


def test_translation_helpers():
    x = np.arange(2 * 4 * 5 * 1, dtype=np.float32).reshape(2, 4, 5, 1)
    moved = np.asarray(translation.translate(x, 1, -2))  # down 1, left 2
    np.testing.assert_array_equal(moved[:, 1:, :3], x[:, :3, 2:])
    assert np.all(moved[:, 0] == 0) and np.all(moved[:, :, 3:] == 0)
    assert translation.pad_digits(np.ones((3, 8, 8, 1), np.float32), 3).shape == (3, 14, 14, 1)


def test_feature_maps_quick(tmp_path):
    config, results = run_quick(feature_maps, tmp_path)
    sets = results["filter_sets"]
    random, adam, decayed = (
        sets["random (init)"],
        sets["learned, Adam"],
        sets["learned, AdamW wd 1"],
    )
    assert adam["test_accuracy"] > 0.9 and decayed["test_accuracy"] > 0.9
    # The learned filters are not the random ones they started from ...
    assert adam["relative_change"] > 0.1, adam
    assert decayed["relative_change"] > 0.3, decayed
    # ... and, once weight decay has worn the random start away, smoother than random ones.
    assert abs(random["neighbour_correlation"]) < 0.1, random
    assert decayed["neighbour_correlation"] > random["neighbour_correlation"] + 0.1, decayed
    # Any first-layer features, learned or random, beat raw pixels for a linear read-out.
    assert min(s["probe_accuracy"] for s in sets.values()) > results["raw_pixel_readout_accuracy"]
    assert_written(config.out_dir, ["filters.png", "feature_maps.png"])


def test_neighbour_correlation():
    smooth = np.ones((5, 5, 1, 2)) * np.linspace(0, 1, 5)[:, None, None, None]
    assert feature_maps.neighbour_correlation(smooth) > 0.4
    noise = np.random.default_rng(0).normal(size=(5, 5, 1, 256))
    assert abs(feature_maps.neighbour_correlation(noise)) < 0.05


def test_write_outputs(tmp_path):
    results = {"x": np.array([1.0, np.nan]), "t": (1, math.inf), "n": np.int32(3)}
    written = common.write_outputs(tmp_path / "out", results, "# t\n\n| a |", {"p.png": b"png"})
    assert sorted(os.listdir(tmp_path / "out")) == ["p.png", "results.json", "results.md"]
    assert [os.path.basename(p) for p in written] == ["results.json", "results.md", "p.png"]
    with open(tmp_path / "out" / "results.json") as f:
        assert json.load(f) == {"x": [1.0, None], "t": [1, None], "n": 3}  # strict JSON


def test_override_and_cli():
    config = common.override(vanishing_gradients.Config(), ["steps=300", "depths=2,8"])
    assert config.steps == 300 and config.depths == (2, 8)
    with pytest.raises(ValueError, match="valid keys: data, depths"):
        common.override(config, ["stpes=3"])
    parsed = common.main(
        "vanishing_gradients",
        vanishing_gradients.Config,
        lambda c: c,
        ["--quick", "--out", "somewhere", "--set", "lr=0.5"],
    )
    assert parsed.out_dir == "somewhere" and parsed.lr == 0.5 and parsed.depths == (2, 8)
    with pytest.raises(SystemExit):
        common.main("x", vanishing_gradients.Config, lambda c: c, ["--set", "nope=1"])


def test_summary_helpers():
    assert common.pct([0.5, 0.7]) == "60.0 ± 14.1"
    assert common.pct([0.5, math.nan]) == "n/a"  # a diverged net's NaN accuracy: not "nan ± nan"
    assert common.geomean([1e-2, 1.0]) == pytest.approx(0.1)
    assert math.isnan(common.geomean([1.0, -1.0]))
    assert common.markdown_table([{"a": 1, "b": 0.5}]) == "| a | b |\n|---|---|\n| 1 | 0.5 |"


def test_bad_config_values_name_their_key():
    config = vanishing_gradients.Config()
    with pytest.raises(ValueError, match="config key 'steps': expected int, got 'abc'"):
        common.override(config, ["steps=abc"])
    with pytest.raises(ValueError, match="key 'depths': expected comma-separated ints, got '2,x'"):
        common.override(config, ["depths=2,x"])
    with pytest.raises(ValueError, match="config key 'lr': expected float, got 'fast'"):
        common.override(config, ["lr=fast"])


def test_vanishing_gradients_rejects_what_it_cannot_probe():
    """Checked when the config is made: the probe has act'(z) of three activations only."""
    config = vanishing_gradients.Config()
    with pytest.raises(
        ValueError, match=r"'activations': unknown \['gelu'\]; valid: sigmoid, tanh, "
    ):
        dataclasses.replace(config, activations=("gelu",))
    with pytest.raises(ValueError, match="config key 'seeds': expected an int >= 1, got 0"):
        dataclasses.replace(config, seeds=0)


@pytest.mark.parametrize(
    "study, assignment, message",
    [
        (translation, "pools=maxx", "config key 'pools': unknown ['maxx']; valid: max, avg, "),
        (translation, "seeds=0", "config key 'seeds': expected an int >= 1, got 0"),
        (translation, "pad=-1", "config key 'pad': expected an int >= 0, got -1"),
        (mlp_vs_convnet, "runs=digits/logistic", "config key 'runs': unknown ['digits/logistic']"),
        (mlp_vs_convnet, "mlp_hidden=100,0", "'mlp_hidden': expected ints >= 1, got (100, 0)"),
        (feature_maps, "steps=0", "config key 'steps': expected an int >= 1, got 0"),
        (vanishing_gradients, "steps=150", "'steps': 150 must be a multiple of chunk_steps (100)"),
        # empty tuples: accepted before, then a traceback from the plots (or after training)
        (vanishing_gradients, "depths=", "config key 'depths': expected ints >= 1, got ()"),
        (vanishing_gradients, "activations=", "'activations': expected one or more of sigmoid, "),
        (mlp_vs_convnet, "runs=", "config key 'runs': expected one or more of mnist1d/logistic"),
        (translation, "shifts=", "config key 'shifts': expected ints >= 0, got ()"),
        (feature_maps, "examples=", "config key 'examples': expected ints >= 0, got ()"),
        # values a study can only fail on after training (or with a misleading library error)
        (vanishing_gradients, "data=mnist", "'data': unknown ['mnist']; valid: digits, mnist1d, "),
        (translation, "shifts=1,-1", "config key 'shifts': expected ints >= 0, got (1, -1)"),
        (translation, "pool_sizes=2,30", "'pool_sizes': expected windows <= 24 (8 + 2 probe_pad)"),
        (feature_maps, "maps_shown=64", "'maps_shown': expected at most channels[0] = 32, got 64"),
        (feature_maps, "weight_decays=", "'weight_decays': expected distinct numbers >= 0, got ()"),
        (feature_maps, "weight_decays=1,1", "'weight_decays': expected distinct numbers >= 0"),
        (feature_maps, "weight_decays=0,-1", "'weight_decays': expected distinct numbers >= 0"),
    ],
)
def test_bad_set_values_are_one_error_line_naming_the_key(capsys, study, assignment, message):
    """``--set`` values a study cannot run are refused by its config (exit 2, ``error: ...``),
    not a traceback from deep in the run."""
    with pytest.raises(SystemExit) as exited:
        common.main("x", study.Config, lambda c: pytest.fail("ran"), ["--set", assignment])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("python -m experiments.x: error: config key ") and message in error


def test_translation_measures_every_nonzero_shift():
    """(a) and (b) cover each shift given, also when the list does not start at 0."""
    config = dataclasses.replace(translation.Config(), shifts=(1, 2), pool_sizes=(1, 24))
    digits = jaxdl.data.load("digits").x_test[:4]
    x = jax.numpy.asarray(translation.pad_digits(digits, config.probe_pad))  # [4, 24, 24, 1]
    rows = translation.invariance(config, x, jax.random.key(0))
    assert sorted((r["pool"], r["window"], r["shift"]) for r in rows) == [
        (kind, window, shift) for kind in ("avg", "max") for window in (1, 24) for shift in (1, 2)
    ]
    rows = translation.equivariance(config, x, jax.random.key(0))
    assert sorted({r["shift"] for r in rows}) == [1, 2]
    assert all(r["max_abs_error"] < 1e-5 for r in rows if r["stride"] == 1), rows


def test_out_dir_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    """``--out`` naming a file (or a folder under one) is one error line, before anything runs,
    and the file is left as it was; `run` refuses it before training too."""
    user_file = tmp_path / "notes.txt"
    user_file.write_text("mine\n")
    for out in (user_file, user_file / "sub"):
        with pytest.raises(SystemExit) as exited:
            common.main("x", feature_maps.Config, lambda c: pytest.fail("ran"), ["--out", str(out)])
        assert exited.value.code == 2
        error = capsys.readouterr().err.splitlines()[-1]
        assert "config key 'out_dir' (--out): expected a folder" in error, error
    assert user_file.read_text() == "mine\n"
    config = dataclasses.replace(feature_maps.Config(), steps=1, out_dir=str(user_file))
    with pytest.raises(ValueError, match="config key 'out_dir'"):
        feature_maps.run(config)


def test_feature_maps_refuses_examples_past_the_test_set(tmp_path):
    """The digits to draw are checked against the test set before training, not when drawn."""
    config = dataclasses.replace(
        feature_maps.Config(), steps=1, examples=(0, 360), out_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match=r"'examples': expected indices .* in \[0, 360\)"):
        feature_maps.run(config)
    assert not os.listdir(tmp_path)


def test_translation_interior_max_of_no_interior_is_nan():
    """A margin that leaves no interior measures nothing: NaN (``n/a``), never a perfect 0."""
    x = jax.numpy.ones((2, 8, 8, 1))
    assert float(translation.interior_max(x, 3)) == 1.0  # rows and columns 3 and 4
    assert math.isnan(float(translation.interior_max(x, 4)))
    config = dataclasses.replace(translation.Config(), shifts=(3,), probe_pad=0, pool_sizes=(1,))
    digits = jaxdl.data.load("digits").x_test[:4]
    x = jax.numpy.asarray(translation.pad_digits(digits, config.probe_pad))  # [4, 8, 8, 1]
    rows = translation.equivariance(config, x, jax.random.key(0))
    assert all(math.isnan(r["max_abs_error"]) for r in rows), rows  # the stride-2 one was 0
