"""Small helpers shared by the layer families: example-input shapes, dtypes, per-axis tuples."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import initializers
from jaxdl._checks import is_count
from jaxdl.types import Initializer, InputLike, LayerError


def shape_of(x: InputLike) -> tuple[int, ...]:
    """The shape of an array or a ``jax.ShapeDtypeStruct``."""
    return tuple(x.shape)


def check_key(kind: str, key) -> None:
    """Raises a `LayerError` naming the layer and how to make a key unless ``key`` is a JAX
    random key (an array; an int seed, as PyTorch takes one, is not)."""
    if not isinstance(key, jax.Array | np.ndarray):
        raise LayerError(kind, f"key must be a JAX random key, e.g. jax.random.key(0), got {key!r}")


def split_key(kind: str, key, num: int = 2) -> jax.Array:
    """``jax.random.split(key, num)`` of a key `check_key` accepts."""
    check_key(kind, key)
    return jax.random.split(key, num)


def check_keys(kind: str, what: str, tree, keys: tuple[str, ...]) -> None:
    """Raises a `LayerError` unless the dict ``tree`` (a layer's params or state) holds ``keys``.

    Args:
      kind: the layer's kind, for the message.
      what: ``"params"`` or ``"state"``.
      tree: what ``apply`` was given.
      keys: the keys ``init`` returns.
    """
    if isinstance(tree, Mapping) and all(k in tree for k in keys):
        return
    got = f"keys {sorted(map(str, tree))}" if isinstance(tree, Mapping) else repr(tree)
    raise LayerError(kind, f"expected the {what} init returns, with keys {list(keys)}, got {got}")


def param_dtype(x: InputLike):
    """Parameters take the input's dtype when it is floating (float64 for gradient checks),
    float32 for integer and bool inputs; so do the outputs of the normalisations and dropout."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32


def compute_dtype(x: InputLike):
    """`param_dtype` widened to float32 at least: the dtype of batch statistics and running
    averages (in bfloat16 a momentum of 0.999 rounds to 1.0 and the averages never move)."""
    dtype = param_dtype(x)
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32


def promoted(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x`` and the weights ``w`` cast to the dtype ``x @ w`` has under standard promotion,
    whatever the promotion mode: an integer, bool or bfloat16 ``x`` with float32 ``w`` gives
    float32 (convolutions need both operands of one dtype). Equal dtypes are left as they are."""
    with jax.numpy_dtype_promotion("standard"):
        dtype = jnp.promote_types(x.dtype, w.dtype)
    return x.astype(dtype), w.astype(dtype)


def bias_initializer(kind: str, b_init) -> Initializer:
    """`jaxdl.initializers.get` of a bias's initialiser; the schemes scaled by fan-in or fan-out
    are refused with the layer's name, since a bias ``[features]`` has no fans."""
    if isinstance(b_init, str) and b_init in initializers.FAN_SCALED:
        raise LayerError(
            kind,
            f"b_init {b_init!r} scales by fan-in/fan-out, which a 1-D bias does not have: use "
            "'zeros', 'normal' or a function",
        )
    return initializers.get(b_init)


def per_axis(value: int | Sequence[int], ndim: int, kind: str, what: str) -> tuple[int, ...]:
    """``value`` repeated over ``ndim`` spatial axes, or checked to have ``ndim`` entries."""
    values = (value,) * ndim if isinstance(value, numbers.Integral) else tuple(value)
    if len(values) != ndim or not all(is_count(v) for v in values):
        raise LayerError(
            kind, f"{what} must be a positive int or {ndim} positive ints, got {value!r}"
        )
    return tuple(int(v) for v in values)


def check_rank(kind: str, x: InputLike, rank: int, layout: str) -> None:
    """Raises a `LayerError` unless ``x`` has ``rank`` axes, described by ``layout``."""
    if len(shape_of(x)) != rank:
        raise LayerError(kind, f"expected input {layout} (rank {rank}), got shape {shape_of(x)}")


def spatial_layout(ndim: int) -> str:
    """How a channels-last input with ``ndim`` spatial axes is laid out, for error messages."""
    names = {1: "length", 2: "height, width", 3: "depth, height, width"}.get(ndim, "*spatial")
    return f"[batch, {names}, channels]"


def per_channel(v, ndim: int):
    """A ``[channels]`` vector as ``[1, ..., 1, channels]`` of rank ``ndim``, so it broadcasts."""
    return v.reshape((1,) * (ndim - 1) + v.shape)
