"""`SweepResult`: a sweep's members, their final states and curves, as tables and summaries."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import numbers
import operator
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxdl.io import write_json_atomic

SEED_AXES = ("seed", "init_seed", "data_seed")
# Columns of `SweepResult.rows` and `summary_rows` besides the axes: no axis may take these names.
RESULT_COLUMNS = (
    *("member", "final_test_accuracy", "best_test_accuracy", "final_loss", "diverged_at_step"),
    *("seconds", "strategy", "n", "diverged", "mean", "std", "ci_low", "ci_high"),
)


class MemberRun(NamedTuple):
    """One member of a sweep as a standalone run.

    Attributes:
      params: its final params.
      model_state: its final model state.
      state: its final `jaxdl.train.TrainState`.
      config: its configuration: the axis values, the `TrainConfig` fields and the `Hparams`.
      history: its `jaxdl.train.History` (curves of shape ``[chunks]`` / ``[evaluations]``).
    """

    params: Any
    model_state: Any
    state: Any
    config: dict[str, Any]
    history: dict[str, Any]


def _t_quantile_975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom (95 % two-sided)."""
    from scipy import stats  # scipy comes with scikit-learn; imported only for summaries

    return float(stats.t.ppf(0.975, dof))


def mean_std_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation and the 95 % t confidence interval of the mean.

    Args:
      values: one number per seed, length ``n``.

    Returns:
      ``{"n", "mean", "std", "ci_low", "ci_high"}``; with ``n == 1`` std and the interval are
      NaN (null in JSON): one value has no spread to estimate, which a 0 would claim it has.
    """
    x = np.asarray(values, np.float64)
    n = len(x)
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if n > 1 else math.nan
    half = _t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def _fmt(value: Any) -> str:
    """A Markdown cell: floats to 4 significant digits; a ``|`` escaped and a line break made a
    space, so that a value (a model named ``"a|b"``) cannot split or end its row."""
    text = f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(_fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def render(rows: list[dict[str, Any]], format: str) -> str:
    """Rows of dicts as a ``"markdown"`` table or ``"csv"`` text."""
    if format not in ("markdown", "csv"):
        raise ValueError(f"unknown table format {format!r}; valid: markdown, csv")
    return _markdown(rows) if format == "markdown" else _csv(rows)


class MemberStates(Sequence):
    """Each member's final `jaxdl.train.TrainState`, in population order: a read-only sequence
    that slices a member out of its group's stacked state when it is read (splitting every
    member out at the end of a sweep took 2.8 s for 1024 members on CPU: one eager slice per
    leaf and member).

    Args:
      stacked: each group's stacked state (leaves ``[members in the group, ...]``).
      where: for each member, ``(group, position in the group)``.
    """

    def __init__(self, stacked: Sequence[Any], where: Sequence[tuple[int, int]]):
        self._stacked = list(stacked)
        self._where = list(where)

    def __len__(self) -> int:
        return len(self._where)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        group, position = self._where[index]
        return jax.tree.map(lambda leaf: leaf[position], self._stacked[group])

    def diverged_at(self) -> np.ndarray:
        """Every member's ``diverged_at`` (-1 if never), ``[members]`` int64: one transfer per
        group."""
        groups = [np.asarray(jax.device_get(state.diverged_at)) for state in self._stacked]
        return np.array([groups[g][j] for g, j in self._where], dtype=np.int64)


@dataclasses.dataclass
class SweepResult:
    """What a sweep returns: one entry per member, in population order.

    Attributes:
      members: each member's axis values, ``[{axis: value}]``.
      axes: the declared axes, ``{axis: [values]}``.
      states: each member's final `jaxdl.train.TrainState`, a `MemberStates`.
      member_histories: each member's `jaxdl.train.History`.
      config: the shared `jaxdl.train.TrainConfig`.
      hparams: the `jaxdl.train.Hparams` for axes not swept.
      strategies: the execution strategy each member ran under.
      seconds: each member's share of its group's wall time.
    """

    members: list[dict[str, Any]]
    axes: dict[str, list[Any]]
    states: MemberStates
    member_histories: list[dict[str, Any]]
    config: Any
    hparams: Any
    strategies: list[str]
    seconds: list[float]

    def __len__(self) -> int:
        return len(self.members)

    @property
    def histories(self) -> dict[str, np.ndarray]:
        """The curves every member shares, stacked: ``{name: [members, chunks or evaluations]}``."""
        shared = set.intersection(*(set(h) for h in self.member_histories))
        return {
            name: np.stack([np.asarray(h[name]) for h in self.member_histories])
            for name in sorted(shared)
            if name != "grad_norm"
        }

    def rows(self) -> list[dict[str, Any]]:
        """One dict per member: axis values, final and best test accuracy, final loss,
        ``diverged_at_step`` (-1 if never), ``seconds`` (wall-time share) and ``strategy``."""
        diverged = self.states.diverged_at()
        rows = []
        for i, (member, history) in enumerate(
            zip(self.members, self.member_histories, strict=True)
        ):
            test = np.asarray(history.get("test_accuracy", [np.nan]), np.float64)
            loss = np.asarray(history.get("loss", [np.nan]))
            evaluated = test[~np.isnan(test)]  # np.nanmax warns on all NaN: the best is NaN
            rows.append(
                {
                    "member": i,
                    **member,
                    "final_test_accuracy": float(test[-1]),
                    "best_test_accuracy": float(evaluated.max()) if evaluated.size else math.nan,
                    "final_loss": float(loss[-1]),
                    "diverged_at_step": int(diverged[i]),
                    "seconds": round(float(self.seconds[i]), 3),
                    "strategy": self.strategies[i],
                }
            )
        return rows

    def table(self, format: str = "markdown") -> str:
        """`rows` as a Markdown table or CSV text.

        Args:
          format: ``"markdown"`` or ``"csv"``.

        Returns:
          The table as a string.
        """
        return render(self.rows(), format)

    def summary_rows(
        self, by: Sequence[str] | None = None, metric: str = "final_test_accuracy"
    ) -> list[dict[str, Any]]:
        """Mean, std and 95 % CI of ``metric`` across the members of each ``by`` combination.

        Args:
          by: axes to group by (one name or a list); ``None`` groups by every axis except the
            seed axes.
          metric: a numeric column of `rows` (another name is a ValueError listing them).

        Returns:
          One dict per combination, in population order: the ``by`` values, then ``n``,
          ``diverged`` (how many of the ``n`` diverged), ``mean``, ``std``, ``ci_low``,
          ``ci_high``. Diverged members count with their final values (a NaN makes the group's
          statistics NaN).
        """
        if by is None:
            by = [a for a in self.axes if a not in SEED_AXES]
        else:  # a single name, as pandas' groupby takes it, not its letters
            by = [by] if isinstance(by, str) else list(by)
        unknown = [a for a in by if a not in self.axes]
        if unknown:
            raise ValueError(f"summary: unknown axes {unknown}; valid: {list(self.axes)}")
        rows = self.rows()
        metrics = [
            k
            for k, v in rows[0].items()
            if k != "member" and k not in self.axes and isinstance(v, numbers.Real)
        ]
        if metric not in metrics:
            raise ValueError(f"summary: unknown metric {metric!r}; valid: {', '.join(metrics)}")
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row[a] for a in by), []).append(row)
        summaries = []
        for key, members in groups.items():
            stats = mean_std_ci([row[metric] for row in members])
            diverged = sum(row["diverged_at_step"] >= 0 for row in members)
            summaries.append(
                {**dict(zip(by, key, strict=True)), "n": stats.pop("n"), "diverged": diverged}
                | stats
            )
        return summaries

    def summary(
        self,
        by: Sequence[str] | None = None,
        metric: str = "final_test_accuracy",
        format: str = "markdown",
    ) -> str:
        """`summary_rows` as a Markdown table or CSV text.

        Args:
          by: axes to group by, one name or a list (default: all but the seed axes).
          metric: the column summarised.
          format: ``"markdown"`` or ``"csv"``.

        Returns:
          The table as a string.
        """
        return render(self.summary_rows(by, metric), format)

    def member(self, index: int) -> MemberRun:
        """Member ``index`` as a standalone run.

        Args:
          index: position in the population (the ``member`` column of `rows`); negative counts
            from the end, as in a list: ``-len(self) <= index < len(self)``.

        Returns:
          A `MemberRun` whose config holds the axis values, the `TrainConfig` and the `Hparams`
          (axis values replacing the defaults).
        """
        index = self._index(index)
        state = self.states[index]
        hparams = self.hparams._replace(
            **{k: v for k, v in self.members[index].items() if k in self.hparams._fields}
        )
        config = {
            "axes": dict(self.members[index]),
            "train": dataclasses.asdict(self.config),
            "hparams": {k: float(v) for k, v in hparams._asdict().items()},
        }
        return MemberRun(
            state.params, state.model_state, state, config, self.member_histories[index]
        )

    def _index(self, index: int) -> int:
        """``index`` as a position ``0 <= i < len(self)``; an IndexError or TypeError otherwise."""
        count = len(self.members)
        try:
            position = operator.index(index)  # 2.0 or "2" is refused, np.int64(2) accepted
        except TypeError:
            raise TypeError(
                f"member index: expected an integer, got {type(index).__name__} {index!r}"
            ) from None
        if not -count <= position < count:
            raise IndexError(
                f"member index {index} out of range: expected {-count} <= index < {count} "
                f"({count} members)"
            )
        return position % count

    def save_member(self, index: int, run_dir: str | os.PathLike, *, run_config=None) -> str:
        """Writes member ``index`` as a single-run folder, as ``jaxdl train`` lays one out.

        ``<run_dir>/checkpoints/`` holds one orbax checkpoint, at the member's final step, and
        ``config.json``: ``Checkpointer(checkpoint_dir(run_dir)).restore(template)`` gives back
        exactly ``member(index).state``. With ``run_config`` the folder also holds
        ``<run_dir>/config.json``, so `jaxdl.report.restore_run`, `jaxdl.report.evaluate_run`
        and ``jaxdl eval --checkpoint RUN_DIR`` rebuild the model and read it. The folder is
        written under a temporary name and renamed when complete: it is whole or absent.

        Args:
          index: position in the population, as in `member`.
          run_dir: the folder to make; it must not exist.
          run_config: the member's `jaxdl.config.RunConfig` (model, data, training, lr, seed)
            where it has one, as ``jaxdl sweep`` builds with `jaxdl.sweep_cli.member_config`;
            its training config, traced hyper-parameters and seed must be the member's.
            ``None``: ``checkpoints/config.json`` holds `member` ``(index).config`` instead.

        Returns:
          ``run_dir``.

        Example:
          >>> result.save_member(3, "runs/best")
          >>> Checkpointer("runs/best/checkpoints").restore(template)  # (step, member 3's state)
        """
        from jaxdl.checkpoint import Checkpointer  # orbax: imported only when saving
        from jaxdl.config import to_dict
        from jaxdl.report import checkpoint_dir

        index = self._index(index)
        member = self.member(index)
        config = member.config
        if run_config is not None:
            _check_run_config(index, member.config, run_config)
        run_dir = os.fspath(run_dir)
        if os.path.exists(run_dir):
            raise FileExistsError(f"save_member: {run_dir} exists; give a new folder")
        parent = os.path.dirname(os.path.abspath(run_dir))
        os.makedirs(parent, exist_ok=True)
        staging = os.path.join(parent, f".{os.path.basename(run_dir)}.{uuid.uuid4().hex}.tmp")
        os.makedirs(staging)  # not mkdtemp: the folder gets the umask's permissions, not 0700
        try:
            if run_config is not None:
                config = to_dict(dataclasses.replace(run_config, out=run_dir))
                write_json_atomic(os.path.join(staging, "config.json"), config)
            checkpointer = Checkpointer(checkpoint_dir(staging), every=1, keep=1)
            checkpointer.save_config(config)
            checkpointer.save(int(member.state.step), member.state, force=True)
            checkpointer.close()
            os.rename(staging, run_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return run_dir


def _check_run_config(index: int, member_config: dict[str, Any], run_config) -> None:
    """Raises unless ``run_config`` trains as member ``index`` did (config, hparams, seed)."""
    axes = member_config["axes"]
    if "init_seed" in axes or "data_seed" in axes:
        raise ValueError(
            f"member {index}: its init_seed / data_seed axes have no RunConfig equivalent"
        )
    expected = {
        "train": member_config["train"],
        **member_config["hparams"],
        "seed": axes.get("seed", 0),
    }
    found = {
        "train": dataclasses.asdict(run_config.train),
        **{k: float(v) for k, v in run_config.hparams._asdict().items()},
        "seed": run_config.seed,
    }
    wrong = [
        f"{k}: member {expected[k]!r}, run_config {found[k]!r}"
        for k in expected
        if expected[k] != found[k]
    ]
    if wrong:
        raise ValueError(f"member {index}: run_config does not describe it: {'; '.join(wrong)}")
