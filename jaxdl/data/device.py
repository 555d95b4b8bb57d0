"""A data set's arrays placed on the device (or replicated over a mesh), for batches drawn there."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxdl import sharding
from jaxdl.data.dataset import Dataset


class DeviceData(NamedTuple):
    """A data set's arrays on the device.

    Attributes:
      x_train: ``[N, ...features]`` float32.
      y_train: ``[N]`` int32.
      x_test: ``[M, ...features]`` float32.
      y_test: ``[M]`` int32.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def example_input(x) -> jax.ShapeDtypeStruct:
    """The example input a model's ``init`` reads: the shape and dtype of one example of ``x``.

    Slicing a device array (``x[:1]``) instead would compile a program before the run's own.

    Args:
      x: inputs ``[N, ...features]``: a NumPy or JAX array (only its shape and dtype are read).

    Returns:
      A ``jax.ShapeDtypeStruct`` of shape ``[1, ...features]`` in JAX's dtype for ``x``'s
      (float64 becomes float32 unless ``jax_enable_x64``).
    """
    return jax.ShapeDtypeStruct((1, *x.shape[1:]), jax.dtypes.canonicalize_dtype(x.dtype))


def to_device(data: Dataset, mesh: Mesh | None = None) -> DeviceData:
    """Moves a `Dataset`'s arrays to the default device, or replicates them over a mesh.

    Args:
      data: a `jaxdl.data.Dataset`.
      mesh: a `jaxdl.sharding.make_mesh` mesh: every device gets the whole data set.

    Returns:
      A `DeviceData` with the same arrays.
    """
    arrays = (data.x_train, data.y_train, data.x_test, data.y_test)
    if mesh is not None:
        return DeviceData(*sharding.place_shared(arrays, mesh))
    return DeviceData(*(jnp.asarray(a) for a in arrays))
