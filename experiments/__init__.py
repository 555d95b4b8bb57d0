"""Studies that check the primer's claims with jaxdl: one module per study, each with a frozen
``Config``, ``run(config) -> results`` (which also writes the study's output folder) and a
command line, ``python -m experiments.<name> [--quick] [--out DIR] [--set KEY=VALUE]``."""
