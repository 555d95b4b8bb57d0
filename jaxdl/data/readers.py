"""Readers of the on-disk formats data sets ship in: IDX (MNIST), CIFAR-10 batches and ``.npz``.

Readers decode a file into numpy arrays as stored (no scaling, no validation of labels); the
loaders in `jaxdl.data.builtin` scale and validate.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from jaxdl.data.dataset import DataError

PathLike = str | os.PathLike

# IDX type codes (third byte of the magic number) and the big-endian dtypes they stand for.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), raw or gzip-compressed.

    The header is a 4-byte magic number (two zero bytes, a type code, 0x08 for unsigned bytes,
    and the number of dimensions ``ndim``), then ``ndim`` big-endian uint32 sizes; the data
    follows in C order. MNIST images have magic 0x00000803 (``[N, 28, 28]`` uint8), labels
    0x00000801 (``[N]`` uint8). A file is gunzipped if its name ends in ``.gz`` or it starts
    with the gzip magic bytes.

    Args:
      path: the file.

    Returns:
      The array, shape as given by the header (``[N, rows, cols]`` or ``[N]``), in its stored
      dtype (uint8 for MNIST) and native byte order.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:  # "magic number 0x" would not say the file is empty or cut short
        raise DataError(
            f"{path}: {'empty' if not raw else 'truncated'} IDX file: expected at least the "
            f"4-byte magic number, found {len(raw)} bytes"
            + (" after decompression" if _is_gzip(path) else "")
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        codes = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
        raise DataError(
            f"{path}: not an IDX file: magic number 0x{raw[:4].hex()}, expected two zero bytes, "
            f"a type code ({codes}) and the number of dimensions, e.g. 0x00000803 for images"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"{path}: truncated IDX header: expected {header_size} bytes for {ndim} dimensions, "
            f"found {len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header_size + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "oversized"
        raise DataError(
            f"{path}: {kind} IDX file: expected {expected} bytes ({header_size}-byte header and "
            f"data of shape {shape}, {dtype}), found {len(raw)} bytes"
            + (" after decompression" if _is_gzip(path) else "")
        )
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_cifar10_batch(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads one batch file of the CIFAR-10 python version (``data_batch_1``, ``test_batch``).

    A batch is a pickled dict with ``b"data"``, shape ``[N, 3072]`` uint8 (each row the red, then
    green, then blue 32x32 plane), and ``b"labels"``, a list of ``N`` ints. The pickle is read with
    an unpickler that builds only plain containers and numpy arrays, so a file cannot run code.

    Args:
      path: the batch file.

    Returns:
      ``(x, y)``: ``x`` images, shape ``[N, 32, 32, 3]`` (channels last), uint8; ``y`` labels,
      shape ``[N]``, integer.
    """
    path = Path(path)
    with _open(path) as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()  # pickled by Python 2
        except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as err:
            raise DataError(f"{path}: not a CIFAR-10 batch pickle: {err}") from err
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    data, labels = _get(batch, "data", path), _get(batch, "labels", path)
    try:
        data, labels = np.asarray(data), np.asarray(labels)
    except ValueError as err:  # ragged lists, e.g. labels [[0], [1, 2]]
        raise DataError(f"{path}: expected data [N, 3072] and labels [N], got {err}") from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: expected data of shape [N, 3072], found {data.shape}")
    if data.dtype != np.uint8:  # a cast to uint8 would wrap 256 to 0 and truncate 0.5 to 0
        is_int = np.issubdtype(data.dtype, np.integer)
        if not is_int or (data.size and (data.min() < 0 or data.max() > 255)):
            low, high = (data.min(), data.max()) if data.size else (None, None)
            raise DataError(
                f"{path}: expected data of uint8 pixels in [0, 255], found dtype {data.dtype} "
                f"with values in [{low}, {high}]"
            )
    if labels.size == 0:  # np.asarray([]) is float64; an empty batch's labels are no floats
        labels = labels.astype(np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{path}: expected labels of shape [{data.shape[0]}] (one per image), "
            f"found {labels.shape}"
        )
    x = data.reshape(-1, 3, 32, 32)  # [N, C, H, W]
    x = x.transpose(0, 2, 3, 1)  # [N, H, W, C]
    return np.ascontiguousarray(x, dtype=np.uint8), labels


def read_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Reads every array of a ``.npz`` file (object arrays are refused: they would run code).

    Args:
      path: the ``.npz`` file.

    Returns:
      A dict from each stored name to its array, shapes as stored.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, expected a .npz file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        arrays = _load_arrays(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:  # EOFError: empty file
        raise DataError(f"{path}: cannot read as .npz: {err}") from err
    if isinstance(arrays, np.ndarray):
        raise DataError(
            f"{path}: expected a .npz archive of named arrays, found a .npy array of shape "
            f"{arrays.shape}, {arrays.dtype}"
        )
    return arrays


def _load_arrays(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    """Every array of a ``.npz`` by name, or the one array of a ``.npy`` (``np.load`` reads
    either); numpy's errors pass through."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def _read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped if it is gzip-compressed."""
    try:
        with _open(path) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read: {err}") from err


def _is_gzip(path: Path) -> bool:
    """Whether the file is gzip-compressed, by extension or by its first two bytes."""
    if path.suffix == ".gz":
        return True
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open(path: Path):
    """The file opened for binary reading, through gzip if it is compressed."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _get(batch: dict, key: str, path: Path):
    """``batch[b"key"]``, or ``batch["key"]`` for files pickled with text keys."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"{path}: expected key b{key!r}, found keys {sorted(map(str, batch))}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses every other global."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith(("numpy.core.", "numpy._core.")):
            # numpy 2 renamed numpy.core to numpy._core; resolve either name to the one installed.
            module = f"{_NUMPY_CORE}.{module.rsplit('.', 1)[1]}"  # .multiarray or .numeric
        return super().find_class(module, name)


_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"
