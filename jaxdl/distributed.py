"""Several processes (hosts) as one JAX program: joining JAX's distributed runtime, which process
is the main one, and global arrays built from the values every process holds.

Every process runs the same script. After `initialize`, ``jax.devices()`` lists the devices of all
processes and a `jaxdl.sharding` mesh over them makes `jaxdl.fit` and `jaxdl.sweep` one SPMD
program: each process feeds its own devices and XLA's collectives (NCCL on GPU, gloo on CPU) join
them. Only the main process should write logs, plots and results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

ENV_COORDINATOR_ADDRESS = "JAXDL_COORDINATOR_ADDRESS"  # host:port of process 0's coordinator
ENV_NUM_PROCESSES = "JAXDL_NUM_PROCESSES"  # processes in the run
ENV_PROCESS_ID = "JAXDL_PROCESS_ID"  # this process's index, in [0, num_processes)

__all__ = ["global_array", "initialize", "is_main_process"]


def _from_env(value, *names: str) -> str | None:
    """``value`` if given, else the first of the environment variables ``names`` that is set."""
    if value is not None:
        return value
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


def _int(value, name: str, sources: str) -> int:
    """``value`` (an int, or the text of an environment variable) as an int, or an error naming
    ``name`` and where it was read from (``sources``)."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"distributed.initialize: {name} ({sources}) must be an int, got {value!r}")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
) -> bool:
    """Joins this process to a multi-process run through ``jax.distributed.initialize``.

    Call it first, before any JAX computation. Each argument left ``None`` is read from the
    environment: ``JAXDL_COORDINATOR_ADDRESS``, ``JAXDL_NUM_PROCESSES`` (else ``SLURM_NTASKS``),
    ``JAXDL_PROCESS_ID`` (else, with several processes, ``SLURM_PROCID``). With no coordinator
    address, inside a SLURM job of several tasks JAX detects the cluster itself (the coordinator
    is the first node of ``SLURM_STEP_NODELIST``); otherwise the run has one process and nothing
    is done. CPU collectives use gloo, so several CPU processes also work. Once this process has
    joined a run, a later call joins nothing: it checks the count and index it is given against
    the run's.

    Args:
      coordinator_address: ``"host:port"`` of the coordinator, which process 0 starts; every
        process passes the same address.
      num_processes: processes in the run.
      process_id: this process's index, in ``[0, num_processes)``.
      local_device_ids: the local devices this process uses, e.g. one GPU per process with
        ``local_device_ids=[local_rank]``. Default: all of them, except where JAX detects a
        SLURM (or Open MPI) job: there each task gets one GPU, its ``SLURM_LOCALID``, so run one
        task per GPU or pass the ids.

    Returns:
      Whether the run has several processes (``False``: single process, nothing was done).

    Raises:
      ValueError: a count that is not an int, ``num_processes < 1``, ``process_id`` outside
        ``[0, num_processes)``, or a coordinator or ``process_id`` without ``num_processes``
        (or, with several processes, ``num_processes`` without them); after this process
        joined a run, a ``num_processes`` or ``process_id`` other than the run's.

    Example:
      >>> jaxdl.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=rank)
      >>> mesh = jaxdl.sharding.make_mesh("data=16")  # every device of both hosts
    """
    address = _from_env(coordinator_address, ENV_COORDINATOR_ADDRESS)
    num = _from_env(num_processes, ENV_NUM_PROCESSES, "SLURM_NTASKS")
    index = _from_env(process_id, ENV_PROCESS_ID)
    for name, given in (("coordinator", address), ("process_id", process_id)):
        if num is None and given is not None:
            raise ValueError(
                f"distributed.initialize: {name} {given!r} given but not num_processes "
                f"(argument, or {ENV_NUM_PROCESSES})"
            )
    num_sources = f"argument, or {ENV_NUM_PROCESSES} / SLURM_NTASKS"
    if num is None:  # a process_id argument without a count was refused above
        index = None
    else:
        num = _int(num, "num_processes", num_sources)
        if num < 1:
            raise ValueError(
                f"distributed.initialize: num_processes ({num_sources}) must be at least 1, "
                f"got {num}"
            )
        if index is None and num > 1:  # not with one: each task of a SLURM step may run alone
            index = _from_env(None, "SLURM_PROCID")
    if index is not None:  # checked with one process too
        index = _int(index, "process_id", f"argument, or {ENV_PROCESS_ID} / SLURM_PROCID")
        if not 0 <= index < num:
            raise ValueError(
                f"distributed.initialize: process_id must be in [0, {num}), got {index!r}"
            )
    if jax.distributed.is_initialized():  # joined already (an earlier call): nothing to redo
        _check_joined(num, index)
        return jax.process_count() > 1
    if num is None or num == 1:
        return False
    # CPU collectives (so CPU processes can all-reduce): gloo, jax's default in recent versions.
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if address is None and "SLURM_JOB_ID" in os.environ:
        # JAX's SLURM detection fills in only what is None: the coordinator, and the count and
        # index not given here.
        jax.distributed.initialize(
            num_processes=num, process_id=index, local_device_ids=local_device_ids
        )
        return True
    if address is None or index is None:
        missing = [
            name
            for name, value in (("coordinator_address", address), ("process_id", index))
            if value is None
        ]
        raise ValueError(
            f"distributed.initialize: num_processes={num} but {' and '.join(missing)} not given "
            f"(arguments, or {ENV_COORDINATOR_ADDRESS} / {ENV_PROCESS_ID})"
        )
    jax.distributed.initialize(address, num, index, local_device_ids=local_device_ids)
    return True


def _check_joined(num_processes: int | None, process_id: int | None) -> None:
    """Raises unless the run this process joined already has the count and index asked for
    (``None``: not asked)."""
    joined = {"num_processes": jax.process_count(), "process_id": jax.process_index()}
    asked = {"num_processes": num_processes, "process_id": process_id}
    if any(value is not None and value != joined[name] for name, value in asked.items()):
        raise ValueError(
            f"distributed.initialize: this process already joined a run as "
            f"num_processes={joined['num_processes']}, process_id={joined['process_id']}; "
            f"got num_processes={num_processes}, process_id={process_id}"
        )


def is_main_process() -> bool:
    """Whether this is the process that writes logs, plots and results.

    Returns:
      ``jax.process_index() == 0``; ``True`` in a single-process run.
    """
    return jax.process_index() == 0


def global_array(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Global arrays laid out by ``sharding`` from values that every process holds in full.

    Every process has loaded the whole data set (and computes the same seeds and hyper-parameters),
    so each leaf's local value *is* its global value: ``jax.make_array_from_process_local_data``
    with ``global_shape`` equal to the local shape copies to each local device just the slice
    ``sharding`` gives it. Works with one process too. PRNG key leaves are placed as their raw
    key data and re-wrapped.

    Args:
      tree: a pytree of arrays (numpy, jax or typed PRNG keys), identical on every process.
      sharding: where the leaves go, e.g. ``NamedSharding(mesh, P())`` (replicated).

    Returns:
      The same pytree of ``jax.Array`` spanning the devices of ``sharding``.
    """

    def one(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, x.shape)

    return jax.tree.map(one, tree)
