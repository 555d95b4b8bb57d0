"""Where a run's arrays live on a mesh of devices: the ``members`` x ``data`` mesh, and the layouts
of data, state and batches that let plain ``jax.jit`` (GSPMD) spread `fit` and `sweep` over it.

The layout, for a `jaxdl.train.build_program` given a mesh:

* the data set (`DeviceData`) is replicated: every device holds all of it, so the batch of a step
  is still gathered by index on the device, with no host work and no communication;
* the batch of each step is split along ``data`` (``with_sharding_constraint`` right after the
  gather): each device computes the loss and gradients of its rows, and XLA all-reduces the
  gradients, so params and optimiser state stay replicated and identical. Results are the
  single-device run's to rounding: batch-norm statistics span the whole batch (all-reduced
  too, not one set per device), and each example's dropout mask is the one it gets on one device;
* in a population (a vmapped sweep), every per-member value (state, hparams, seeds) is split along
  ``members`` on its leading axis: each group of devices trains its own members;
* metrics and evaluations come back replicated, so every process can read them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl import distributed

MEMBERS = "members"  # mesh axis over the members of a population (a vmapped sweep)
DATA = "data"  # mesh axis over the examples of each batch (data parallelism)
AXES = (MEMBERS, DATA)

__all__ = [
    "AXES",
    "DATA",
    "MEMBERS",
    "check_program",
    "fetch",
    "gather",
    "make_mesh",
    "mesh_spec",
    "parse_mesh",
    "place_run",
    "platform",
    "place_shared",
    "run_sharding",
    "shard_batch",
    "shared_sharding",
]

_ENTRY = re.compile(r"\s*(\w+)\s*=\s*(\d+)\s*")


def parse_mesh(spec: str | Mapping[str, int] | None) -> dict[str, int]:
    """The axis sizes a mesh spec names; axes it leaves out have size 1.

    Args:
      spec: ``"data=4"``, ``"members=2,data=2"``, ``{"members": 2, "data": 2}``, or ``None``
        (``{}``: the caller puts every device on ``data``).

    Returns:
      ``{axis: size}`` for the axes named, each a positive int.

    Example:
      >>> parse_mesh("members=2,data=2")
      {'members': 2, 'data': 2}
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        entries = {}
        for entry in spec.split(","):
            match = _ENTRY.fullmatch(entry)
            if match is None:
                raise ValueError(
                    f"mesh {spec!r}: expected entries like 'data=4' or 'members=2,data=2', "
                    f"got {entry!r}"
                )
            name, size = match.group(1), int(match.group(2))
            if name in entries:
                raise ValueError(f"mesh {spec!r}: axis {name!r} given twice")
            entries[name] = size
        spec = entries
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"mesh: expected a spec like 'data=4' or {{'data': 4}}, got {type(spec).__name__} "
            f"{spec!r}"
        )
    for name, size in spec.items():
        if name not in AXES:
            raise ValueError(f"mesh axis {name!r} is unknown; valid: {', '.join(AXES)}")
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"mesh axis {name!r}: expected a positive int size, got {size!r}")
    return {name: int(size) for name, size in spec.items()}


