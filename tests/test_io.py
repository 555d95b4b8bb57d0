"""Atomic writes: a file is its old or its new version, never half, and no temp file stays."""

import json
import os
import re
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdl import io


def _leftovers(folder):
    """Temporary files `write_atomic` left in ``folder``."""
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


def _failing(message):
    """A stand-in for an ``os`` function that fails like a full disk or a crash."""

    def fail(*args, **kwargs):
        raise OSError(message)

    return fail


def test_write_atomic_text_and_bytes(tmp_path):
    path = tmp_path / "a.txt"
    io.write_atomic(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    io.write_atomic(str(path), b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_new_file_gets_the_umask_permissions(tmp_path):
    path = tmp_path / "a.txt"
    io.write_atomic(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "results.json"
    io.write_atomic(path, "old contents")
    monkeypatch.setattr(os, failing, _failing("disk full"))
    with pytest.raises(OSError, match="disk full"):
        io.write_atomic(path, "new contents, half written")
    monkeypatch.undo()
    assert path.read_text() == "old contents"
    assert _leftovers(tmp_path) == []


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", _failing("no"))
    with pytest.raises(OSError):
        io.write_atomic(tmp_path / "new.txt", "x")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_write_json_converts_numpy_and_jax_values(tmp_path):
    path = tmp_path / "r.json"
    obj = {
        "f32": np.float32(0.5),
        "i64": np.int64(3),
        "array": np.arange(3),
        "jax": jnp.ones((2,), jnp.float32),
        "tuple": (1, 2),
        "nan": float("nan"),
        "inf_array": np.array([1.0, np.inf]),
        "bool": np.bool_(True),
        1: "int key",
    }
    io.write_json_atomic(path, obj)
    text = path.read_text()
    assert text.endswith("\n")
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert loaded == {
        "f32": 0.5,
        "i64": 3,
        "array": [0, 1, 2],
        "jax": [1.0, 1.0],
        "tuple": [1, 2],
        "nan": None,
        "inf_array": [1.0, None],
        "bool": True,
        "1": "int key",
    }


def test_to_jsonable_refuses_arbitrary_objects():
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        io.to_jsonable({"x": object()})


def test_append_jsonl_rows_and_failed_append(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    io.append_jsonl(path, {"step": 1, "loss": np.float32(2.5)})
    io.append_jsonl(path, {"step": 2, "loss": 1.5})
    monkeypatch.setattr(os, "replace", _failing("crash"))
    with pytest.raises(OSError):
        io.append_jsonl(path, {"step": 3, "loss": 0.5})
    monkeypatch.undo()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 1.5}]
    assert _leftovers(tmp_path) == []


@settings(max_examples=25, deadline=None)
@given(old=st.binary(max_size=200), new=st.binary(max_size=200))
def test_write_atomic_round_trips_any_bytes(old, new):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "f.bin")
        io.write_atomic(path, old)
        io.write_atomic(path, new)
        with open(path, "rb") as f:
            assert f.read() == new
        assert os.listdir(folder) == ["f.bin"]


@pytest.mark.parametrize("bad", ['{"step": 2, "lo', '{"step": null}', "[1, 2]"])
def test_append_jsonl_names_the_file_and_line_of_a_bad_row(tmp_path, bad):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n' + bad + "\n")
    pattern = rf"^{re.escape(str(path))}: line 2 is not a JSON object with a numeric 'step': "
    with pytest.raises(ValueError, match=pattern):
        io.append_jsonl(path, {"step": 3}, after_step="step")
    assert path.read_text() == '{"step": 1}\n' + bad + "\n"


def test_append_jsonl_keeps_rows_without_the_step_key(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"note": "x"}\n{"step": 1}\n{"step": 5}\n')
    io.append_jsonl(path, {"step": 3}, after_step="step")
    assert path.read_text() == '{"note": "x"}\n{"step": 1}\n{"step": 3}\n'


def test_write_atomic_writes_through_a_symlink(tmp_path):
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "results.json"
    target.write_text("old")
    link = tmp_path / "results.json"
    link.symlink_to(target)
    io.write_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["results.json"]
