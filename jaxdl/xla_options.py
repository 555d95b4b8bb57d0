"""XLA compile options for jaxdl's programs: on XLA:CPU, 2-D convolutions on every core.

XLA:CPU (jaxlib 0.10) hands 2-D convolutions to YNNPACK by default, which runs each one on a
single core; XLA's own (Eigen) convolutions use them all. On 2 cores a LeNet train step runs 1.3
times faster with its convolutions kept off YNNPACK, which keeps the dots (bench/NOTES.md
section 18). `fit`, sweeps and the ``jaxdl`` command compile with these options (except a
sweep's programs in parts, whose members already share the cores); pass them to your own
``jax.jit`` of `make_step` or `make_train` for the same speed::

    jax.jit(step, compiler_options=jaxdl.compiler_options(x))
"""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp

# XLA:CPU's default YNNPACK fusion types (jaxlib 0.10) are individual dots, individual
# convolutions and reductions. Only the dots stay: a reduction's fusion can take in the
# convolution that feeds it (a max-pool's gradient takes conv2's input gradient in a LeNet step).
# The flag is experimental; a test checks XLA's default list against `XLA_DEFAULT_YNN_TYPES`.
XLA_DEFAULT_YNN_TYPES = ("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION", "REDUCE")
CPU_OPTIONS = MappingProxyType(
    {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
)
MIN_RANK = 4  # [batch, *2 or more spatial axes, channels]: YNNPACK takes only 2-D convolutions


def compiler_options(example: Any = None, *, backend: str | None = None) -> dict[str, str] | None:
    """The ``compiler_options`` of a ``jax.jit`` over inputs like ``example`` on ``backend``.

    Args:
      example: an example input ``[batch, ...features]`` (anything with a ``shape``), or
        ``None`` (any input).
      backend: ``"cpu"``, ``"gpu"``...; ``None``: JAX's default backend.

    Returns:
      `CPU_OPTIONS` on a CPU, unless ``example`` has fewer than two spatial axes (no 2-D
      convolution); ``None`` (XLA's defaults) otherwise, or where this XLA does not accept them.
    """
    if (backend or jax.default_backend()) != "cpu":
        return None
    if example is not None and len(example.shape) < MIN_RANK:
        return None  # no 2-D convolution to keep off YNNPACK
    return dict(CPU_OPTIONS) if _accepted() else None


@functools.cache
def _accepted() -> bool:
    """Whether this XLA accepts `CPU_OPTIONS` (experimental flags): one tiny compile, once."""
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(CPU_OPTIONS)).lower(scalar).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True
