"""Shape-only layers: `flatten`, ``[batch, d1, d2, ...]`` to ``[batch, d1*d2*...]``."""

from __future__ import annotations

import math

from jaxdl.types import Layer, LayerError


def _flatten_init(key, x):
    return {}, {}


def _flatten_apply(params, state, x, *, key=None, train=False):
    if x.ndim < 2:
        raise LayerError("flatten", f"expected input [batch, ...features], got shape {x.shape}")
    # The size, not -1: a reshape cannot infer -1 for an empty batch.
    return x.reshape(x.shape[0], math.prod(x.shape[1:])), state  # [B, prod(features)]


flatten = Layer(_flatten_init, _flatten_apply, "flatten")
"""Flattens every axis but the batch axis: ``[batch, d1, d2, ...]`` to ``[batch, d1*d2*...]``."""
