"""Study: the deeper the sigmoid MLP, the weaker the gradient that reaches its first layers.

MLPs of several depths, activations and initialisers, several seeds each, trained with plain
SGD; for each (depth, activation) every init x seed is one member of a single vmapped program.
Measured per layer: the weight-gradient norm at initialisation (one fixed batch) and during
training, the back-propagated gradient ``dL/dz`` of each pre-activation, the mean slope act'(z)
and the fraction of saturated units; per network, the test accuracy after a fixed budget.
Compare with Glorot & Bengio (2010).

    python -m experiments.vanishing_gradients [--quick] [--out DIR] [--set KEY=VALUE]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import jaxdl
from experiments import common
from jaxdl.train import layer_grad_norms, to_device

NAME = "vanishing_gradients"

# act'(z) of each activation: backprop multiplies the gradient of a unit by it, so its mean over
# the units is a layer's gain (besides the weights). A sigmoid/tanh unit is saturated where it is
# below the threshold (sigmoid: |z| > 4.6; tanh: |z| > 3.0): it passes almost no gradient back.
DERIVATIVES = {
    "sigmoid": lambda z: jax.nn.sigmoid(z) * (1.0 - jax.nn.sigmoid(z)),
    "tanh": lambda z: 1.0 - jnp.tanh(z) ** 2,
    "relu": lambda z: (z > 0).astype(z.dtype),
}
SQUASHING = ("sigmoid", "tanh")  # the activations whose saturation is measured
BUILT_IN = ("digits", "mnist1d", "mnist1d_shuffled")  # the data sets `load` needs no path for


@dataclasses.dataclass(frozen=True)
class Config:
    """The grid of networks and how each is trained and probed."""

    data: str = "digits"  # 64 inputs, 1437 training images: the cheapest built-in set
    depths: tuple[int, ...] = (2, 3, 5, 8, 12)  # number of hidden layers (dense layers: depth + 1)
    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu")  # hidden-layer activation
    inits: tuple[str, ...] = ("normal", "classic", "glorot_uniform", "he_normal")  # normal: std 1
    width: int = 64  # units per hidden layer; small so 60 networks x 8 seeds fit 5 min on 2 cores
    seeds: int = 8  # networks per configuration, vmapped in one program
    steps: int = 1000  # SGD steps of every network (the fixed budget)
    batch_size: int = 32  # examples per step
    optimizer: str = "sgd"  # plain SGD as in the paper: Adam rescales each layer's step and so
    # hides a vanishing gradient (it shows in accuracy only through SGD)
    lr: float = 0.1  # one learning rate for all; Glorot & Bengio tuned it per network
    chunk_steps: int = 100  # gradient norms during training are averaged over chunks this long
    probe_size: int = 500  # the fixed batch (first training examples) of the init probe
    saturation_threshold: float = 0.01  # a unit is saturated where act'(z) < this
    out_dir: str = f"runs/experiments/{NAME}"  # where results.json, results.md, PNGs go

    def __post_init__(self):  # what --set may get wrong, named before anything trains
        common.check_counts(self, ["depths", "width", "seeds", "steps", "batch_size"])
        common.check_counts(self, ["chunk_steps", "probe_size"])
        common.check_choices(self, "data", BUILT_IN)
        # the probe needs act'(z) of each activation
        common.check_choices(self, "activations", list(DERIVATIVES))
        common.check_choices(self, "inits", jaxdl.initializers.NAMES)
        common.check_choices(self, "optimizer", jaxdl.optimizers.OPTIMIZERS)
        if self.steps % self.chunk_steps:
            raise ValueError(
                f"config key 'steps': {self.steps} must be a multiple of chunk_steps "
                f"({self.chunk_steps})"
            )

    def quick(self) -> Config:
        """The version the tests run: two depths, activations and inits, two seeds, few steps."""
        return dataclasses.replace(
            self,
            depths=(2, 8),
            activations=("sigmoid", "relu"),
            inits=("classic", "he_normal"),
            seeds=2,
            steps=200,
        )


def forward(entries, params, state, x, shifts):
    """Logits ``[B, classes]`` of ``serial(*entries)`` on ``x`` ``[B, ...features]``, with
    ``shifts[name]`` (``[B, width]``) added to the output of each layer named in ``shifts``: with
    zero shifts this is the plain forward pass, and the gradient with respect to
    ``shifts["dense3"]`` is the back-propagated gradient ``dL/dz`` at ``dense3``."""
    for name, layer in entries:
        x, _ = layer.apply(params.get(name, {}), state.get(name, {}), x)
        if name in shifts:
            x = x + shifts[name]
    return x


def make_probe(entries, activation: str, x, y, threshold: float):
    """``probe(params) -> metrics`` of one network on the fixed batch ``x`` ``[B, ...]``, ``y``
    ``[B]``: ``weight_grad`` ``{dense_i: ()}`` (norm of dL/dW_i and dL/db_i, as
    `jaxdl.train.layer_grad_norms`), ``delta`` ``{dense_i: ()}`` (norm of dL/dz_i over the
    batch), ``mean_derivative`` ``{dense_i: ()}`` (mean act'(z) of each hidden layer) and, for
    sigmoid/tanh nets, ``saturation`` ``{dense_i: ()}`` (fraction of hidden units with
    act'(z) < ``threshold``)."""
    dense_names = [name for name, _ in entries if name.startswith("dense")]
    hidden = dense_names[:-1]  # the output layer is linear
    derivative = DERIVATIVES[activation]

    def probe(params):
        widths = {name: params[name]["b"].shape[0] for name in dense_names}
        shifts = {name: jnp.zeros((x.shape[0], widths[name]), x.dtype) for name in dense_names}

        def loss(params, shifts):
            return jaxdl.softmax_cross_entropy(forward(entries, params, {}, x, shifts), y)

        weight_grads, deltas = jax.grad(loss, argnums=(0, 1))(params, shifts)
        metrics = {
            "weight_grad": layer_grad_norms(weight_grads),
            "delta": {name: jnp.linalg.norm(d) for name, d in deltas.items()},
        }
        outputs = jaxdl.serial_outputs(entries, params, {}, x)  # dense_i: pre-activations
        slopes = {name: derivative(outputs[name]) for name in hidden}  # each [B, width]
        metrics["mean_derivative"] = {name: jnp.mean(d) for name, d in slopes.items()}
        if activation in SQUASHING:
            metrics["saturation"] = {
                name: jnp.mean((d < threshold).astype(jnp.float32)) for name, d in slopes.items()
            }
        return metrics

    return probe


def _per_layer(tree, names) -> np.ndarray:
    """``{layer: [...]}`` as an array ``[..., layers]`` in the order of ``names``."""
    return np.stack([np.asarray(tree[name], np.float64) for name in names], axis=-1)


def _ratios(norms: np.ndarray) -> np.ndarray:
    """First-layer over last-layer norm of each network: ``[members, layers] -> [members]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return norms[:, 0] / norms[:, -1]


def _training_norms(norms: np.ndarray) -> np.ndarray:
    """Per-layer weight-gradient norms averaged over the chunks before a run diverged:
    ``[chunks, members, layers] -> [members, layers]`` (NaN if it diverged in its first chunk)."""
    out = []
    for member in np.moveaxis(norms, 1, 0):  # [chunks, layers]
        finite = np.all(np.isfinite(member), axis=1)
        kept = member if finite.all() else member[: np.argmin(finite)]
        out.append(kept.mean(0) if len(kept) else np.full(member.shape[1], np.nan))
    return np.stack(out)


def train_group(config: Config, data, device_data, depth: int, activation: str) -> dict:
    """Trains every init x seed of one (depth, activation) as one vmapped program.

    ``apply`` of an MLP does not depend on its initialiser (only ``init`` does), so members
    started from different initialisers share one compiled chunk; each member's initial state is
    `jaxdl.init_state` of its own model with the keys `jaxdl.fit` derives from its seed, so a
    member equals ``jaxdl.fit(mlp(..., init=init), data, config, seed=seed)``.

    Args:
      config: the study's `Config` (width, inits, seeds, steps, optimizer, lr...).
      data: the `jaxdl.data.Dataset`.
      device_data: its arrays on the device (`jaxdl.train.to_device`).
      depth: number of hidden layers.
      activation: their activation.

    Returns:
      ``{"members": [(init, seed)], "init_params", "final_params"`` (stacked ``[members, ...]``),
      ``"grad_norm"`` ``{layer: [chunks, members]}``, ``"test_accuracy"`` ``[members]``,
      ``"diverged"`` ``[members]`` bool.
    """
    train_config = jaxdl.TrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        chunk_steps=config.chunk_steps,
        record_grad_norms=True,
    )
    hidden = (config.width,) * depth
    models = {init: jaxdl.mlp(hidden, data.num_classes, activation, init) for init in config.inits}
    example = jax.ShapeDtypeStruct((1, *data.input_shape), device_data.x_train.dtype)
    seeds = list(range(config.seeds))
    hparams = jaxdl.Hparams(lr=config.lr).as_arrays()
    members, states = [], []
    for init, model in models.items():
        keys = [jax.random.split(jax.random.key(seed)) for seed in seeds]  # as jaxdl.fit does
        init_keys = jnp.stack([k[0] for k in keys])  # [seeds]
        data_keys = jnp.stack([k[1] for k in keys])

        def start(init_key, data_key, model=model):
            return jaxdl.init_state(
                model, train_config, hparams, example, init_key=init_key, data_key=data_key
            )

        states.append(jax.vmap(start)(init_keys, data_keys))
        members += [(init, seed) for seed in seeds]
    state = jax.tree.map(lambda *s: jnp.concatenate(s), *states)  # [members, ...] leaves
    init_params = state.params
    model = next(iter(models.values()))  # any: they share apply
    chunk = jax.jit(
        jax.vmap(jaxdl.make_chunk(model, train_config, config.chunk_steps), in_axes=(0, None, None))
    )
    norms = []
    for _ in range(config.steps // config.chunk_steps):
        state, metrics = chunk(state, hparams, device_data)
        norms.append(jax.device_get(metrics["grad_norm"]))
    evaluate = jax.jit(
        jax.vmap(
            lambda s: jaxdl.evaluate(
                model, s.params, s.model_state, device_data.x_test, device_data.y_test
            )
        )
    )
    return {
        "members": members,
        "init_params": init_params,
        "final_params": state.params,
        "grad_norm": {name: np.stack([n[name] for n in norms]) for name in norms[0]},
        "test_accuracy": np.asarray(evaluate(state)["accuracy"]),
        "diverged": np.asarray(state.diverged_at) >= 0,
    }


def study_group(config: Config, data, device_data, depth: int, activation: str) -> list[dict]:
    """Trains and probes one (depth, activation); one record per initialiser."""
    group = train_group(config, data, device_data, depth, activation)
    entries = jaxdl.mlp_entries((config.width,) * depth, data.num_classes, activation)
    names = [f"dense{i}" for i in range(1, depth + 2)]
    x = device_data.x_train[: config.probe_size]  # [probe, ...features]
    y = device_data.y_train[: config.probe_size]  # [probe]
    probe = jax.jit(jax.vmap(make_probe(entries, activation, x, y, config.saturation_threshold)))
    at_init = jax.device_get(probe(group["init_params"]))
    trained = jax.device_get(probe(group["final_params"]))
    grad_init = _per_layer(at_init["weight_grad"], names)  # [members, layers]
    delta_init = _per_layer(at_init["delta"], names)  # [members, layers]
    grad_train = _training_norms(_per_layer(group["grad_norm"], names))  # [members, layers]
    records = []
    for init in config.inits:
        rows = [i for i, (member_init, _) in enumerate(group["members"]) if member_init == init]
        record = {
            "depth": depth,
            "activation": activation,
            "init": init,
            "seeds": [group["members"][i][1] for i in rows],
            "layers": names,
            "grad_norm_init": grad_init[rows],  # [seeds, layers]
            "grad_norm_train": grad_train[rows],
            "delta_norm_init": delta_init[rows],
            "ratio_init": common.geomean(_ratios(grad_init[rows])),
            "ratio_train": common.geomean(_ratios(grad_train[rows])),
            "delta_ratio_init": common.geomean(_ratios(delta_init[rows])),
            "test_accuracy": group["test_accuracy"][rows],
            "diverged": int(group["diverged"][rows].sum()),
            "mean_derivative_init": _per_layer(at_init["mean_derivative"], names[:-1])[rows],
            "saturation_init": None,
            "saturation_trained": None,
        }
        if "saturation" in at_init:
            hidden = names[:-1]
            record["saturation_init"] = _per_layer(at_init["saturation"], hidden)[rows]
            record["saturation_trained"] = _per_layer(trained["saturation"], hidden)[rows]
        records.append(record)
    return records


def _sat(record, key) -> str:
    values = record[key]
    return "" if values is None else f"{100 * float(np.mean(values)):.0f} %"


def tables(records: list[dict], config: Config) -> tuple[str, str]:
    """``(headline, full)`` Markdown: pivots by depth, and one row per configuration."""
    depths = list(config.depths)
    by = {(r["activation"], r["init"], r["depth"]): r for r in records}
    pairs = [(a, i) for a in config.activations for i in config.inits]

    def pivot(cell):
        rows = []
        for activation, init in pairs:
            row = {"activation": activation, "init": init}
            for depth in depths:
                row[f"depth {depth}"] = cell(by[(activation, init, depth)])
            rows.append(row)
        return common.markdown_table(rows)

    def accuracy(r):
        mark = f" ({r['diverged']} div.)" if r["diverged"] else ""
        return common.pct(r["test_accuracy"]) + mark

    headline = "\n\n".join(
        [
            "Weight-gradient norm, first layer / last layer, at init (geometric mean over seeds):",
            pivot(lambda r: common.sci(r["ratio_init"])),
            f"Test accuracy (%) after {config.steps} {config.optimizer} steps "
            f"(lr {config.lr}, mean ± std over {config.seeds} seeds; div.: runs that diverged):",
            pivot(accuracy),
        ]
    )
    squashing = [(a, i) for a, i in pairs if a in SQUASHING]
    saturation = []
    for activation, init in squashing:
        row = {"activation": activation, "init": init}
        for depth in depths:
            r = by[(activation, init, depth)]
            row[f"depth {depth}"] = (
                f"{_sat(r, 'saturation_init')} → {_sat(r, 'saturation_trained')}"
            )
        saturation.append(row)
    full_rows = [
        {
            "depth": r["depth"],
            "activation": r["activation"],
            "init": r["init"],
            "grad ratio init": common.sci(r["ratio_init"]),
            "grad ratio training": common.sci(r["ratio_train"]),
            "dL/dz ratio init": common.sci(r["delta_ratio_init"]),
            "mean act' init": f"{np.mean(r['mean_derivative_init']):.3f}",
            "saturated init": _sat(r, "saturation_init"),
            "saturated trained": _sat(r, "saturation_trained"),
            "test acc %": common.pct(r["test_accuracy"]),
            "diverged": r["diverged"],
        }
        for r in records
    ]
    full = "\n\n".join(
        [
            f"Saturated hidden units (act'(z) < {config.saturation_threshold}), "
            "at init → after training:",
            common.markdown_table(saturation) if saturation else "(no sigmoid/tanh nets)",
            "Every configuration:",
            common.markdown_table(full_rows),
        ]
    )
    return headline, full


def _geo_over_seeds(norms: np.ndarray) -> np.ndarray:
    """``[seeds, layers] -> [layers]`` geometric mean, NaN where a seed is not finite/positive."""
    return np.array([common.geomean(norms[:, j]) for j in range(norms.shape[1])])


def plot_grad_norms(records, config: Config, key: str, title: str) -> bytes:
    """PNG: a panel per activation x init, the per-layer norm (log scale) with a line per depth."""
    plt = common.pyplot()
    rows, cols = len(config.activations), len(config.inits)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharex=True
    )
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(config.depths)))
    by = {(r["activation"], r["init"], r["depth"]): r for r in records}
    for i, activation in enumerate(config.activations):
        for j, init in enumerate(config.inits):
            ax = axes[i][j]
            plotted = False
            for depth, color in zip(config.depths, colors, strict=True):
                norms = _geo_over_seeds(np.asarray(by[(activation, init, depth)][key]))
                layers = np.arange(1, len(norms) + 1)
                ok = np.isfinite(norms) & (norms > 0)  # a diverged run has no norm to draw
                if ok.any():
                    ax.plot(layers[ok], norms[ok], "o-", ms=3, color=color, label=f"{depth}")
                    plotted = True
            if plotted:
                ax.set_yscale("log")
            ax.set_title(f"{activation}, {init}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == rows - 1:
                ax.set_xlabel("layer (1 = input side)")
            if j == 0:
                ax.set_ylabel("norm")
    axes[0][-1].legend(title="hidden layers", fontsize=7, title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    return common.png(fig)


def plot_accuracy(records, config: Config) -> bytes:
    """PNG: test accuracy vs depth, a panel per activation, a line per init (mean ± std)."""
    plt = common.pyplot()
    fig, axes = plt.subplots(
        1, len(config.activations), figsize=(3.6 * len(config.activations), 3.2), squeeze=False
    )
    by = {(r["activation"], r["init"], r["depth"]): r for r in records}
    for ax, activation in zip(axes[0], config.activations, strict=True):
        for init in config.inits:
            stats = [
                common.mean_std(by[(activation, init, d)]["test_accuracy"]) for d in config.depths
            ]
            means, stds = (100 * np.array(s) for s in zip(*stats, strict=True))
            ax.errorbar(config.depths, means, stds, marker="o", ms=3, capsize=2, label=init)
        ax.axhline(10, color="gray", ls=":", lw=1)
        ax.set(title=activation, xlabel="hidden layers", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(
        f"{config.data}: accuracy after {config.steps} {config.optimizer} steps (dotted: chance)",
        fontsize=10,
    )
    return common.png(fig)


def plot_saturation(records, config: Config) -> bytes:
    """PNG: saturated fraction per hidden layer of the deepest sigmoid/tanh nets, at init (solid)
    and after training (dashed), a line per init."""
    plt = common.pyplot()
    squashing = [a for a in config.activations if a in SQUASHING]
    depth = max(config.depths)
    fig, axes = plt.subplots(1, max(1, len(squashing)), figsize=(4 * max(1, len(squashing)), 3))
    axes = np.atleast_1d(axes)
    by = {(r["activation"], r["init"], r["depth"]): r for r in records}
    for ax, activation in zip(axes, squashing, strict=False):
        for k, init in enumerate(config.inits):
            r = by[(activation, init, depth)]
            color = f"C{k}"
            layers = np.arange(1, depth + 1)
            ax.plot(
                layers, 100 * np.mean(r["saturation_init"], 0), "o-", ms=3, color=color, label=init
            )
            ax.plot(layers, 100 * np.mean(r["saturation_trained"], 0), "s--", ms=3, color=color)
        ax.set(title=f"{activation}, {depth} hidden layers", xlabel="hidden layer", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("saturated units (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("saturation at init (solid) and after training (dashed)", fontsize=10)
    return common.png(fig)


def run(config: Config) -> dict:
    """Trains and probes the grid, writes the output folder, prints the headline tables.

    Args:
      config: a `Config`.

    Returns:
      ``{"study", "config", "seconds", "records"}``: one record per (depth, activation, init)
      with per-seed arrays (``grad_norm_init`` ``[seeds, layers]``...) and summary ratios.
    """
    common.check_out_dir(config.out_dir)  # before training, not after
    watch = common.Stopwatch()
    data = jaxdl.data.load(config.data)
    device_data = to_device(data)
    records = []
    for depth in config.depths:
        for activation in config.activations:
            records += study_group(config, data, device_data, depth, activation)
            print(f"  depth {depth:2d} {activation:7s} done at {watch.seconds()} s", flush=True)
    headline, full = tables(records, config)
    results = {"study": NAME, "config": config, "seconds": watch.seconds(), "records": records}
    figures = {
        "grad_norms_init.png": plot_grad_norms(
            records, config, "grad_norm_init", "weight-gradient norm per layer at init"
        ),
        "grad_norms_training.png": plot_grad_norms(
            records, config, "grad_norm_train", "weight-gradient norm per layer, training mean"
        ),
        "backprop_init.png": plot_grad_norms(
            records, config, "delta_norm_init", "back-propagated gradient |dL/dz| per layer at init"
        ),
        "accuracy_vs_depth.png": plot_accuracy(records, config),
    }
    if any(a in SQUASHING for a in config.activations):
        figures["saturation.png"] = plot_saturation(records, config)
    markdown = f"# {NAME}\n\n{headline}\n\n{full}\n\nWall time: {results['seconds']} s\n"
    results["seconds"] = watch.seconds()
    common.write_outputs(config.out_dir, results, markdown, figures)
    print(headline)
    print(f"\n{NAME}: {results['seconds']} s, written to {config.out_dir}")
    return results


if __name__ == "__main__":
    common.main(NAME, Config, run)
