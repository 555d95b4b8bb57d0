"""The ``jaxdl`` command line: parses arguments into a `jaxdl.config.RunConfig` and calls the
library (`jaxdl.report.train_and_evaluate`); it only adds the progress bar and the results table.

Each subcommand is one `Command` entry in `COMMANDS`: a function adding its options and one
running it. User errors print one line ``error: ...`` to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from jaxdl import __version__, config, initializers, optimizers, report
from jaxdl.data import DataError
from jaxdl.layers.activations import NAMES as ACTIVATIONS
from jaxdl.types import LayerError

# Errors a user can cause and fix (bad values, data files, shapes): one line, status 2.
USER_ERRORS = (ValueError, DataError, LayerError, OSError)
USAGE_STATUS = 2  # bad arguments or configuration, as argparse uses
DIVERGED_STATUS = 1  # the run itself failed: the loss became non-finite


class UsageError(Exception):
    """A command line argparse refused; the message names the argument and the valid values."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises `UsageError` instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(message)

    def valid_options(self) -> list[str]:
        """Every ``--long`` option this parser takes."""
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]


def _int_tuple(text: str) -> tuple[int, ...]:
    """``"256,256"`` -> ``(256, 256)``; ``""`` or ``"none"`` -> ``()``."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like 256,256, got {text!r}"
        ) from None


def _float_or_none(text: str) -> float | None:
    """``"none"`` -> ``None``, else a float."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _default(key: str) -> Any:
    """The `RunConfig` default of a dotted key, so the CLI and the library agree."""
    value: Any = config.RunConfig()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _option(group, flag: str, key: str, help: str, **kwargs) -> None:
    """An option whose ``dest`` is the dotted `RunConfig` key it sets (see `config_overrides`)."""
    default = kwargs.setdefault("default", _default(key))
    if "choices" in kwargs:
        kwargs.setdefault("metavar", "{" + ",".join(kwargs["choices"]) + "}")
    kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    if isinstance(default, tuple):
        help += f" (default: {','.join(map(str, default)) or 'none'})"
    elif default is not None:
        help += f" (default: {default})"
    group.add_argument(flag, dest=key, help=help.strip(), **kwargs)


