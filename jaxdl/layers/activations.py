"""Element-wise activations as parameter-free layers, and their lookup by name.

Each of `sigmoid`, `tanh`, `relu`, `gelu`, `elu`, `leaky_relu` (slope 0.01), `softplus`,
`log_sigmoid` and `identity` is a `Layer` mapping ``[batch, ...]`` to the same shape, computed with
the ``jax.nn`` function of that name.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdl.layers._util import param_dtype
from jaxdl.types import Layer


def elementwise(fn: Callable[[jax.Array], jax.Array], kind: str) -> Layer:
    """A parameter-free `Layer` applying ``fn`` to every element.

    Args:
      fn: ``fn(x) -> y`` of the same shape.
      kind: the layer's kind name (``"relu"``), used for generated names and errors.

    Returns:
      A `Layer` mapping ``[batch, ...]`` to ``[batch, ...]``, in the input's dtype if floating,
      else float32.
    """

    def init(key, x):
        return {}, {}

    def apply(params, state, x, *, key=None, train=False):
        x = jnp.asarray(x)
        return fn(x.astype(param_dtype(x))), state  # integers as float32, as every layer takes them

    return Layer(init, apply, kind)


sigmoid = elementwise(jax.nn.sigmoid, "sigmoid")
tanh = elementwise(jax.numpy.tanh, "tanh")
relu = elementwise(jax.nn.relu, "relu")
gelu = elementwise(jax.nn.gelu, "gelu")
elu = elementwise(jax.nn.elu, "elu")
leaky_relu = elementwise(jax.nn.leaky_relu, "leaky_relu")  # negative slope 0.01
softplus = elementwise(jax.nn.softplus, "softplus")
log_sigmoid = elementwise(jax.nn.log_sigmoid, "log_sigmoid")
identity = elementwise(lambda x: x, "identity")

_BY_NAME: dict[str, Layer] = {
    layer.kind: layer
    for layer in (sigmoid, tanh, relu, gelu, elu, leaky_relu, softplus, log_sigmoid, identity)
}
NAMES: tuple[str, ...] = tuple(_BY_NAME)


def activation(name: str | Layer) -> Layer:
    """The activation layer called ``name``.

    Args:
      name: one of `NAMES` (``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"gelu"``, ``"elu"``,
        ``"leaky_relu"``, ``"softplus"``, ``"log_sigmoid"``, ``"identity"``), or a `Layer`, returned
        as it is.

    Returns:
      A parameter-free `Layer` that keeps the input's shape.
    """
    if isinstance(name, Layer):
        return name
    if name not in _BY_NAME:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(NAMES)}")
    return _BY_NAME[name]
