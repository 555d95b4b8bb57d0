"""Parts: on a CPU, a population's members split into independent slices whose steps XLA:CPU runs
side by side on the cores, and the rule for how many. `jaxdl.sweep`'s ``auto`` plan and
`jaxdl.make_train` under ``jax.vmap`` both follow it (bench/NOTES.md sections 17 and 20).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import custom_batching

from jaxdl import losses
from jaxdl._checks import is_count
from jaxdl.step import LossFn, TrainConfig, make_chunk, make_parted_chunk
from jaxdl.types import Layer

# Dense members run fastest in pairs: 1.3-1.5x one vmap of them all (2 cores); more parts compile
# longer (8 pairs: 2.2 s, one vmap: 1.0 s), hence at most 8.
CPU_MEMBERS_PER_PART = 2  # dense members per part
CPU_MAX_PARTS = 8
# Parts repay their longer compile in runs of about 1000 steps (8 small MLPs, wall time equal at
# 1000 steps, 13 % less at 3000) or 200-300 (ConvNets: equal at 200, 19 % less at 300); shorter
# runs go without them.
CPU_PARTS_MIN_STEPS = 1000  # dense nets
CPU_CONV_PARTS_MIN_STEPS = 300


def has_conv(state_shape) -> bool:
    """Whether any leaf of one member's state or params (arrays or shapes) has rank 3 or more (a
    conv kernel ``[*window, in, out]``)."""
    return any(len(getattr(leaf, "shape", ())) >= 3 for leaf in jax.tree.leaves(state_shape))


def cpu_parts(num_members: int, *, conv: bool) -> int:
    """Parts for ``num_members`` members on a CPU: dense members in pairs (at most
    `CPU_MAX_PARTS` parts); ConvNet members one per part, up to `CPU_MAX_PARTS` members (a
    ConvNet part of several members is a batched convolution: 32 members in 8 parts ran no faster
    than one vmap, bench/NOTES.md section 20), else one vmap."""
    if conv:
        return num_members if num_members <= CPU_MAX_PARTS else 1
    return min(-(-num_members // CPU_MEMBERS_PER_PART), CPU_MAX_PARTS)


def long_enough(steps: int | None, *, conv: bool) -> bool:
    """Whether a run of ``steps`` steps repays parts' longer compile (``None``: any length)."""
    return steps is None or steps >= (CPU_CONV_PARTS_MIN_STEPS if conv else CPU_PARTS_MIN_STEPS)


def auto_parts(
    member_state_shape, num_members: int, *, steps: int | None, backend: str | None = None
) -> int:
    """The parts `make_population_chunk`'s ``"auto"`` runs a vmap of ``num_members`` in: on a CPU
    with one device and a run long enough (`long_enough`), `cpu_parts`; else 1 (one vmap; on
    GPU/TPU always).

    Args:
      member_state_shape: one member's `TrainState` or params, arrays or shapes.
      num_members: the size of the vmapped axis.
      steps: the run's steps; ``None``: any length.
      backend: ``jax.default_backend()`` if ``None``.

    Returns:
      An int in ``[1, num_members]``.
    """
    on_cpu = (backend or jax.default_backend()) == "cpu"
    # Several devices may hold the members (a vmap with ``spmd_axis_name``): slices would move them.
    if not on_cpu or jax.device_count() > 1 or num_members < 2:
        return 1
    conv = has_conv(member_state_shape)
    return cpu_parts(num_members, conv=conv) if long_enough(steps, conv=conv) else 1


def check_parts(where: str, parts: Any) -> None:
    """Raises a ValueError naming ``where`` unless ``parts`` is ``"auto"`` or a positive int."""
    if parts != "auto" and not is_count(parts):
        raise ValueError(f"{where}: parts must be 'auto' or a positive int, got {parts!r}")


def make_population_chunk(
    model: Layer,
    config: TrainConfig,
    num_steps: int,
    loss_fn: LossFn = losses.softmax_cross_entropy,
    *,
    parts: int | str = "auto",
) -> Callable:
    """`jaxdl.step.make_chunk`'s ``chunk(state, hparams, data)``, which under ``jax.vmap`` over a
    population runs its members in parts (`jaxdl.step.make_parted_chunk`).

    Called plainly it is the plain chunk. Vmapped (``jax.vmap`` of a function calling it, such as
    `jaxdl.make_train`'s ``train``), it splits the members into ``parts`` (``"auto"``:
    `auto_parts` for a run of ``config.steps`` steps), each member's values those of one vmap to
    rounding; with 1 part, or a vmap over the data too, it is exactly ``jax.vmap`` of the plain
    chunk. Differentiated (``jax.grad``, ``jax.jvp``, vmapped or not), it is the plain chunk's
    derivative, vmapped plainly: parts speed up training, not hyper-gradients.

    Args:
      model: the `Layer` to train.
      config: the run's `TrainConfig`.
      num_steps: steps in the chunk (static).
      loss_fn: ``loss_fn(logits, labels) -> scalar``.
      parts: ``"auto"`` or the most parts a vmapped population is split into (capped at its
        size).

    Returns:
      ``chunk(state, hparams, data) -> (state, metrics)``, as `jaxdl.step.make_chunk`.
    """
    check_parts("make_population_chunk", parts)
    plain = make_chunk(model, config, num_steps, loss_fn)

    @custom_batching.custom_vmap
    def vmappable(state, hparams, data):
        return plain(state, hparams, data)

    @vmappable.def_vmap
    def vmapped(axis_size, in_batched, state, hparams, data):
        state_batched, hparams_batched, data_batched = in_batched
        member = jax.tree.map(_member_shape, state, state_batched)
        if parts == "auto":
            count = auto_parts(member, axis_size, steps=config.steps)
        else:
            count = min(parts, axis_size)
        if count == 1 or any(jax.tree.leaves(data_batched)):
            in_axes = jax.tree.map(lambda batched: 0 if batched else None, tuple(in_batched))
            out = jax.vmap(plain, in_axes=in_axes)(state, hparams, data)
        else:
            state = _broadcast(state, state_batched, axis_size)
            hparams = _broadcast(hparams, hparams_batched, axis_size)
            out = make_parted_chunk(model, config, num_steps, count, loss_fn)(state, hparams, data)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def chunk(state, hparams, data):
        return vmappable(state, hparams, data)

    @chunk.defjvp
    def chunk_jvp(primals, tangents):
        # The plain chunk's derivative: custom_vmap's own cannot be linearised (reverse mode).
        return jax.jvp(plain, primals, tangents)

    return chunk


def _member_shape(leaf, batched: bool) -> jax.ShapeDtypeStruct:
    """One member's shape of a leaf of a vmapped argument (its batch axis first when batched)."""
    return jax.ShapeDtypeStruct(leaf.shape[1:] if batched else leaf.shape, leaf.dtype)


def _broadcast(tree, batched, axis_size: int):
    """``tree`` with every leaf whose flag in ``batched`` is False repeated ``axis_size`` times
    along a new leading axis."""

    def leaf(x, is_batched):
        return x if is_batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))

    return jax.tree.map(leaf, tree, batched)
