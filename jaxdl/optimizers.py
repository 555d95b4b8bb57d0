"""Optimisers and learning-rate schedules by name, all built from optax.

`make` is called inside the traced train step, so the learning rate and weight decay may be traced
values (one per member of a sweep); the optimiser state's structure never depends on them, nor on
whether the weight decay is traced, a Python number or ``None``.
"""

from __future__ import annotations

import functools

import jax
import optax

OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "adam", "adamw")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "warmup_cosine")


def _standard_promotion(fn):
    """``fn`` traced under standard dtype promotion: optax mixes Python floats with int32 step
    counts (adam's bias correction, the cosine schedules), which a caller's
    ``jax_numpy_dtype_promotion="strict"`` would reject."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    return wrapped


def check_names(optimizer: str, schedule: str) -> None:
    """Raises a ValueError naming the valid choices if ``optimizer`` or ``schedule`` is unknown.

    Args:
      optimizer: an optimiser name.
      schedule: a schedule name.

    Returns:
      None.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def schedule_fn(name: str, lr, steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """The learning rate as a function of the step.

    Args:
      name: ``"constant"``, ``"cosine"`` (from ``lr`` to 0 over ``steps``) or ``"warmup_cosine"``
        (linear from 0 to ``lr`` over ``warmup_steps``, then cosine to 0).
      lr: peak learning rate, a float or a traced scalar ``()``.
      steps: total number of training steps.
      warmup_steps: length of the linear warm-up.

    Returns:
      An optax schedule ``step -> lr``.
    """
    if name == "constant":
        schedule = optax.constant_schedule(lr)
    elif name == "cosine":
        schedule = optax.cosine_decay_schedule(lr, max(steps, 1))
    else:
        # optax's warm-up schedule branches on its peak value in Python, so a traced lr (a
        # sweep's, or any jitted run's) cannot be its peak: the unit-peak shape is scaled.
        shape = optax.warmup_cosine_decay_schedule(
            0.0, 1.0, warmup_steps, max(steps, warmup_steps + 1)
        )

        def schedule(count):
            return lr * shape(count)

    return _standard_promotion(schedule)


def weight_decay_term(weight_decay) -> optax.GradientTransformation:
    """``optax.add_decayed_weights(weight_decay)`` (``g + weight_decay * p``), computing nothing
    when ``weight_decay`` is ``None`` or a Python 0, known before tracing: a traced zero still
    reads every parameter each step. Its state is the same either way, so a state initialised
    with one value steps with any other.

    Args:
      weight_decay: the coefficient: a float, a traced scalar, or ``None`` for none.

    Returns:
      An ``optax.GradientTransformation`` whose update needs ``params`` unless it computes
      nothing.
    """
    if weight_decay is None or (isinstance(weight_decay, int | float) and weight_decay == 0):
        return optax.GradientTransformation(
            optax.add_decayed_weights(0.0).init,
            lambda updates, state, params=None: (updates, state),
        )
    return optax.add_decayed_weights(weight_decay)


def make(
    name: str,
    lr,
    *,
    steps: int,
    schedule: str = "constant",
    warmup_steps: int = 0,
    weight_decay=0.0,
    momentum: float = 0.9,
    grad_clip: float | None = None,
) -> optax.GradientTransformation:
    """An optax optimiser: optional global-norm clipping, weight decay, then the update rule.

    Args:
      name: ``"sgd"``, ``"momentum"`` (heavy ball), ``"adam"`` or ``"adamw"`` (decoupled decay).
      lr: peak learning rate, float or traced scalar ``()``.
      steps: total training steps (for decaying schedules).
      schedule: a name from `SCHEDULES`.
      warmup_steps: warm-up length for ``"warmup_cosine"``.
      weight_decay: decay coefficient, float, traced scalar or ``None`` (none, and no term
        computed: see `weight_decay_term`); for ``sgd``/``momentum``/``adam`` added to the
        gradient (L2), for ``adamw`` decoupled.
      momentum: momentum coefficient of ``"momentum"``.
      grad_clip: clip gradients to this global norm; ``None`` disables clipping.

    Returns:
      An ``optax.GradientTransformation``.
    """
    check_names(name, schedule)
    # A constant rate is passed as the value itself, not as a schedule: optax then keeps no step
    # counter for it (one state leaf less to carry, donate and return every step).
    rate = lr if schedule == "constant" else schedule_fn(schedule, lr, steps, warmup_steps)
    parts = []
    if grad_clip is not None:
        parts.append(optax.clip_by_global_norm(grad_clip))
    decay = weight_decay_term(weight_decay)
    if name == "adamw":  # optax.adamw's own chain, its decay term from weight_decay_term
        parts.append(optax.chain(optax.scale_by_adam(), decay, optax.scale_by_learning_rate(rate)))
    else:
        parts.append(decay)
        rule = {
            "sgd": lambda: optax.sgd(rate),
            "momentum": lambda: optax.sgd(rate, momentum=momentum),
            "adam": lambda: optax.adam(rate),
        }[name]
        parts.append(rule())
    chained = optax.chain(*parts)
    return optax.GradientTransformationExtraArgs(
        _standard_promotion(chained.init), _standard_promotion(chained.update)
    )
