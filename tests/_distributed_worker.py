"""The small fits and sweep of the scale-out tests, and the harness that runs them in subprocesses.

Imported by the tests: `reference` trains them on the test process's single device, and
`run_workers` starts this file as a script in subprocesses (given ``XLA_FLAGS`` host devices in
their environment, before their jax starts) while the reference trains. As a script, it trains
them on a mesh, after joining a multi-process run if given a coordinator, and process 0 writes
the final params to an ``.npz``:

    python tests/_distributed_worker.py OUT.npz --fit-mesh data=4 --norm-mesh data=4
        --sweep-mesh members=2,data=2
        [--coordinator-address 127.0.0.1:PORT --num-processes 2 --process-id I]
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
import traceback

import jax
import numpy as np

import jaxdl
from jaxdl import distributed, sharding

CONFIG = jaxdl.TrainConfig(
    steps=20, batch_size=32, chunk_steps=10, eval_every=20, optimizer="momentum"
)
AXES = {"seed": [0, 1, 2], "lr": [0.05, 0.1]}  # 6 members: padded to 8 on members=4
SEED = 3
TIMEOUT_S = 120  # a hung worker fails its test instead of hanging the session


def _data() -> jaxdl.data.Dataset:
    return jaxdl.data.load("digits").subset(256, 64)


def _model() -> jaxdl.Layer:
    return jaxdl.mlp((16,))


def _norm_model() -> jaxdl.Layer:
    """Batch norm, whose statistics span the whole batch (not each device's rows), and dropout,
    whose mask differs per example (not repeated per device)."""
    return jaxdl.convnet((4,), kernel=3, norm="batch", hidden=(16,), dropout=0.3)


def _flat(prefix: str, params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def train_fit(mesh=None) -> dict[str, np.ndarray]:
    """Final params of the test's `fit` run, ``{"fit['dense1']['w']": array, ...}``."""
    state, _ = jaxdl.fit(_model(), _data(), CONFIG, jaxdl.Hparams(lr=0.1), seed=SEED, mesh=mesh)
    return _flat("fit", state.params)


def train_norm(mesh=None) -> dict[str, np.ndarray]:
    """Final params and running statistics of a `fit` of `_norm_model`,
    ``{"norm['params']['conv1']['w']": array, ..., "norm['state']['norm1']['mean']": ...}``."""
    model, hparams = _norm_model(), jaxdl.Hparams(lr=0.1)
    state, _ = jaxdl.fit(model, _data(), CONFIG, hparams, seed=SEED, mesh=mesh)
    return _flat("norm", {"params": state.params, "state": state.model_state})


def train_sweep(mesh=None) -> dict[str, np.ndarray]:
    """Final params of every member of the test's sweep, ``{"sweep/0['dense1']['w']": ...}``."""
    result = jaxdl.sweep(_model(), _data(), AXES, config=CONFIG, mesh=mesh)
    found = {}
    for i, state in enumerate(result.states):
        found.update(_flat(f"sweep/{i}", state.params))
    return found


RUNS = {"fit": train_fit, "norm": train_norm, "sweep": train_sweep}
MESH_OPTIONS = {"--fit-mesh": "fit", "--norm-mesh": "norm", "--sweep-mesh": "sweep"}


@functools.cache
def reference(run: str) -> dict[str, np.ndarray]:
    """``RUNS[run]`` ("fit", "norm", "sweep") on the default device, no mesh (cached for the
    session)."""
    return RUNS[run]()


def assert_matches_reference(found, run: str, prefix: str = "") -> None:
    """Each reference array of ``run`` (a key of `RUNS`) within 1e-5 of ``found[prefix + name]``."""
    expected = reference(run)
    assert expected, run
    for name, value in expected.items():
        np.testing.assert_allclose(found[prefix + name], value, atol=1e-5, err_msg=name)


def run_workers(arguments: list[list[str]], num_devices: int) -> None:
    """Runs one worker per argument list, each with ``num_devices`` host devices, and trains the
    reference here meanwhile; as soon as one fails (or after `TIMEOUT_S`), kills the others.

    Raises:
      AssertionError: with every worker's output if one did not exit cleanly.
    """
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count="
    env = {**os.environ, "XLA_FLAGS": f"{flags}{num_devices}".strip(), "JAX_PLATFORMS": "cpu"}
    workers, logs = [], []
    try:
        for args in arguments:
            logs.append(tempfile.TemporaryFile("w+"))  # a file: a full pipe would block a worker
            command = [sys.executable, __file__, *args]
            workers.append(subprocess.Popen(command, env=env, stdout=logs[-1], stderr=logs[-1]))
        for run in {MESH_OPTIONS[a] for args in arguments for a in args if a in MESH_OPTIONS}:
            reference(run)  # the references the workers' runs are compared with
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            codes = [w.poll() for w in workers]
            if None not in codes or any(codes):  # a peer of a failed worker would hang
                break
            time.sleep(0.05)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    outputs = []
    for worker, log in zip(workers, logs, strict=True):
        log.seek(0)
        outputs.append(f"--- {worker.args[2:]} exit {worker.returncode}:\n{log.read()}")
        log.close()
    assert all(w.returncode == 0 for w in workers), "\n".join(outputs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", help="the .npz to write; may name {process}")
    parser.add_argument("--fit-mesh")
    parser.add_argument("--norm-mesh")
    parser.add_argument("--sweep-mesh", action="append", default=[])
    parser.add_argument("--coordinator-address")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    joined = (args.coordinator_address, args.num_processes, args.process_id)
    distributed.initialize(*joined)
    if args.num_processes:  # a second call joins nothing; another index than the run's is refused
        assert distributed.initialize(*joined) is True
        other = (args.process_id + 1) % args.num_processes
        try:
            distributed.initialize(args.coordinator_address, args.num_processes, other)
        except ValueError as error:
            assert f"already joined a run as num_processes={args.num_processes}" in str(error)
        else:
            raise AssertionError("initialize accepted another process_id than the run's")
    jax.config.update("jax_numpy_dtype_promotion", "strict")  # as tests/conftest.py
    jax.config.update("jax_numpy_rank_promotion", "raise")
    results = {"num_devices": np.asarray(jax.device_count())}
    if args.fit_mesh:
        results.update(train_fit(sharding.make_mesh(args.fit_mesh)))
    if args.norm_mesh:
        results.update(train_norm(sharding.make_mesh(args.norm_mesh)))
    for spec in args.sweep_mesh:
        sweep = train_sweep(sharding.make_mesh(spec))
        results.update({f"{spec}:{name}": value for name, value in sweep.items()})
    if distributed.is_main_process():
        np.savez(args.out.format(process=jax.process_index()), **results)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # skip jax's exit barrier, which would wait for the peers this failure stalls
