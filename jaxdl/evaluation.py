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

    Args:
      model: the `Layer`.
      params: its params.
      model_state: its state (running statistics are used, ``train=False``).
      x: inputs ``[N, ...features]``.
      y: labels ``[N]``.
      batch_size: examples per batch; the last batch is padded and the padding masked out.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` (mean over a batch).

    Returns:
      ``{"loss": (), "accuracy": ()}`` averaged over the ``N`` examples.
    """
    n = x.shape[0]
    if n == 0 or y.shape[:1] != (n,):
        raise ValueError(
            f"evaluate: expected at least one input and one label per input (y [{n}]), got "
            f"x {x.shape} and y {y.shape}"
        )
    if not is_count(batch_size):
        raise ValueError(f"evaluate: batch_size must be a positive int, got {batch_size!r}")
    batch_size = min(int(batch_size), n)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    xb = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(
        num_batches, batch_size, *x.shape[1:]
    )
    yb = jnp.pad(y, (0, pad)).reshape(num_batches, batch_size)
    mask = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

    def batch_sums(args):
        xi, yi, mi = args  # [B, ...], [B], [B]
        logits, _ = model.apply(params, model_state, xi)
        per_example = jax.vmap(loss_fn)(logits[:, None], yi[:, None])  # [B]
        correct = (jnp.argmax(logits, axis=-1) == yi).astype(jnp.float32)
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

    Args:
      model: the `Layer`.
      config: the run's `TrainConfig`.
      state: the run's `TrainState`.
      data: the `DeviceData`.
      loss_fn: ``loss_fn(logits, labels) -> scalar``.

    Returns:
      ``{"loss": (), "accuracy": ()}``.
    """
    return evaluate(
        model,
        state.params,
        state.model_state,
        data.x_test,
        data.y_test,
        batch_size=config.eval_batch_size,
        loss_fn=loss_fn,
    )
