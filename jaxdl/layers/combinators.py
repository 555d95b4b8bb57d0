"""`serial`: layers composed in sequence, their params and state under readable names."""

from __future__ import annotations

import jax

from jaxdl.layers._util import split_key
from jaxdl.types import Layer, LayerError


def _named(entries) -> list[tuple[str, Layer]]:
    """Pairs ``(name, layer)``; an unnamed layer is called ``{kind}{k}``, its k-th of that kind."""
    counts: dict[str, int] = {}
    named = []
    for entry in entries:
        # A Layer is itself a (NamedTuple) tuple, so test for it before unpacking a pair.
        if isinstance(entry, Layer):
            name, layer = None, entry
        elif isinstance(entry, tuple) and len(entry) == 2:
            name, layer = entry
        else:
            name, layer = None, None
        if not isinstance(layer, Layer):
            raise TypeError(f"serial: expected a Layer or a (name, Layer) pair, got {entry!r}")
        # Names key the params dict: a non-string key breaks jax's sorting of dict keys later.
        if name is not None and not isinstance(name, str):
            raise TypeError(f"serial: a layer's name must be a str, got {name!r} in {entry!r}")
        counts[layer.kind] = counts.get(layer.kind, 0) + 1
        named.append((name or f"{layer.kind}{counts[layer.kind]}", layer))
    names = [name for name, _ in named]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"serial: layer names must be unique, repeated: {repeated} in {names}")
    return named


def _located(name, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, a `LayerError` from it located under the layer ``name``."""
    try:
        return fn(*args, **kwargs)
    except LayerError as error:
        raise error.within(name) from None


def _run_layers(named, params, state, x, key, train):
    """Yields ``(name, output, new state)`` of each layer in turn, each fed the previous
    output; ``key`` (if any) is split into one key per layer."""
    keys = [None] * len(named) if key is None else list(split_key("serial", key, len(named)))
    for (name, layer), layer_key in zip(named, keys, strict=True):
        x, s = _located(
            name,
            layer.apply,
            params.get(name, {}),
            state.get(name, {}),
            x,
            key=layer_key,
            train=train,
        )
        yield name, x, s


def serial(*layers: Layer | tuple[str, Layer]) -> Layer:
    """Chains layers: the output of each is the input of the next.

    Args:
      *layers: `Layer` values or ``(name, Layer)`` pairs. An unnamed layer gets the stable name
        ``{kind}{k}`` (``dense1``, ``dense2``, ``relu1``): its position among layers of its kind.

    Returns:
      A `Layer` whose params and state are dicts keyed by layer name, holding only the layers that
      have any (``{"conv1": {"w": [5, 5, 1, 32], "b": [32]}, ...}``). ``init`` and ``apply`` give
      each layer its own key, split from the one they are given.

    Example:
      >>> model = jaxdl.serial(("conv1", conv2d(32, 5)), ("act1", relu), flatten, dense(10))
      >>> params, state = model.init(key, jnp.zeros((1, 28, 28, 1)))
    """
    named = _named(layers)

    def init(key, x):
        params, state = {}, {}
        keys = split_key("serial", key, len(named))
        for (name, layer), layer_key in zip(named, keys, strict=True):
            p, s = _located(name, layer.init, layer_key, x)
            # The next layer's example input (shape and dtype only). Located too: layers without
            # params (pooling, flatten) first check their input here, in apply.
            x, _ = _located(
                name, jax.eval_shape, lambda p, s, x, layer=layer: layer.apply(p, s, x), p, s, x
            )
            if p:
                params[name] = p
            if s:
                state[name] = s
        return params, state

    def apply(params, state, x, *, key=None, train=False):
        new_state = {}
        for name, x, s in _run_layers(named, params, state, x, key, train):
            if s:
                new_state[name] = s
        return x, new_state

    return Layer(init, apply, "serial")


def serial_outputs(entries, params, state, x, *, key=None, train=False) -> dict[str, jax.Array]:
    """The output of every layer of ``serial(*entries)``, for studying activations.

    Args:
      entries: the ``(name, Layer)`` pairs the model was built from (e.g. `jaxdl.mlp_entries`).
      params: the model's params (``params[name]`` per layer).
      state: the model's state.
      x: inputs ``[batch, ...features]``.
      key: as ``apply``; split per layer exactly as `serial` does.
      train: as ``apply``.

    Returns:
      ``{name: output}`` in layer order; the last is the model's output.
    """
    return {name: y for name, y, _ in _run_layers(_named(entries), params, state, x, key, train)}
