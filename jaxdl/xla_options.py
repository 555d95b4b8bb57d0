"""XLA compile options for jaxdl's programs: on XLA:CPU, 2-D convolutions on every core.

XLA:CPU (jaxlib 0.10) hands 2-D convolutions to YNNPACK by default, which runs each one on a
single core; XLA's own (Eigen) convolutions use them all. On 2 cores a LeNet train step runs 1.3
times faster with its convolutions kept off YNNPACK, which keeps the dots (bench/NOTES.md
section 18). `fit`, sweeps and the ``jaxdl`` command compile the programs of nets with 2-D
convolutions with these options (except programs whose members or devices already share the
cores: a sweep's parts, a mesh of several CPU devices); pass them to your own
``jax.jit`` of `make_step` or `make_train` for the same speed::

    jax.jit(step, compiler_options=jaxdl.compiler_options(model, x))
"""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl.types import Layer

# XLA:CPU's default YNNPACK fusion types (jaxlib 0.10) are individual dots, individual
# convolutions and reductions. Only the dots stay: a reduction's fusion can take in the
# convolution that feeds it (a max-pool's gradient takes conv2's input gradient in a LeNet step).
# The flag is experimental; a test checks XLA's default list against `XLA_DEFAULT_YNN_TYPES`.
XLA_DEFAULT_YNN_TYPES = ("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION", "REDUCE")
CPU_OPTIONS = MappingProxyType(
    {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
)


def compiler_options(
    model: Layer, example: Any, *, backend: str | None = None
) -> dict[str, str] | None:
    """The ``compiler_options`` of a ``jax.jit`` of ``model``'s programs (a step, a chunk, a
    whole run, an evaluation) over inputs like ``example``, on ``backend``.

    Args:
      model: the `Layer` the programs train or evaluate.
      example: an input ``[batch, ...features]``, an array or a ``jax.ShapeDtypeStruct``.
      backend: ``"cpu"``, ``"gpu"``...; ``None``: JAX's default backend.

    Returns:
      `CPU_OPTIONS` on a CPU when ``model`` applies a 2-D convolution to ``example``; ``None``
      (XLA's defaults) otherwise (an MLP keeps YNNPACK's reductions, which its step needs), or
      where this XLA does not accept them.

    Example:
      >>> step = jax.jit(jaxdl.make_step(model, config), compiler_options=
      ...                jaxdl.compiler_options(model, x))
    """
    if (backend or jax.default_backend()) != "cpu" or len(example.shape) < 4:
        return None  # [batch, *2 or more spatial axes, channels]: else no 2-D convolution
    shape = (1, *example.shape[1:])
    if not _applies_2d_conv(model, shape, jnp.dtype(example.dtype)):
        return None
    return dict(CPU_OPTIONS) if _cpu_options_accepted() else None


@functools.lru_cache(maxsize=64)
def _applies_2d_conv(model: Layer, shape: tuple[int, ...], dtype) -> bool:
    """Whether ``model``'s forward pass on an input of ``shape`` runs a convolution with two
    spatial axes, read off its traced program (nothing is computed)."""

    def forward(x):
        params, state = model.init(jax.random.key(0), x)
        return model.apply(params, state, x)[0]

    program = jax.make_jaxpr(forward)(jax.ShapeDtypeStruct(shape, dtype))
    return any(
        eqn.primitive.name == "conv_general_dilated" and eqn.invars[0].aval.ndim == 4
        for eqn in _equations(program.jaxpr)
    )


def _equations(jaxpr):
    """Every equation of ``jaxpr`` and of the programs nested in its equations' parameters
    (custom VJPs, custom vmaps, scans, conds)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for inner in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


@functools.cache
def _cpu_options_accepted() -> bool:
    """Whether this XLA accepts `CPU_OPTIONS` (an experimental flag): one tiny compile on the
    CPU, once."""
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=cpu)
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(CPU_OPTIONS)).lower(scalar).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True