def add_model_arguments(parser: argparse.ArgumentParser, *, name: bool = True) -> None:
    """Adds the options of `jaxdl.config.ModelConfig` to ``parser``, each ``dest`` its dotted key.

    Args:
      parser: the subcommand's parser.
      name: whether to add ``--model`` (a sweep adds its own, taking a list).

    Returns:
      None.
    """
    group = parser.add_argument_group("model")
    if name:
        _option(group, "--model", "model.name", "network", choices=config.MODELS)
    _option(group, "--activation", "model.activation", "after hidden layers", choices=ACTIVATIONS)
    _option(
        group,
        "--init",
        "model.init",
        "initialiser of every weight (default: glorot_uniform for mlp, he_normal for convnet)",
        choices=initializers.NAMES,
    )
    _option(
        group,
        "--hidden",
        "model.hidden",
        "dense hidden widths, e.g. 256,256, or none (default: 256,256 for mlp, none for convnet)",
        type=_int_tuple,
    )
    _option(group, "--channels", "model.channels", "convnet: conv channels", type=_int_tuple)
    _option(group, "--kernel", "model.kernel", "convnet: conv receptive field", type=int)
    _option(group, "--pool", "model.pool", "convnet: pooling by 2", choices=config.POOLS)
    _option(group, "--dropout", "model.dropout", "fraction of hidden units dropped", type=float)
    _option(group, "--norm", "model.norm", "normalisation", choices=config.NORMS)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `jaxdl.config.DataConfig` to ``parser``, each ``dest`` its dotted key.

    Args:
      parser: the subcommand's parser.

    Returns:
      None.
    """
    group = parser.add_argument_group("data")
    _option(group, "--data", "data.name", "data set: digits, mnist1d, mnist1d_shuffled, mnist, ...")
    _option(group, "--data-path", "data.path", "file or folder to read (mnist, cifar10, npz)")
    _option(group, "--num-train", "data.num_train", "keep the first N train examples", type=int)
    _option(group, "--num-test", "data.num_test", "keep the first N test examples", type=int)


def add_train_arguments(parser: argparse.ArgumentParser, *, hparams: bool = True) -> None:
    """Adds the options of `jaxdl.train.TrainConfig`, the traced hyper-parameters and the seed.

    Args:
      parser: the subcommand's parser.
      hparams: whether to add ``--lr``, ``--weight-decay``, ``--init-scale`` and ``--seed`` (a
        sweep adds its own, taking lists).

    Returns:
      None.
    """
    group = parser.add_argument_group("training")
    _option(group, "--optimizer", "train.optimizer", "update rule", choices=optimizers.OPTIMIZERS)
    if hparams:
        _option(group, "--lr", "lr", "peak learning rate", type=float)
        _option(group, "--weight-decay", "weight_decay", "weight decay", type=float)
    _option(group, "--momentum", "train.momentum", "momentum of --optimizer momentum", type=float)
    _option(group, "--schedule", "train.schedule", "lr schedule", choices=optimizers.SCHEDULES)
    _option(group, "--warmup-steps", "train.warmup_steps", "warm-up of warmup_cosine", type=int)
    _option(
        group,
        "--grad-clip",
        "train.grad_clip",
        "global-norm clip, or none (default: none)",
        type=_float_or_none,
    )
    if hparams:
        _option(group, "--init-scale", "init_scale", "multiplies initial weights", type=float)
    _option(group, "--steps", "train.steps", "training steps", type=int)
    _option(group, "--batch-size", "train.batch_size", "examples per step", type=int)
    _option(group, "--chunk-steps", "train.chunk_steps", "steps per compiled chunk", type=int)
    _option(group, "--eval-every", "train.eval_every", "steps between test evaluations", type=int)
    group.add_argument(
        "--no-skip-nonfinite",
        dest="train.skip_nonfinite",
        action="store_false",
        help="never skip an update whose loss or gradients are NaN/inf: the step need not wait "
        "for the check (about 10 %% faster when overhead-bound); the params then take the NaN/inf, "
        "the first such step is still reported (train stops after its chunk)",
    )
    if hparams:
        _option(group, "--seed", "seed", "random seed", type=int)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options that set `RunConfig` fields, for `jaxdl.config.replace`.

    Args:
      args: parsed arguments; options added by the ``add_*_arguments`` functions have the dotted
        `RunConfig` key as their ``dest``.

    Returns:
      ``{"train.steps": 2000, "model.name": "convnet", "lr": 0.001, ...}``; ``data.path``
      made absolute, so that the saved ``config.json`` reads the same data from any folder
      (``jaxdl eval``, ``--resume``).
    """
    keys = set(config.valid_keys())
    overrides = {key: value for key, value in vars(args).items() if key in keys}
    if overrides.get("data.path"):
        overrides["data.path"] = os.path.abspath(overrides["data.path"])
    return overrides


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options that place a run on several devices and hosts.

    Args:
      parser: the subcommand's parser.

    Returns:
      None.
    """
    group = parser.add_argument_group("devices and hosts")
    group.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N devices (default: the default device; with --mesh: all)",
    )
    group.add_argument(
        "--mesh",
        default=None,
        metavar="SPEC",
        help="axes over the devices: data=4 splits each batch; members=2,data=2 (sweeps) also "
        "splits the members (default with --devices or several processes: all on data)",
    )
    group.add_argument(
        "--coordinator-address",
        default=None,
        metavar="HOST:PORT",
        help="multi-host: process 0's host:port (or JAXDL_COORDINATOR_ADDRESS; SLURM is detected)",
    )
    group.add_argument(
        "--num-processes",
        type=int,
        default=None,
        help="multi-host: processes in the run (or JAXDL_NUM_PROCESSES / SLURM_NTASKS)",
    )
    group.add_argument(
        "--process-id",
        type=int,
        default=None,
        help="multi-host: this process's index (or JAXDL_PROCESS_ID / SLURM_PROCID)",
    )


def mesh_from_args(args: argparse.Namespace):
    """Joins the multi-host run if one is configured, then builds the mesh asked for.

    Args:
      args: parsed options of `add_device_arguments`.

    Returns:
      A ``jax.sharding.Mesh``, or ``None`` for the single-device path.
    """
    import jax

    from jaxdl import distributed, sharding

    several = distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    if args.mesh is None and args.devices is None and not several:
        return None
    devices = jax.devices()
    if args.devices is not None:
        if not 1 <= args.devices <= len(devices):
            raise UsageError(
                f"--devices must be in [1, {len(devices)}] (the devices available), "
                f"got {args.devices}"
            )
        if several and args.devices != len(devices):
            # The first N of all processes' devices leave some process with none of its own.
            raise UsageError(
                f"--devices {args.devices} would leave processes out of the mesh: a run of "
                f"{jax.process_count()} processes uses all {len(devices)} devices "
                "(leave --devices out)"
            )
        devices = devices[: args.devices]
    return sharding.make_mesh(args.mesh, devices)


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_train_arguments(parser)
    output = parser.add_argument_group("output")
    _option(output, "--out", "out", "run folder (default: runs/<data>-<model>-<time>)")
    _option(
        output,
        "--checkpoint-every",
        "checkpoint_every",
        "save a checkpoint every N steps and at the end",
        type=int,
    )
    output.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest valid checkpoint, with its config.json "
        "(options that would change the run are refused); ends bit-identical to an "
        "uninterrupted run",
    )
    output.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: one line per evaluation (also when stdout is not a terminal)",
    )
    add_device_arguments(parser)


def read_resumed_json(flag: str, folder: str, kind: str, parse: Callable[[Any], Any]) -> Any:
    """``parse`` of the JSON in ``<folder>/config.json``; a missing, malformed or invalid file is
    a ValueError naming ``flag``, the file and what is wrong.

    Args:
      flag: the option that named the folder (``"--resume"``).
      folder: the run or sweep folder.
      kind: what the folder should be (``"jaxdl train"``), for the error.
      parse: builds the configuration from the loaded JSON; raises ValueError on bad content.

    Returns:
      ``parse(json.load(config.json))``.
    """
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"{flag} {folder}: no config.json there (not a {kind} folder)")
    try:
        with open(path, encoding="utf-8") as f:
            return parse(json.load(f))
    except ValueError as err:  # json.JSONDecodeError is one
        raise ValueError(f"{flag} {folder}: {path} is not a {kind} config: {err}") from None


def _device_options() -> list[str]:
    parser = _Parser(add_help=False)
    add_device_arguments(parser)
    return parser.valid_options()


# Options that say how to run, not what: the only ones a --resume takes besides its folder.
RESUME_OPTIONS = ("--resume", "--no-progress", "--no-compilation-cache", *_device_options())


def check_resume_options(args: argparse.Namespace) -> None:
    """Refuses options that ``--resume`` would ignore (it reruns the folder's ``config.json``).

    Args:
      args: parsed arguments of ``jaxdl train`` or ``jaxdl sweep``, with ``resume`` (the folder)
        and ``given_options`` (set by `main`: the ``--long`` options on the command line).

    Returns:
      None; a `UsageError` names the options and the folder.
    """
    ignored = [opt for opt in getattr(args, "given_options", []) if opt not in RESUME_OPTIONS]
    if ignored:
        raise UsageError(
            f"--resume {args.resume} continues that folder's config.json as saved, so "
            f"{', '.join(dict.fromkeys(ignored))} would be ignored: leave them out (other "
            f"options make another run: give it its own --out); with --resume go only "
            f"{', '.join(RESUME_OPTIONS[1:])}"
        )


# Options that only act with one model, optimiser or schedule: (what selects it, its value).
CONDITIONAL_OPTIONS = {
    "--channels": ("--model", "convnet"),
    "--kernel": ("--model", "convnet"),
    "--pool": ("--model", "convnet"),
    "--momentum": ("--optimizer", "momentum"),
    "--warmup-steps": ("--schedule", "warmup_cosine"),
}


def warn_unused_options(args: argparse.Namespace, cfg: config.RunConfig, models: Sequence[str]):
    """Prints a warning for each option given that the run does not use (``--channels`` with
    ``--model mlp``): it is valid but changes nothing, which is rarely what was meant.

    Args:
      args: parsed arguments, with ``given_options`` (set by `main`).
      cfg: the run's `RunConfig` (a sweep's shared one).
      models: the model names trained (a sweep may train several).

    Returns:
      None.
    """
    selected = {
        "--model": set(models),
        "--optimizer": {cfg.train.optimizer},
        "--schedule": {cfg.train.schedule},
    }
    given = dict.fromkeys(getattr(args, "given_options", []))
    for option in given:
        if option in CONDITIONAL_OPTIONS:
            selector, value = CONDITIONAL_OPTIONS[option]
            if value not in selected[selector]:
                print(
                    f"warning: {option} acts only with {selector} {value}; ignored here",
                    file=sys.stderr,
                )
    # A dense net without hidden layers (logistic, mlp --hidden none) has nowhere to apply it.
    if "--activation" in given and not any(
        m == "convnet" or config.hidden_of(cfg.model.hidden, m) for m in models
    ):
        which = f"model {models[0]} has" if len(models) == 1 else f"models {', '.join(models)} have"
        print(
            f"warning: --activation acts after hidden layers and {which} none; ignored here",
            file=sys.stderr,
        )


def _resumed_config(run_dir: str) -> config.RunConfig:
    """The `RunConfig` saved in a run folder, its ``out`` pointing at that folder."""
    cfg = read_resumed_json("--resume", run_dir, "jaxdl train", config.from_dict)
    return config.replace(cfg, {"out": run_dir})


def _train(args: argparse.Namespace) -> int:
    from jaxdl import distributed

    mesh = mesh_from_args(args)  # first: jax.distributed starts before any other JAX work
    if args.resume:
        cfg = _resumed_config(args.resume)
    else:
        cfg = config.replace(config.RunConfig(), config_overrides(args))
    warn_unused_options(args, cfg, [cfg.model.name])
    data = config.load_data(cfg.data)
    if cfg.out is None:
        cfg = config.replace(cfg, {"out": report.default_out_dir(cfg)})
    verb = "resuming" if args.resume else "training"
    print(
        f"{verb} {cfg.model.name} on {cfg.data.name} ({data.num_train} train / "
        f"{data.num_test} test, input {list(data.input_shape)}) for {cfg.train.steps} steps "
        f"-> {cfg.out}",
        flush=True,
    )
    main_process = distributed.is_main_process()
    live = not args.no_progress and sys.stdout.isatty() and main_process
    with _Progress(cfg.train.steps, live=live, quiet=not main_process) as progress:
        outcome = report.train_and_evaluate(
            cfg, data=data, on_chunk=progress.update, resume=bool(args.resume), mesh=mesh
        )
    if main_process:
        _print_results(outcome.results, outcome.out_dir)
    diverged_at = outcome.results["diverged_at"]
    if diverged_at is not None:
        print(f"error: loss became non-finite at step {diverged_at}", file=sys.stderr)
        return DIVERGED_STATUS
    return 0


def _metrics_text(metrics: dict[str, Any], test_accuracy: float | None) -> str:
    text = f"loss {float(metrics['loss']):.4f}  train {100 * float(metrics['train_accuracy']):.1f}%"
    if test_accuracy is not None:
        text += f"  test {100 * test_accuracy:.1f}%"
    return text


class _Progress:
    """A rich progress bar over steps (or network-steps in a sweep: ``unit``), or
    (``live=False``) one printed line per evaluation."""

    def __init__(self, total: int, *, live: bool, quiet: bool = False, unit: str = "step"):
        self.total, self.live, self.quiet, self.unit = total, live, quiet, unit
        self.test_accuracy: float | None = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich import progress

            self._bar = progress.Progress(
                progress.TextColumn("[bold]train"),
                progress.BarColumn(),
                progress.MofNCompleteColumn(),
                progress.TimeElapsedColumn(),
                progress.TimeRemainingColumn(),
                progress.TextColumn("{task.fields[metrics]}"),
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=self.total, metrics="compiling...")
        return self

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        """A `jaxdl.train.fit` ``on_chunk`` callback."""
        evaluated = "test_accuracy" in metrics
        if evaluated:
            self.test_accuracy = float(metrics["test_accuracy"])
        text = _metrics_text(metrics, self.test_accuracy)
        if self.live:
            self._bar.update(self._task, completed=step, metrics=text)
        elif evaluated and not self.quiet:
            print(f"{self.unit} {step}/{self.total}  {text}", flush=True)

    def __exit__(self, *exc) -> None:
        if self.live:
            self._bar.stop()


def _print_results(results: dict[str, Any], out_dir: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f} %"

    def seconds(value):
        return "-" if value is None else f"{value:.1f} s"

    best = percent(results["best_test_accuracy"])
    if results["best_step"] is not None:
        best += f" (step {results['best_step']})"
    final_loss = results["final_loss"]
    table = Table(title="results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("final test accuracy", percent(results["final_test_accuracy"])),
        ("best test accuracy", best),
        ("final train loss", "-" if final_loss is None else f"{final_loss:.4f}"),
        ("steps", str(results["steps"])),
        ("wall time", seconds(results["wall_s"])),
        ("compile time", seconds(results["compile_s"])),
        ("parameters", f"{results['num_params']:,}"),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"output: {out_dir}", highlight=False)


class Command(NamedTuple):
    """A subcommand: its one-line help, what adds its options, and what runs it."""

    help: str  # shown by `jaxdl` and `jaxdl --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]  # adds its options to its parser
    run: Callable[[argparse.Namespace], int]  # does the work, returns the exit status


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", metavar="RUN_DIR", required=True, help="a jaxdl train run folder"
    )
    parser.add_argument("--step", type=int, default=None, help="a saved step (default: newest)")


def _eval(args: argparse.Namespace) -> int:
    from jaxdl.checkpoint import CheckpointError

    try:
        metrics = report.evaluate_run(args.checkpoint, args.step)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    print(
        f"step {metrics['step']}: test accuracy {100 * metrics['test_accuracy']:.2f} % "
        f"(loss {metrics['test_loss']:.4f}, {metrics['num_test']} examples)"
    )
    return 0


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxdl import sweep_cli

    sweep_cli.add_arguments(parser)


def _sweep(args: argparse.Namespace) -> int:
    from jaxdl import sweep_cli

    return sweep_cli.run(args)


# The subcommands, in the order `jaxdl` lists them; adding one is an entry here.
COMMANDS: dict[str, Command] = {
    "train": Command(
        "train one network; write config, metrics, TensorBoard events, results and curves",
        _add_train_arguments,
        _train,
    ),
    "eval": Command(
        "evaluate a run folder's checkpoint on its test set, rebuilt from its config.json",
        _add_eval_arguments,
        _eval,
    ),
    "sweep": Command(
        "train a population (models x seeds x learning rates) as compiled programs; write "
        "results.csv, summary.md and plots",
        _add_sweep_arguments,
        _sweep,
    ),
}


def build_parser() -> tuple[_Parser, dict[str, _Parser]]:
    """The ``jaxdl`` argument parser, one subparser per entry of `COMMANDS`.

    Returns:
      ``(parser, {command name: its parser})``; a subparser sets ``handler`` to its command's
      ``run``.
    """
    parser = _Parser(
        prog="jaxdl", description="Deep nets as pure functions in JAX.", allow_abbrev=False
    )
    parser.add_argument("--version", action="store_true", help="print the version and commands")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers = {}
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=command.help, description=command.help, allow_abbrev=False
        )
        command.add_arguments(sub)
        _add_cache_argument(sub)
        sub.set_defaults(handler=command.run)
        parsers[name] = sub
    return parser, parsers


def _overview() -> str:
    """The version and the subcommands, for ``jaxdl`` and ``jaxdl --version``."""
    lines = [f"jaxdl {__version__}", "", "commands:"]
    lines += [f"  {name:<8} {command.help}" for name, command in COMMANDS.items()]
    lines += ["", "run 'jaxdl COMMAND --help' for its options"]
    return "\n".join(lines)


def _unrecognized(parser: _Parser, extras: list[str]) -> str:
    """The message for unknown options: a close match and every valid option."""
    valid = parser.valid_options()
    message = f"unrecognized arguments: {' '.join(extras)}"
    for extra in extras:
        close = difflib.get_close_matches(extra.split("=")[0], valid, n=1)
        if extra.startswith("-") and close:
            message += f" (did you mean {close[0]}?)"
            break
    return f"{message}; valid options of '{parser.prog}': {', '.join(valid)}"


def _given_options(argv: Sequence[str]) -> list[str]:
    """The ``--long`` options on a command line, as given (``--steps=5`` is ``--steps``)."""
    return [token.split("=", 1)[0] for token in argv if token.startswith("--")]


def _error_text(err: BaseException) -> str:
    """The error's message on one line (``"No such file or directory: x"`` for an OSError)."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return " ".join(str(err).splitlines())


