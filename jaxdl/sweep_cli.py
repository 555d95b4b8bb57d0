"""``jaxdl sweep``: parses a population (models x seeds x learning rates) and calls `jaxdl.sweep`.

Only parsing, the progress bar and the printed summary live here; the work is `jaxdl.sweep` and
`jaxdl.sweep_report.write_sweep`. The sweep's folder holds ``config.json`` (a `SweepSpec`), from
which ``--resume`` rebuilds the sweep, and with ``--checkpoint-every`` its ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxdl import config, report, sweep_report
from jaxdl.cli import (
    _Progress,
    add_data_arguments,
    add_device_arguments,
    add_model_arguments,
    add_train_arguments,
    config_overrides,
    mesh_from_args,
    read_resumed_json,
    warn_unused_options,
)
from jaxdl.io import write_json_atomic
from jaxdl.sweep import STRATEGIES, members_of, sweep


def _networks(count: int) -> str:
    return f"{count} network{'' if count == 1 else 's'}"


def _list(kind):
    """An argparse type: ``"1e-3,1e-2"`` -> ``[0.001, 0.01]`` of ``kind``; a value given twice
    is an error (it would train the same networks twice and count them as more seeds), and so is
    an empty item (``"1e-3,,1e-2"``: a value lost in typing)."""

    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",")]
        try:
            values = [kind(part) for part in parts] if all(parts) else []
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}"
            )
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise argparse.ArgumentTypeError(
                f"expected distinct values, got {text!r} ({repeated[0]!r} twice)"
            )
        return values

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
        help="vmap, map, chunked or auto (default: auto: vmap on GPU/TPU; on CPU dense nets "
        "vmapped in cache-sized chunks of members, ConvNets in pairs, each program's members in "
        "parts that run side by side)",
    )
    add_data_arguments(parser)
    add_model_arguments(parser, name=False)
    add_train_arguments(parser, hparams=False)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", default=None, help="sweep folder (default: runs/sweep-<data>-<time>)"
    )
    output.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="save the stacked state of every group (or chunk of members, or member under map) "
        "every N steps and at the end, in OUT/checkpoints (default: no checkpoints)",
    )
    output.add_argument(
        "--resume",
        metavar="SWEEP_DIR",
        help="continue the checkpointed sweep in SWEEP_DIR with its config.json (options that "
        "would change the sweep are refused): completed groups are not retrained; ends "
        "bit-identical to an uninterrupted sweep",
    )
    output.add_argument(
        "--save-members",
        action="store_true",
        help="also write every member as a run folder OUT/members/<i> (i as in results.csv) "
        "that jaxdl eval --checkpoint reads",
    )
    output.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: one line per group and evaluation",
    )
    add_device_arguments(parser)


class SweepSpec(NamedTuple):
    """What ``jaxdl sweep`` runs; its folder's ``config.json`` is `spec_to_dict` of it."""

    run: config.RunConfig  # shared configuration; lr, weight_decay, init_scale: their first values
    axes: dict[str, list[Any]]  # the population's axes, as `population_axes` makes them
    strategy: str  # one of STRATEGIES
    save_members: bool = False  # also write each member as a run folder <out>/members/<i>


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """A `SweepSpec` as JSON: ``{"run": to_dict(run), "axes", "strategy", "save_members"}``."""
    return {**spec._asdict(), "run": config.to_dict(spec.run)}


# The axes `population_axes` makes, with the type of their values; model and seed always.
AXIS_TYPES = {"model": str, "lr": float, "weight_decay": float, "init_scale": float, "seed": int}
REQUIRED_AXES = ("model", "seed")


def check_axes(axes: Any) -> None:
    """Raises a ValueError unless ``axes`` is as `population_axes` makes it: a dict from
    `AXIS_TYPES` names (model and seed among them) to non-empty lists of values of that type."""
    if not isinstance(axes, Mapping):
        raise ValueError(f"axes: expected a dict of axis: [values], got {axes!r:.80}")
    unknown = sorted(set(axes) - set(AXIS_TYPES))
    missing = [name for name in REQUIRED_AXES if name not in axes]
    if unknown or missing:
        raise ValueError(
            f"axes: unknown {unknown}, missing {missing}; expected {', '.join(REQUIRED_AXES)} "
            f"and any of {', '.join(AXIS_TYPES)}"
        )
    for name, values in axes.items():
        kind = AXIS_TYPES[name]
        if not isinstance(values, list) or not values or not all(_is(v, kind) for v in values):
            raise ValueError(
                f"axes.{name}: expected a non-empty list of {kind.__name__} values, "
                f"got {values!r:.80}"
            )


