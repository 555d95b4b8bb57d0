"""Tests of `jaxdl.sweep` and `SweepResult`: member i equals the run trained alone under every
strategy, seed axes, divergence isolation, grouped shape axes, and the tables and statistics.

A sweep compiles one program per call and shape group (seconds on CPU), so populations are small
(four members of a tiny MLP or ConvNet on a few hundred digits, 20 steps), and each test builds
the sweeps it reads: pytest-xdist may run tests sharing a fixture in different processes.
"""

import csv
import functools
import importlib
import io
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import parts as parts_module
from jaxdl.sweep import STRATEGIES, members_of
from jaxdl.sweep_result import MemberStates, mean_std_ci
from jaxdl.train import Hparams, TrainConfig

sweep_module = importlib.import_module("jaxdl.sweep")  # `jaxdl.sweep` is the function

EXAMPLE = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)  # one digits image
CONFIG = TrainConfig(steps=20, batch_size=32, chunk_steps=10, eval_every=10)
AXES = {"seed": [0, 1], "lr": [1e-3, 3e-3]}  # members: (0, 1e-3), (0, 3e-3), (1, 1e-3), (1, 3e-3)
MODELS = {
    "mlp": lambda: jaxdl.mlp(hidden=(16,)),
    "convnet": lambda: jaxdl.convnet(channels=(4,), hidden=(16,)),
}
# strategy label -> sweep keywords; "chunked" with 3 members per chunk (not dividing 4)
STRATEGY_RUNS = {
    "vmap": {"strategy": "vmap"},
    "map": {"strategy": "map"},
    "chunked": {"strategy": "chunked", "chunk_members": 3},
}
# Strategies run per model, and the members compared with `fit`. Each `fit` compiles, so two:
# seed 0 with the second lr and seed 1 with the first, where a swap of either axis shows; every
# member is compared with the vmapped sweep.
CHECKED = {
    "mlp": (["vmap", "map", "chunked"], [1, 2]),
    "convnet": (["vmap", "map"], [1, 2]),
}


def max_abs_diff(a, b) -> float:
    """The largest absolute difference between two pytrees of the same structure."""
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs), default=0.0)


def init_key(seed: int) -> jax.Array:
    """The init key of seed ``seed``, as `fit` derives it."""
    return jax.random.split(jax.random.key(seed))[0]


@functools.cache
def digits():
    return jaxdl.data.load("digits").subset(256, 100)


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_member_equals_the_run_trained_alone(kind):
    strategies, checked = CHECKED[kind]
    model = MODELS[kind]()
    members = members_of(AXES)
    results = {
        name: jaxdl.sweep(model, digits(), AXES, config=CONFIG, **STRATEGY_RUNS[name])
        for name in strategies
    }
    for i in checked:
        hparams = Hparams(lr=members[i]["lr"])
        state, history = jaxdl.fit(model, digits(), CONFIG, hparams, seed=members[i]["seed"])
        for name, result in results.items():
            member = result.member(i)
            diff = max_abs_diff(member.params, state.params)
            assert diff <= 1e-5, f"{kind} {name} member {i}: params differ by {diff}"
            np.testing.assert_allclose(member.history["loss"], history["loss"], rtol=1e-5)
            np.testing.assert_array_equal(member.history["step"], history["step"])

    # every member under every strategy equals the vmapped one; chunked within 1e-6
    vmapped = results["vmap"]
    for name, result in results.items():
        assert result.members == members and result.strategies == [name] * 4
        tolerance = 1e-6 if name == "chunked" else 1e-5
        for i in range(len(members)):
            diff = max_abs_diff(result.states[i].params, vmapped.states[i].params)
            assert diff <= tolerance, f"{kind} {name} member {i}: {diff} from vmap"
            assert int(result.states[i].step) == CONFIG.steps
        for curve in ("loss", "test_accuracy"):
            np.testing.assert_allclose(
                result.histories[curve], vmapped.histories[curve], rtol=tolerance, atol=1e-7
            )


