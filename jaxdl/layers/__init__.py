"""Layers: each constructor returns a `jaxdl.Layer`, a pair of pure ``init``/``apply`` functions."""

from jaxdl.layers.activations import (
    NAMES as ACTIVATIONS,
)
from jaxdl.layers.activations import (
    activation,
    elementwise,
    elu,
    gelu,
    identity,
    leaky_relu,
    log_sigmoid,
    relu,
    sigmoid,
    softplus,
    tanh,
)
from jaxdl.layers.combinators import serial, serial_outputs
from jaxdl.layers.conv import conv, conv1d, conv2d
from jaxdl.layers.dense import dense
from jaxdl.layers.dropout import dropout
from jaxdl.layers.normalization import batch_norm, layer_norm
from jaxdl.layers.pooling import avg_pool, max_pool, pool
from jaxdl.layers.reshape import flatten

__all__ = [
    "ACTIVATIONS",
    "activation",
    "avg_pool",
    "batch_norm",
    "conv",
    "conv1d",
    "conv2d",
    "dense",
    "dropout",
    "elementwise",
    "elu",
    "flatten",
    "gelu",
    "identity",
    "layer_norm",
    "leaky_relu",
    "log_sigmoid",
    "max_pool",
    "pool",
    "relu",
    "serial",
    "serial_outputs",
    "sigmoid",
    "softplus",
    "tanh",
]
