"""Evaluation: a model's mean loss and accuracy over a data set, in padded batches under
``lax.map`` (pure and jittable, so it runs inside a compiled training run)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdl import losses
from jaxdl._checks import is_count
from jaxdl.data.device import DeviceData
from jaxdl.step import LossFn, TrainConfig, TrainState
from jaxdl.types import Layer


def evaluate(
    model: Layer,
    params,
    model_state,
    x: jax.Array,
    y: jax.Array,
    *,
    batch_size: int = 1000,
    loss_fn: LossFn = losses.softmax_cross_entropy,
) -> dict[str, jax.Array]:
    """Mean loss and accuracy of a model on a data set, in batches, under ``lax.map``.

    Where ``y`` is concrete (called from Python with NumPy or JAX arrays), every label must lie
    in ``[0, num_outputs)`` (one copy of ``y`` to the host); traced (under jit), its range is
    not checked: a label out of range never counts as correct, and its loss is NaN if too large
    but, if negative, that of the class it wraps to (``-1``: the last), as in
    `jaxdl.losses.softmax_cross_entropy`.

    Args:
      model: the `Layer`.
      params: its params.
      model_state: its state (running statistics are used, ``train=False``).
      x: inputs ``[N, ...features]``.
      y: integer labels ``[N]``.
      batch_size: examples per batch; the last batch is padded and the padding masked out.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` (mean over a batch).

    Returns:
      ``{"loss": (), "accuracy": ()}`` averaged over the ``N`` examples. A ValueError names
      ``x``'s and ``y``'s shapes, ``y``'s dtype or the first label out of range.
    """
    _check_inputs(x, y, batch_size)
    host_y = losses.host_labels(y)  # None where traced: known only inside the program
    if host_y is not None:
        logits = jax.eval_shape(lambda p, s, xs: model.apply(p, s, xs)[0], params, model_state, x)
        _check_logits(logits.shape, x.shape[0])
        losses.check_label_range("evaluate", host_y, logits.shape[1], name="y")
    return _metrics(model, params, model_state, x, y, batch_size, loss_fn)


def _check_inputs(x: jax.Array, y: jax.Array, batch_size: int) -> None:
    """Raises a ValueError unless ``x`` is ``[N, ...]`` with ``N > 0``, ``y`` is ``[N]``
    integers and ``batch_size`` a positive int (all read from shapes: no cost under jit)."""
    n = x.shape[0] if x.ndim else 0
    if n == 0 or y.shape != (n,):
        raise ValueError(
            f"evaluate: expected at least one input and one label per input (y [{n}]), got "
            f"x {x.shape} and y {y.shape}"
        )
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"evaluate: labels y must be integer class indices, got dtype {y.dtype}")
    if not is_count(batch_size):
        raise ValueError(f"evaluate: batch_size must be a positive int, got {batch_size!r}")


def _check_logits(shape: tuple[int, ...], batch: int) -> None:
    """Raises a ValueError unless the model's outputs for ``batch`` inputs are logits
    ``[batch, num_classes]``."""
    if len(shape) != 2 or shape[0] != batch:
        raise ValueError(
            f"evaluate: expected model outputs [{batch}, num_classes] (logits), got shape {shape}"
        )


def _metrics(
    model: Layer, params, model_state, x: jax.Array, y: jax.Array, batch_size: int, loss_fn: LossFn
) -> dict[str, jax.Array]:
    """`evaluate` after its checks: ``{"loss": (), "accuracy": ()}`` over ``x [N, ...]``,
    ``y [N]``, in padded batches of ``batch_size`` under ``lax.map``."""
    n = x.shape[0]
    batch_size = min(int(batch_size), n)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    xb = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(
        num_batches, batch_size, *x.shape[1:]
    )  # [num_batches, B, ...features]
    yb = jnp.pad(y, (0, pad)).reshape(num_batches, batch_size)  # [num_batches, B]
    mask = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

    def batch_sums(args):
        xi, yi, mi = args  # [B, ...], [B], [B]
        logits, _ = model.apply(params, model_state, xi)
        _check_logits(logits.shape, batch_size)
        per_example = jax.vmap(loss_fn)(logits[:, None], yi[:, None])  # [B]
        # NaN logits (a diverged run's) all argmax to class 0: such an example counts as NaN,
        # not as a hit or a miss, so the accuracy is NaN rather than class 0's share.
        hit = (jnp.argmax(logits, axis=-1) == yi).astype(jnp.float32)
        correct = jnp.where(jnp.isnan(logits).any(axis=-1), jnp.nan, hit)  # [B]
        # where, not a multiply by the mask: a padding row's NaN loss times 0 would be NaN
        return jnp.sum(jnp.where(mi, per_example, 0.0)), jnp.sum(jnp.where(mi, correct, 0.0))

    loss_sums, correct_sums = lax.map(batch_sums, (xb, yb, mask))
    return {"loss": jnp.sum(loss_sums) / n, "accuracy": jnp.sum(correct_sums) / n}


def evaluate_test(
    model: Layer,
    config: TrainConfig,
    state: TrainState,
    data: DeviceData,
    loss_fn: LossFn = losses.softmax_cross_entropy,
) -> dict[str, jax.Array]:
    """`evaluate` of a run's state on the test split, in ``config.eval_batch_size`` batches.

    Run inside the compiled programs of `jaxdl.fit`, `jaxdl.sweep` and `jaxdl.make_train`, it
    skips `evaluate`'s label-range check, which `jaxdl.program.check_fits` made before compiling
    (a check here would copy the labels to the host at every trace).

    Args:
      model: the `Layer`.
      config: the run's `TrainConfig`.
      state: the run's `TrainState`.
      data: the `DeviceData`.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.

    Returns:
      ``{"loss": (), "accuracy": ()}``.
    """
    _check_inputs(data.x_test, data.y_test, config.eval_batch_size)
    return _metrics(
        model,
        state.params,
        state.model_state,
        data.x_test,
        data.y_test,
        config.eval_batch_size,
        loss_fn,
    )