def _add_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile everything afresh: no persistent XLA cache, not even the one of "
        "JAX_COMPILATION_CACHE_DIR (default: kept in $JAXDL_CACHE_DIR, else "
        "$XDG_CACHE_HOME/jaxdl/xla or ~/.cache/jaxdl/xla; JAXDL_CACHE_DIR=off disables it too)",
    )


def _use_compilation_cache(args: argparse.Namespace) -> None:
    """Turns on the persistent compilation cache (a repeated run then skips compilation: its
    first step on CPU takes about 0.5 s instead of 2 s), unless disabled or already set up;
    ``--no-compilation-cache`` turns off JAX's own (``JAX_COMPILATION_CACHE_DIR``) too."""
    import jax

    from jaxdl.compilation_cache import default_cache_dir, enable_compilation_cache

    if args.no_compilation_cache:  # afresh, as it says: JAX's own cache too, if one is set
        jax.config.update("jax_enable_compilation_cache", False)
        return
    path = default_cache_dir()
    if path is None or jax.config.jax_compilation_cache_dir:
        return  # off, or the user configured JAX's cache (JAX_COMPILATION_CACHE_DIR) already
    try:
        enable_compilation_cache(path)
    except OSError as err:  # a read-only home, say: run uncached rather than fail
        print(f"warning: no compilation cache ({_error_text(err)})", file=sys.stderr)


