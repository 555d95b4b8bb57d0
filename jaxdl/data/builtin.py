"""`load`: data sets by name, generated in-process (digits, MNIST-1D) or read from local files.

Nothing here touches the network: file formats read the path they are given.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxdl.data.dataset import DataError, Dataset
from jaxdl.data.readers import PathLike, read_cifar10_batch, read_idx, read_npz
from jaxdl.data.validation import check_same_features, validate

DIGITS_TEST_FRACTION = 0.2  # 360 of 1797 images, stratified by class
NPZ_TEST_FRACTION = 0.2  # split off the end of an .npz that holds only x and y
MAX_CLASSES = int(np.iinfo(np.int32).max)  # labels are stored as int32, so lie below this

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_TEST = "test_batch"


def load(name: str, *, path: PathLike | None = None, **kwargs) -> Dataset:
    """Loads a classification data set by name.

    Built in, generated without any file:

    * ``"digits"``: scikit-learn's 8x8 digits, 1797 images scaled to ``[0, 1]``; a fixed split
      stratified by class (``random_state=0``) keeps 20% (360 images) for test. ``x``:
      ``[N, 8, 8, 1]``.
    * ``"mnist1d"``: MNIST-1D from the ``mnist1d`` package's generator with its default
      arguments, 4000 train and 1000 test sequences. ``x``: ``[N, 40, 1]``.
    * ``"mnist1d_shuffled"``: the same with the 40 positions permuted by one fixed permutation,
      shared by every example (the package's ``shuffle_seq=True``).

    Read from ``path``:

    * ``"mnist"``, ``"fashion_mnist"``: a directory with the four IDX files
      ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
      ``t10k-labels-idx1-ubyte``, each raw or ``.gz``. ``x``: ``[N, 28, 28, 1]`` in ``[0, 1]``.
    * ``"cifar10"``: a ``cifar-10-batches-py`` directory (or its parent) with ``data_batch_1`` to
      ``data_batch_5`` and ``test_batch``. ``x``: ``[N, 32, 32, 3]`` in ``[0, 1]``.
    * ``"npz"``: an ``.npz`` file holding ``x_train``, ``y_train``, ``x_test``, ``y_test``, or just
      ``x`` and ``y``, whose last 20% become the test split. Inputs are cast to float32 as stored
      (not rescaled). Option ``num_classes`` (default: the largest label + 1).

    Every split is checked with `validate`.

    Args:
      name: one of ``"digits"``, ``"mnist1d"``, ``"mnist1d_shuffled"``, ``"mnist"``,
        ``"fashion_mnist"``, ``"cifar10"``, ``"npz"``.
      path: the file or directory to read; required by the file formats, refused by the
        built-in data sets.
      **kwargs: options of the data set (only ``num_classes``, for ``"npz"``).

    Returns:
      A `Dataset`: ``x_train`` ``[num_train, ...features]`` float32, ``y_train`` ``[num_train]``
      int32, ``x_test`` ``[num_test, ...features]`` float32, ``y_test`` ``[num_test]`` int32.

    Example:
      >>> ds = jaxdl.data.load("mnist1d")
      >>> ds.x_train.shape, ds.y_test.shape
      ((4000, 40, 1), (1000,))
    """
    if name not in _SOURCES:
        raise DataError(f"unknown data set {name!r}, expected one of {sorted(_SOURCES)}")
    source = _SOURCES[name]
    unknown = sorted(set(kwargs) - set(source.options))
    if unknown:
        raise DataError(
            f"data set {name!r}: unknown option(s) {unknown}, expected {list(source.options)}"
        )
    if source.needs_path and path is None:
        raise DataError(
            f"data set {name!r} is read from files: give their path (path=..., on the command "
            f"line --data-path)"
        )
    if not source.needs_path and path is not None:
        raise DataError(f"data set {name!r} is built in and takes no path, got path={path!r}")
    args = (name, Path(path)) if source.needs_path else (name,)
    return source.loader(*args, **kwargs)


class _Source(NamedTuple):
    """How to load one named data set."""

    loader: Callable[..., Dataset]  # (name, [path], **options) -> Dataset
    needs_path: bool  # whether it is read from files at `path`
    options: tuple[str, ...] = ()  # keyword options the loader accepts


def _finish(name, x_train, y_train, x_test, y_test, num_classes) -> Dataset:
    """Validates both splits and returns them as a `Dataset` of float32 inputs, int32 labels."""
    for split, x in (("train", x_train), ("test", x_test)):
        if np.asarray(x).dtype.kind not in "biuf":
            raise DataError(
                f"{name} {split}: inputs must be numbers (bool, int or float), "
                f"got dtype {np.asarray(x).dtype}"
            )
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    validate(x_train, y_train, num_classes=num_classes, name=f"{name} train")
    validate(x_test, y_test, num_classes=num_classes, name=f"{name} test")
    check_same_features(name, x_train.shape, x_test.shape)
    if num_classes > MAX_CLASSES:  # labels in range could still be 2**40, which wraps to 0
        raise DataError(
            f"{name}: num_classes must be at most {MAX_CLASSES} (labels are stored as int32), "
            f"got {num_classes} (the largest label + 1 unless given)"
        )
    # Labels are cast only after validation, so no out-of-range int64 can wrap around.
    return Dataset(
        x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32), num_classes, name
    )


def _digits(name: str) -> Dataset:
    """scikit-learn's digits: ``[1797, 8, 8, 1]`` in ``[0, 1]``, split 1437 / 360."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)  # x: [1797, 64] in 0..16
    x = (x / 16.0).reshape(-1, 8, 8, 1)  # [N, 8, 8, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=0
    )
    return _finish(name, x_train, y_train, x_test, y_test, num_classes=10)