@pytest.mark.parametrize("strategy", ["vmap", "map"])
def test_a_weight_decay_axis_with_zero_matches_the_runs_trained_alone(strategy):
    """Members of one program trace every weight decay, 0 included (`fit` leaves a 0 out of its
    program): each equals its run alone, and the zero-decay member differs from the other."""
    model = jaxdl.mlp(hidden=(16,))
    axes = {"weight_decay": [0.0, 0.5]}
    result = jaxdl.sweep(model, digits(), axes, config=CONFIG, strategy=strategy)
    for i, weight_decay in enumerate(axes["weight_decay"]):
        state, _ = jaxdl.fit(model, digits(), CONFIG, Hparams(weight_decay=weight_decay))
        diff = max_abs_diff(result.member(i).params, state.params)
        assert diff <= 1e-5, f"{strategy} member {i}: params differ by {diff}"
    assert max_abs_diff(result.member(0).params, result.member(1).params) > 1e-3


def test_no_weight_decay_given_as_none_is_recorded_as_zero(tmp_path):
    """``Hparams(weight_decay=None)`` (no decay) runs the program a 0 runs, so the members'
    configs, a saved member and a resumed sweep's description all read it as 0.0."""
    from jaxdl.checkpoint import Checkpointer

    model = jaxdl.mlp(hidden=(8,))
    axes = {"seed": [0, 1]}
    saved = Checkpointer(tmp_path / "sweep", every=10)
    none = jaxdl.sweep(
        model, digits(), axes, config=CONFIG, hparams=Hparams(weight_decay=None),
        checkpointer=saved,
    )  # fmt: skip
    assert none.member(0).config["hparams"]["weight_decay"] == 0.0
    none.save_member(0, tmp_path / "member0")
    zero = jaxdl.sweep(
        model, digits(), axes, config=CONFIG, hparams=Hparams(weight_decay=0.0),
        checkpointer=Checkpointer(tmp_path / "sweep", every=10), resume=True,
    )  # fmt: skip
    assert max_abs_diff(zero.member(1).params, none.member(1).params) == 0.0


def test_init_seed_and_data_seed_axes():
    model = jaxdl.mlp(hidden=(8,))
    config = TrainConfig(steps=4, batch_size=32, chunk_steps=2, eval_every=4, optimizer="sgd")
    axes = {"init_seed": [0, 1], "data_seed": [0, 1]}
    # a vanishing lr (0 is refused): the final params are the initial ones up to 1e-30 steps
    result = jaxdl.sweep(
        model, digits(), axes, config=config, hparams=Hparams(lr=1e-30), strategy="map"
    )
    same_init = result.states[0].params, result.states[1].params  # (0, 0), (0, 1)
    chex.assert_trees_all_close(*same_init, atol=1e-20)
    for i, member in enumerate(result.members):
        expected, _ = model.init(init_key(member["init_seed"]), EXAMPLE)
        chex.assert_trees_all_close(result.states[i].params, expected, atol=1e-7)
        data_key = jax.random.split(jax.random.key(member["data_seed"]))[1]
        np.testing.assert_array_equal(
            jax.random.key_data(result.states[i].key), jax.random.key_data(data_key)
        )
    assert max_abs_diff(result.states[0].params, result.states[2].params) > 0
    losses = result.histories["loss"]  # [4, 2]
    assert not np.array_equal(losses[0], losses[1])  # same params, another batch order


# ----------------------------------------------------------------------------- divergence

DIVERGE = TrainConfig(steps=12, batch_size=32, chunk_steps=4, eval_every=12, optimizer="sgd")


def diverge_sweep(lrs):
    """A linear MLP under sgd: lr 1e4 makes the loss non-finite at step 5, lr <= 3e-2 does not."""
    model = jaxdl.mlp(hidden=(16,), activation="identity")
    return jaxdl.sweep(model, digits(), {"lr": lrs}, config=DIVERGE, strategy="vmap")


def test_a_diverging_member_leaves_the_others_untouched():
    mixed = diverge_sweep([1e-2, 1e4])
    healthy = diverge_sweep([1e-2, 3e-2])
    alone = diverge_sweep([1e-2])

    rows = mixed.rows()
    assert rows[0]["diverged_at_step"] == -1
    assert 0 <= rows[1]["diverged_at_step"] < DIVERGE.steps
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(mixed.states[1].params))
    assert not np.isfinite(mixed.histories["loss"][1, -1])
    assert [row["diverged_at_step"] for row in healthy.rows()] == [-1, -1]
    # the sweep ran to the end for the healthy member
    np.testing.assert_array_equal(mixed.histories["step"][0], [4, 8, 12])
    assert np.all(np.isfinite(mixed.histories["loss"][0]))

    chex.assert_trees_all_equal(mixed.states[0].params, healthy.states[0].params)
    np.testing.assert_array_equal(mixed.histories["loss"][0], healthy.histories["loss"][0])
    # a population of one is another compiled program: its params are still bit-identical on
    # the CPU this was written on (XLA CPU, jax 0.10.2; were they not, the bound is 1e-6), but
    # the chunk-mean loss is reduced in another order (1 ulp apart)
    chex.assert_trees_all_equal(mixed.states[0].params, alone.states[0].params)
    np.testing.assert_allclose(mixed.histories["loss"][0], alone.histories["loss"][0], rtol=1e-6)


