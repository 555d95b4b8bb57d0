"""Weight initialisers by name, each a ``jax.nn.initializers``-style ``init(key, shape, dtype)``.

Kernels are laid out ``[*receptive_field, fan_in_channels, fan_out_channels]`` (a dense ``w`` is
``[in, out]``, a 2-D conv ``w`` is ``[kh, kw, in, out]``), so fan-in is ``kh * kw * in`` and fan-out
``kh * kw * out``, which is what ``jax.nn.initializers.variance_scaling`` computes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdl.types import Initializer

_jinit = jax.nn.initializers


def _classic(key, shape, dtype=jnp.float32):
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) has variance 1/(3 fan_in): variance_scaling(1/3, uniform).
    return _jinit.variance_scaling(1.0 / 3.0, "fan_in", "uniform")(key, shape, dtype)


def _normal(std: float) -> Initializer:
    return _jinit.normal(std)


_SCHEMES: dict[str, Callable[..., Initializer]] = {
    "classic": lambda: _classic,
    "normal": _normal,
    "glorot_uniform": _jinit.glorot_uniform,
    "glorot_normal": _jinit.glorot_normal,
    "he_uniform": _jinit.he_uniform,
    "he_normal": _jinit.he_normal,
    "lecun_normal": _jinit.lecun_normal,
    "zeros": lambda: _jinit.zeros,
}

NAMES: tuple[str, ...] = tuple(_SCHEMES)
FAN_SCALED: tuple[str, ...] = tuple(n for n in NAMES if n not in ("normal", "zeros"))  # need >= 2-D


def get(name: str | Initializer, scale: float = 1.0, *, std: float = 1.0) -> Initializer:
    """Returns the initialiser called ``name``, its samples multiplied by ``scale``.

    Args:
      name: one of ``"classic"`` (U(-1/sqrt(fan_in), +1/sqrt(fan_in)), the textbook start of deep
        sigmoid nets), ``"normal"`` (N(0, std**2)), ``"glorot_uniform"``, ``"glorot_normal"``,
        ``"he_uniform"``, ``"he_normal"``, ``"lecun_normal"``, ``"zeros"``; or an initialiser
        function, returned (scaled) as it is.
      scale: multiplies every sample, so the standard deviation is ``scale`` times the scheme's;
        may be a traced scalar (a sweep over initial scales).
      std: the standard deviation of ``"normal"``; ignored by the other schemes.

    Returns:
      ``init(key, shape, dtype) -> array`` of ``shape``.

    Example:
      >>> w = jaxdl.initializers.get("he_normal")(key, (5, 5, 1, 32), jnp.float32)
    """
    if callable(name):
        base = name
    elif name not in _SCHEMES:
        raise ValueError(f"unknown initializer {name!r}; valid names: {', '.join(NAMES)}")
    elif name == "normal":
        base = _normal(std)
    else:
        base = _SCHEMES[name]()
    if isinstance(scale, int | float) and scale == 1.0:
        return base

    def scaled(key, shape, dtype=jnp.float32):
        return base(key, shape, dtype) * jnp.asarray(scale, dtype)

    return scaled


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out of a kernel of ``shape`` ``[*receptive_field, in, out]``.

    Args:
      shape: kernel shape, at least 2-D.

    Returns:
      ``(fan_in, fan_out)`` as Python ints.
    """
    receptive = 1
    for size in shape[:-2]:
        receptive *= size
    return shape[-2] * receptive, shape[-1] * receptive
