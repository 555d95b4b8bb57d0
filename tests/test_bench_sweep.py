"""Tests of the sweep benchmark's own code (`bench.bench_sweep`), without PyTorch: the
hand-written baselines train the same networks as jaxdl, their vmapped and scanned forms equal
the single-member step, and one small measurement fills the tables."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl
from bench import bench_sweep, common
from bench.bench_mlp import hand_step
from jaxdl.parts import CPU_CONV_PARTS_MIN_STEPS, CPU_PARTS_MIN_STEPS
from jaxdl.sweep import choose_strategy

SPECS = {spec.key: spec for spec in bench_sweep.SPECS}
# optax.adam's bias correction mixes int and float: the hand-written baselines run with JAX's
# standard promotion, as the benchmark does (jaxdl wraps its optimisers for the same reason).
standard_promotion = functools.partial(jax.numpy_dtype_promotion, "standard")


def max_abs_diff(a, b) -> float:
    """The largest absolute difference between two pytrees of arrays (no keys)."""
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs))


@pytest.mark.parametrize("key", ["mlp", "convnet"])
def test_hand_step_equals_jaxdl_step(key):
    """From jaxdl's initial params, one hand-written Adam step gives jaxdl's loss and params:
    the baselines train the same network (the ConvNet: lax.conv and reduce_window vs jaxdl's
    conv and pooling layers)."""
    spec = SPECS[key]
    data = bench_sweep.make_data(spec)
    x, y = jnp.asarray(data.x_train[: bench_sweep.BATCH]), jnp.asarray(data.y_train[:128])
    model = spec.jaxdl_model()
    config = jaxdl.TrainConfig(batch_size=bench_sweep.BATCH, optimizer="adam")
    hparams = jaxdl.Hparams(lr=bench_sweep.LR).as_arrays()
    state = jaxdl.init_state(
        model, config, hparams, x, init_key=jax.random.key(0), data_key=jax.random.key(1)
    )
    params = [(layer["w"], layer["b"]) for layer in state.params.values()]  # in layer order
    new_state, metrics = jax.jit(jaxdl.make_step(model, config))(state, hparams, x, y)

    optimizer = optax.adam(bench_sweep.LR)
    loss_fn = functools.partial(bench_sweep.cross_entropy, spec.hand_logits)
    with standard_promotion():
        (new_params, _), loss = jax.jit(functools.partial(hand_step, optimizer, loss_fn))(
            (params, optimizer.init(params)), x, y
        )
    np.testing.assert_allclose(loss, metrics["loss"], rtol=1e-5)
    expected = [(layer["w"], layer["b"]) for layer in new_state.params.values()]
    assert max_abs_diff(new_params, expected) < 1e-5


def test_vmapped_step_and_scan_equal_single_steps():
    """Member k of ``jit(vmap(step))`` is the single-member step on member k's carry, and a
    scanned chunk of 3 steps is 3 steps."""
    spec = SPECS["mlp"]
    data = bench_sweep.make_data(spec)
    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    step, init = bench_sweep.hand_parts(spec)
    single = jax.jit(step)
    with standard_promotion():
        carries = jax.vmap(init)(jax.random.split(jax.random.key(0), 2))  # 2 members
        batched, losses = jax.jit(jax.vmap(step, in_axes=(0, None, None)))(carries, x_all, y_all)
        for k in range(2):
            member = jax.tree.map(lambda leaf, k=k: leaf[k], carries)
            alone, loss = single(member, x_all, y_all)
            np.testing.assert_allclose(losses[k], loss, rtol=1e-6)
            member_k = jax.tree.map(lambda leaf, k=k: leaf[k], batched)
            assert max_abs_diff(member_k[:2], alone[:2]) < 1e-6  # params, optimiser state

        member = jax.tree.map(lambda leaf: leaf[0], carries)
        chunk = jax.jit(functools.partial(bench_sweep.member_chunk, step, 3))
        scanned, _ = chunk(member, x_all, y_all)
        for _ in range(3):
            member, _ = single(member, x_all, y_all)
    assert max_abs_diff(scanned[:2], member[:2]) < 1e-6


def test_measure_fills_the_tables(monkeypatch):
    """One tiny measurement (MLP, 2 members, no PyTorch, no hand scan): every timed column is a
    positive rate, auto ran what `choose_strategy` picks, the tables have one cell per column;
    the sweeps ran with a persistent compilation cache, the runners compiled without it, and the
    settings are restored."""
    monkeypatch.setattr(common, "import_torch", lambda: None)
    spec = dataclasses.replace(SPECS["mlp"], chunk_steps={2: 2}, max_members={"hand_vmap_scan": 1})
    settings = bench_sweep.Settings(
        ks=(2,), repeats=1, target_s=0.01, min_chunks=1, whole_run=False
    )
    cache_dir = jax.config.jax_compilation_cache_dir
    seen = {"hand_runners": [], "time_sweep": []}  # the cache folder each call ran with

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen[name].append(jax.config.jax_compilation_cache_dir)
            return fn(*args, **kwargs)

        monkeypatch.setattr(bench_sweep, name, wrapped)

    spy("hand_runners", bench_sweep.hand_runners)
    spy("time_sweep", bench_sweep.time_sweep)
    with standard_promotion():
        measured = bench_sweep.measure(spec, 2, settings, torch=False)
    assert jax.config.jax_compilation_cache_dir == cache_dir
    assert seen["hand_runners"] == [cache_dir]  # runners' first calls are compiles
    assert len(seen["time_sweep"]) == 3 and cache_dir not in seen["time_sweep"]
    assert len(set(seen["time_sweep"])) == 1
    assert measured.parts == 1  # two members of an MLP: one plain vmap

    params_shape, _ = jax.eval_shape(spec.jaxdl_model().init, jax.random.key(0), jnp.zeros((1, 40)))
    assert measured.strategy == choose_strategy(params_shape, 2).strategy
    expected = {*bench_sweep.JAXDL_STRATEGIES, "hand_vmap_step", "hand_loop"}
    assert set(measured.timings) == expected
    for name in expected:
        rate = bench_sweep.rate(measured, name)
        assert math.isfinite(rate) and rate > 0, name

    tables = bench_sweep.tables({"mlp": {2: measured}}, settings)
    assert [t.key for t in tables] == ["sweep.mlp", "sweep.targets", "sweep.first_call"]
    for table in tables:
        assert all(len(row) == len(table.columns) for row in table.rows), table.key
        table.markdown()
    (row,) = tables[0].rows
    cells = dict(zip(tables[0].columns, row, strict=True))
    for column in ("torch.func", "torch loop", "jaxdl whole-run scan", "hand vmap(scan)"):
        assert cells[column] is None, column
    assert common.TORCH_MISSING in tables[0].notes


def test_a_sample_of_a_scanned_runner_lasts_its_target_in_whole_calls(monkeypatch):
    """`common.calibrate` times ``runner(1)``, one whole call of a scan runner: with calls of 100
    steps taking 0.01 s, a 0.1 s sample is 10 calls (1000 steps), not one call of 100."""
    monkeypatch.setattr(common, "time_once", lambda fn: (fn(), 0.01)[1])
    calls = []
    assert bench_sweep.sample_steps(calls.append, 0.1, 100) == 1000
    assert bench_sweep.sample_steps(calls.append, 0.1, 1) == 10
    assert calls == [1, 1]


def test_the_jaxdl_step_loop_traces_no_zero_weight_decay(monkeypatch):
    """The jaxdl vmap(step) loop (and the whole-run scan) give the members no weight decay
    (``None``), as `jaxdl.sweep` does when no member decays: a traced zero would add a decay term
    over every parameter that the sweep columns and the hand-written steps do not compute."""
    captured = {}

    def stepper(fn, carry, hparams, *args):
        captured["hparams"] = hparams
        return None, 0.0

    monkeypatch.setattr(common, "stepper", stepper)
    spec = SPECS["mlp"]
    with standard_promotion():
        bench_sweep.jaxdl_loop_runner(spec, bench_sweep.make_data(spec), 2)
    assert captured["hparams"].weight_decay is None
    np.testing.assert_allclose(captured["hparams"].lr, [bench_sweep.LR] * 2)


@pytest.mark.parametrize("spec", bench_sweep.SPECS, ids=lambda spec: spec.key)
def test_timed_sweeps_are_long_runs_as_auto_plans_them(spec):
    """Every timed sweep is configured as a run long enough for `auto`'s parts on CPU, and its
    chunks end on the run's steps (each call is stopped long before the end)."""
    for chunk_steps in {*spec.chunk_steps.values(), bench_sweep.ACCELERATOR_CHUNK_STEPS}:
        config = bench_sweep.sweep_config(chunk_steps)
        assert config.steps >= max(CPU_PARTS_MIN_STEPS, CPU_CONV_PARTS_MIN_STEPS)
        assert config.steps % chunk_steps == 0