# ----------------------------------------------------------------------------- grouped axes


def test_shape_axes_group_into_programs_and_keep_population_order():
    groups = []
    config = TrainConfig(steps=2, batch_size=32, chunk_steps=2, eval_every=2, optimizer="sgd")
    # seed first: each hidden width's group holds members 0, 2 or 1, 3 of the population
    result = jaxdl.sweep(
        lambda hidden: jaxdl.mlp(hidden=(hidden,)),
        digits(),
        axes={"seed": [0, 1], "hidden": [8, 16]},
        config=config,
        hparams=Hparams(lr=1e-30),  # final params = initial params (to 1e-30), checkable
        strategy="map",  # grouping does not depend on the strategy; map compiles fastest
        on_group=lambda static, count: groups.append((static, count)),
    )
    assert groups == [({"hidden": 8}, 2), ({"hidden": 16}, 2)]
    rows = result.rows()
    assert [(row["member"], row["seed"], row["hidden"]) for row in rows] == [
        (0, 0, 8),
        (1, 0, 16),
        (2, 1, 8),
        (3, 1, 16),
    ]
    for state, member in zip(result.states, result.members, strict=True):
        hidden, seed = member["hidden"], member["seed"]
        assert state.params["dense1"]["w"].shape == (64, hidden)
        assert state.params["dense2"]["w"].shape == (hidden, 10)
        expected, _ = jaxdl.mlp(hidden=(hidden,)).init(init_key(seed), EXAMPLE)
        chex.assert_trees_all_close(state.params, expected, atol=1e-7)


def test_list_valued_axis_values_group_and_summarise_as_tuples():
    config = TrainConfig(steps=2, batch_size=32, chunk_steps=2, eval_every=2, optimizer="sgd")
    result = jaxdl.sweep(
        lambda hidden: jaxdl.mlp(hidden=hidden),
        digits(),
        axes={"seed": [0, 1], "hidden": [[8], [8, 8]]},  # width lists, as users write them
        config=config,
        strategy="map",
    )
    assert [m["hidden"] for m in result.members] == [(8,), (8, 8), (8,), (8, 8)]
    assert [(row["hidden"], row["n"]) for row in result.summary_rows()] == [((8,), 2), ((8, 8), 2)]
    assert "dense3" in result.states[1].params and "dense3" not in result.states[0].params


def test_a_static_axis_with_a_plain_layer_asks_for_a_model_function():
    with pytest.raises(ValueError, match=r"model function|model\(hidden\) -> Layer"):
        jaxdl.sweep(jaxdl.mlp(), digits(), axes={"hidden": [8, 16]}, config=CONFIG)


# ----------------------------------------------------------------------------- statistics


