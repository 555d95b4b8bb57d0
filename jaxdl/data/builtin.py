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
from jaxdl.data.validation import check_labels, check_same_features, validate

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


def _finish(
    name, x_train, y_train, x_test, y_test, num_classes, *, sources=(None, None)
) -> Dataset:
    """Validates both splits and returns them as a `Dataset` of float32 inputs, int32 labels.

    ``sources`` says where each split was read from (``(train, test)``, e.g. the files); an
    error about a split ends with it, so that a message names the file.
    """
    x_train = _checked_split(name, "train", x_train, y_train, num_classes, sources[0])
    x_test = _checked_split(name, "test", x_test, y_test, num_classes, sources[1])
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


def _checked_split(name, split, x, y, num_classes, source: str | None) -> np.ndarray:
    """``x`` as float32 once the split passes `validate`; errors end with ``; in {source}``."""
    x = np.asarray(x)
    try:
        if x.dtype.kind not in "biuf":
            raise DataError(
                f"{name} {split}: inputs must be numbers (bool, int or float), got dtype {x.dtype}"
            )
        x = _as_float32(x, f"{name} {split}")
        validate(x, y, num_classes=num_classes, name=f"{name} {split}")
    except DataError as err:
        if source is None:
            raise
        raise DataError(f"{err}; in {source}") from None
    return x


def _as_float32(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` cast to float32, refusing finite values the cast would turn into inf.

    Left to the cast, 1e39 in float64 became inf, reported as "NaN or inf", with numpy's
    RuntimeWarning on the side.
    """
    with np.errstate(over="ignore"):  # an overflow is reported below, with the largest value
        cast = x.astype(np.float32)
    # Every int and float16 fits float32; `validate` refuses a scalar x with its own message.
    if x.dtype.kind != "f" or x.dtype.itemsize <= 4 or x.ndim == 0:
        return cast
    overflow = np.isinf(cast) & np.isfinite(x)  # [N, ...features]
    if overflow.any():
        first = int(np.argmax(overflow.reshape(len(x), -1).any(axis=1)))
        raise DataError(
            f"{name}: x has {int(overflow.sum())} value(s) that overflow float32 (largest "
            f"magnitude {np.abs(x[overflow]).max():.4g}, float32 holds at most "
            f"{np.finfo(np.float32).max:.4g}), the first in example {first}"
        )
    return cast


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
    train_images, train_labels, test_images, test_labels = (
        _find_idx(path, stem) for stem in _IDX_FILES
    )
    x_train, y_train = _idx_split(name, "train", train_images, train_labels)
    x_test, y_test = _idx_split(name, "test", test_images, test_labels)
    x_train, x_test = _scale_bytes(x_train[..., None]), _scale_bytes(x_test[..., None])
    sources = (f"{train_images} and {train_labels}", f"{test_images} and {test_labels}")
    # x: [N, 28, 28, 1]
    return _finish(name, x_train, y_train, x_test, y_test, num_classes=10, sources=sources)


def _idx_split(
    name: str, split: str, images_path: Path, labels_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """One split's images ``[N, rows, cols]`` uint8 and labels ``[N]``, each file checked as
    soon as it is read so that an error names it."""
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(
            f"{images_path}: expected images [N, rows, cols] (IDX magic 0x00000803), "
            f"found shape {images.shape}"
        )
    if images.dtype != np.uint8:  # _scale_bytes divides by 255: only bytes are pixels
        raise DataError(
            f"{name} {split}: expected uint8 images (IDX type code 0x08), got {images.dtype}"
        )
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected labels [N] (IDX magic 0x00000801), found shape {labels.shape}"
        )
    check_labels(labels, num_classes=10, name=str(labels_path))
    if len(images) != len(labels):
        raise DataError(
            f"{name} {split}: {images_path} has {len(images)} images but {labels_path} has "
            f"{len(labels)} labels"
        )
    return images, labels


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
    train = [_cifar10_batch(path / batch) for batch in _CIFAR10_TRAIN]
    x_test, y_test = _cifar10_batch(path / _CIFAR10_TEST)
    x_train = np.concatenate([x for x, _ in train])  # [N, 32, 32, 3]
    y_train = np.concatenate([y for _, y in train])  # [N]
    x_train, x_test = _scale_bytes(x_train), _scale_bytes(x_test)
    sources = (f"{path / _CIFAR10_TRAIN[0]} to {_CIFAR10_TRAIN[-1]}", str(path / _CIFAR10_TEST))
    return _finish(name, x_train, y_train, x_test, y_test, num_classes=10, sources=sources)


def _cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`read_cifar10_batch`, with the labels checked before the batches are joined, so that
    an error names the batch file and the index within it."""
    x, y = read_cifar10_batch(path)
    check_labels(y, num_classes=10, name=str(path))
    return x, y


def _npz(name: str, path: Path, *, num_classes: int | None = None) -> Dataset:
    """An ``.npz`` with both splits, or with ``x``, ``y`` split 80% / 20% in stored order."""
    arrays = read_npz(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        splits = (arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
        sources = (f"{path}, arrays x_train and y_train", f"{path}, arrays x_test and y_test")
    elif {"x", "y"} <= arrays.keys():
        x, y = arrays["x"], arrays["y"]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise DataError(
                f"{path}: x and y must hold one entry per example, found x of shape {x.shape} "
                f"and y of shape {y.shape}"
            )
        num_train = len(x) - int(len(x) * NPZ_TEST_FRACTION)
        splits = (x[:num_train], y[:num_train], x[num_train:], y[num_train:])
        # The test split's example i is x[num_train + i]: the slices say so.
        sources = (
            f"{path}, x[:{num_train}] and y[:{num_train}]",
            f"{path}, x[{num_train}:] and y[{num_train}:]",
        )
    else:
        raise DataError(
            f"{path}: expected arrays x_train, y_train, x_test, y_test or x, y; "
            f"found {sorted(arrays)}"
        )
    if num_classes is None:
        num_classes = _infer_num_classes(splits[1], splits[3])
    return _finish(name, *splits, num_classes=num_classes, sources=sources)


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
