"""Atomic file writing: every file jaxdl writes is either its old or its new version, never half.

A write goes to a temporary file in the same folder, is flushed to disk (``fsync``), then renamed
over the target with ``os.replace``, which POSIX and Windows perform atomically within one file
system. A crash or an exception at any point leaves the old file (or none) and no temporary file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

PathLike = str | os.PathLike

# The process's umask, read once: files made by mkstemp are private (0600), and a result file
# should get the same permissions as one made by open().
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: PathLike, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` atomically: readers see the old file or the new one, never a mix.

    Args:
      path: the file to write; its folder must exist. A symbolic link is written through: its
        target is replaced (its folder must be writable) and the link kept.
      data: the contents; ``str`` is encoded as UTF-8.

    Returns:
      None. On any error the old file is left as it was and the temporary file is removed.

    Example:
      >>> write_atomic("runs/a/notes.txt", "hello\\n")
    """
    path = os.path.realpath(path)  # the temporary file goes beside the file it replaces
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Flushes a folder's entries (the rename) to disk, where the platform allows it."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: numpy/jax scalars and arrays become numbers and lists.

    Tuples become lists, dataclasses dicts, paths strings; non-finite floats (NaN, inf) become
    ``None`` so that the output is strict JSON.

    Args:
      obj: a nest of dicts, lists, tuples, numbers, strings, numpy or jax arrays.

    Returns:
      The same nest made of ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``.
    """
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic) or hasattr(obj, "__array__"):
        return to_jsonable(np.asarray(obj).tolist())  # numpy and jax scalars and arrays
    raise TypeError(f"cannot write {type(obj).__name__} as JSON: {obj!r}")


def write_json_atomic(path: PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Writes ``obj`` as JSON (see `to_jsonable`), atomically, with a final newline.

    Args:
      path: the file to write.
      obj: a JSON-like nest, possibly holding numpy or jax values.
      indent: JSON indentation; ``None`` for one line.

    Returns:
      None.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    write_atomic(path, text + "\n")


def append_jsonl(path: PathLike, row: Mapping[str, Any], *, after_step: str | None = None) -> None:
    """Appends one JSON row to a JSON-lines file, atomically.

    The file is read and rewritten whole through `write_atomic`, so after a crash it holds either
    all rows before this one or all rows with it, never a torn last line. That costs O(file size)
    per row, which is fine for metrics logs (a row per chunk, thousands of rows at most).

    Args:
      path: the ``.jsonl`` file; created if missing.
      row: a JSON-like mapping (see `to_jsonable`), written on one line.
      after_step: a key of ``row`` (``"step"``): existing rows whose value is not below the new
        row's are dropped first, so a resumed run does not repeat the steps it redoes.

    Returns:
      None.

    Raises:
      ValueError: with ``after_step``, a line of the file that is not a JSON object with a
        numeric ``after_step`` (the message names the file and the line).
    """
    try:
        with open(path, "rb") as f:
            old = f.read()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    if after_step is not None and old:
        kept = []
        for number, line in enumerate(old.splitlines(keepends=True), start=1):
            if not line.strip():
                continue
            try:
                logged = json.loads(line)
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                logged = None
            value = logged.get(after_step, -1) if isinstance(logged, dict) else None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"{os.fspath(path)}: line {number} is not a JSON object with a numeric "
                    f"{after_step!r}: {line[:80]!r}"
                )
            if value < row[after_step]:
                kept.append(line)
        old = b"".join(kept)
    line = json.dumps(to_jsonable(row), allow_nan=False) + "\n"
    write_atomic(path, old + line.encode("utf-8"))
