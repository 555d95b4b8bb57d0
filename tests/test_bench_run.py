"""Tests of the benchmark runner and the choices the benchmarks make by backend (`bench.run`,
`bench.bench_sweep`): results named by backend, ``--ks`` checked, CPU chunk lengths and
population sizes, and what an accelerator changes (no CPU-only limits, K up to 1024)."""

import math
import os
import sys
import types

import jax
import pytest

from bench import bench_convnet, bench_startup, bench_sweep, common
from bench import run as bench_run
from bench.common import Table

SPECS = {spec.key: spec for spec in bench_sweep.SPECS}


def test_chunk_steps_on_a_cpu_follow_the_largest_listed_population_not_above_k():
    spec = SPECS["mlp"]  # {1: 100, 8: 100, 32: 50, 128: 25}
    assert [bench_sweep.chunk_steps_for(spec, k) for k in (1, 8, 32, 128)] == [100, 100, 50, 25]
    assert bench_sweep.chunk_steps_for(spec, 64) == 50
    assert bench_sweep.chunk_steps_for(spec, 1024) == 25
    assert bench_sweep.max_members(SPECS["convnet"]) == {"hand_vmap_scan": 1}
    assert bench_sweep.population_sizes() == (1, 8, 32, 128)
    assert bench_sweep.population_sizes(quick=True) == (1, 8)


def test_an_accelerator_times_up_to_1024_members_without_the_cpu_limits(monkeypatch):
    monkeypatch.setattr(common, "on_accelerator", lambda: True)
    assert bench_sweep.population_sizes() == (1, 8, 32, 128, 512, 1024)
    assert bench_sweep.population_sizes(quick=True) == (1, 8)
    assert bench_sweep.max_members(SPECS["convnet"]) == {}
    for spec in SPECS.values():
        assert bench_sweep.chunk_steps_for(spec, 1024) == bench_sweep.ACCELERATOR_CHUNK_STEPS
    assert common.peak_size() == 8192


def test_the_convnet_tables_name_the_conv_auto_runs_on_the_backend(monkeypatch):
    assert bench_convnet.auto_conv() == "canonical_conv"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert bench_convnet.auto_conv() == "lax.conv"  # impl="auto" is XLA's conv off the CPU


def test_pytorch_peers_stay_on_the_cpu_when_jax_does():
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True))
    assert common.torch_device(fake_torch) == "cpu"  # JAX's backend here is the CPU
    common.torch_sync(fake_torch)  # nothing to wait for


@pytest.fixture
def tiny_benchmark(monkeypatch):
    """A registered benchmark ``tiny`` of one table, and a cheap matmul peak."""
    module = types.ModuleType("bench_tiny_for_tests")
    calls = []

    def run(quick, **kwargs):
        calls.append((quick, kwargs))
        return [Table("tiny", "Tiny", ["a"], [[1.0]])]

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(bench_run.BENCHMARKS, "tiny", module.__name__)
    monkeypatch.setattr(
        common, "matmul_peak", lambda repeats: {"jax_gflops": 1.0, "jax_best_gflops": 1.0}
    )
    return calls


def test_a_partial_run_writes_results_named_by_backend(
    tiny_benchmark, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(common, "import_torch", lambda: None)
    assert bench_run.main(["--only", "tiny", "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["cpu-tiny.json", "cpu-tiny.md"]
    report = (tmp_path / "cpu-tiny.md").read_text()
    assert report.startswith("# jaxdl benchmarks (CPU, ")
    assert "### Tiny" in report and "JAX / backend / device" in report
    assert "| PyTorch (threads, device) | not installed |" in report  # not "None (None, None)"
    assert tiny_benchmark == [(False, {})]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "sweep", "--ks", "8,x"], "--ks: expected comma-separated positive integers"),
        (["--only", "sweep", "--ks", "0,8"], "--ks: population sizes must be positive"),
        (["--only", "tiny", "--ks", "8"], "add sweep to --only"),
        (["--only", "nope"], "unknown benchmark"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(tiny_benchmark, argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_run.main(argv)
    assert message in capsys.readouterr().err
    assert tiny_benchmark == []


def test_ks_reach_the_sweep_benchmark_and_name_its_results(tiny_benchmark, monkeypatch, tmp_path):
    monkeypatch.setitem(bench_run.BENCHMARKS, "sweep", bench_run.BENCHMARKS["tiny"])
    assert bench_run.main(["--only", "sweep", "--ks", "512,1024", "--out", str(tmp_path)]) == 0
    assert tiny_benchmark == [(False, {"ks": (512, 1024)})]
    assert sorted(os.listdir(tmp_path)) == ["cpu-sweep-k512-1024.json", "cpu-sweep-k512-1024.md"]


def test_population_sizes_parse_in_order_without_duplicates():
    assert common.parse_ks("512, 1024,512") == (512, 1024)
    assert common.parse_ks("") == ()
    with pytest.raises(ValueError, match="must be positive"):
        common.parse_ks("8,-3")


@pytest.mark.parametrize(
    "n, ranks",  # the textbook 95 % ranks of the median's order-statistic interval
    [(1, (1, 1)), (5, (1, 5)), (6, (1, 6)), (10, (2, 9)), (15, (4, 12)), (20, (6, 15)),
     (40, (14, 27))],
)  # fmt: skip
def test_median_ci_takes_the_binomial_order_statistics(n, ranks):
    values = [10.0 * rank for rank in range(n, 0, -1)]  # unsorted on purpose
    assert common.median_ci(values) == (10.0 * ranks[0], 10.0 * ranks[1])


def test_median_ci_of_nothing_is_nan():
    assert all(math.isnan(v) for v in common.median_ci([]))


def test_startup_subprocesses_alternate_which_goes_first(monkeypatch):
    """A fresh process right after another (warm page cache, one more core free) is not the
    same as one after a pause: neither import nor first step always goes first."""
    order = []

    def run_script(code, *args, cache_dir=None):
        order.append("jax, optax" if "import jax, optax\n" in code else "jaxdl")
        return {"result": {"s": 1.0, "total": 1.0, "init": 0.5, "step": 0.5}, "stderr": ""}

    monkeypatch.setattr(bench_startup, "run_script", run_script)
    monkeypatch.setattr(common, "import_torch", lambda: None)
    bench_startup.run(quick=True)  # 3 import pairs, then one jaxdl first step
    imports = [order[i : i + 2] for i in range(0, 6, 2)]
    assert [pair[0] for pair in imports] == ["jaxdl", "jax, optax", "jaxdl"]
    assert all(sorted(pair) == ["jax, optax", "jaxdl"] for pair in imports)
