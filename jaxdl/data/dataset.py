"""The `Dataset` container every loader returns, and `DataError`, the error every loader raises."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxdl._checks import is_count


class DataError(ValueError):
    """A data set that cannot be loaded or is malformed; the message names the file or split."""


class Dataset(NamedTuple):
    """A classification data set held in host memory as numpy arrays, split into train and test.

    The arrays stay numpy so that loading never touches an accelerator; the trainer moves them to
    the device.

    Attributes:
      x_train: training inputs, shape ``[num_train, ...features]``, float32 (channels last).
      y_train: training labels, shape ``[num_train]``, int32 in ``[0, num_classes)``.
      x_test: test inputs, shape ``[num_test, ...features]``, float32.
      y_test: test labels, shape ``[num_test]``, int32 in ``[0, num_classes)``.
      num_classes: the number of classes.
      name: the name the data set was loaded under (``"digits"``, ``"mnist1d"``...).

    Example:
      >>> ds = jaxdl.data.load("digits")
      >>> ds.input_shape, ds.num_train, ds.num_test
      ((8, 8, 1), 1437, 360)
    """

    x_train: np.ndarray  # [num_train, ...features], float32
    y_train: np.ndarray  # [num_train], int32
    x_test: np.ndarray  # [num_test, ...features], float32
    y_test: np.ndarray  # [num_test], int32
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, without the batch axis (``(28, 28, 1)`` for MNIST)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        """The number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """The number of test examples."""
        return int(self.x_test.shape[0])

    def subset(self, num_train: int | None = None, num_test: int | None = None) -> Dataset:
        """The first examples of each split, for quick tests.

        Args:
          num_train: how many training examples to keep; ``None`` keeps them all.
          num_test: how many test examples to keep; ``None`` keeps them all.

        Returns:
          A `Dataset` with ``x_train`` of shape ``[num_train, ...features]`` and ``x_test`` of
          shape ``[num_test, ...features]``; the arrays are views of this one's.
        """
        num_train = _check_count("num_train", num_train, self.num_train, self.name)
        num_test = _check_count("num_test", num_test, self.num_test, self.name)
        return self._replace(
            x_train=self.x_train[:num_train],
            y_train=self.y_train[:num_train],
            x_test=self.x_test[:num_test],
            y_test=self.y_test[:num_test],
        )


def _check_count(field: str, count: int | None, available: int, name: str) -> int:
    """``count`` if it is a positive int no larger than ``available``; ``available`` if None."""
    if count is None:
        return available
    if not is_count(count):
        raise DataError(f"{name}: subset {field} must be a positive int, got {count!r}")
    if count > available:
        raise DataError(f"{name}: subset asked for {field}={count} but the split has {available}")
    return int(count)
