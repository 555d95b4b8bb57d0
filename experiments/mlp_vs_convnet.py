"""Study: learned, translation-equivariant features beat raw inputs where the information moves.

Logistic regression, an MLP and a 1-D ConvNet on MNIST-1D and on its shuffled version (one fixed
permutation of the 40 positions, which destroys locality but not information), and an MLP
against a 2-D ConvNet on the 8x8 digits; several seeds each (vmapped by `jaxdl.sweep`). Our mean ±
std is printed beside the figures of the MNIST-1D paper (Greydanus & Kobak, 2024).

    python -m experiments.mlp_vs_convnet [--quick] [--out DIR] [--set KEY=VALUE]
"""

from __future__ import annotations

import dataclasses

import numpy as np

import jaxdl
from experiments import common

NAME = "mlp_vs_convnet"
RUNS = (  # every "data set/model" pair the study knows
    "mnist1d/logistic",
    "mnist1d/mlp",
    "mnist1d/convnet",
    "mnist1d_shuffled/logistic",
    "mnist1d_shuffled/mlp",
    "mnist1d_shuffled/convnet",
    "digits/mlp",
    "digits/convnet",  # on digits the ConvNet is 2-D: jaxdl.convnet takes the input's rank
)

# Test accuracy (%) in the MNIST-1D paper (Greydanus & Kobak, 2024, table 1).
PUBLISHED = {
    "mnist1d": {"logistic": 32.0, "mlp": 68.0, "convnet": 94.0},
    "mnist1d_shuffled": {"logistic": 32.0, "mlp": 68.0, "convnet": 56.0},
}
# The reproduction counts when our means on MNIST-1D reach these (fractions).
TARGETS = {"convnet": 0.92, "mlp": 0.65}


@dataclasses.dataclass(frozen=True)
class Config:
    """Models, data sets and the budget of each; Adam throughout, as in the MNIST-1D paper."""

    runs: tuple[str, ...] = RUNS  # "data set/model" pairs, each trained over `seeds`
    seeds: int = 8  # networks per (data set, model), vmapped in one program
    batch_size: int = 100  # the paper's batch size
    logistic_lr: float = 1e-2  # logistic regression: mlp(hidden=())
    logistic_steps: int = 3000  # it has converged long before
    mlp_hidden: tuple[int, ...] = (100, 100)  # the paper's MLP: two ReLU layers of 100
    mlp_lr: float = 1e-2  # the paper's learning rate
    mlp_steps: int = 6000  # the paper's budget
    convnet_channels: tuple[int, ...] = (32, 32, 32)  # jaxdl.convnet's default: 3 conv blocks
    convnet_lr: float = 3e-3  # measured best for jaxdl.convnet on MNIST-1D
    convnet_steps: int = 3000  # ~93 % on MNIST-1D
    digits_lr: float = 3e-3  # both models on digits
    digits_steps: int = 500  # digits are easy: both models have converged by then (~35 epochs)
    chunk_steps: int = 500  # steps per compiled chunk (progress granularity)
    out_dir: str = f"runs/experiments/{NAME}"  # where results.json, results.md, PNGs go

    def __post_init__(self):  # what --set may get wrong, named before anything trains
        common.check_choices(self, "runs", RUNS)
        common.check_counts(self, ["seeds", "batch_size", "chunk_steps", "convnet_channels"])
        common.check_counts(self, ["logistic_steps", "mlp_steps", "convnet_steps", "digits_steps"])
        common.check_counts(self, ["mlp_hidden"])

    def quick(self) -> Config:
        """The version the tests run: MLP and ConvNet on MNIST-1D, the ConvNet on its shuffled
        version; two seeds, short budgets."""
        return dataclasses.replace(
            self,
            runs=("mnist1d/mlp", "mnist1d/convnet", "mnist1d_shuffled/convnet"),
            seeds=2,
            mlp_steps=300,
            convnet_steps=300,
        )


def plan(config: Config) -> list[tuple[str, str, jaxdl.Layer, float, int]]:
    """``(data set, model name, model, lr, steps)`` of every group of seeds in ``config.runs``."""
    mlp = jaxdl.mlp(config.mlp_hidden, activation="relu", init="he_normal")
    convnet = jaxdl.convnet(config.convnet_channels)
    mnist1d = {
        "logistic": (jaxdl.mlp(hidden=()), config.logistic_lr, config.logistic_steps),
        "mlp": (mlp, config.mlp_lr, config.mlp_steps),
        "convnet": (convnet, config.convnet_lr, config.convnet_steps),
    }
    digits = {
        "mlp": (mlp, config.digits_lr, config.digits_steps),
        "convnet": (convnet, config.digits_lr, config.digits_steps),
    }
    choices = {"mnist1d": mnist1d, "mnist1d_shuffled": mnist1d, "digits": digits}
    out = []
    for run in config.runs:  # each one of RUNS (Config checks)
        data, model = run.split("/")
        out.append((data, model, *choices[data][model]))
    return out