def make_mesh(
    spec: str | Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A ``members`` x ``data`` mesh over ``devices``.

    Both axes always exist (an axis left out of ``spec`` has size 1), so the same shardings serve
    every run. Axis types are ``Auto``: GSPMD propagates the shardings jaxdl sets.

    Args:
      spec: the axis sizes (see `parse_mesh`); their product must be the number of devices.
        ``None`` puts every device on ``data``.
      devices: the devices, in mesh order; ``None`` is ``jax.devices()`` (every process's devices
        after `jaxdl.distributed.initialize`).

    Returns:
      A ``jax.sharding.Mesh`` of shape ``[members, data]``.

    Example:
      >>> mesh = make_mesh("members=2,data=2")  # 4 devices: 2 groups of members, batch split in 2
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:  # else spec None gives a data axis of size 0, and a batch split by 0
        raise ValueError("make_mesh: devices is empty; expected at least one device")
    sizes = parse_mesh(spec)
    if not sizes:
        sizes = {DATA: len(devices)}
    shape = tuple(sizes.get(axis, 1) for axis in AXES)
    if math.prod(shape) != len(devices):
        named = ",".join(f"{axis}={size}" for axis, size in zip(AXES, shape, strict=True))
        raise ValueError(
            f"mesh {named} needs {math.prod(shape)} devices, but {len(devices)} are used: "
            f"the axis sizes must multiply to {len(devices)}"
        )
    return Mesh(np.array(devices).reshape(shape), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def mesh_spec(mesh: Mesh) -> str:
    """The spec of a mesh, for logs and saved configs.

    Args:
      mesh: from `make_mesh`.

    Returns:
      ``"members=2,data=2"``: every axis and its size, which `make_mesh` accepts back.
    """
    return ",".join(f"{axis}={size}" for axis, size in mesh.shape.items())


def shared_sharding(mesh: Mesh) -> NamedSharding:
    """Where values every device holds whole go: the data set, metrics, a single run's state.

    Args:
      mesh: from `make_mesh`.

    Returns:
      ``NamedSharding(mesh, P())``: replicated.
    """
    return NamedSharding(mesh, P())


def run_sharding(mesh: Mesh, *, population: bool) -> NamedSharding:
    """Where per-run values (state, hparams, seeds) go.

    Args:
      mesh: from `make_mesh`.
      population: whether the values have a leading ``[members]`` axis (a vmapped sweep).

    Returns:
      ``NamedSharding(mesh, P("members"))`` for a population: each member on one group of
      devices; ``NamedSharding(mesh, P())`` (replicated) for a single run.
    """
    return NamedSharding(mesh, P(MEMBERS) if population else P())


def check_program(mesh: Mesh, *, batch_size: int, population: bool) -> None:
    """Raises before compiling if a run cannot be laid out on ``mesh``.

    Args:
      mesh: from `make_mesh`.
      batch_size: examples per step; must split evenly along ``data``.
      population: whether the program is vmapped over members; a single run (`fit`, or sweep
        strategy ``"map"``) has no members to split, so needs ``members=1``.

    Returns:
      ``None``; raises ``ValueError`` naming the mesh and the size that does not fit.
    """
    data, members = mesh.shape[DATA], mesh.shape[MEMBERS]
    if batch_size % data:
        raise ValueError(
            f"batch_size {batch_size} does not split along the mesh's data axis ({data} devices): "
            f"use a multiple of {data}"
        )
    if not population and members > 1:
        raise ValueError(
            f"mesh {mesh_spec(mesh)}: a single run (fit, or sweep strategy 'map') has no members "
            f"to split; use a mesh with members=1, or sweep strategy 'vmap' or 'chunked'"
        )


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Inside a jitted step: splits each leaf's leading ``[batch]`` axis along ``data``.

    Under ``jax.vmap(..., spmd_axis_name="members")`` the vmapped axis goes on ``members``.

    Args:
      tree: arrays of shape ``[batch, ...]``.
      mesh: from `make_mesh`.

    Returns:
      The same arrays, constrained to ``P("data")``.
    """
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P(DATA)))


def place_shared(tree: Any, mesh: Mesh) -> Any:
    """Replicates values that every process holds over every device of ``mesh``.

    Args:
      tree: a pytree of arrays, identical on every process (the data set).
      mesh: from `make_mesh`.

    Returns:
      The pytree as global arrays placed by `shared_sharding` (see
      `jaxdl.distributed.global_array`).
    """
    return distributed.global_array(tree, shared_sharding(mesh))


def place_run(tree: Any, mesh: Mesh | None, *, population: bool) -> Any:
    """Places per-run values (seeds, hparams) where a program built on ``mesh`` expects them.

    Args:
      tree: a pytree of arrays, identical on every process; ``[members, ...]`` leaves in a
        population.
      mesh: from `make_mesh`, or ``None``.
      population: whether the leaves have a leading ``[members]`` axis.

    Returns:
      The pytree as global arrays placed by `run_sharding`; ``tree`` itself if ``mesh`` is None.
    """
    if mesh is None:
        return tree
    return distributed.global_array(tree, run_sharding(mesh, population=population))


def gather(tree: Any, mesh: Mesh) -> Any:
    """Replicates arrays split over ``mesh`` (an all-gather), so every process can read them.

    Args:
      tree: a pytree of arrays on ``mesh``; with several processes, every process calls this.
      mesh: from `make_mesh`.

    Returns:
      The same values, placed by `shared_sharding`.
    """
    return jax.jit(lambda t: t, out_shardings=shared_sharding(mesh))(tree)


def platform(mesh: Mesh | None) -> str:
    """The platform a run's programs compile for: its mesh's devices', else the default one.

    Args:
      mesh: the run's mesh, or ``None`` (the default device).

    Returns:
      ``"cpu"``, ``"gpu"``, ``"tpu"``...
    """
    return jax.default_backend() if mesh is None else mesh.devices.flat[0].platform


def fetch(x: jax.Array | np.ndarray) -> np.ndarray:
    """A numpy copy of ``x``, also of an array split over the devices of several processes.

    Args:
      x: an array; if it is split over several processes, every process must call this (it is
        an all-gather).

    Returns:
      ``x``'s whole value as a numpy array of the same shape.
    """
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
