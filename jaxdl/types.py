"""The layer contract: every layer and model in jaxdl is a `Layer`, a pair of pure functions.

The state rule (written once, here): every layer's ``init`` returns ``(params, state)`` and every
``apply`` takes ``(params, state, x)`` and returns ``(y, state)``.

* ``params`` are the trainable arrays, a plain nested dict (``params["conv1"]["w"]``); ``jax.grad``
  and optax see only these.
* ``state`` holds non-trainable arrays that ``apply`` updates (batch norm's running mean and
  variance). Layers without any return ``{}`` and hand it back unchanged. With ``train=True``
  ``apply`` returns the updated state; with ``train=False`` it returns the state it was given.

Both are pytrees of arrays and nothing else, so ``jit``, ``grad`` and ``vmap`` over a stack of
networks (a population) apply to them as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = dict[str, Any]  # nested dict of arrays, trainable
State = dict[str, Any]  # nested dict of arrays, updated by apply (e.g. running statistics)
InputLike = Any  # an array or a jax.ShapeDtypeStruct


class InitFn(Protocol):
    """Creates a layer's parameters and state for an example input."""

    def __call__(self, key: PRNGKey, x: InputLike) -> tuple[Params, State]: ...


class ApplyFn(Protocol):
    """Runs a layer on a batch of inputs."""

    def __call__(
        self,
        params: Params,
        state: State,
        x: Array,
        *,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Array, State]: ...


class Layer(NamedTuple):
    """A layer or model: two pure functions and a short kind name.

    Attributes:
      init: ``init(key, x) -> (params, state)``; ``x`` is an example input, an array or a
        ``jax.ShapeDtypeStruct`` of shape ``[batch, ...features]``. Only its shape and dtype are
        read.
      apply: ``apply(params, state, x, *, key=None, train=False) -> (y, state)``; ``x`` has shape
        ``[batch, ...features]`` (channels last). ``key`` is needed only by layers that draw random
        numbers in training (dropout).
      kind: the kind of layer (``"dense"``, ``"conv"``, ``"relu"``...), used by `serial` to
        generate stable names (``dense1``, ``dense2``) and in error messages.

    Example:
      >>> layer = jaxdl.dense(10)
      >>> params, state = layer.init(jax.random.key(0), jnp.zeros((1, 4)))
      >>> y, state = layer.apply(params, state, jnp.ones((32, 4)))  # y: [32, 10]
    """

    init: InitFn
    apply: ApplyFn
    kind: str


Initializer = Callable[[PRNGKey, tuple[int, ...], Any], Array]


class LayerError(ValueError):
    """Bad input or configuration for a layer; the message names the layer, expected and actual.

    Args:
      kind: the kind of the layer that failed (``"conv"``).
      detail: what was expected and what was found.
      path: the layer's names from the outermost `serial` inwards, filled in by `serial`.
    """

    def __init__(self, kind: str, detail: str, path: tuple[str, ...] = ()):
        self.kind, self.detail, self.path = kind, detail, path
        where = f"{kind} '{'/'.join(path)}'" if path else kind
        super().__init__(f"{where}: {detail}")

    def within(self, name: str) -> LayerError:
        """The same error, located one `serial` level further out, under ``name``."""
        return LayerError(self.kind, self.detail, (name, *self.path))
