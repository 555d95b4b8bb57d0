"""Strict JAX settings for every test: no implicit dtype or rank promotion; the CLI's persistent
compilation cache stays off (tests that need it turn it on in a temporary folder).

JAX's own persistent compilation cache is on, in a fresh folder per test run that both xdist
workers and every subprocess share: many tests compile the same small programs, and a cold
cache made `tests/test_train.py` and `tests/test_sweep.py` 1.3x faster (98 s -> 74 s)."""

import atexit
import os
import shutil
import tempfile

import jax

os.environ.setdefault("JAXDL_CACHE_DIR", "off")

_CACHE_OWNER = "JAXDL_TEST_XLA_CACHE" not in os.environ  # the first process of this run
if _CACHE_OWNER:
    os.environ["JAXDL_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxdl-test-xla-")
    atexit.register(shutil.rmtree, os.environ["JAXDL_TEST_XLA_CACHE"], ignore_errors=True)
_CACHE_SETTINGS = {  # inherited by the subprocesses tests start (CLI runs, distributed workers)
    "JAX_COMPILATION_CACHE_DIR": os.environ["JAXDL_TEST_XLA_CACHE"],
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}
os.environ.update(_CACHE_SETTINGS)
jax.config.update("jax_compilation_cache_dir", os.environ["JAXDL_TEST_XLA_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