class _Output:
    """``sys.stdout`` while a command runs: once its reader has gone (``jaxdl train | head -1``),
    or if it was closed (``>&-``), what is printed goes to os.devnull and the run goes on (its
    folder holds what was printed; stopped by its reader, it would leave half a folder).

    Args:
      stream: the ``sys.stdout`` to write to, or ``None`` where it was closed.
    """

    def __init__(self, stream):
        self._devnull = None  # opened when first needed; `close` closes it
        self._stream = self._open_devnull() if stream is None else stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        """Points the stream's descriptor at os.devnull, so that what it still buffers (Python
        flushes it at exit) goes there too; a stream without one is replaced."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            self._stream = self._open_devnull()
        finally:
            os.close(devnull)

    def _open_devnull(self):
        self._devnull = open(os.devnull, "w")
        return self._devnull

    def close(self) -> None:
        """Closes the os.devnull it opened, not the stream it was given."""
        if self._devnull is not None:
            self._devnull.close()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno... of the stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def _lasting_output():
    """``sys.stdout`` made an `_Output` for the duration."""
    saved = sys.stdout
    sys.stdout = output = _Output(saved)
    try:
        yield
    finally:
        sys.stdout = saved
        output.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jaxdl`` command with ``argv`` (default: ``sys.argv[1:]``).

    Args:
      argv: the arguments after the program name.

    Returns:
      The exit status: 0 on success, 1 if the run diverged, 2 on a usage or configuration error.

    Example:
      >>> main(["train", "--data", "digits", "--model", "mlp", "--steps", "500"])
      0
    """
    parser, subparsers = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            owner = subparsers.get(args.command, parser)
            raise UsageError(_unrecognized(owner, extras))
        if args.command is None:
            print(_overview())
            return 0
        args.given_options = _given_options(sys.argv[1:] if argv is None else argv)
        if getattr(args, "resume", None):  # train and sweep
            check_resume_options(args)
        _use_compilation_cache(args)
        with _lasting_output():
            return args.handler(args)
    except (UsageError, *USER_ERRORS) as err:
        print(f"error: {_error_text(err)}", file=sys.stderr)
        return USAGE_STATUS
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
