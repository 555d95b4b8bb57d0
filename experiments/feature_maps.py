"""Study: what the first layer of a ConvNet learns: its 5x5 filters and the feature maps they
produce, beside those of the same network's random (untrained) filters.

A 2-D `jaxdl.convnet` is trained on the 8x8 digits twice from the same random start: with Adam,
and with AdamW's decoupled weight decay, which wears away the parts of the random start that the
gradient does not keep up and so shows what was learned. Shown: the 32 first-layer filters
(random start, both trained versions) and their feature maps (``act1``, after the ReLU) for a few
test digits. Measured: how far training moved the filters, how smooth they are (correlation of
neighbouring taps: 0 for white noise), and the test accuracy of a linear read-out trained on
each set of frozen first-layer features.

    python -m experiments.feature_maps [--quick] [--out DIR] [--set KEY=VALUE]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import jaxdl
from experiments import common

NAME = "feature_maps"


@dataclasses.dataclass(frozen=True)
class Config:
    """The network, its training, and what is shown."""

    channels: tuple[int, ...] = (32, 32, 32)  # jaxdl.convnet's default: three 5x5 conv blocks
    seed: int = 0  # one random start: the figures show one set of filters
    weight_decays: tuple[float, ...] = (0.0, 1.0)  # AdamW decoupled decay; 0 is plain Adam
    steps: int = 2000  # steps per network
    batch_size: int = 128  # examples per step
    lr: float = 3e-3  # learning rate (of the networks and of the read-outs)
    examples: tuple[int, ...] = (0, 1, 2)  # test digits whose feature maps are shown
    maps_shown: int = 8  # channels of act1 shown per digit
    ridge: float = 1e-3  # penalty of the linear read-out, relative to the mean feature norm²
    out_dir: str = f"runs/experiments/{NAME}"  # where results.json, results.md, PNGs go

    def __post_init__(self):  # what --set may get wrong, named before anything trains
        common.check_counts(self, ["channels", "steps", "batch_size", "maps_shown"])
        common.check_counts(self, ["examples"], minimum=0)
        if self.maps_shown > self.channels[0]:  # act1 has channels[0] maps to show
            raise ValueError(
                f"config key 'maps_shown': expected at most channels[0] = {self.channels[0]}, "
                f"got {self.maps_shown}"
            )
        decays = self.weight_decays  # one network, and one label, per distinct decay >= 0
        if not decays or len(set(decays)) < len(decays) or not all(d >= 0 for d in decays):
            raise ValueError(
                f"config key 'weight_decays': expected distinct numbers >= 0, got {decays!r}"
            )

    def quick(self) -> Config:
        """The version the tests run: fewer steps."""
        return dataclasses.replace(self, steps=300)


def neighbour_correlation(w: np.ndarray) -> float:
    """Mean correlation between horizontally and vertically adjacent taps of the filters.

    Args:
      w: filters ``[kh, kw, in, out]``.

    Returns:
      A number in ``[-1, 1]``: about 0 for independent random taps, near 1 for smooth filters.
    """
    w = np.asarray(w, np.float64)
    w = w - w.mean(axis=(0, 1), keepdims=True)  # each filter's mean is not structure
    pairs = [(w[1:, :], w[:-1, :]), (w[:, 1:], w[:, :-1])]
    num = sum(float(np.sum(a * b)) for a, b in pairs)
    den = sum(float(np.sqrt(np.sum(a * a) * np.sum(b * b))) for a, b in pairs)
    return num / den


def readout_accuracy(train: np.ndarray, test: np.ndarray, data, ridge: float) -> float:
    """Test accuracy of a linear read-out: ridge regression of one-hot labels on features,
    solved in closed form, so no training budget or learning rate enters the comparison.

    Args:
      train: training features ``[N, F]``.
      test: test features ``[M, F]``.
      data: the `Dataset` (its labels).
      ridge: the penalty, relative to the mean squared feature norm.

    Returns:
      The accuracy on the ``M`` test examples.
    """
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    mean = train.mean(0)
    train, test = train - mean, test - mean  # the centring plays the role of a bias
    targets = np.eye(data.num_classes)[data.y_train]  # [N, classes]
    targets = targets - targets.mean(0)
    gram = train @ train.T  # [N, N]: solving the dual is cheaper when F > N
    penalty = ridge * np.trace(gram) / len(gram)
    dual = np.linalg.solve(gram + penalty * np.eye(len(gram)), targets)  # [N, classes]
    scores = test @ (train.T @ dual)  # [M, classes]
    return float(np.mean(np.argmax(scores, 1) == data.y_test))


def probe_accuracy(conv_params, data, ridge: float) -> float:
    """`readout_accuracy` of the frozen first-layer features ``relu(conv1(x))`` flattened,
    ``[N, 8 * 8 * C]``, for conv params ``{"w": [5, 5, 1, C], "b": [C]}``."""
    train = _first_features(conv_params, jnp.asarray(data.x_train))
    test = _first_features(conv_params, jnp.asarray(data.x_test))
    return readout_accuracy(train, test, data, ridge)


@jax.jit
def _first_features(conv_params, x):
    layer = jaxdl.conv2d(conv_params["w"].shape[-1], 5)
    maps, _ = layer.apply(conv_params, {}, x)  # [N, 8, 8, C]
    return jax.nn.relu(maps).reshape(x.shape[0], -1)  # [N, 64 C]


def filter_stats(w: np.ndarray, w_init: np.ndarray) -> dict[str, float]:
    """How far filters ``w`` ``[5, 5, 1, C]`` are from their start ``w_init`` and how smooth.

    Returns:
      ``relative_change`` (``|w - w_init| / |w_init|``), ``cosine_to_init`` (mean over
      filters), ``neighbour_correlation`` and ``norm_ratio`` (``|w| / |w_init|``).
    """
    flat, flat_init = w.reshape(-1, w.shape[-1]), w_init.reshape(-1, w.shape[-1])  # [25, C]
    norms, norms_init = np.linalg.norm(flat, axis=0), np.linalg.norm(flat_init, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # a filter decayed to 0 has no angle
        cosines = np.sum(flat * flat_init, 0) / (norms * norms_init)
    return {
        "relative_change": float(np.linalg.norm(w - w_init) / np.linalg.norm(w_init)),
        "cosine_to_init": float(np.nanmean(cosines)),
        "neighbour_correlation": neighbour_correlation(w),
        "norm_ratio": float(np.linalg.norm(w) / np.linalg.norm(w_init)),
    }


def plot_filters(filters: dict[str, np.ndarray]) -> bytes:
    """PNG: one panel per filter set ``{label: [5, 5, 1, C]}``; red > 0 > blue, each panel on
    its own symmetric colour scale."""
    plt = common.pyplot()
    cols = 8
    rows = -(-next(iter(filters.values())).shape[-1] // cols)
    fig = plt.figure(figsize=(len(filters) * (cols * 0.62 + 0.3), rows * 0.7 + 0.5))
    for sub, (label, w) in zip(fig.subfigures(1, len(filters)), filters.items(), strict=True):
        axes = sub.subplots(rows, cols, squeeze=False)
        limit = float(np.max(np.abs(w))) or 1.0
        for c, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if c < w.shape[-1]:
                ax.imshow(w[:, :, 0, c], cmap="RdBu_r", vmin=-limit, vmax=limit)
        sub.suptitle(label, fontsize=9)
    return common.png(fig)


def plot_maps(images: np.ndarray, maps: dict[str, np.ndarray], shown: int) -> bytes:
    """PNG: per input digit, a row per filter set ``{label: [n, 8, 8, C]}``: the input, then
    ``shown`` feature maps (one colour scale per row)."""
    plt = common.pyplot()
    n, sets = len(images), len(maps)
    fig, axes = plt.subplots(
        n * sets, shown + 1, figsize=((shown + 1) * 0.85, n * sets * 0.85), squeeze=False
    )
    for i in range(n):
        for k, (label, m) in enumerate(maps.items()):
            row = axes[i * sets + k]
            row[0].imshow(images[i][:, :, 0], cmap="gray_r")
            short = label.removeprefix("learned, ").removesuffix(" (init)")  # fits the margin
            row[0].set_ylabel(short, fontsize=6)
            limit = float(np.max(m[i])) or 1.0
            for c in range(shown):
                row[c + 1].imshow(m[i][:, :, c], cmap="viridis", vmin=0, vmax=limit)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c in range(shown):
        axes[0][c + 1].set_title(f"ch {c}", fontsize=7)
    axes[0][0].set_title("input", fontsize=7)
    return common.png(fig)


def _label(weight_decay: float) -> str:
    return "learned, Adam" if weight_decay == 0 else f"learned, AdamW wd {weight_decay:g}"


def run(config: Config) -> dict:
    """Trains the ConvNets, measures and draws their first layer, writes the output folder.

    Args:
      config: a `Config`.

    Returns:
      ``{"study", "config", "seconds", "filter_sets"}``: per filter set (``random (init)``,
      ``learned, Adam``, ...): ``test_accuracy`` of its network (trained sets),
      `filter_stats`, and ``probe_accuracy`` of the linear read-out on its frozen features.
    """
    common.check_out_dir(config.out_dir)  # before training, not after
    watch = common.Stopwatch()
    data = jaxdl.data.load("digits")
    if max(config.examples) >= data.num_test:  # checked before training, not when drawing
        raise ValueError(
            f"config key 'examples': expected indices of test digits in [0, {data.num_test}), "
            f"got {config.examples!r}"
        )
    entries = jaxdl.convnet_entries(config.channels, num_classes=data.num_classes)
    model = jaxdl.serial(*entries)
    result = jaxdl.sweep(  # both weight decays from the same start, vmapped
        model,
        data,
        axes={"seed": [config.seed], "weight_decay": list(config.weight_decays)},
        config=jaxdl.TrainConfig(
            steps=config.steps,
            batch_size=config.batch_size,
            optimizer="adamw",
            chunk_steps=config.steps,
        ),
        hparams=jaxdl.Hparams(lr=config.lr),
    )
    initial, _ = jax.jit(model.init)(common.init_key(config.seed), data.x_train[:1])  # its start
    params = {"random (init)": initial}
    accuracy = {}
    for i, member in enumerate(result.members):
        label = _label(member["weight_decay"])
        params[label] = result.states[i].params
        accuracy[label] = result.rows()[i]["final_test_accuracy"]
    w_init = np.asarray(initial["conv1"]["w"])  # [5, 5, 1, C]
    filter_sets = {}
    for label, p in params.items():
        w = np.asarray(p["conv1"]["w"])  # [5, 5, 1, C]
        filter_sets[label] = {
            "test_accuracy": accuracy.get(label),
            **filter_stats(w, w_init),
            "probe_accuracy": probe_accuracy(p["conv1"], data, config.ridge),
        }
    x = jnp.asarray(data.x_test[list(config.examples)])  # [n, 8, 8, 1]
    first_maps = jax.jit(lambda p: jaxdl.serial_outputs(entries, p, {}, x)["act1"])
    maps = {label: np.asarray(first_maps(p)) for label, p in params.items()}  # [n, 8, 8, C]
    rows = [
        {
            "filters": label,
            "ConvNet test acc (%)": "—"
            if s["test_accuracy"] is None
            else f"{100 * s['test_accuracy']:.1f}",
            "‖w − w₀‖ / ‖w₀‖": f"{s['relative_change']:.2f}",
            "cos(w, w₀)": f"{s['cosine_to_init']:.2f}",
            "‖w‖ / ‖w₀‖": f"{s['norm_ratio']:.2f}",
            "neighbour corr.": f"{s['neighbour_correlation']:.2f}",
            "linear read-out on act1 (%)": f"{100 * s['probe_accuracy']:.1f}",
        }
        for label, s in filter_sets.items()
    ]
    table = common.markdown_table(rows)
    raw = readout_accuracy(
        data.x_train.reshape(data.num_train, -1),
        data.x_test.reshape(data.num_test, -1),
        data,
        config.ridge,
    )
    table += f"\n\nThe same linear read-out on the raw 64 pixels: {100 * raw:.1f} %."
    results = {
        "study": NAME,
        "config": config,
        "filter_sets": filter_sets,
        "raw_pixel_readout_accuracy": raw,
        "seconds": watch.seconds(),
    }
    markdown = (
        f"# {NAME}\n\nFirst-layer filters of a ConvNet on digits ({config.steps} steps, lr "
        f"{config.lr}, seed {config.seed}):\n\n{table}\n\nWall time: {results['seconds']} s\n"
    )
    figures = {
        "filters.png": plot_filters({k: np.asarray(p["conv1"]["w"]) for k, p in params.items()}),
        "feature_maps.png": plot_maps(np.asarray(x), maps, config.maps_shown),
    }
    common.write_outputs(config.out_dir, results, markdown, figures)
    print(f"{table}\n\n{NAME}: {results['seconds']} s, written to {config.out_dir}")
    return results


if __name__ == "__main__":
    common.main(NAME, Config, run)
