"""jaxdl: deep nets as pure functions over parameter dicts, trained with jax.grad and optax."""

from jaxdl import initializers
from jaxdl.layers import (
    ACTIVATIONS,
    activation,
    avg_pool,
    batch_norm,
    conv,
    conv1d,
    conv2d,
    dense,
    dropout,
    elementwise,
    elu,
    flatten,
    gelu,
    identity,
    layer_norm,
    leaky_relu,
    log_sigmoid,
    max_pool,
    pool,
    relu,
    serial,
    sigmoid,
    softplus,
    tanh,
)
from jaxdl.losses import accuracy, mse, softmax_cross_entropy
from jaxdl.models import convnet, mlp
from jaxdl.types import Layer, LayerError

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Layer",
    "LayerError",
    "accuracy",
    "activation",
    "avg_pool",
    "batch_norm",
    "conv",
    "conv1d",
    "conv2d",
    "convnet",
    "dense",
    "dropout",
    "elementwise",
    "elu",
    "flatten",
    "gelu",
    "identity",
    "initializers",
    "layer_norm",
    "leaky_relu",
    "log_sigmoid",
    "max_pool",
    "mlp",
    "mse",
    "pool",
    "relu",
    "serial",
    "sigmoid",
    "softmax_cross_entropy",
    "softplus",
    "tanh",
]