def test_mean_std_ci_on_known_values():
    stats = mean_std_ci([1.0, 2.0, 3.0, 4.0])
    std = np.sqrt(5.0 / 3.0)  # sum of squared deviations 5, n - 1 = 3
    half = 3.182446305284263 * std / 2.0  # t_{0.975, 3} * std / sqrt(4)
    assert stats["n"] == 4
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["std"] == pytest.approx(1.2909944487358056)
    assert stats["std"] == pytest.approx(std)
    assert stats["ci_low"] == pytest.approx(2.5 - half, rel=1e-9)
    assert stats["ci_high"] == pytest.approx(2.5 + half, rel=1e-9)

    two = mean_std_ci([1.0, 3.0])  # half width t_{0.975, 1} * sqrt(2) / sqrt(2)
    assert two["ci_high"] - two["mean"] == pytest.approx(12.706204736174698, rel=1e-9)

    one = mean_std_ci([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7
    assert all(math.isnan(one[k]) for k in ("std", "ci_low", "ci_high"))  # no spread known


def test_rows_summary_tables_and_members_of_a_real_sweep():
    model = jaxdl.mlp(hidden=(8,))
    result = jaxdl.sweep(model, digits(), AXES, config=CONFIG, strategy="auto")
    assert result.strategies == ["vmap"] * 4  # auto: vmap for several members, map for one
    rows = result.rows()
    assert [row["member"] for row in rows] == [0, 1, 2, 3]
    for row, member, history in zip(rows, result.members, result.member_histories, strict=True):
        assert (row["seed"], row["lr"]) == (member["seed"], member["lr"])
        assert row["final_test_accuracy"] == pytest.approx(float(history["test_accuracy"][-1]))
        assert row["best_test_accuracy"] == pytest.approx(float(np.max(history["test_accuracy"])))
        assert row["final_loss"] == pytest.approx(float(history["loss"][-1]))
        assert row["diverged_at_step"] == -1 and row["strategy"] == "vmap"

    summary = result.summary_rows(by=["lr"])
    assert [entry["lr"] for entry in summary] == [1e-3, 3e-3]
    for entry in summary:
        values = [row["final_test_accuracy"] for row in rows if row["lr"] == entry["lr"]]
        assert len(values) == 2  # both seeds
        expected = mean_std_ci(values)
        for field in ("n", "mean", "std", "ci_low", "ci_high"):
            assert entry[field] == pytest.approx(expected[field])
    assert result.summary_rows() == summary  # default: every axis but the seeds
    assert result.summary(by=["lr"]) == result.summary()
    summary_csv = list(csv.DictReader(io.StringIO(result.summary(by=["lr"], format="csv"))))
    assert [float(entry["mean"]) for entry in summary_csv] == pytest.approx(
        [entry["mean"] for entry in summary]
    )

    table = list(csv.DictReader(io.StringIO(result.table(format="csv"))))
    assert len(table) == len(result) == 4
    for parsed, row in zip(table, rows, strict=True):
        assert int(parsed["member"]) == row["member"] and int(parsed["seed"]) == row["seed"]
        assert float(parsed["lr"]) == row["lr"]
        assert float(parsed["final_test_accuracy"]) == pytest.approx(row["final_test_accuracy"])
    markdown = result.table().splitlines()
    assert len(markdown) == 2 + 4 and markdown[0].startswith("| member | seed | lr |")

    with pytest.raises(ValueError, match="momentum"):
        result.summary_rows(by=["momentum"])
    with pytest.raises(ValueError, match="markdown, csv"):
        result.table(format="html")

    for i, axis_values in enumerate(members_of(AXES)):
        member = result.member(i)
        assert member.config["axes"] == axis_values
        assert member.config["hparams"]["lr"] == pytest.approx(axis_values["lr"])
        assert member.config["train"]["steps"] == CONFIG.steps
        chex.assert_trees_all_equal(member.params, result.states[i].params)
        assert member.history is result.member_histories[i]
    with pytest.raises(IndexError):
        result.member(4)

    histories = result.histories
    chunks = CONFIG.steps // CONFIG.chunk_steps
    for name in ("step", "loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert histories[name].shape == (4, chunks), name
    np.testing.assert_array_equal(histories["step"], [[10, 20]] * 4)
    for i in range(4):
        np.testing.assert_array_equal(histories["loss"][i], result.member_histories[i]["loss"])


# ----------------------------------------------------------------------------- argument checks


def test_members_of_is_the_product_with_the_last_axis_fastest():
    assert members_of({"a": [1, 2], "b": ["x", "y", "z"]})[:4] == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
    ]


def test_numpy_and_jax_arrays_are_axes_of_plain_python_values(tmp_path):
    """``np.logspace(...)`` is an axis like the list of its values; its members, the result's
    axes and the saved ``sweep.json`` hold Python numbers, not NumPy scalars."""
    import json

    from jaxdl.checkpoint import Checkpointer

    lrs = np.logspace(-3, -2, 2, dtype=np.float32)
    axes = {"seed": jnp.arange(2), "lr": lrs}
    members = members_of(axes)
    assert members == members_of({"seed": [0, 1], "lr": lrs.tolist()})
    assert all(type(m["lr"]) is float and type(m["seed"]) is int for m in members)
    assert members_of({"hidden": np.array([[16], [32]])}) == [{"hidden": (16,)}, {"hidden": (32,)}]
    result = jaxdl.sweep(
        jaxdl.mlp(hidden=(8,)), digits(), axes, config=CONFIG,
        checkpointer=Checkpointer(tmp_path, every=10),
    )  # fmt: skip
    assert result.axes == {"seed": [0, 1], "lr": lrs.tolist()}
    assert json.loads((tmp_path / "sweep.json").read_text())["axes"]["lr"] == lrs.tolist()


def test_an_axis_name_that_is_not_a_string_is_refused():
    """A model function takes the static axes as keywords: an int name failed in Python's call
    ("keywords must be strings"), or, with a Layer, in difflib ("'int' object is not iterable")."""
    with pytest.raises(TypeError, match=r"sweep axis 1: expected a name \(str\), got int 1"):
        members_of({"seed": [0], 1: [8, 16]})
    with pytest.raises(TypeError, match=r"sweep axis 1: expected a name \(str\), got int 1"):
        jaxdl.sweep(jaxdl.mlp(), digits(), {1: [8, 16]}, config=CONFIG)


def test_an_axis_named_like_a_result_column_is_refused():
    with pytest.raises(ValueError, match="axis 'seconds' would overwrite the result column"):
        members_of({"seed": [0], "seconds": [1, 2]})


def test_unknown_strategy_and_empty_axes_raise():
    with pytest.raises(ValueError, match="pmap") as raised:
        jaxdl.sweep(jaxdl.mlp(), digits(), AXES, config=CONFIG, strategy="pmap")
    for name in STRATEGIES:
        assert name in str(raised.value)
    with pytest.raises(ValueError, match=r"'seed' has no values: expected at least one, got \[\]"):
        jaxdl.sweep(jaxdl.mlp(), digits(), {"seed": [], "lr": [1e-3]}, config=CONFIG)
    with pytest.raises(ValueError, match="expected a list"):
        jaxdl.sweep(jaxdl.mlp(), digits(), {"lr": 1e-3}, config=CONFIG)


def test_an_axis_named_after_a_train_config_field_is_refused():
    """Such an axis reached the model function only: every member trained the base config."""

    def model(optimizer, batch_size):
        return jaxdl.mlp(hidden=(8,))

    axes = {"seed": [0], "optimizer": ["sgd", "adam"], "batch_size": [8, 32]}
    with pytest.raises(ValueError, match=r"axes \['optimizer', 'batch_size'\] are TrainConfig"):
        jaxdl.sweep(model, digits(), axes, config=CONFIG)


@pytest.mark.parametrize("chunk_members", [0, -1, 1.5, "2", True])
def test_chunk_members_must_be_a_positive_int(chunk_members):
    with pytest.raises(ValueError, match=r"chunk_members must be a positive int, got"):
        jaxdl.sweep(
            jaxdl.mlp(), digits(), AXES, config=CONFIG, strategy="chunked",
            chunk_members=chunk_members,
        )  # fmt: skip


def test_batch_larger_than_the_data_set_raises_before_compiling(monkeypatch):
    def no_compiling(*args, **kwargs):
        raise AssertionError("build_program was reached: the check came too late")

    monkeypatch.setattr(sweep_module, "build_program", no_compiling)
    with pytest.raises(jaxdl.data.DataError, match="num_examples=256.*batch_size=512"):
        jaxdl.sweep(jaxdl.mlp(), digits(), AXES, config=CONFIG, batch_size=512)


CONV_PARAMS = {"conv1": {"w": jax.ShapeDtypeStruct((3, 3, 1, 8), jnp.float32)}}
DENSE_PARAMS = {"dense1": {"w": jax.ShapeDtypeStruct((64, 8), jnp.float32)}}  # 2 KiB
MIB_DENSE = {"dense1": {"w": jax.ShapeDtypeStruct((512, 512), jnp.float32)}}  # 1 MiB
BIG_DENSE = {"dense1": {"w": jax.ShapeDtypeStruct((2048, 1024), jnp.float32)}}  # 8 MiB
Plan = sweep_module.Plan


@pytest.mark.parametrize(
    "params, num_members, backend, members_axis, expected",
    [
        (DENSE_PARAMS, 1, "cpu", 1, Plan("map", 1)),
        (DENSE_PARAMS, 128, "cpu", 1, Plan("vmap", 128, 8)),  # 256 KiB in all; 8 parts at most
        (DENSE_PARAMS, 8, "cpu", 1, Plan("vmap", 8, 4)),  # in pairs
        (DENSE_PARAMS, 2, "cpu", 1, Plan("vmap", 2, 1)),  # one pair
        (MIB_DENSE, 4, "cpu", 1, Plan("vmap", 4, 2)),  # 4 MiB: all fit
        (MIB_DENSE, 5, "cpu", 1, Plan("chunked", 3, 2)),  # 2 chunks, evenly filled; 2 + 1
        (MIB_DENSE, 32, "cpu", 1, Plan("chunked", 4, 2)),
        (MIB_DENSE, 9, "cpu", 1, Plan("chunked", 3, 2)),  # 3 chunks of 3, not 4 + 4 + 1
        (BIG_DENSE, 8, "cpu", 1, Plan("map", 1)),  # one member is over the budget
        (BIG_DENSE, 8, "gpu", 1, Plan("vmap", 8)),
        (CONV_PARAMS, 1, "cpu", 1, Plan("vmap", 1)),  # measured faster than plain
        (CONV_PARAMS, 2, "cpu", 1, Plan("vmap", 2, 2)),  # one member per part
        (CONV_PARAMS, 32, "cpu", 1, Plan("chunked", 2, 2)),
        (CONV_PARAMS, 5, "cpu", 1, Plan("chunked", 2, 2)),  # the last pair padded
        (CONV_PARAMS, 2, "gpu", 1, Plan("vmap", 2)),
        (CONV_PARAMS, 1, "gpu", 1, Plan("map", 1)),
        (CONV_PARAMS, 1024, "gpu", 1, Plan("vmap", 1024)),
        (CONV_PARAMS, 64, "cpu", 4, Plan("vmap", 64)),  # a mesh's members axis needs vmap
        (BIG_DENSE, 64, "cpu", 4, Plan("vmap", 64)),
    ],
)
def test_auto_strategy_by_backend_model_and_population(
    params, num_members, backend, members_axis, expected
):
    choice = sweep_module.choose_strategy(params, num_members, backend, members_axis=members_axis)
    assert choice == expected


def test_auto_splits_programs_into_parts_for_long_runs_only(monkeypatch):
    """8 tiny MLPs under auto: one vmap below `CPU_PARTS_MIN_STEPS` steps, 4 parts from there on
    (the longer compile of parts only pays over a long run)."""
    seen = []
    real = sweep_module.build_program

    def recording(*args, parts=1, **kwargs):
        seen.append(parts)
        return real(*args, parts=parts, **kwargs)

    monkeypatch.setattr(sweep_module, "build_program", recording)
    model, axes = jaxdl.mlp(hidden=(4,), num_classes=10), {"seed": range(8)}
    jaxdl.sweep(model, digits(), axes, config=CONFIG, steps=4, chunk_steps=2)
    monkeypatch.setattr(parts_module, "CPU_PARTS_MIN_STEPS", 4)
    jaxdl.sweep(model, digits(), axes, config=CONFIG, steps=4, chunk_steps=2)
    assert seen == [1, 4]


def test_without_parts_convnets_run_one_after_another_and_dense_nets_in_one_vmap():
    """What `auto` plans where programs cannot be split into parts (a mesh)."""
    choose = functools.partial(sweep_module.choose_strategy, backend="cpu", parts=False)
    assert choose(CONV_PARAMS, 8) == Plan("map", 1)
    assert choose(DENSE_PARAMS, 8) == Plan("vmap", 8, 1)
    assert choose(MIB_DENSE, 9) == Plan("chunked", 3, 1)


@pytest.mark.parametrize(
    "params, steps, expected",
    [
        (DENSE_PARAMS, parts_module.CPU_PARTS_MIN_STEPS - 1, Plan("vmap", 8, 1)),
        (DENSE_PARAMS, parts_module.CPU_PARTS_MIN_STEPS, Plan("vmap", 8, 4)),
        (CONV_PARAMS, parts_module.CPU_CONV_PARTS_MIN_STEPS - 1, Plan("map", 1)),
        (CONV_PARAMS, parts_module.CPU_CONV_PARTS_MIN_STEPS, Plan("chunked", 2, 2)),
    ],
)
def test_parts_only_for_runs_long_enough_to_repay_their_compile(params, steps, expected):
    assert sweep_module.choose_strategy(params, 8, "cpu", steps=steps) == expected


@pytest.mark.parametrize(
    "hidden, expected",
    [
        ((256, 512), ["chunked"] * 3),  # 153k params: Adam's state 1.75 MiB, 2 per chunk
        ((384, 1024), ["map"] * 3),  # 429k params: 4.9 MiB, over the budget alone
    ],
)
def test_auto_counts_the_whole_train_state_and_equals_vmap(hidden, expected):
    """The budget counts params and Adam's two moments, not the params alone; whatever auto
    runs, every member equals the plain vmapped sweep's."""
    model = jaxdl.mlp(hidden=hidden, num_classes=10)
    axes = {"seed": range(3)}
    auto = jaxdl.sweep(model, digits(), axes, config=CONFIG, steps=4, chunk_steps=2)
    vmapped = jaxdl.sweep(
        model, digits(), axes, config=CONFIG, steps=4, chunk_steps=2, strategy="vmap"
    )
    assert auto.strategies == expected
    for a, b in zip(auto.states, vmapped.states, strict=True):
        assert max_abs_diff(a.params, b.params) < 1e-5


def test_sweep_command_writes_its_folder_and_counts_network_steps(tmp_path, capsys):
    """`jaxdl sweep` on tiny data: one row per member, the summary and both plots; progress
    counts network-steps, rising to the population's total although the MLPs run vmapped and
    the ConvNets (auto on CPU, for a run this short: without parts) one after another."""
    from jaxdl import cli

    out = tmp_path / "sweep"
    args = [
        "sweep", "--data", "digits", "--num-train", "256", "--num-test", "64",
        "--model", "mlp,convnet", "--seeds", "3", "--steps", "20", "--chunk-steps", "10",
        "--eval-every", "10", "--batch-size", "32", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    counts = [int(line.split()[1].split("/")[0]) for line in printed.splitlines()
              if line.startswith("network-steps ")]  # fmt: skip
    assert counts == [30, 60, 70, 80, 90, 100, 110, 120], printed
    assert "120/120" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["seed"]) for r in rows] == [
        (model, str(seed)) for model in ("mlp", "convnet") for seed in range(3)
    ]
    assert "| mlp |" in (out / "summary.md").read_text()
    for plot in ("accuracy.png", "curves.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_progress_line_shows_the_median_of_the_members_that_did_not_diverge():
    from jaxdl.sweep_cli import _typical

    assert _typical(np.array([0.5, np.nan, 0.7, 1e30, np.inf])) == 0.7
    assert _typical(np.array([0.25])) == 0.25
    assert np.isnan(_typical(np.array([np.nan, np.nan])))


def test_padding_members_stay_out_of_on_chunk():
    """3 members in chunks of 2 pad the second chunk with a copy; ``on_chunk`` sees only the
    real members' metrics."""
    shapes = []
    jaxdl.sweep(
        jaxdl.mlp(hidden=(8,)), digits(), {"seed": range(3)}, config=CONFIG,
        strategy="chunked", chunk_members=2,
        on_chunk=lambda step, metrics: shapes.append(np.shape(metrics["loss"])),
    )  # fmt: skip
    assert shapes == [(2,), (2,), (1,), (1,)]


def test_chunk_members_needs_the_chunked_strategy():
    with pytest.raises(ValueError, match='chunk_members=4 needs strategy="chunked", got .auto.'):
        jaxdl.sweep(jaxdl.mlp(), digits(), AXES, config=CONFIG, chunk_members=4)


class StackedState(NamedTuple):
    w: jax.Array  # [members, 3]
    diverged_at: jax.Array  # [members]


def test_member_states_slice_each_member_out_of_its_groups_stacked_state():
    # two groups (2 and 3 members), members interleaved between them as shape axes order them
    first = StackedState(jnp.arange(2.0)[:, None] * jnp.ones((2, 3)), jnp.array([-1, 4]))
    second = StackedState(10 + jnp.arange(3.0)[:, None] * jnp.ones((3, 3)), jnp.array([7, -1, -1]))
    states = MemberStates([first, second], [(0, 0), (1, 0), (0, 1), (1, 1), (1, 2)])
    assert len(states) == 5
    expected_w = [0.0, 10.0, 1.0, 11.0, 12.0]
    for state, w in zip(states, expected_w, strict=True):  # iteration, as a list's
        chex.assert_shape(state.w, (3,))
        np.testing.assert_array_equal(state.w, np.full(3, w))
    np.testing.assert_array_equal(states[-1].w, np.full(3, 12.0))
    assert [float(state.w[0]) for state in states[1:4]] == expected_w[1:4]
    np.testing.assert_array_equal(states.diverged_at(), [-1, 7, 4, -1, -1])
    with pytest.raises(IndexError):
        states[5]