def _is(value: Any, kind: type) -> bool:
    """Whether a JSON value is of ``kind`` (an int counts as a float; a bool as neither)."""
    kinds = (int, float) if kind is float else (kind,)
    return isinstance(value, kinds) and not isinstance(value, bool)


def spec_from_dict(d: Mapping[str, Any]) -> SweepSpec:
    """The `SweepSpec` of `spec_to_dict` output; an unknown key is an error listing the valid,
    and so are axes (`check_axes`), a strategy or a ``save_members`` it could not have written."""
    if not isinstance(d, Mapping):
        raise ValueError(f"sweep config must be a dict, got {d!r}")
    unknown = sorted(set(d) - set(SweepSpec._fields))
    missing = [key for key in ("run", "axes", "strategy") if key not in d]
    if unknown or missing:
        raise ValueError(
            f"sweep config: unknown key(s) {unknown}, missing {missing}; "
            f"valid: {', '.join(SweepSpec._fields)}"
        )
    check_axes(d["axes"])
    if d["strategy"] not in STRATEGIES:
        raise ValueError(
            f"strategy: expected one of {', '.join(STRATEGIES)}, got {d['strategy']!r}"
        )
    if not isinstance(d.get("save_members", False), bool):
        raise ValueError(f"save_members: expected true or false, got {d['save_members']!r}")
    return SweepSpec(**{**d, "run": config.from_dict(d["run"])})


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


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The `SweepSpec` of the parsed options (every value checked as the `RunConfig` checks it)."""
    # The model checked is one the sweep trains (`check_fits` checks the others), not the
    # RunConfig default: a convnet would refuse --dropout given to a sweep of MLPs.
    overrides = {**config_overrides(args), "model.name": args.models[0]}
    base = config.replace(config.RunConfig(), overrides)
    base = dataclasses.replace(
        base,
        lr=args.lrs[0],
        weight_decay=args.weight_decays[0],
        init_scale=args.init_scales[0],
        checkpoint_every=args.checkpoint_every,
    )  # validates the first values; the others are checked as hparams below
    for lr in args.lrs:
        config.replace(base, {"lr": lr})
    return SweepSpec(base, population_axes(args), args.strategy, args.save_members)


def _resumed_spec(sweep_dir: str) -> SweepSpec:
    """The `SweepSpec` saved in a sweep folder, its ``run.out`` pointing at that folder."""
    spec = read_resumed_json("--resume", sweep_dir, "jaxdl sweep", spec_from_dict)
    if spec.run.checkpoint_every is None:
        raise ValueError(
            f"--resume {sweep_dir}: that sweep saved no checkpoints (run it with "
            f"--checkpoint-every N to make it resumable)"
        )
    return spec._replace(run=config.replace(spec.run, {"out": sweep_dir}))


def member_config(base: config.RunConfig, member: Mapping[str, Any]) -> config.RunConfig:
    """The `RunConfig` of one member of a ``jaxdl sweep``: ``base`` with its axis values.

    Args:
      base: the sweep's shared `RunConfig`.
      member: the member's ``{axis: value}`` (``model``, ``seed``, and ``lr``,
        ``weight_decay``, ``init_scale`` where they are axes).

    Returns:
      A `RunConfig` that `jaxdl.train.fit` would train into the same network.
    """
    overrides = {"model.name": member["model"], "seed": int(member["seed"])}
    overrides.update({k: member[k] for k in ("lr", "weight_decay", "init_scale") if k in member})
    return config.replace(base, overrides)


def save_members(result, base: config.RunConfig, out: str) -> str:
    """Writes every member as a run folder ``<out>/members/<i>`` (`SweepResult.save_member`);
    one already there (whole: they are renamed into place) is kept, as a resumed sweep's, and
    the half-written folders a killed save left (``.<i>.<hex>.tmp``) are removed.

    Returns:
      The ``members`` folder.
    """
    folder = os.path.join(out, "members")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(".tmp"):  # save_member's staging names
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    for i, member in enumerate(result.members):
        run_dir = os.path.join(folder, str(i))
        if not os.path.exists(run_dir):
            result.save_member(i, run_dir, run_config=member_config(base, member))
    return folder


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
    from jaxdl.checkpoint import Checkpointer
    from jaxdl.train import check_fits

    mesh = mesh_from_args(args)  # first: jax.distributed starts before any other JAX work
    main_process = distributed.is_main_process()
    spec = _resumed_spec(args.resume) if args.resume else spec_from_args(args)
    base, axes = spec.run, spec.axes
    warn_unused_options(args, base, axes["model"])
    data = config.load_data(base.data)

    def model_for(model: str):
        model_cfg = dataclasses.replace(base.model, name=model)
        return config.build_model(model_cfg, data.num_classes, len(data.input_shape))

    # as `sweep` checks, but before the folder is made: a bad configuration leaves nothing
    check_fits(base.train, data, model_for, base.hparams, axes=axes)
    out = base.out or _default_out(base.data.name)  # --out sets base.out
    base = config.replace(base, {"out": out})
    # before config.json is written: it is what --resume rebuilds a run or sweep from
    report.check_out_dir(out, "sweep", resume=bool(args.resume))
    members = len(members_of(axes))
    print(
        f"{'resuming ' if args.resume else ''}sweep of {_networks(members)} "
        f"({', '.join(f'{k}: {len(v)}' for k, v in axes.items())}) "
        f"on {base.data.name} ({data.num_train} train / {data.num_test} test), "
        f"{base.train.steps} steps each -> {out}",
        flush=True,
    )
    if main_process:  # first: --resume rebuilds the sweep from it
        os.makedirs(out, exist_ok=True)
        if not args.resume:  # an earlier sweep's results must not pass for this one's
            sweep_report.clear_sweep_outputs(out)
        write_json_atomic(os.path.join(out, "config.json"), spec_to_dict(spec._replace(run=base)))
    checkpointer = None
    if base.checkpoint_every is not None:
        checkpointer = Checkpointer(report.checkpoint_dir(out), every=base.checkpoint_every)

    live = not args.no_progress and sys.stdout.isatty() and main_process
    started = time.perf_counter()
    # Progress counts network-steps: a group may run its members together, in chunks of
    # members, or one after another (each unit's steps restart from its own first chunk).
    # A resumed unit's first chunk counts its restored steps too; a unit restored complete
    # reports no chunk, so each group start counts every earlier group's members as done.
    quiet = not main_process  # one process prints the progress, as one writes the folder
    with _Progress(
        members * base.train.steps, live=live, quiet=quiet, unit="network-steps"
    ) as progress:
        done = {"network_steps": 0, "last_step": 0, "groups": 0}

        def on_group(static, count):
            done["network_steps"] = max(done["network_steps"], done["groups"])
            done["groups"] += count * base.train.steps  # network-steps once this group ends
            if not live and not quiet:
                shapes = ", ".join(f"{k}={v}" for k, v in static.items()) or "all"
                print(f"training {shapes}: {_networks(count)}", flush=True)

        def on_chunk(step, metrics):
            last = done["last_step"]
            advanced = step if step <= last else step - last  # a new unit starts from 0
            done["last_step"] = step
            done["network_steps"] += advanced * int(np.size(metrics["loss"]))
            done["metrics"] = {k: _typical(v) for k, v in metrics.items()}
            progress.update(done["network_steps"], done["metrics"])

        result = sweep(  # a CheckpointError is a ValueError: one line, status 2
            model_for,
            data,
            axes,
            config=base.train,
            hparams=base.hparams,
            strategy=spec.strategy,
            on_chunk=on_chunk,
            on_group=on_group,
            mesh=mesh,
            checkpointer=checkpointer,
            resume=bool(args.resume),
        )
        if live and "metrics" in done:  # the bar ends full though restored units ran no chunk
            progress.update(members * base.train.steps, done["metrics"])
    wall_s = time.perf_counter() - started
    if not main_process:  # only process 0 writes the folder and prints
        return 0
    summary = sweep_report.write_sweep(
        result, out, data_name=base.data.name, extra={"wall_s": wall_s}
    )
    if spec.save_members:
        print(f"members saved as run folders in {save_members(result, base, out)}")
    print(f"\n{summary}\n")
    print(f"{_networks(members)} in {wall_s:.0f} s; output: {out}")
    diverged = [row for row in result.rows() if row["diverged_at_step"] >= 0]
    if diverged:
        print(
            f"warning: {len(diverged)} of {members} members diverged (see results.csv)",
            file=sys.stderr,
        )
    return 1 if len(diverged) == members else 0


def _typical(value) -> float:
    """The progress line's value of a population's metric ``[members]``: the median of its
    finite values (a diverged member's NaN or huge loss would swamp a mean); NaN if none."""
    value = np.asarray(value, np.float64)
    finite = value[np.isfinite(value)]
    return float(np.median(finite)) if finite.size else math.nan
