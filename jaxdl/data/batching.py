"""Pure, jittable mini-batch indices: which examples each training step uses, from a key.

Step ``s`` of training uses epoch ``s // steps_per_epoch`` and position ``s % steps_per_epoch``
of that epoch's permutation, so the batches of any range of steps can be computed on the device
with no host-side state, and a run resumed at step ``s`` sees the same batches as an unbroken one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdl.data.dataset import DataError


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """The number of full batches in one epoch; the last ``num_examples % batch_size`` are dropped.

    Args:
      num_examples: the size of the training set.
      batch_size: examples per step, in ``[1, num_examples]``.

    Returns:
      ``num_examples // batch_size``, a Python int.
    """
    if batch_size <= 0 or batch_size > num_examples:
        raise DataError(
            f"batch_size must be in [1, num_examples={num_examples}], got batch_size={batch_size}"
        )
    return num_examples // batch_size


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The order in which one epoch visits the examples.

    Args:
      key: the data order key (a ``jax.random.key``, or a legacy ``PRNGKey``).
      epoch: the epoch number, a Python int or a traced integer scalar, shape ``()``.
      num_examples: the size of the training set, a static Python int.

    Returns:
      A permutation of ``0 .. num_examples - 1``, shape ``[num_examples]``, int32.
    """
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples).astype(jnp.int32)


def chunk_indices(
    key: jax.Array,
    start_step: int | jax.Array,
    num_steps: int,
    num_examples: int,
    batch_size: int,
) -> jax.Array:
    """The example indices of ``num_steps`` consecutive training steps, starting at ``start_step``.

    Row ``i`` is the batch of step ``s = start_step + i``: positions ``s % spe`` of the
    permutation of epoch ``s // spe``, where ``spe = steps_per_epoch(num_examples, batch_size)``.
    So every epoch visits ``spe * batch_size`` distinct examples, each at most once, and the
    result equals stacking the steps computed one at a time.

    Args:
      key: the data order key.
      start_step: the first step, a Python int or a traced integer scalar, shape ``()``.
      num_steps: the number of steps, a static Python int.
      num_examples: the size of the training set, a static Python int.
      batch_size: examples per step, a static Python int.

    Returns:
      Indices into the training set, shape ``[num_steps, batch_size]``, int32.

    Example:
      >>> idx = chunk_indices(key, step, 100, ds.num_train, 32)  # [100, 32]
      >>> xs = x_train[idx]  # [100, 32, ...features]: one batch per step, for a lax.scan
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise DataError(f"num_steps must be a positive static int, got {num_steps!r}")
    spe = steps_per_epoch(num_examples, batch_size)
    start_step = jnp.asarray(start_step, jnp.int32)
    first_epoch, offset = start_step // spe, start_step % spe
    # Steps offset .. offset + num_steps - 1 of the concatenated epochs are needed, offset < spe:
    # ceil((spe - 1 + num_steps) / spe) epochs always cover them.
    num_epochs = (spe - 1 + num_steps + spe - 1) // spe
    epochs = first_epoch + jnp.arange(num_epochs, dtype=jnp.int32)  # [num_epochs]
    perms = jax.vmap(epoch_permutation, in_axes=(None, 0, None))(key, epochs, num_examples)
    batches = perms[:, : spe * batch_size].reshape(num_epochs * spe, batch_size)  # [E*spe, B]
    return lax.dynamic_slice(batches, (offset, jnp.int32(0)), (num_steps, batch_size))
