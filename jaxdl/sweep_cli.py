"""``jaxdl sweep``: parses a population (models x seeds x learning rates) and calls `jaxdl.sweep`.

Only parsing, the progress bar and the printed summary live here; the work is `jaxdl.sweep` and
`jaxdl.sweep_report.write_sweep`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any

from jaxdl import config, sweep_report
from jaxdl.cli import (
    _Progress,
    add_data_arguments,
    add_device_arguments,
    add_model_arguments,
    add_train_arguments,
    config_overrides,
    mesh_from_args,
)
from jaxdl.io import write_json_atomic
from jaxdl.sweep import STRATEGIES, sweep


def _list(kind):
    """An argparse type: ``"1e-3,1e-2"`` -> ``[0.001, 0.01]`` of ``kind``."""

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}"
            ) from None

    return parse


def _models(text: str) -> list[str]:
    names = _list(str)(text)
    unknown = [n for n in names if n not in config.MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model {', '.join(unknown) or text!r}; valid: {', '.join(config.MODELS)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the sweep's options: the axes (lists), then the shared data/model/training options.

    Args:
      parser: the ``sweep`` subcommand's parser.

    Returns:
      None.
    """
    axes = parser.add_argument_group("population (the product of these axes)")
    axes.add_argument(
        "--model",
        dest="models",
        type=_models,
        default=["mlp", "convnet"],
        help=f"comma-separated networks from {', '.join(config.MODELS)} (default: mlp,convnet)",
    )
    axes.add_argument(
        "--seeds", type=int, default=8, help="seeds 0..N-1 per configuration (default: 8)"
    )
    axes.add_argument(
        "--lr",
        dest="lrs",
        type=_list(float),
        default=[1e-3],
        help="comma-separated peak learning rates (default: 0.001)",
    )
    axes.add_argument(
        "--weight-decay",
        dest="weight_decays",
        type=_list(float),
        default=[0.0],
        help="comma-separated weight decays (default: 0)",
    )
    axes.add_argument(
        "--init-scale",
        dest="init_scales",
        type=_list(float),
        default=[1.0],
        help="comma-separated initial-weight multipliers (default: 1)",
    )
    axes.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="vmap, map, chunked or auto (default: auto)",
    )
    add_data_arguments(parser)
    add_model_arguments(parser, name=False)
    add_train_arguments(parser, hparams=False)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", default=None, help="sweep folder (default: runs/sweep-<data>-<time>)"
    )
    output.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: one line per group and evaluation",
    )
    add_device_arguments(parser)


def population_axes(args: argparse.Namespace) -> dict[str, list[Any]]:
    """The sweep's axes from the parsed options: every list with more than one value, the
    models and the seeds always (so every row names its model and seed)."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    axes: dict[str, list[Any]] = {"model": args.models}
    for name, values in (
        ("lr", args.lrs),
        ("weight_decay", args.weight_decays),
        ("init_scale", args.init_scales),
    ):
        if len(values) > 1:
            axes[name] = values
    axes["seed"] = list(range(args.seeds))
    return axes


def _default_out(data_name: str) -> str:
    stem = os.path.join("runs", f"sweep-{data_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out, n = stem, 1
    while os.path.exists(out):
        n += 1
        out = f"{stem}-{n}"
    return out


def run(args: argparse.Namespace) -> int:
    """Runs ``jaxdl sweep``: trains the population, writes the folder, prints the summary.

    Args:
      args: parsed options of `add_arguments`.

    Returns:
      0, or 1 if every member diverged.
    """
    from jaxdl import distributed

    mesh = mesh_from_args(args)  # first: jax.distributed starts before any other JAX work
    main_process = distributed.is_main_process()
    base = config.replace(config.RunConfig(), config_overrides(args))
    base = dataclasses.replace(
        base, lr=args.lrs[0], weight_decay=args.weight_decays[0], init_scale=args.init_scales[0]
    )  # validates the first values; the others are checked as hparams below
    for lr in args.lrs:
        config.replace(base, {"lr": lr})
    axes = population_axes(args)
    data = config.load_data(base.data)
    out = args.out or _default_out(base.data.name)
    members = (
        len(args.models)
        * args.seeds
        * len(args.lrs)
        * len(args.weight_decays)
        * len(args.init_scales)
    )
    print(
        f"sweep of {members} networks ({', '.join(f'{k}: {len(v)}' for k, v in axes.items())}) "
        f"on {base.data.name} ({data.num_train} train / {data.num_test} test), "
        f"{base.train.steps} steps each -> {out}",
        flush=True,
    )

    def model_for(model: str):
        model_cfg = dataclasses.replace(base.model, name=model)
        return config.build_model(model_cfg, data.num_classes, len(data.input_shape))

    live = not args.no_progress and sys.stdout.isatty() and main_process
    groups = len(args.models)
    started = time.perf_counter()
    with _Progress(groups * base.train.steps, live=live) as progress:
        done_groups = []

        def on_group(static, count):
            done_groups.append(static)
            if not live:
                print(f"training {static or 'all'}: {count} members", flush=True)

        def on_chunk(step, metrics):
            offset = (len(done_groups) - 1) * base.train.steps
            progress.update(offset + step, {k: _mean(v) for k, v in metrics.items()})

        result = sweep(
            model_for,
            data,
            axes,
            config=base.train,
            hparams=base.hparams,
            strategy=args.strategy,
            on_chunk=on_chunk,
            on_group=on_group,
            mesh=mesh,
        )
    wall_s = time.perf_counter() - started
    if not main_process:  # only process 0 writes the folder and prints
        return 0
    os.makedirs(out, exist_ok=True)
    write_json_atomic(
        os.path.join(out, "config.json"),
        {"run": config.to_dict(base), "axes": axes, "strategy": args.strategy},
    )
    summary = sweep_report.write_sweep(
        result, out, data_name=base.data.name, extra={"wall_s": wall_s}
    )
    print(f"\n{summary}\n")
    print(f"{members} networks in {wall_s:.0f} s; output: {out}")
    diverged = [row for row in result.rows() if row["diverged_at_step"] >= 0]
    if diverged:
        print(
            f"warning: {len(diverged)} of {members} members diverged (see results.csv)",
            file=sys.stderr,
        )
    return 1 if len(diverged) == members else 0


def _mean(value):
    import numpy as np

    return float(np.mean(value))
