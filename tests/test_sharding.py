"""Meshes: spec parsing, and data- and member-parallel runs equal to the single-device run.

The multi-device runs happen in a subprocess with 4 host devices (``XLA_FLAGS`` must be set before
jax starts, and this process keeps its single device), while this process trains the reference.
"""

import jax
import numpy as np
import pytest
from _distributed_worker import assert_matches_reference, run_workers

from jaxdl import sharding


def test_mesh_specs_parse():
    assert sharding.parse_mesh("data=4") == {"data": 4}
    assert sharding.parse_mesh(" members = 2 , data=2 ") == {"members": 2, "data": 2}
    assert sharding.parse_mesh({"members": 4}) == {"members": 4}
    assert sharding.parse_mesh(None) == {}
    mesh = sharding.make_mesh()  # every device (here one) on data
    assert dict(mesh.shape) == {"members": 1, "data": len(jax.devices())}
    assert sharding.mesh_spec(mesh) == f"members=1,data={len(jax.devices())}"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("batch=4", "mesh axis 'batch' is unknown; valid: members, data"),
        ("data4", "expected entries like 'data=4'"),
        ("data=0", "axis 'data': expected a positive int size, got 0"),
        ("data=2,data=2", "axis 'data' given twice"),
        ({"data": 2.0}, "expected a positive int size, got 2.0"),
        (4, r"expected a spec like 'data=4' or \{'data': 4\}, got int 4"),
        (["data=4"], r"got list \['data=4'\]"),
    ],
)
def test_bad_mesh_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        sharding.parse_mesh(spec)


def test_mesh_must_use_every_device():
    devices = jax.devices()[:1]
    with pytest.raises(ValueError, match="mesh members=2,data=2 needs 4 devices, but 1 are used"):
        sharding.make_mesh("members=2,data=2", devices)


def test_mesh_needs_a_device():
    with pytest.raises(ValueError, match="devices is empty; expected at least one device"):
        sharding.make_mesh(None, [])


def test_batch_and_members_must_split_evenly():
    mesh = sharding.make_mesh("data=1")
    sharding.check_program(mesh, batch_size=3, population=False)
    # the checks read the mesh's shape only; a 1-device mesh with the shape of 4 devices
    fake = type("FakeMesh", (), {"shape": {"members": 2, "data": 2}})()
    with pytest.raises(ValueError, match="batch_size 3 does not split .* use a multiple of 2"):
        sharding.check_program(fake, batch_size=3, population=True)
    with pytest.raises(ValueError, match="a single run .* has no members to split"):
        sharding.check_program(fake, batch_size=4, population=False)


def test_data_and_member_parallel_runs_equal_the_single_device_run(tmp_path):
    out = tmp_path / "params.npz"
    sweeps = ["--sweep-mesh", "members=2,data=2", "--sweep-mesh", "members=4"]
    fits = ["--fit-mesh", "data=4", "--norm-mesh", "data=4"]
    run_workers([[str(out), *fits, *sweeps]], num_devices=4)
    found = dict(np.load(out))
    assert int(found["num_devices"]) == 4
    assert_matches_reference(found, "fit")
    assert_matches_reference(found, "norm")  # batch statistics over the whole batch
    assert_matches_reference(found, "sweep", "members=2,data=2:")
    assert_matches_reference(found, "sweep", "members=4:")  # 6 members padded to 8
