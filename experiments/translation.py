"""Study: convolution is equivariant to translation, pooling makes features nearly invariant, and
so a ConvNet trained on centred digits still reads shifted ones while an MLP does not.

(a) Equivariance: conv stacks (stride 1, 'SAME') applied to a shifted input equal the shifted
feature map away from the borders, to float32 rounding; a stride-2 conv, for contrast, is not.
(b) Invariance: the relative change of pooled feature maps under a shift of s pixels, as a
function of the pooling window. (c) Test accuracy of an MLP and of ConvNets with max, average or
no pooling, trained on centred digits (zero-padded to 14x14), on test digits shifted by 0..3
pixels. (a) and (b) use random (He-initialised) filters: they are properties of the operations.

    python -m experiments.translation [--quick] [--out DIR] [--set KEY=VALUE]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import jaxdl
from experiments import common

NAME = "translation"
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (rows, cols): right, left, down, up
LABELS = {  # (c): the ConvNets by pooling
    "max": "convnet (max pool)",
    "avg": "convnet (avg pool)",
    "none": "convnet (no pooling)",
    "global": "convnet (global max pool)",
}


@dataclasses.dataclass(frozen=True)
class Config:
    """What is shifted, how far, and the networks of part (c)."""

    shifts: tuple[int, ...] = (0, 1, 2, 3)  # pixels; each test digit moved in 4 directions
    pad: int = 3  # zeros around each 8x8 digit: 14x14 canvases, so no shift crops the digit
    probe_pad: int = 8  # (a), (b): 24x24 canvases, so the interior holds the digit at any shift
    probe_examples: int = 200  # test digits used by (a) and (b)
    channels: int = 16  # channels of every conv layer in (a), (b) and the ConvNets of (c)
    pool_sizes: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 24)  # (b): windows; 24 is global pooling
    pools: tuple[str, ...] = ("max", "avg", "none", "global")  # (c): the ConvNets' pooling;
    # global: max-pool by 2, then a max over the whole remaining map before the read-out
    mlp_hidden: tuple[int, ...] = (256, 256)  # (c): the MLP's hidden layers (ReLU)
    seeds: int = 4  # networks per model in (c), vmapped
    steps: int = 500  # Adam steps per network in (c): 22 epochs, every model has converged
    batch_size: int = 64  # examples per step
    lr: float = 3e-3  # Adam learning rate of every network
    out_dir: str = f"runs/experiments/{NAME}"  # where results.json, results.md, PNGs go

    def __post_init__(self):  # what --set may get wrong, named before anything trains
        common.check_counts(self, ["shifts", "pad", "probe_pad"], minimum=0)
        common.check_counts(self, ["probe_examples", "channels", "pool_sizes", "mlp_hidden"])
        common.check_counts(self, ["seeds", "steps", "batch_size"])
        common.check_choices(self, "pools", list(LABELS))
        side = 8 + 2 * self.probe_pad  # (b) pools the maps of the probe canvases
        if max(self.pool_sizes) > side:
            raise ValueError(
                f"config key 'pool_sizes': expected windows <= {side} (8 + 2 probe_pad), "
                f"got {self.pool_sizes!r}"
            )

    def quick(self) -> Config:
        """The version the tests run: one ConvNet, two seeds, few steps."""
        return dataclasses.replace(
            self,
            pools=("max",),
            seeds=2,
            steps=300,
            probe_examples=50,
            pool_sizes=(1, 2, 24),
        )


def _moves(config: Config) -> list[int]:
    """The non-zero shifts of ``config.shifts``: those (a) and (b) measure (0 moves nothing)."""
    return [s for s in config.shifts if s]


def pad_digits(x: np.ndarray, pad: int) -> np.ndarray:
    """``[N, 8, 8, 1]`` digits centred on ``[N, 8 + 2 pad, 8 + 2 pad, 1]`` zero canvases."""
    return np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])


def translate(x: jax.Array, rows, cols) -> jax.Array:
    """``x`` ``[N, H, W, C]`` moved ``rows`` down and ``cols`` right; zeros enter, the content
    that leaves the canvas is lost. The shifts may be traced (one compiled program for all)."""
    h, w = x.shape[1:3]
    src_rows, src_cols = jnp.arange(h) - rows, jnp.arange(w) - cols  # where each pixel comes from
    row_ok, col_ok = (src_rows >= 0) & (src_rows < h), (src_cols >= 0) & (src_cols < w)
    inside = row_ok[:, None] & col_ok[None, :]  # [H, W]
    gathered = x[:, jnp.clip(src_rows, 0, h - 1)][:, :, jnp.clip(src_cols, 0, w - 1)]
    return jnp.where(inside[None, :, :, None], gathered, jnp.zeros_like(gathered))  # [N, H, W, C]


def interior_max(x: jax.Array, margin) -> jax.Array:
    """The max of ``x`` ``[N, H, W, C]`` over positions at least ``margin`` from every border;
    NaN where no position is that far in (a canvas too small measures nothing, not 0)."""
    h, w = x.shape[1:3]
    i, j = jnp.arange(h), jnp.arange(w)
    inside = ((i >= margin) & (i < h - margin))[:, None] & ((j >= margin) & (j < w - margin))[
        None, :
    ]
    largest = jnp.max(jnp.where(inside[None, :, :, None], x, jnp.zeros_like(x)))
    return jnp.where(jnp.any(inside), largest, jnp.full_like(largest, jnp.nan))


def conv_stack(depth: int, channels: int, stride: int = 1, impl: str = "auto") -> jaxdl.Layer:
    """``depth`` blocks of 5x5 conv ('SAME', the given stride and implementation) and ReLU."""
    layers = []
    for i in range(1, depth + 1):
        conv = jaxdl.conv2d(channels, 5, stride=stride, impl=impl)
        layers += [(f"conv{i}", conv), (f"act{i}", jaxdl.relu)]
    return jaxdl.serial(*layers)


def equivariance(config: Config, x: jax.Array, key: jax.Array) -> list[dict]:
    """(a) For each stack and shift s: the max over the interior of |f(T_s x) - T_s' f(x)|.

    ``x``: digits on large canvases ``[N, H, W, 1]``. A stride-1 stack shifts its output by s;
    a stride-2 conv by s / 2, so for odd s no shift of its output matches (we compare with the
    nearest, s // 2). The interior leaves out ``s`` plus the stack's receptive-field radius at
    each border, where zero padding breaks the symmetry.
    """
    rows = []
    stacks = {  # label: (depth, stride, impl); on CPU "auto" is the canonical-layout lax.conv
        "conv (1 layer)": (1, 1, "auto"),
        "conv-relu x 3": (3, 1, "auto"),
        "conv-relu x 3, lax.conv": (3, 1, "xla"),
        "conv-relu x 3, im2col": (3, 1, "im2col"),
        "conv stride 2": (1, 2, "auto"),
    }
    for label, (depth, stride, impl) in stacks.items():
        model = conv_stack(depth, config.channels, stride, impl)
        params, state = model.init(key, x[:1])
        fx = jax.jit(model.apply)(params, state, x)[0]  # [N, H', W', C]

        @jax.jit  # arrays as arguments: closed over, XLA would fold them in as constants
        def error(params, x, fx, rows, cols, margin, model=model, state=state, s=stride):
            moved, _ = model.apply(params, state, translate(x, rows, cols))
            expected = translate(fx, rows // s, cols // s)
            return interior_max(jnp.abs(moved - expected), margin)

        scale = float(jnp.max(jnp.abs(fx)))
        for shift in _moves(config):
            margin = (shift + 2 * depth) // stride + 1  # the shift and the receptive-field radius
            errors = [
                float(error(params, x, fx, dr * shift, dc * shift, margin)) for dr, dc in DIRECTIONS
            ]
            rows.append(
                {
                    "stack": label,
                    "stride": stride,
                    "shift": shift,
                    "max_abs_error": max(errors),
                    "relative_error": max(errors) / scale,
                }
            )
    return rows


def invariance(config: Config, x: jax.Array, key: jax.Array) -> list[dict]:
    """(b) For each pooling kind, window p and shift s: ``|P(h(T_s x)) - P(h(x))| / |P(h(x))|``
    averaged over the examples and the 4 directions, with h = relu(conv(x)) (random filters)."""
    model = conv_stack(1, config.channels)
    params, state = model.init(key, x[:1])

    # Arrays are arguments, not closed over: XLA would fold a closed-over feature map into the
    # program as a constant, seconds of compiling each time.
    @jax.jit
    def features(params, x, rows, cols):
        return model.apply(params, state, translate(x, rows, cols))[0]  # [N, H, W, C]

    base = features(params, x, 0, 0)
    moved = {
        s: [features(params, x, dr * s, dc * s) for dr, dc in DIRECTIONS] for s in _moves(config)
    }
    rows = []
    for kind in ("max", "avg"):
        for p in config.pool_sizes:
            pool = jaxdl.pool(kind, p)

            @jax.jit
            def change(shifted, base, pool=pool):
                pooled = pool.apply({}, {}, base)[0].reshape(base.shape[0], -1)  # [N, F]
                pooled_shifted = pool.apply({}, {}, shifted)[0].reshape(base.shape[0], -1)
                norms = jnp.linalg.norm(pooled, axis=1)  # [N]
                return jnp.mean(jnp.linalg.norm(pooled_shifted - pooled, axis=1) / norms)

            for s in _moves(config):
                changes = [change(m, base) for m in moved[s]]
                rows.append(
                    {
                        "pool": kind,
                        "window": p,
                        "shift": s,
                        "relative_change": float(np.mean(changes)),
                    }
                )
    return rows


def models(config: Config, num_classes: int) -> dict[str, jaxdl.Layer]:
    """(c): the MLP and one ConvNet per pooling kind: two blocks of 5x5 conv and ReLU, each
    followed by the pooling (by 2), then a linear read-out; for ``"global"``, the first pooling
    is a max by 2 and the second a max over the whole map (``[B, 1, 1, C]``)."""
    out = {"mlp": jaxdl.mlp(config.mlp_hidden, num_classes, "relu", "he_normal")}
    pools = {"max": "max", "avg": "avg", "none": None}
    for kind in config.pools:
        if kind == "global":
            side = (8 + 2 * config.pad) // 2  # the map's side after the first pooling
            model = jaxdl.serial(
                ("conv1", jaxdl.conv2d(config.channels, 5)),
                ("act1", jaxdl.relu),
                ("pool1", jaxdl.max_pool(2)),
                ("conv2", jaxdl.conv2d(config.channels, 5)),
                ("act2", jaxdl.relu),
                ("pool2", jaxdl.max_pool(side)),  # [B, 1, 1, C]
                ("flatten", jaxdl.flatten),
                ("dense1", jaxdl.dense(num_classes, w_init="he_normal")),
            )
        else:
            model = jaxdl.convnet(
                (config.channels, config.channels), pool=pools[kind], num_classes=num_classes
            )
        out[LABELS[kind]] = model
    return out


def shifted_accuracy(config: Config, data, result, model: jaxdl.Layer) -> np.ndarray:
    """Test accuracy per seed and shift (mean over the 4 directions): ``[seeds, shifts]``."""
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    params = jax.tree.map(lambda *p: jnp.stack(p), *[s.params for s in result.states])
    model_state = jax.tree.map(lambda *p: jnp.stack(p), *[s.model_state for s in result.states])

    @jax.jit  # arrays as arguments, as in (a) and (b)
    def accuracy(params, model_state, x, y, rows, cols):
        moved = translate(x, rows, cols)

        def one(params, model_state):
            return jaxdl.evaluate(model, params, model_state, moved, y)["accuracy"]

        return jax.vmap(one)(params, model_state)  # [seeds]

    table = []
    for s in config.shifts:
        moves = DIRECTIONS if s else ((0, 0),)
        accuracies = [accuracy(params, model_state, x, y, dr * s, dc * s) for dr, dc in moves]
        table.append(np.mean([np.asarray(a) for a in accuracies], 0))
    return np.stack(table, axis=1)  # [seeds, shifts]


def plot(config: Config, accuracy: dict[str, np.ndarray], invariance_rows: list[dict]) -> bytes:
    """PNG: (left) accuracy vs shift per model; (right) relative change of pooled features vs
    pooling window, a line per shift, max (solid) and avg (dashed)."""
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, acc in accuracy.items():
        mean, std = 100 * acc.mean(0), 100 * (acc.std(0, ddof=1) if len(acc) > 1 else 0 * acc[0])
        left.errorbar(config.shifts, mean, std, marker="o", ms=4, capsize=2, label=label)
    left.axhline(10, color="gray", ls=":", lw=1)
    left.set(xlabel="shift (pixels)", ylabel="test accuracy (%)", ylim=(0, 100))
    left.set_title("trained on centred digits, tested shifted", fontsize=9)
    left.set_xticks(config.shifts)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    for k, s in enumerate(_moves(config)):
        for kind, style in (("max", "o-"), ("avg", "s--")):
            rows = [r for r in invariance_rows if r["pool"] == kind and r["shift"] == s]
            right.plot(
                [r["window"] for r in rows],
                [r["relative_change"] for r in rows],
                style,
                ms=3,
                color=f"C{k}",
                label=f"{kind}, shift {s}",
            )
    right.set(xlabel="pooling window (pixels)", ylabel="relative change of pooled features")
    right.set_xscale("log", base=2)
    right.set_title("invariance grows with the pooling window", fontsize=9)
    right.legend(fontsize=7, ncol=2)
    right.grid(alpha=0.3)
    return common.png(fig)


def run(config: Config) -> dict:
    """Runs (a), (b) and (c), writes the output folder, prints the tables.

    Args:
      config: a `Config`.

    Returns:
      ``{"study", "config", "seconds", "equivariance", "invariance", "accuracy"}``; accuracy is
      ``{model: [seeds, shifts]}``.
    """
    common.check_out_dir(config.out_dir)  # before training, not after
    watch = common.Stopwatch()
    digits = jaxdl.data.load("digits")
    probe = jnp.asarray(pad_digits(digits.x_test[: config.probe_examples], config.probe_pad))
    a_key, b_key = jax.random.split(jax.random.key(0))
    equivariance_rows = equivariance(config, probe, a_key)
    invariance_rows = invariance(config, probe, b_key)

    data = digits._replace(
        x_train=pad_digits(digits.x_train, config.pad), x_test=pad_digits(digits.x_test, config.pad)
    )
    accuracy = {}
    for label, model in models(config, data.num_classes).items():
        result = jaxdl.sweep(
            model,
            data,
            axes={"seed": list(range(config.seeds))},
            config=jaxdl.TrainConfig(
                steps=config.steps,
                batch_size=config.batch_size,
                chunk_steps=config.steps,
                eval_every=config.steps,
            ),
            hparams=jaxdl.Hparams(lr=config.lr),
        )
        accuracy[label] = shifted_accuracy(config, data, result, model)
        print(f"  {label}: {watch.seconds()} s", flush=True)

    accuracy_rows = [
        {
            "model": label,
            **{f"shift {s}": common.pct(acc[:, j]) for j, s in enumerate(config.shifts)},
        }
        for label, acc in accuracy.items()
    ]
    equivariance_table = [
        {
            **r,
            "max_abs_error": common.sci(r["max_abs_error"]),
            "relative_error": common.sci(r["relative_error"]),
        }
        for r in equivariance_rows
    ]
    invariance_table = []
    for kind in ("max", "avg"):
        for s in _moves(config):
            row = {"pool": kind, "shift": s}
            for r in invariance_rows:
                if r["pool"] == kind and r["shift"] == s:
                    row[f"window {r['window']}"] = f"{r['relative_change']:.3f}"
            invariance_table.append(row)
    markdown = "\n\n".join(
        [
            f"# {NAME}",
            f"(c) Test accuracy (%) on digits shifted by k pixels (mean over 4 directions; mean ± "
            f"std over {config.seeds} seeds; trained on centred 14x14 digits, {config.steps} "
            "Adam steps):",
            common.markdown_table(accuracy_rows),
            "(a) Equivariance: max |f(shift x) - shift f(x)| over the interior (random filters):",
            common.markdown_table(equivariance_table),
            "(b) Invariance: relative change of pooled features under a shift (random filters):",
            common.markdown_table(invariance_table),
        ]
    )
    results = {
        "study": NAME,
        "config": config,
        "equivariance": equivariance_rows,
        "invariance": invariance_rows,
        "accuracy": accuracy,
        "seconds": watch.seconds(),
    }
    markdown += f"\n\nWall time: {results['seconds']} s\n"
    common.write_outputs(
        config.out_dir,
        results,
        markdown,
        {"translation.png": plot(config, accuracy, invariance_rows)},
    )
    print(markdown)
    return results


if __name__ == "__main__":
    common.main(NAME, Config, run)