def table_rows(records: list[dict]) -> list[dict]:
    """One row per (data set, model): mean ± std (%) and the published figure."""
    return [
        {
            "data": r["data"],
            "model": r["model"],
            "steps": r["steps"],
            "lr": r["lr"],
            "ours (%)": common.pct(r["test_accuracy"]),
            "published (%)": r["published"] if r["published"] is not None else "—",
            "seconds": r["seconds"],
        }
        for r in records
    ]


def plot(records: list[dict]) -> bytes:
    """PNG: a panel per data set; test accuracy per model, one dot per seed, a bar at the mean,
    a red cross at the published figure."""
    plt = common.pyplot()
    datasets = list(dict.fromkeys(r["data"] for r in records))
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.4 * len(datasets), 3.4), squeeze=False)
    rng = np.random.default_rng(0)  # horizontal jitter only
    for ax, name in zip(axes[0], datasets, strict=True):
        rows = [r for r in records if r["data"] == name]
        for x, r in enumerate(rows):
            values = 100 * np.asarray(r["test_accuracy"])
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(values)), values, s=14, alpha=0.8)
            ax.hlines(values.mean(), x - 0.25, x + 0.25, color="black")
            if r["published"] is not None:
                ax.plot(x, r["published"], "x", color="red", ms=9, mew=2)
        ax.set_xticks(range(len(rows)), [r["model"] for r in rows])
        ax.set(title=name, ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.suptitle("one dot per seed, bar: mean, red x: published (Greydanus & Kobak)", fontsize=9)
    return common.png(fig)


def run(config: Config) -> dict:
    """Trains every (data set, model) over seeds, writes the output folder, prints the table.

    Args:
      config: a `Config`.

    Returns:
      ``{"study", "config", "seconds", "records", "reproduced"}``: one record per (data set,
      model) with the per-seed ``test_accuracy``; ``reproduced`` says whether the MNIST-1D means
      reach `TARGETS`.
    """
    common.check_out_dir(config.out_dir)  # before training, not after
    watch = common.Stopwatch()
    loaded: dict[str, jaxdl.data.Dataset] = {}
    records = []
    for data_name, model_name, model, lr, steps in plan(config):
        data = loaded.setdefault(data_name, jaxdl.data.load(data_name))
        started = common.Stopwatch()
        result = jaxdl.sweep(
            model,
            data,
            axes={"seed": list(range(config.seeds))},
            config=jaxdl.TrainConfig(
                steps=steps,
                batch_size=config.batch_size,
                chunk_steps=min(config.chunk_steps, steps),
                eval_every=steps,
            ),
            hparams=jaxdl.Hparams(lr=lr),
        )
        rows = result.rows()
        records.append(
            {
                "data": data_name,
                "model": model_name,
                "lr": lr,
                "steps": steps,
                "test_accuracy": [row["final_test_accuracy"] for row in rows],
                "diverged": sum(row["diverged_at_step"] >= 0 for row in rows),
                "published": PUBLISHED.get(data_name, {}).get(model_name),
                "seconds": started.seconds(),
            }
        )
        print(f"  {data_name:16s} {model_name:8s} {common.pct(records[-1]['test_accuracy'])} %")
    means = {
        r["model"]: float(np.mean(r["test_accuracy"])) for r in records if r["data"] == "mnist1d"
    }
    reproduced = bool(means) and all(means.get(m, 0.0) >= t for m, t in TARGETS.items())
    table = common.markdown_table(table_rows(records))
    verdict = (
        f"Reproduced (ConvNet mean ≥ {100 * TARGETS['convnet']:.0f} %, MLP mean ≥ "
        f"{100 * TARGETS['mlp']:.0f} % on MNIST-1D): {'yes' if reproduced else 'no'}"
    )
    results = {
        "study": NAME,
        "config": config,
        "records": records,
        "reproduced": reproduced,
        "seconds": watch.seconds(),
    }
    markdown = (
        f"# {NAME}\n\nTest accuracy, mean ± std over {config.seeds} seeds (Adam, batch "
        f"{config.batch_size}):\n\n{table}\n\n{verdict}\n\nWall time: {results['seconds']} s\n"
    )
    common.write_outputs(config.out_dir, results, markdown, {"accuracy.png": plot(records)})
    print(f"{table}\n\n{verdict}\n\n{NAME}: {results['seconds']} s, written to {config.out_dir}")
    return results


if __name__ == "__main__":
    common.main(NAME, Config, run)
