"""Strict JAX settings for every test: no implicit dtype or rank promotion; the CLI's persistent
compilation cache stays off (tests that need it turn it on in a temporary folder)."""

import os

import jax

os.environ.setdefault("JAXDL_CACHE_DIR", "off")

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
