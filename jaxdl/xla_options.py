"""XLA compile options for jaxdl's programs: on XLA:CPU, 2-D convolutions on every core, and an
init program compiled for compile time alone.

XLA:CPU (jaxlib 0.10) hands 2-D convolutions to YNNPACK by default, which runs each one on a
single core; XLA's own (Eigen) convolutions use them all. On 2 cores a LeNet train step runs 1.3
times faster with its convolutions kept off YNNPACK, which keeps the dots (bench/NOTES.md
section 18). `fit`, sweeps and the ``jaxdl`` command compile the programs of nets with 2-D
convolutions with these options (except programs whose members or devices already share the
cores: a sweep's parts, a mesh of several CPU devices); pass them to your own
``jax.jit`` of `make_step` or `make_train` for the same speed::

    jax.jit(step, compiler_options=jaxdl.compiler_options(model, x))

A run's init program runs once, so on a CPU `init_options` trades its run time for compile time.
Each flag here is checked once per process with a tiny compile, so a JAX that renamed or dropped
one falls back to the options it still accepts.
"""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.types import Layer

# XLA:CPU's default YNNPACK fusion types (jaxlib 0.10) are individual dots, individual
# convolutions and reductions. Only the dots stay: a reduction's fusion can take in the
# convolution that feeds it (a max-pool's gradient takes conv2's input gradient in a LeNet step).
# The flag is experimental; a test checks XLA's default list against `XLA_DEFAULT_YNN_TYPES`.
XLA_DEFAULT_YNN_TYPES = ("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION", "REDUCE")
CPU_OPTIONS = MappingProxyType(
    {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
)

# The init program runs once per run, so on XLA:CPU only its compile time counts. Without backend
# optimisations, and (jaxlib 0.10) with XLA's elemental loop emitters instead of its newer fusion
# emitters, an MLP 784-512-512-10's init compiles in 0.2 s instead of 1.1-1.3 s (0.34-0.46 s
# at level 0 alone) and runs in 0.03-0.05 s instead of 0.01 s (bench/NOTES.md sections 11, 19).
# Its values are the level-0 build's bit for bit, for every initialiser; a normal sample may differ
# from an optimised build's in its last bit, so every run (`fit`, each sweep member) builds its
# init this way. jaxlib 0.11 has no such emitter flag: level 0 alone (`CPU_INIT_FALLBACK`).
CPU_INIT_OPTIONS = MappingProxyType(
    {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
)
CPU_INIT_FALLBACK = MappingProxyType({"xla_backend_optimization_level": 0})


def init_options(backend: str | None = None) -> dict[str, Any] | None:
    """The ``compiler_options`` of a run's init program (`jaxdl.train.build_program`'s).

    The step, chunk and evaluation keep XLA's defaults: the elemental emitters compile them
    faster too, but run an MLP's step 1.2-1.4 times slower.

    Args:
      backend: ``"cpu"``, ``"gpu"``...; ``None``: JAX's default backend.

    Returns:
      On a CPU, `CPU_INIT_OPTIONS`, or `CPU_INIT_FALLBACK` where this XLA refuses one of them;
      ``None`` (XLA's defaults) elsewhere or where it refuses both.
    """
    if (backend or jax.default_backend()) != "cpu":
        return None
    for options in (CPU_INIT_OPTIONS, CPU_INIT_FALLBACK):
        if _cpu_accepts(tuple(options.items())):
            return dict(options)
    return None


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
    return dict(CPU_OPTIONS) if _cpu_accepts(tuple(CPU_OPTIONS.items())) else None


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
def _cpu_accepts(options: tuple[tuple[str, Any], ...]) -> bool:
    """Whether this XLA accepts ``options`` (``(name, value)`` pairs; some flags are experimental
    or version-specific): one compile of a scalar program on the CPU, once per set of options."""
    try:
        _flag_probe().compile(compiler_options=dict(options))
    except jax.errors.JaxRuntimeError:
        return False
    return True


@functools.cache
def _flag_probe() -> jax.stages.Lowered:
    """``x + 1`` on a float32 scalar, lowered for the CPU once: what `_cpu_accepts` compiles."""
    scalar = jax.device_put(np.float32(0), jax.devices("cpu")[0])  # lowered for where it lives
    return jax.jit(_xla_flag_probe).lower(scalar)


def _xla_flag_probe(x):
    """The probe's function (named so in JAX's compile logs)."""
    return x + 1
