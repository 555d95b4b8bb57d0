"""Two processes on this host, 2 CPU devices each, joined by `jaxdl.distributed.initialize` (gloo
collectives), train like one process: data parallelism over the 4 global devices, and a sweep
whose members are split across the processes."""

import socket

import jax
import numpy as np
import pytest
from _distributed_worker import assert_matches_reference, run_workers

from jaxdl import distributed

DISTRIBUTED_ENV = (
    "JAXDL_COORDINATOR_ADDRESS",
    "JAXDL_NUM_PROCESSES",
    "JAXDL_PROCESS_ID",
    "SLURM_JOB_ID",
    "SLURM_NTASKS",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
    out = tmp_path / "params-{process}.npz"
    common = [str(out), "--fit-mesh", "data=4", "--sweep-mesh", "members=2,data=2"]
    common += ["--coordinator-address", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    run_workers([[*common, "--process-id", str(i)] for i in range(2)], num_devices=2)
    assert [p.name for p in tmp_path.iterdir()] == ["params-0.npz"]  # the main process only
    found = dict(np.load(tmp_path / "params-0.npz"))
    assert int(found["num_devices"]) == 4
    assert_matches_reference(found, "fit")
    assert_matches_reference(found, "sweep", "members=2,data=2:")


def test_single_process_is_a_no_op(monkeypatch):
    for name in DISTRIBUTED_ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1) is False
    assert distributed.is_main_process()


def test_missing_arguments_are_named(monkeypatch):
    for name in (*DISTRIBUTED_ENV, "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="num_processes=2 but process_id not given"):
        distributed.initialize("127.0.0.1:1234", num_processes=2)
    with pytest.raises(ValueError, match="coordinator '127.0.0.1:1234' given but not num_proc"):
        distributed.initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match="process_id 3 given but not num_processes"):
        distributed.initialize(process_id=3)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 3"):
        distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=3)
    monkeypatch.setenv("JAXDL_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="coordinator_address and process_id not given"):
        distributed.initialize()


def test_bad_process_counts_are_named(monkeypatch):
    for name in (*DISTRIBUTED_ENV, "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"num_processes \(.*\) must be at least 1, got 0"):
        distributed.initialize("127.0.0.1:1234", num_processes=0, process_id=0)
    monkeypatch.setenv("JAXDL_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAXDL_NUM_PROCESSES / SLURM_NTASKS.* int, got 'two'"):
        distributed.initialize("127.0.0.1:1234", process_id=0)
    monkeypatch.setenv("JAXDL_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAXDL_PROCESS_ID", "x")
    with pytest.raises(ValueError, match=r"process_id \(.*JAXDL_PROCESS_ID.*\) .* int, got 'x'"):
        distributed.initialize("127.0.0.1:1234")


def test_process_id_is_checked_with_one_process(monkeypatch):
    for name in (*DISTRIBUTED_ENV, "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 1\), got 3"):
        distributed.initialize("127.0.0.1:1234", num_processes=1, process_id=3)
    assert distributed.initialize("127.0.0.1:1234", num_processes=1, process_id=0) is False
    monkeypatch.setenv("JAXDL_NUM_PROCESSES", "1")  # one of several tasks, each run alone
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert distributed.initialize() is False
    monkeypatch.setenv("JAXDL_PROCESS_ID", "3")
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 1\), got 3"):
        distributed.initialize()


def test_arguments_reach_jax(monkeypatch):
    """What `jax.distributed.initialize` is given: every argument, also those SLURM could give."""
    for name in (*DISTRIBUTED_ENV, "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert distributed.initialize("10.0.0.1:1234", 2, 1, local_device_ids=[1]) is True
    assert calls.pop() == (("10.0.0.1:1234", 2, 1), {"local_device_ids": [1]})
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # no coordinator: JAX detects it from SLURM
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert distributed.initialize(num_processes=2, process_id=1, local_device_ids=0) is True
    assert calls.pop() == ((), {"num_processes": 2, "process_id": 1, "local_device_ids": 0})
    assert distributed.initialize() is True
    assert calls.pop() == ((), {"num_processes": 4, "process_id": 3, "local_device_ids": None})