def test_auto_in_parts_is_judged_on_its_own_samples():
    """A vmap in parts is not strategy vmap's program: the target ratio is auto's own samples
    over the best jaxdl strategy's, not the vmap strategy's (1.0 here by construction), and the
    table says how many parts auto ran."""

    def timing(seconds):
        return common.Timing([seconds] * 3, 1)

    timings = {"auto": timing(1.0), "vmap": timing(2.0), "map": timing(3.0)}
    timings.update({name: timing(4.0) for name in bench_sweep.HAND})
    settings = bench_sweep.Settings(ks=(8,), repeats=3, target_s=0.1, min_chunks=1, whole_run=False)

    def target_row(parts):
        measured = bench_sweep.Measured(timings, {}, "vmap", 100, parts)
        table = bench_sweep.tables({"mlp": {8: measured}}, settings)[1]
        (row,) = table.rows
        verdict = row[table.columns.index("best jaxdl") + 1]  # the target after best jaxdl
        return {**dict(zip(table.columns, row, strict=True)), "verdict": verdict}

    row = target_row(4)
    assert row["auto ran"] == "vmap, 4 parts"
    assert row["auto's choice / best jaxdl"] == pytest.approx(2.0)  # auto / vmap
    assert row["verdict"] == "met (≥ 0.95)"
    row = target_row(None)  # unknown parts: auto's own samples too
    assert row["auto ran"] == "vmap" and row["auto's choice / best jaxdl"] == pytest.approx(2.0)
    row = target_row(1)  # plain vmap: auto runs vmap's program, judged on vmap's samples
    assert row["auto's choice / best jaxdl"] == pytest.approx(1.0)
