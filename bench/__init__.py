"""Benchmarks of jaxdl against hand-written JAX and PyTorch: ``python -m bench.run``."""
