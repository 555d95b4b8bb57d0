"""Data sets as numpy arrays in host memory, their on-disk readers, and on-device batch indices."""

from jaxdl.data.batching import chunk_indices, epoch_permutation, steps_per_epoch
from jaxdl.data.builtin import load
from jaxdl.data.dataset import DataError, Dataset
from jaxdl.data.readers import read_cifar10_batch, read_idx, read_npz
from jaxdl.data.validation import validate

__all__ = [
    "DataError",
    "Dataset",
    "chunk_indices",
    "epoch_permutation",
    "load",
    "read_cifar10_batch",
    "read_idx",
    "read_npz",
    "steps_per_epoch",
    "validate",
]