def _mnist1d(name: str) -> Dataset:
    """MNIST-1D as generated by the ``mnist1d`` package: ``[N, 40, 1]``, 4000 / 1000."""
    x_train, y_train, x_test, y_test = _mnist1d_arrays(shuffle_seq=name == "mnist1d_shuffled")
    return _finish(name, x_train[..., None], y_train, x_test[..., None], y_test, num_classes=10)


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(shuffle_seq: bool) -> tuple[np.ndarray, ...]:
    """``(x_train [4000, 40], y_train, x_test [1000, 40], y_test)``, read-only, generated once.

    ``make_dataset`` reseeds numpy's and Python's global generators; their states are restored
    so that loading leaves no trace on the caller's randomness.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.shuffle_seq = shuffle_seq
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = (data["x"], data["y"], data["x_test"], data["y_test"])
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _idx(name: str, path: Path) -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files in a directory: ``[N, 28, 28, 1]``."""
    if not path.is_dir():
        raise DataError(f"data set {name!r}: expected a directory holding {_IDX_FILES}, got {path}")
    x_train, y_train, x_test, y_test = (read_idx(_find_idx(path, stem)) for stem in _IDX_FILES)
    for split, images in (("train", x_train), ("test", x_test)):
        if images.ndim != 3:
            raise DataError(f"{name} {split}: expected images [N, rows, cols], got {images.shape}")
        if images.dtype != np.uint8:  # _scale_bytes divides by 255: only bytes are pixels
            raise DataError(
                f"{name} {split}: expected uint8 images (IDX type code 0x08), got {images.dtype}"
            )
    x_train, x_test = _scale_bytes(x_train[..., None]), _scale_bytes(x_test[..., None])
    return _finish(name, x_train, y_train, x_test, y_test, num_classes=10)  # x: [N, 28, 28, 1]


def _scale_bytes(x: np.ndarray) -> np.ndarray:
    """uint8 pixels in 0..255 as float32 in [0, 1] (in float32, to spare a float64 copy)."""
    return x.astype(np.float32) / np.float32(255.0)


def _find_idx(directory: Path, stem: str) -> Path:
    """``directory/stem``, or ``directory/stem.gz`` if only that exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: missing IDX file {stem} (or {stem}.gz)")


def _cifar10(name: str, path: Path) -> Dataset:
    """CIFAR-10 from its python-version batches: ``[50000, 32, 32, 3]`` and ``[10000, ...]``."""
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if not path.is_dir():
        raise DataError(f"data set {name!r}: expected a cifar-10-batches-py directory, got {path}")
    train = [read_cifar10_batch(path / batch) for batch in _CIFAR10_TRAIN]
    x_test, y_test = read_cifar10_batch(path / _CIFAR10_TEST)
    x_train = np.concatenate([x for x, _ in train])  # [N, 32, 32, 3]
    y_train = np.concatenate([y for _, y in train])  # [N]
    x_train, x_test = _scale_bytes(x_train), _scale_bytes(x_test)
    return _finish(name, x_train, y_train, x_test, y_test, num_classes=10)


def _npz(name: str, path: Path, *, num_classes: int | None = None) -> Dataset:
    """An ``.npz`` with both splits, or with ``x``, ``y`` split 80% / 20% in stored order."""
    arrays = read_npz(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        splits = (arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
    elif {"x", "y"} <= arrays.keys():
        x, y = arrays["x"], arrays["y"]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise DataError(
                f"{path}: x and y must hold one entry per example, found x of shape {x.shape} "
                f"and y of shape {y.shape}"
            )
        num_train = len(x) - int(len(x) * NPZ_TEST_FRACTION)
        splits = (x[:num_train], y[:num_train], x[num_train:], y[num_train:])
    else:
        raise DataError(
            f"{path}: expected arrays x_train, y_train, x_test, y_test or x, y; "
            f"found {sorted(arrays)}"
        )
    if num_classes is None:
        num_classes = _infer_num_classes(splits[1], splits[3])
    return _finish(name, *splits, num_classes=num_classes)


def _infer_num_classes(*labels: np.ndarray) -> int:
    """The largest label + 1 over all splits."""
    usable = [y for y in labels if y.size and np.issubdtype(y.dtype, np.integer)]
    # Empty, non-integer or negative labels give at least 1 here; `validate` then reports them.
    return max([0, *(int(y.max()) for y in usable)]) + 1


_SOURCES: dict[str, _Source] = {
    "digits": _Source(_digits, needs_path=False),
    "mnist1d": _Source(_mnist1d, needs_path=False),
    "mnist1d_shuffled": _Source(_mnist1d, needs_path=False),
    "mnist": _Source(_idx, needs_path=True),
    "fashion_mnist": _Source(_idx, needs_path=True),
    "cifar10": _Source(_cifar10, needs_path=True),
    "npz": _Source(_npz, needs_path=True, options=("num_classes",)),
}
